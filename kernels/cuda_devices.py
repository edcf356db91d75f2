"""The CUDA kernel of the device models' set-up: a macrospin run's table of mean resistance.

It calls the same ``numba.njit`` scalar functions as the CPU kernels; numba-cuda
compiles them as device functions. ``cuda`` is a module global so that Numba's CUDA simulator
can stand in for it (NUMBA_ENABLE_CUDASIM=1).
"""

from numba import cuda

from . import cuda_setup
from .macrospin import run_grid_point

cuda_setup.prepare()

THREADS = 128  # threads per block of its launches (one thread per task)


@cuda.jit
def macrospin_mean_resistance(currents, coefs, keys, k0, k1, out_r, out_m):
    """:func:`spingpu.kernels.macrospin.mean_resistance` with the seed split into the Philox key
    (k0, k1); one thread per (junction, current)."""
    t = cuda.grid(1)
    if t < coefs.shape[0] * currents.shape[0]:
        run_grid_point(t, currents, coefs, keys, k0, k1, out_r, out_m)
