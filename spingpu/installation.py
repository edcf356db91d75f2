"""Which spingpu a process runs: where it was imported from, and a digest of its sources, so that
a study's driver can tell a Dask worker that runs other code (another checkout, an older install)
from one that gives this run's numbers. ``__version__`` alone cannot: it names releases, not
edits."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@functools.cache
def source_digest():
    """sha256 of every ``.py`` file of the package (its ``kernels`` too, wherever they are: a
    source checkout links them in, an install copies them), by path relative to the package and
    contents: the same for two installs of the same sources, whatever their layout."""
    from . import kernels

    files = {}
    for root, name in ((PACKAGE, ""), (Path(kernels.__file__).resolve().parent, "kernels")):
        for folder, dirs, names in os.walk(root):  # links not followed: the checkout's kernels link
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in names:  # modules only: not an editor's lock or backup file (.#x.py, a link to nothing)
                path = Path(folder, file)
                if file.endswith(".py") and file[:-3].isidentifier() and path.is_file():
                    files[Path(name, path.relative_to(root)).as_posix()] = path
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative}\0".encode())
        digest.update(files[relative].read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def identity():
    """(source digest, host name, package folder) of this process's spingpu."""
    return source_digest(), socket.gethostname(), str(PACKAGE)
