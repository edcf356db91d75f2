"""spingpu's compute kernels: scalar device physics, counter-based random numbers, array kernels.

This subpackage knows arrays and numbers only. Every scalar function is ``numba.njit``; the CPU
kernels call it compiled for the CPU and the CUDA kernels call the same function, which numba-cuda
compiles as a device function, so both targets run one source. Modules that need ``numba.cuda``
import it inside the function that builds a CUDA kernel, so importing this package needs no GPU.
"""


def _cache_where_writable():
    """Give Numba a writable cache folder where it has none (``numba.njit(cache=True)`` raises at
    import, "no locator available", when neither this package's folder nor the user's cache
    folder, ~/.cache/numba, can be written: a read-only install run by a user without a writable
    home, as in some containers). The kernels are then cached in the temporary folder,
    ``<tmp>/spingpu-numba-cache-<uid>``; ``NUMBA_CACHE_DIR``, where set, always wins."""
    import os
    import tempfile

    import numba

    try:
        from numba.core.caching import FunctionCache
    except ImportError:  # a Numba that moved it: its own error at the first kernel, as without this
        return
    if numba.config.CACHE_DIR:
        return
    try:
        FunctionCache(_cache_where_writable)  # asks the locators Numba asks for this package's kernels
    except RuntimeError:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"spingpu-numba-cache-{uid}")


_cache_where_writable()
