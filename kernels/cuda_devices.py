"""CUDA kernels for device evaluation and junction sampling.

Each kernel calls the same ``numba.njit`` scalar functions as the CPU kernels; numba-cuda
compiles them as device functions. ``cuda`` is a module global so that Numba's CUDA simulator
can stand in for it (NUMBA_ENABLE_CUDASIM=1).
"""

import numba
from numba import cuda

from . import cuda_setup
from .macrospin import run_grid_point
from .variability import MAX_PARAMETERS, sample_junction

cuda_setup.prepare()

THREADS = 128  # threads per block of these kernels' launches (one thread per element or task)


def make_iv_kernel(point):
    """``iv(currents[M], params[M, P], table, v_out[M], dvdi_out[M])``, one thread per element."""

    def iv(currents, params, table, v_out, dvdi_out):
        m = cuda.grid(1)
        if m < currents.shape[0]:
            v, d = point(currents[m], params[m], table)
            v_out[m] = v
            dvdi_out[m] = d

    return cuda.jit(iv)


@cuda.jit
def sample_layer(k0, k1, networks, layer, n_units, nominal, is_log, scale, bounds, sigmas, chol, out):
    """:func:`spingpu.kernels.variability.sample_layer` with the seed split into the Philox key
    (k0, k1); one thread per (network, unit, member)."""
    t = cuda.grid(1)
    if t < networks.shape[0] * n_units * 2:
        i = t // (n_units * 2)
        u = (t // 2) % n_units
        m = t % 2
        z = cuda.local.array(MAX_PARAMETERS, numba.float64)
        x = cuda.local.array(MAX_PARAMETERS, numba.float64)
        sample_junction(k0, k1, networks[i], layer, u, m, nominal, is_log, scale, bounds, sigmas, chol, z, x,
                        out[i, u, m])


@cuda.jit
def macrospin_mean_resistance(currents, coefs, keys, k0, k1, out_r, out_m):
    """:func:`spingpu.kernels.macrospin.mean_resistance` with the seed split into the Philox key
    (k0, k1); one thread per (junction, current)."""
    t = cuda.grid(1)
    if t < coefs.shape[0] * currents.shape[0]:
        run_grid_point(t, currents, coefs, keys, k0, k1, out_r, out_m)
