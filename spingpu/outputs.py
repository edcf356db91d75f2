"""Writing output files so that a failure leaves nothing half-written.

Each file is written to a temporary name beside its target and renamed into place only when
every file of the command has been written (a rename within one directory is atomic on POSIX).
:func:`check_writable`, called before the work that produces a file, tries that temporary file
once (created and removed at once), so that an unwritable target fails in seconds, not after a
long run; any error of the final write is still a one-line :class:`ConfigError` naming the option.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import ConfigError, OutputError, os_error_reason

# errors of a write that name no file: they concern the output being written
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
PARTIAL = ".partial-"  # temporaries are named .NAME.partial-HOST-PID-TOKEN, files with .tmp.EXT after it


def check_writable(field, path, overwrite=True, store=False):
    """``path`` as a Path whose folder exists and takes a new file, else ConfigError naming ``field``.

    A temporary file is created beside the target and removed (the check :func:`staged_files`'s
    own first step would make), so that permissions, read-only and special filesystems show
    before the work that produces the file. ``overwrite`` False: an existing ``path`` is refused
    (the command's ``--overwrite`` replaces it), so that nothing already written is lost.
    ``store``: ``path`` is a results store, a folder made beside its temporary name and renamed
    into place; an existing one is the caller's to check.
    """
    if path is None or str(path).strip() == "":
        raise ConfigError(field, "expected a file name, got an empty one")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(field, missing_folder(folder))
    if path.is_dir() and not store:
        raise ConfigError(field, f"{path} is a folder, expected a file name")
    if not overwrite and os.path.lexists(path):
        raise ConfigError(field, f"{path} exists; not overwritten: pass --overwrite to replace it, or choose "
                                 "another file name")
    if not os.access(folder, os.W_OK):
        raise ConfigError(field, f"folder {folder} is not writable")
    try:
        tmp = _temp_beside(path)
    except OSError as err:
        raise ConfigError(field, f"cannot write {path}: {os_error_reason(err)}") from None
    with contextlib.suppress(OSError):
        tmp.unlink()
    return path


def missing_folder(folder):
    """Why an output cannot go in ``folder``, which is not a folder: it does not exist, or it is a file
    (or a link to one)."""
    if os.path.exists(folder):
        return f"{folder} is a file, not a folder"
    return f"folder {folder} does not exist"


def check_free_space(field, path, n_bytes):
    """ConfigError naming ``field`` when the folder of ``path`` has less than ``n_bytes`` free:
    called before a long run whose output is written at its end, so that a full disk shows then,
    not after the run (the file is staged beside its target, so an existing one frees nothing
    until the new one is written)."""
    folder = Path(path).parent
    free = shutil.disk_usage(folder).free
    if n_bytes > free:
        raise ConfigError(field, f"{path} needs about {size_text(n_bytes)} and {folder} has {size_text(free)} free; "
                                 "free some space or choose another folder")


def size_text(n_bytes):
    """Bytes as GiB (one decimal, as ``spingpu train`` says them), MiB or bytes."""
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.1f} GiB"
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes} bytes"


def check_not_inputs(outputs, inputs):
    """ConfigError where one of ``outputs`` ({field: path}) is one of the files ``inputs`` reads or
    another output (the same file by resolved path, links followed): a run never writes over its
    own data or one of its outputs over another."""
    seen = {}
    read = {str(Path(p).expanduser().resolve()) for p in inputs if p is not None}
    for field, path in outputs.items():
        if path is None:
            continue
        key = str(Path(path).expanduser().resolve())
        if key in read:
            raise ConfigError(field, f"{path} is an input of this run; not overwritten: choose another file name")
        if key in seen:
            raise ConfigError(field, f"{path} is also the {seen[key]} output; choose another file name")
        seen[key] = field


@contextlib.contextmanager
def staged_files(*targets, fields=None, overwrite=True):
    """Yield one temporary path per target; on success rename each onto its target.

    If the block raises, the temporaries are removed and no target is touched. An OSError of the
    temporaries, the renames or (when it names a temporary or is a full or read-only disk) the
    block becomes a one-line :class:`~spingpu.errors.OutputError` naming the target and its option
    ``fields[k]`` (default ``output``). ``overwrite`` False: a target that has appeared since the
    command checked it (a second run writing the same file) is not replaced: ConfigError, and the
    targets this call already placed are removed again (they are its own), so that nothing
    written is lost.
    """
    targets = [Path(t) for t in targets]
    fields = list(fields) if fields is not None else ["output"] * len(targets)
    for target in targets:
        remove_stale_partials(target, _temp_suffix(target))
    temps = []
    current = 0  # the target being worked on, for messages
    try:
        try:
            for current, target in enumerate(targets):
                temps.append(_temp_beside(target))
            current = None  # the block writes them all: an error without a file name names every target
            yield temps
            mode = 0o666 & ~_umask()  # what open() would have given; mkstemp makes 0600
            placed = []
            for current, (tmp, target) in enumerate(zip(temps, targets)):
                os.chmod(tmp, mode)
                if overwrite:
                    os.replace(tmp, target)
                elif not _place_new(tmp, target):
                    for own in placed:
                        with contextlib.suppress(OSError):
                            own.unlink()
                    raise ConfigError(fields[current], f"{target} was written by something else while this run "
                                                       "ran; not overwritten: pass --overwrite to replace it, or "
                                                       "choose another file name")
                placed.append(target)
        except OSError as err:
            named = {str(t): k for k, t in enumerate(temps)} | {str(t): k for k, t in enumerate(targets)}
            if err.filename is not None and str(err.filename) in named:
                current = named[str(err.filename)]
            elif err.filename is not None or err.errno not in _WRITE_ERRNOS:
                raise  # not about our files: someone else's error
            if not targets:
                raise
            if current is None:
                raise OutputError("/".join(dict.fromkeys(fields)), f"cannot write {' or '.join(map(str, targets))}: "
                                                                   f"{os_error_reason(err)}") from None
            raise OutputError(fields[current], f"cannot write {targets[current]}: {os_error_reason(err)}") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _place_new(tmp, target):
    """Move ``tmp`` to ``target`` unless ``target`` exists (then False, ``tmp`` left): a hard link,
    which the filesystem refuses atomically where the name is taken, then the temporary name
    removed; where hard links are not supported, a rename after a check (a race of microseconds)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):
            return False
        os.replace(tmp, target)
        return True
    tmp.unlink()
    return True


