"""Compile CUDA kernels to PTX for a chosen architecture without a GPU or driver."""

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class _FixedDevice:
    compute_capability: tuple


@contextlib.contextmanager
def fixed_compute_capability(cc):
    """Let numba-cuda compile device functions for ``cc`` without asking a driver.

    numba-cuda compiles a device function called from a kernel for the *current* device's compute
    capability, which needs a driver. For PTX-only compilation we answer that lookup with ``cc``.
    """
    from numba.cuda import dispatcher

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _FixedDevice(tuple(cc))
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_ptx(kernel, signature, cc=(9, 0)):
    """PTX text of a ``numba.cuda.jit`` kernel (or its Python function) for ``signature``."""
    from numba import cuda

    py_func = getattr(kernel, "py_func", kernel)
    with fixed_compute_capability(cc):
        ptx, _ = cuda.compile_ptx(py_func, signature, cc=tuple(cc))
    return ptx
