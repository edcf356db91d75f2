"""What a module of CUDA kernels does before it defines them: :func:`prepare`.

1. numba-cuda under NumPy 2.5. NumPy 2.0 deprecated ``row_stack``, an alias of ``vstack``, and
   NumPy 2.5 removed it; numba-cuda (0.30.4 and earlier) registers an overload for it while it loads
   its typing registries at the first compilation, so with NumPy >= 2.5 every CUDA compilation fails
   with ``AttributeError: module 'numpy' has no attribute 'row_stack'`` (seen on a GPU node with
   NumPy 2.5.2 and numba-cuda 0.30.4, where nothing could be installed). The alias is put back (the
   function NumPy < 2.5 exported under that name) where NumPy lacks it; spingpu never calls it.
2. Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): :func:`spingpu.kernels.simulator.install`.
"""

import numba
import numpy as np

from . import simulator


def prepare():
    """Make numba-cuda compile under this NumPy, and the simulator run spingpu's kernels (idempotent)."""
    if "row_stack" not in np.__dict__:
        np.row_stack = np.vstack
    if numba.config.ENABLE_CUDASIM:
        simulator.install()