def _temp_beside(target):
    """A new empty temporary file in ``target``'s folder (closed), as a Path, named
    ``.NAME.partial-HOST-PID-TOKEN.tmp.EXT`` so that :func:`remove_stale_partials` knows whose it is."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{PARTIAL}{partial_owner()}-", suffix=_temp_suffix(target),
                               dir=target.parent if str(target.parent) else ".")
    os.close(fd)
    return Path(tmp)


def _temp_suffix(target):
    return ".tmp" + target.suffix


def partial_owner():
    """HOST-PID of this process, as temporary names carry it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def remove_stale_partials(target, suffix=""):
    """Remove the temporaries of ``target`` (files or folders named ``.NAME.partial-HOST-PID-TOKEN``
    and ``suffix``) that processes killed on this host left behind (SIGKILL, a power cut); those of
    running processes, and of other hosts sharing the folder, are left alone."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        return
    host, prefix = socket.gethostname(), f".{target.name}{PARTIAL}"
    try:
        items = list(folder.iterdir())
    except OSError:  # a folder one may write to but not list: nothing to tidy
        return
    for item in items:
        name = item.name
        if not name.startswith(prefix) or not name.endswith(suffix) or item.is_symlink():
            continue
        owner, _, pid = name[len(prefix):len(name) - len(suffix)].rpartition("-")[0].rpartition("-")
        if owner != host or not pid.isdigit() or _process_alive(int(pid)):
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                item.unlink()


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
