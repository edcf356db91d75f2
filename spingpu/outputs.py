"""Writing output files so that a failure leaves nothing half-written.

Each file is written to a temporary name beside its target and renamed into place only when
every file of the command has been written (a rename within one directory is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def check_writable(field, path):
    """``path`` as a Path whose directory exists and is writable, else ConfigError."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(field, f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(field, f"folder {folder} is not writable")
    if path.is_dir():
        raise ConfigError(field, f"{path} is a folder, expected a file name")
    return path


@contextlib.contextmanager
def staged_files(*targets):
    """Yield one temporary path per target; on success rename each onto its target.

    If the block raises, the temporaries are removed and no target is touched.
    """
    temps = []
    try:
        for target in targets:
            target = Path(target)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix,
                                       dir=target.parent if str(target.parent) else ".")
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        mode = 0o666 & ~_umask()  # what open() would have given; mkstemp makes 0600
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, mode)
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
