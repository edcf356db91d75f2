"""spingpu's compute kernels: scalar device physics, counter-based random numbers, array kernels.

This subpackage knows arrays and numbers only. Every scalar function is ``numba.njit``; the CPU
kernels call it compiled for the CPU and the CUDA kernels call the same function, which numba-cuda
compiles as a device function, so both targets run one source. Modules that need ``numba.cuda``
import it inside the function that builds a CUDA kernel, so importing this package needs no GPU.
"""


def numba_cache_folder():
    """The folder Numba caches this package's kernels in, asked of its cache locators as it asks
    them (beside the sources, ~/.cache/numba, or NUMBA_CACHE_DIR), or None where none can be
    written. ImportError where Numba moved its caching module."""
    from numba.core.caching import FunctionCache

    try:
        return str(FunctionCache(numba_cache_folder)._cache_path)
    except RuntimeError:  # "no locator available"
        return None


def _cache_where_writable():
    """Give Numba a writable cache folder where it has none (``numba.njit(cache=True)`` raises at
    import, "no locator available", when neither this package's folder nor the user's cache
    folder, ~/.cache/numba, can be written: a read-only install run by a user without a writable
    home, as in some containers). The kernels are then cached in ``<tmp>/spingpu-numba-cache-<uid>``,
    made private (0700) and used only if this user owns it and no one else may write to it (Numba's
    index files are pickles), else in a fresh private folder; ``NUMBA_CACHE_DIR`` is set too, for
    Dask workers started later. A ``NUMBA_CACHE_DIR`` the user set always wins."""
    import os
    import stat
    import tempfile

    import numba

    if numba.config.CACHE_DIR:
        return
    try:
        if numba_cache_folder() is not None:
            return
    except ImportError:  # a Numba that moved it: its own error at the first kernel, as without this
        return
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = os.path.join(tempfile.gettempdir(), f"spingpu-numba-cache-{uid if uid is not None else 'user'}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        folder = None
    if folder is not None and uid is not None:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
            folder = None  # someone else's, a link, or writable by others: not one to load code from
    if folder is None:
        folder = tempfile.mkdtemp(prefix="spingpu-numba-cache-")  # private; compiled again next time
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"] = folder


_cache_where_writable()
