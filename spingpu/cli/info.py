"""``spingpu info``: version, backends and GPUs."""

import platform


def add_parser(sub):
    p = sub.add_parser("info", help="version, backends found and GPUs")
    p.set_defaults(run=run)


def run(args):
    import numba
    import numpy

    from .. import __version__
    from ..backends import available_backends

    print(f"spingpu {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__}, "
          f"Numba {numba.__version__})")
    print("backends:")
    for name, usable, detail in available_backends():
        print(f"  {name:<6} {'yes' if usable else 'no ':<4} {detail}")
