"""``spingpu info``: version, backends and GPUs; ``--check-kernels`` compiles and assembles every CUDA
kernel."""

import os
import platform
import sys

from .options import integer


def add_parser(sub):
    p = sub.add_parser("info", help="version, backends found and GPUs")
    p.add_argument("--check-kernels", action="store_true",
                   help="compile every CUDA kernel to PTX and assemble it to machine code (no GPU needed); "
                        "report each kernel's registers, stack, shared memory and spills")
    p.add_argument("--arch", default=None,
                   help="target architecture for --check-kernels, e.g. sm_80, sm_90, sm_100, one that numba-cuda's "
                        "NVRTC lists (default: the first visible GPU's, else sm_90)")
    p.add_argument("--jobs", type=integer, default=None,
                   help="processes compiling kernels for --check-kernels (default: one per CPU core)")
    p.set_defaults(run=run)


def run(args):
    import numba
    import numpy

    from .. import __version__
    from ..backends import available_backends
    from ..errors import ConfigError, check_range

    for option in ("arch", "jobs"):
        if getattr(args, option) is not None and not args.check_kernels:
            raise ConfigError(option, "is only used with --check-kernels")
    if args.jobs is not None:  # refused, as the arch, before anything is printed
        check_range("jobs", args.jobs, 1, integer=True)
    arch = _kernel_arch(args.arch) if args.check_kernels else None

    print(f"spingpu {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__}, "
          f"Numba {numba.__version__})")
    print("backends:")
    for name, usable, detail in available_backends():
        print(f"  {name:<6} {'yes' if usable else 'no ':<4} {detail}")
    print("kernel caches (compiled code kept between runs):")
    print(f"  spingpu  {_spingpu_cache()}")
    print(f"  numba    {_numba_cache()}")
    if not args.check_kernels:
        return 0
    from ..cuda_kernels import check_kernels

    print(f"compiling CUDA kernels for {arch}:")
    try:
        n = check_kernels(arch, jobs=args.jobs if args.jobs is not None else (os.cpu_count() or 1))
    except RuntimeError as err:
        print(f"spingpu info: error: {err}", file=sys.stderr)
        return 1
    print(f"{n} kernels compiled")
    return 0


def _kernel_arch(arch):
    """The architecture ``--check-kernels`` compiles for (``--arch``, else the first visible GPU's,
    else the default), checked against what numba-cuda compiles for; ConfigError otherwise."""
    from ..backends import cuda_simulator_enabled, gpu_devices, missing_cuda_packages
    from ..cuda_kernels import DEFAULT_ARCH, check_arch
    from ..errors import ConfigError
    from ..kernels.ptx import arch_name

    if cuda_simulator_enabled():
        raise ConfigError("check-kernels", "PTX compilation needs the real numba-cuda: unset NUMBA_ENABLE_CUDASIM")
    if missing_cuda_packages(need_cupy=False):  # Numba's own numba.cuda lacks what the kernels use
        raise ConfigError("check-kernels", "needs numba-cuda and nvJitLink: pip install 'spingpu[gpu]' "
                                           "(or 'spingpu[test]')")
    if arch is not None:
        check_arch(arch)
        return arch
    gpus = gpu_devices()
    if not gpus:
        return DEFAULT_ARCH
    arch = arch_name(gpus[0][1])
    try:
        check_arch(arch)
    except ConfigError as err:
        raise ConfigError("arch", f"the visible GPU's {err.problem}; give --arch to compile for another") from None
    return arch


def _spingpu_cache():
    """Where :mod:`spingpu.kernel_cache` writes the training kernels' modules, and whether it can."""
    from .. import kernel_cache

    if not kernel_cache.enabled():
        return "off (SPINGPU_KERNEL_CACHE): each process compiles the training kernels again"
    folder = kernel_cache.cache_dir()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if existing.exists() and not existing.is_dir():
        return f"{folder} (not a folder: each process compiles the training kernels again)"
    if not os.access(existing, os.W_OK):
        return f"{folder} (not writable: each process compiles the training kernels again)"
    return str(folder)


def _numba_cache():
    """The folder Numba caches spingpu's kernels in (beside the package, ~/.cache/numba, or the
    temporary folder :mod:`spingpu.kernels` chose)."""
    from ..kernels import numba_cache_folder

    try:
        return numba_cache_folder() or "none writable: each process compiles the kernels again"
    except Exception as err:  # Numba's internals moved: said, not fatal
        return f"unknown ({type(err).__name__}: {err})"
