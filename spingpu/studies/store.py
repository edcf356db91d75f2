"""The results store of a study: one zarr group read as one xarray Dataset (DESIGN.md 7).

Variables have dims (sweep axes..., network[, epoch]) and are chunked one cell by
``networks_per_task`` networks, so every task writes its own chunks (region writes) and nothing is
rewritten. ``task_done`` (sweep axes..., task) marks the tasks whose numbers are in the store; a
task is marked only after its numbers are written, so a killed run loses at most the tasks in
flight. Attributes hold the study text, its digest, versions, backend and device.

A store is created whole: it is written under a hidden temporary name beside ``path``
(``.NAME.partial-HOST-PID-TOKEN``, never a valid ``--out``) and renamed into place, so a store at
``path`` always has all its arrays and metadata. A killed creation leaves only such a temporary
folder, which the next creation in that folder removes (when its process is gone).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import secrets
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SpingpuWarning, _short, count_text, did_you_mean, os_error_reason
from ..signals import deferred_interrupts
from ..outputs import PARTIAL, partial_owner, remove_stale_partials
from ..training.results import CELL_VARIABLES, ENGINE_ATTRS, VARIABLES

STORE_MARK = "spingpu_study_digest"
# The numbering of results: raised whenever a study's numbers change with spingpu itself while
# __version__ does not (a store records it; one of another scheme is not resumed, which would mix
# both in one store). 1 (2026-12-01): a macrospin junction's grid points share one thermal field,
# spaced sweep values rounded to 15 digits, splits rounded exactly; 2 (2026-12-02): the axes of
# model.name and dataset.name are named model and dataset (were: name); 0: stores made before.
RESULTS_SCHEME = 2


def task_count(study, networks_per_task):
    return math.ceil(study.networks / networks_per_task)


def create_store(path, study, networks_per_task, attrs):
    """Write the store's metadata (every value missing, no task done) at ``path``, which must not
    exist: built under a temporary name in the same folder and renamed into place, so that an
    interrupted creation never leaves a store at ``path``. A Ctrl-C or SIGTERM meanwhile acts once
    the store is in place, or its temporary removed (zarr writes from a thread of its own, which
    went on writing into the temporary as it was being removed)."""
    path = Path(path)
    remove_stale_partials(path)  # folders of creations killed on this host
    with deferred_interrupts():
        tmp = _partial_name(path)
        try:
            _store_dataset(study, networks_per_task, attrs).to_zarr(tmp, mode="w-", compute=False,
                                                                    consolidated=True, zarr_format=2)
            _move_into_place(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _partial_name(path):
    """A temporary name beside ``path`` that :func:`~spingpu.outputs.remove_stale_partials` removes
    once its process has died."""
    return path.with_name(f".{path.name}{PARTIAL}{partial_owner()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def run_lock(path):
    """Hold the store ``path`` for one run, from its checks to its last write: an exclusive
    ``flock`` on a file ``.NAME.lock`` beside it (the store's real path, links followed), which
    says the holder's host and pid, removed at the end. The kernel drops a lock whose process died
    (a SIGKILL too), so a killed run's lock file is simply taken. ConfigError naming ``out`` where
    another run holds it: two runs writing one store would train its tasks twice, or one would
    replace the store under the other."""
    path = Path(path)
    lock = _lock_file(path)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:  # a folder where the lock cannot be made: the store could not be written either
            raise ConfigError("out", f"cannot write beside {path}: {err.strerror or err}") from None
        if not _lock_exclusive(fd):
            owner = _owner(fd)
            os.close(fd)
            raise ConfigError("out", f"{path} is being written by another run ({owner}); wait for it to end") from None
        try:  # the file locked is still the one at that name (not one a finishing run has just removed)
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        except OSError as err:  # a full disk
            raise ConfigError("out", f"cannot write beside {path}: {os_error_reason(err)}") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still held: a run waiting on this file sees it gone and makes its own
        os.close(fd)


LOCK_PROBE_SECONDS = 0.5  # how long a run tries for its store's lock before it is refused


def _lock_exclusive(fd, seconds=LOCK_PROBE_SECONDS):
    """Take an exclusive flock on ``fd``, trying for ``seconds``: a :func:`store_writer` probe (a
    report of the store) holds a shared one for an instant. False where another holds it longer."""
    import fcntl
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _lock_file(path):
    """The lock file of :func:`run_lock` for the store ``path``."""
    real = Path(path).resolve()
    return real.parent / f".{real.name}.lock"


def _owner(fd):
    """Who holds the lock file open at ``fd``, as it says: ``process PID on HOST``."""
    owner = os.read(fd, 200).decode(errors="replace").strip()
    host, _, pid = owner.rpartition(" ")
    return f"process {pid} on {host}" if pid.isdigit() and host else "another run"


def store_writer(path):
    """``process PID on HOST`` where a run holds the store ``path`` (:func:`run_lock`) now, else None."""
    import fcntl

    try:
        fd = os.open(_lock_file(path), os.O_RDONLY)
    except OSError:  # no lock file: no run
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _owner(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _move_into_place(tmp, path):
    """Rename the finished store ``tmp`` to ``path``; ConfigError where something is at ``path``
    (a rename would replace an empty folder there)."""
    if os.path.lexists(path):
        raise ConfigError("out", f"{path} appeared while the store was being created; not replaced: choose "
                                 "another --out, or remove it and rerun")
    try:
        os.rename(tmp, path)
    except OSError as err:  # a folder made at path meanwhile
        raise ConfigError("out", f"{path} cannot be created: {err.strerror or err}") from None


def _json_value(value):
    """A NumPy value (a scalar or an array) as JSON takes it; anything else as text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _store_dataset(study, networks_per_task, attrs):
    """The store's lazy xarray Dataset: dask arrays of missing values, no task done."""
    import dask.array as da
    import xarray as xr

    from ..devices.models import closed_form_signatures

    dims = [a.dim for a in study.axes]
    cell_chunks = (1,) * len(dims)
    n, epochs = study.networks, study.max_epochs
    data_vars = {}
    for name, (vdims, units, long_name) in VARIABLES.items():
        extent = (n, epochs)[:len(vdims)]
        chunks = (networks_per_task, epochs)[:len(vdims)]
        dtype, fill = (bool, False) if name == "diverged" else (np.float64, np.nan)
        data_vars[name] = (dims + list(vdims), da.full(study.shape + extent, fill, dtype=dtype,
                                                          chunks=cell_chunks + chunks),
                           {"units": units, "long_name": long_name})
    for name, (units, long_name) in CELL_VARIABLES.items():
        data_vars[name] = (dims, da.full(study.shape, np.nan, chunks=cell_chunks),
                           {"units": units, "long_name": long_name})
    data_vars["engine"] = (dims, da.zeros(study.shape, dtype=np.int8, chunks=cell_chunks), dict(ENGINE_ATTRS))
    data_vars["task_done"] = (dims + ["task"], da.zeros(study.shape + (task_count(study, networks_per_task),),
                                                        dtype=np.int8, chunks=cell_chunks + (1,)),
                              {"long_name": "1 once the task's networks are stored", "units": "1"})
    coords = {"network": ("network", np.arange(n), {"long_name": "network (chip) index", "units": "1"}),
              "epoch": ("epoch", np.arange(1, epochs + 1), {"long_name": "epoch", "units": "1"})}
    for axis in study.axes:
        coords[axis.dim] = (axis.dim, axis.coordinate,
                            {"units": axis.units, "long_name": axis.long_name or axis.key,
                             "sweep_key": axis.key})
    attrs = dict(attrs, **{STORE_MARK: study.digest, "results_scheme": RESULTS_SCHEME,
                           "networks_per_task": networks_per_task, "study_name": study.name, "study_text": study.text,
                           "input_files": json.dumps([list(item) for item in study.inputs]),
                           "study_data": json.dumps(study.data, sort_keys=True),
                           "sweep_axes": json.dumps([a.dim for a in study.axes]),
                           "device_models": json.dumps(study.device_models(), sort_keys=True, default=_json_value),
                           "model_signatures": json.dumps(closed_form_signatures(study.model_names))})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# per-network variables added since the first stores: a store made before lacks them (its
# completed tasks cannot be given them), and is resumed without them
ADDED_VARIABLES = ("extrapolated_readings",)


def write_task(path, study, cell, lo, metrics):
    """Write one task's metrics (arrays (n_task[, epochs]) named as VARIABLES) into its chunks, and
    its cell's CELL_VARIABLES it holds and its ``engine`` code (every task of a cell gives the same
    values)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    index = tuple(int(i) for i in study.cell_index(cell))
    hi = lo + len(metrics["test_acc"])
    epochs = group["train_loss"].shape[-1]  # the store's epoch axis (the study's longest training)
    for name, (vdims, _, _) in VARIABLES.items():
        if name in ADDED_VARIABLES and name not in group:  # a store made before the variable existed
            continue
        value = np.asarray(metrics[name])
        if "epoch" in vdims and value.shape[1] < epochs:
            value = np.concatenate([value, np.full((value.shape[0], epochs - value.shape[1]), np.nan)], axis=1)
        group[name][index + (slice(lo, hi),)] = value
    for name in CELL_VARIABLES:
        if name in metrics and name in group:  # stores made before a variable existed lack it
            group[name][index] = float(metrics[name])
    if "engine" in metrics and "engine" in group:
        group["engine"][index] = int(metrics["engine"])


def mark_done(path, study, cell, task):
    """Mark a task stored (after :func:`write_task` returned)."""
    import zarr

    index = tuple(int(i) for i in study.cell_index(cell))
    zarr.open_array(str(Path(path) / "task_done"), mode="r+")[index + (task,)] = 1


def done_tasks(path):
    """Boolean array (cells flattened, tasks) of the tasks already stored; a task marked done whose
    numbers the store lost (:func:`lost_tasks`) is not, with a warning: resuming trains it again.
    (A resuming run sets aside chunks that cannot be decoded first: :func:`damaged_chunks`.)"""
    import xarray as xr

    try:
        ds = xr.open_zarr(path)
        done = ds.task_done.transpose(..., "task").values.astype(bool)
        lost = lost_tasks(ds)
    except OSError as err:  # permissions, a network filesystem: the store may be fine
        raise ConfigError("out", f"{path} cannot be read ({type(err).__name__}: {_first_line(err)})") from None
    except Exception as err:  # a chunk that cannot be decoded (a resuming run sets them aside first)
        raise ConfigError("out", f"{path} is corrupt: its data cannot be read ({type(err).__name__}: "
                                 f"{_first_line(err)}{_damaged_chunk_text(path)}); replace it with --overwrite or "
                                 "choose another --out") from None
    if lost.any():
        warnings.warn(f"{path}: {int(lost.sum())} of the tasks marked done have lost their numbers (a damaged "
                      "store: a chunk deleted?); they are trained again", SpingpuWarning, stacklevel=2)
    return (done & ~lost).reshape(-1, done.shape[-1])


# a network that did not diverge has these, the per-epoch ones at its first epoch, always finite
# (not extrapolated_readings, NaN in a digital baseline's cells, nor the derivative metrics)
ALWAYS_FINITE = ("test_acc", "train_loss", "train_acc", "val_acc")


def lost_tasks(ds):
    """Boolean array (sweep axes..., task) of the tasks marked done in which a network that did
    not diverge lacks a number it always has (:data:`ALWAYS_FINITE`; the per-epoch ones at epoch
    1): numbers the store lost (a chunk deleted or emptied reads as its fill value, NaN). Each task
    is one chunk of each variable, so a chunk lost from any of them is found."""
    import dask.array as da

    npt = int(ds.attrs["networks_per_task"])
    done = ds.task_done.transpose(..., "task").values.astype(bool)
    missing = None
    for name in ALWAYS_FINITE:
        if name in ds:
            nan = (ds[name].isel(epoch=0) if "epoch" in ds[name].dims else ds[name]).isnull()
            missing = nan if missing is None else missing | nan
    missing = missing & ~ds.diverged.astype(bool)
    # a task's chunk at a time (dask): the whole store's values need not fit in memory
    flags = da.asarray(missing.transpose(..., "network").data).rechunk({-1: npt})
    per_task = flags.map_blocks(lambda block: block.any(axis=-1, keepdims=True), dtype=bool,
                                chunks=flags.chunks[:-1] + ((1,) * len(flags.chunks[-1]),))
    return done & per_task.compute(scheduler="threads")  # here, whatever Dask client a caller has open


DAMAGED_CHUNK_SEARCH_SECONDS = 30.0  # reading a store's chunks one by one to name the one that fails


def damaged_chunk(path, seconds=DAMAGED_CHUNK_SEARCH_SECONDS):
    """The file (``VARIABLE/KEY`` in the store at ``path``) of the first chunk that cannot be
    decoded, its variables and chunks read one at a time in sorted order for at most ``seconds``;
    None where none is found (or the store cannot be opened as zarr)."""
    import time

    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        name, index = next(_undecodable_chunks(group, time.monotonic() + seconds))
    except Exception:  # StopIteration: none found in time
        return None
    return f"{name}/{group[name].metadata.encode_chunk_key(index)}"


CELL_WRITTEN = (*CELL_VARIABLES, "engine")  # a cell's arrays, which each of its tasks writes whole
SCAN_BYTES = 1 << 26  # the most of a store read at once in looking for chunks that cannot be decoded
DAMAGED_SUFFIX = ".damaged"  # a chunk file set aside: zarr reads its chunk as never written


def damaged_chunks(path):
    """{chunk file: index (sweep indices..., task) of the task that writes it anew} of the chunks
    of the store at ``path`` that cannot be decoded, read only. A task's numbers (``VARIABLES``,
    chunked a cell by a task of networks) are written whole by that task; a cell's
    (``CELL_VARIABLES``, ``engine``) by every task of the cell, the first named. A chunk that no
    task writes (``task_done``, a coordinate) is a ConfigError naming it (``--overwrite`` mends
    that); a read that fails (OSError: a network filesystem's fault, the store may be fine) too."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        damaged = list(_undecodable_chunks(group))
    except OSError as err:
        raise ConfigError("out", f"{path} cannot be read ({type(err).__name__}: {_first_line(err)})") from None
    mended = {}
    for name, index in damaged:
        file = Path(path) / name / group[name].metadata.encode_chunk_key(index)
        if name in VARIABLES:
            mended[file] = index[:group["task_done"].ndim]  # (cell indices..., task[, epoch chunk 0])
        elif name in CELL_WRITTEN:
            mended[file] = index + (0,)
        else:
            raise ConfigError("out", f"{path} is corrupt: the chunk file {file} cannot be decoded, and no task "
                                     "writes it anew; replace the store with --overwrite or choose another --out")
    return mended


def set_aside_damaged_chunks(path, damaged):
    """Mark the tasks of ``damaged`` (:func:`damaged_chunks`) not done and rename each file
    ``KEY.damaged`` (``KEY.damaged.2``, ... where taken: kept, never replaced, for a later
    spingpu or zarr that may read it), with a warning naming them; the run then trains the tasks
    again, which write their chunks whole."""
    import zarr

    if not damaged:
        return
    done = zarr.open_array(str(Path(path) / "task_done"), mode="r+")
    tasks = sorted(set(damaged.values()))
    with deferred_interrupts():  # the marks and the files set aside together
        for index in tasks:
            done[index] = 0
        for file in damaged:
            aside = file.with_name(file.name + DAMAGED_SUFFIX)
            for k in itertools.count(2):
                if not os.path.lexists(aside):
                    break
                aside = file.with_name(f"{file.name}{DAMAGED_SUFFIX}.{k}")
            os.rename(file, aside)
    files = list(map(str, damaged))
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    warnings.warn(f"{path}: {count_text(len(files), 'chunk file')} cannot be decoded ({shown}): set aside as "
                  f"*{DAMAGED_SUFFIX}; {count_text(len(tasks), 'task')} to train to write "
                  f"{'it' if len(files) == 1 else 'them'} anew", SpingpuWarning, stacklevel=2)


def _undecodable_chunks(group, deadline=None):
    """(array name, chunk index) of each chunk of the zarr ``group`` that cannot be decoded, its
    arrays in sorted order (until ``deadline``, time.monotonic()), read in slabs of whole chunks
    of at most SCAN_BYTES (zarr reads a slab's chunks concurrently), a slab that fails again a
    chunk at a time to find which. An OSError (a read that failed, not a chunk that cannot be
    decoded) is raised."""
    import time

    def read(selection):
        try:
            array.blocks[selection]
            return True
        except OSError:
            raise
        except Exception:
            return False

    for name, array in sorted(group.arrays()):
        grid = array.cdata_shape
        # the trailing dims whose whole chunk rows fit a slab; the leading ones a chunk at a time
        lead, size = len(grid), array.dtype.itemsize * math.prod(array.chunks)
        while lead > 0 and size * grid[lead - 1] <= SCAN_BYTES:
            lead, size = lead - 1, size * grid[lead - 1]
        for head in itertools.product(*map(range, grid[:lead])):
            if deadline is not None and time.monotonic() > deadline:
                return
            if read(head + (slice(None),) * (len(grid) - lead)):
                continue
            for tail in itertools.product(*map(range, grid[lead:])):
                if deadline is not None and time.monotonic() > deadline:
                    return
                if not read(head + tail):
                    yield name, head + tail


def _damaged_chunk_text(path, resumable=False):
    """``; the chunk file STORE/VARIABLE/KEY cannot be decoded`` (:func:`damaged_chunk`), or "";
    with ``resumable``, where it is a task's, that ``spingpu run --resume`` trains the task again."""
    chunk = damaged_chunk(path)
    if not chunk:
        return ""
    again = "; spingpu run STUDY --out STORE --resume trains its task again" \
        if resumable and chunk.split("/")[0] in (*VARIABLES, *CELL_WRITTEN) else ""
    return f"; the chunk file {Path(path) / chunk} cannot be decoded{again}"


def check_existing(path, study, networks_per_task, resume, overwrite, backend=None):
    """Refuse to clobber or to mix studies, spingpu versions or engines; return True when resuming
    a store. Nothing is removed here: with ``overwrite`` the caller replaces the store with
    :func:`remove_store` once the run can start (an incomplete store too: see :func:`incomplete`).
    ``networks_per_task`` or ``backend`` None: not checked."""
    from .. import __version__

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        if resume:
            raise ConfigError("resume", f"no store at {path} to resume")
        return False
    attrs = store_attrs(path)
    if STORE_MARK not in attrs:
        raise ConfigError("out", f"{path} exists and is not a spingpu results store; choose another --out")
    if overwrite:
        if path.is_symlink():
            raise ConfigError("out", f"{path} is a symbolic link; --overwrite does not delete through a link: "
                                     "remove the link or choose another --out")
        return False
    missing = incomplete(path)
    if missing:
        raise ConfigError("out", f"{path} is an incomplete spingpu results store ({missing}: its creation was "
                                 "interrupted, or it was damaged); replace it with --overwrite or choose another --out")
    if not resume and attrs[STORE_MARK] in study.digests:
        raise ConfigError("out", f"{path} exists; pass --resume to complete it or --overwrite to replace it")
    if not resume:  # --resume would be refused: say so now, and why
        changed = _changed_inputs(attrs, study)
        if changed:
            raise ConfigError("out", f"{path} exists and was made from other contents of {changed}; choose another "
                                     "--out, or --overwrite to replace it")
        change = _changed_setting(attrs, study)
        raise ConfigError("out", f"{path} exists and holds the results of another study (or of a changed study "
                                 f"file{': ' + change if change else ''}); choose another --out, or --overwrite to "
                                 "replace it")
    if attrs[STORE_MARK] not in study.digests:
        changed = _changed_inputs(attrs, study)
        if changed:
            raise ConfigError("resume", f"{path} was made from other contents of {changed}: the input data changed "
                                        "since, and resuming would mix results of both; use another --out or "
                                        "--overwrite")
        if study.inputs and "input_files" not in attrs:
            raise ConfigError("resume", f"{path} was written before spingpu recorded the contents of a study's data "
                                        "files, so it cannot be checked against them; rerun it with --overwrite "
                                        "or use another --out")
        change = _changed_setting(attrs, study)
        raise ConfigError("resume", f"{path} holds the results of a different study (or of a changed study file"
                                    f"{': ' + change if change else ''}); use another --out or --overwrite")
    if attrs.get("spingpu_version") != __version__:
        raise ConfigError("resume", f"{path} was written by spingpu {attrs.get('spingpu_version')}, this is spingpu "
                                    f"{__version__}: numbers may differ between versions; resume with spingpu "
                                    f"{attrs.get('spingpu_version')}, or use another --out or --overwrite")
    scheme = attrs.get("results_scheme", 0)
    # scheme 2 renamed the axes of model.name and dataset.name only: a scheme-1 store without them is resumed
    renamed = attrs.get("sweep_axes") != json.dumps([a.dim for a in study.axes])
    if scheme != RESULTS_SCHEME and (scheme != 1 or renamed):
        raise ConfigError("resume", f"{path} was written by a spingpu whose results differ from this one's (results "
                                    f"scheme {scheme}, this is {RESULTS_SCHEME}: macrospin junctions at T > 0 and "
                                    "spaced sweep values changed on 2026-12-01, the model.name and dataset.name "
                                    "axes were renamed model and dataset on 2026-12-02); resuming would mix both; "
                                    "use another --out or --overwrite")
    mismatch = _sweep_mismatch(path, study)
    if mismatch:
        raise ConfigError("resume", f"{path} {mismatch}")
    changed = _changed_model(attrs)
    if changed:
        raise ConfigError("resume", f"{path} was trained with another {changed}; resuming would mix both: register the "
                                    "model as it was, or use another --out or --overwrite")
    if networks_per_task is not None and attrs.get("networks_per_task") != networks_per_task:
        raise ConfigError("networks-per-task", f"{networks_per_task} differs from the store's "
                                               f"{attrs.get('networks_per_task')}; resume with the same value")
    if backend is not None and attrs.get("backend") != backend:
        raise ConfigError("backend", f"{backend!r} differs from the store's {attrs.get('backend')!r}; "
                                     "resume with the same backend")
    return True


def _changed_model(attrs):
    """``model 'x' than the one here now: its V at ... differs (...)`` where a closed-form model
    the store recorded (:func:`~spingpu.devices.models.closed_form_signatures`) is not the one this
    process's registry makes of its name (a model registered in Python edited, or registered only
    in one of the runs, over a built-in of its name), else None. A store made before spingpu
    recorded them is not checked."""
    from ..devices.models import signature_difference

    try:
        recorded = json.loads(attrs.get("model_signatures", "{}"))
    except (TypeError, ValueError):
        return None
    for name, signature in recorded.items() if isinstance(recorded, dict) else ():
        difference = signature_difference(signature, name) if isinstance(signature, dict) else None
        if difference:
            return f"model {name!r} than the one here now: {difference}"
    return None


def _sweep_mismatch(path, study):
    """Why the store at ``path`` cannot take ``study``'s cells though its digest matches, or None.
    The digest reads the tables with sorted keys, so a study file that lists its [sweep] keys in
    another order has the store's digest, but its cells are numbered in that other order (cell
    indices are flat, row-major over the sweep axes): resuming would store results in other cells.
    And a coordinate may differ from the study's values (a store written before spaced values were
    rounded: 9.999999999999999e-06 for 1e-05). A store whose coordinates cannot be read is left to
    :func:`done_tasks`, which says why."""
    import xarray as xr

    try:
        with xr.open_zarr(path) as ds:
            order = [d for d in ds.test_acc.dims if d not in ("network", "epoch")]
            stored = {axis.dim: ds[axis.dim].values if axis.dim in ds.coords else None for axis in study.axes}
    except Exception:
        return None
    dims = [axis.dim for axis in study.axes]
    if order != dims:
        return (f"has its sweep axes in the order ({', '.join(order)}) and the study in the order "
                f"({', '.join(dims)}): resuming would store results in other cells; list the study's [sweep] keys "
                "in the store's order, or use another --out or --overwrite")
    for axis in study.axes:
        values = axis.coordinate
        have = stored[axis.dim]
        if have is None or have.shape != values.shape or not np.array_equal(have, values):
            shown = "no such axis" if have is None else f"{have.tolist()}"
            return (f"holds {axis.dim} = {shown} where the study has {values.tolist()}: resuming would label its "
                    "results with the other values; use another --out or --overwrite")
    return None


def _setting_differences(attrs, study):
    """:func:`_differences` of the tables the store was made from and ``study``'s, less the
    description (not in the digest) and the data file paths (FILE_KEYS) that name files of the same
    contents (a study folder moved or copied), each with whether it is such a path naming other
    contents: [(key, stored, now, other_contents)]. None where the store's tables cannot be read."""
    from .spec import FILE_KEYS, _file_token

    try:
        stored = json.loads(attrs.get("study_data", "null"))
        stored_hashes = dict(map(tuple, json.loads(attrs.get("input_files", "[]"))))
    except (TypeError, ValueError):
        return None
    hashes, base = dict(study.inputs), Path(study.path).parent
    found = []
    for key, old, new in _differences(stored, _as_stored(study)):
        if key == "description":
            continue
        if key in FILE_KEYS and isinstance(old, str) and isinstance(new, str):
            old_token, new_token = _file_token(key, old, base, stored_hashes), _file_token(key, new, base, hashes)
            if old_token == new_token:
                continue  # the same contents elsewhere
            if "sha256:" in old_token and "sha256:" in new_token:
                found.append((key, old, new, True))
                continue
        found.append((key, old, new, False))
    return found


def _changed_setting(attrs, study):
    """'KEY = STORED in the store, NOW in the study' for the first setting (dotted key, in sorted
    order) in which the tables the store was made from differ from ``study``'s (a data file named
    elsewhere with the same contents is no difference), or None."""
    differences = _setting_differences(attrs, study)
    if not differences:
        return None
    key, old, new, _ = differences[0]
    shown = lambda value: "not set" if value is _ABSENT else json.dumps(value)  # noqa: E731
    return f"{key} = {shown(old)} in the store, {shown(new)} in the study"


_ABSENT = object()


def _as_stored(study):
    """``study``'s tables as a store's ``study_data`` attribute reads back (JSON, sorted keys)."""
    return json.loads(json.dumps(study.data, sort_keys=True))


def _differences(old, new, prefix=""):
    """[(dotted key, old value, new value)] where two parsed study tables differ, in key order (a
    table only one side has is compared key by key with an empty one)."""
    if isinstance(old, dict) or isinstance(new, dict):
        old, new = ({} if old is _ABSENT else old), ({} if new is _ABSENT else new)
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}.{key}" if prefix else key)
        return found
    return [] if old == new else [(prefix, old, new)]


def _changed_inputs(attrs, study):
    """The first data file (path) the store and ``study`` both read whose contents differ (at the
    same path, or named by the same key from a folder moved or copied), or None."""
    differences = _setting_differences(attrs, study)
    if differences is None:
        return None
    if differences:
        if all(other for *_, other in differences):  # only data files moved, and their contents changed
            return differences[0][2]
        return None  # the study itself changed
    stored = dict(map(tuple, json.loads(attrs.get("input_files", "[]"))))
    return next((p for p, h in study.inputs if p in stored and stored[p] != h), None)


def incomplete(path):
    """What the store at ``path`` lacks, or None where it is whole: its consolidated metadata (written
    last) and the metadata of every variable and of ``task_done``. (Chunks are not checked: a chunk
    never written reads as missing values, which a new store is.)"""
    path = Path(path)
    try:
        listed = json.loads((path / ".zmetadata").read_text())["metadata"]
    except FileNotFoundError:
        return "no consolidated metadata"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable consolidated metadata"
    if not all((path / f).is_file() for f in (".zgroup", ".zattrs")):
        return "no group metadata"
    if _json_object(path / ".zattrs") is None:
        return "unreadable group metadata"
    names = [*(n for n in VARIABLES if n not in ADDED_VARIABLES), "task_done"]
    missing = [n for n in names if not all(f"{n}/{f}" in listed and (path / n / f).is_file()
                                           for f in (".zarray", ".zattrs"))]
    return f"missing {', '.join(missing)}" if missing else None


def store_attrs(path):
    """The attributes of the zarr group at ``path`` ({} where it is not one). Where the group cannot
    be opened (an incomplete or damaged store), its ``.zattrs`` file is read as it is, and where that
    is there but cannot be read (in a zarr group: ``.zgroup``), the copy of it in the consolidated
    metadata."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a zarr group (or not readable): perhaps its attributes are there
        pass
    folder = Path(path)
    attrs = _json_object(folder / ".zattrs")
    if attrs is None and (folder / ".zgroup").is_file() and (folder / ".zattrs").is_file():  # garbled
        consolidated = (_json_object(folder / ".zmetadata") or {}).get("metadata")
        attrs = consolidated.get(".zattrs") if isinstance(consolidated, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _json_object(file):
    """The JSON object (dict) in ``file``, or None where it cannot be read as one."""
    try:
        value = json.loads(Path(file).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def remove_store(path):
    """Delete the spingpu store at ``path`` (checked by :func:`check_existing`), never through a link:
    renamed to a temporary name first, then deleted."""
    path = Path(path)
    if path.is_symlink() or STORE_MARK not in store_attrs(path):
        raise ConfigError("out", f"{path} is not a spingpu results store; not removed")
    doomed = _partial_name(path)
    path.rename(doomed)  # at once: a stop during the deletion leaves no half store at path
    try:  # what a stop leaves, the next creation's remove_stale_partials removes
        shutil.rmtree(doomed)
    except OSError as err:
        warnings.warn(f"the replaced store, moved to {doomed}, could not be deleted ({os_error_reason(err)}); "
                      "delete it by hand", SpingpuWarning, stacklevel=2)


def update_attrs(path, **attrs):
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(path))


def open_results(path):
    """The results of a study as one xarray Dataset (lazily loaded from the zarr store); ConfigError
    where ``path`` is not a spingpu results store or its metadata cannot be read."""
    import xarray as xr

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError("results", f"expected the path of a results store, got {path!r}")
    path = Path(path)
    if not path.exists():
        raise ConfigError("results", f"no results store at {path}")
    if not path.is_dir():
        netcdf = (" (a netCDF file, as spingpu train --out writes: open it with xarray.open_dataset; a study's "
                  "results are a .zarr folder)") if path.suffix.lower() == ".nc" else " (a file, not a zarr folder)"
        raise ConfigError("results", f"{path} is not a spingpu results store{netcdf}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no consolidated metadata, or not a store at all: said below
            ds = xr.open_zarr(path)
    except Exception as err:
        if not any((path / name).exists() for name in (".zgroup", ".zmetadata", "zarr.json")):
            raise ConfigError("results", f"{path} is not a spingpu results store (no zarr metadata)") from None
        raise ConfigError("results", f"{path} is corrupt: its metadata cannot be read "
                                     f"({type(err).__name__}: {_first_line(err)})") from None
    if STORE_MARK not in ds.attrs or "test_acc" not in ds or "task_done" not in ds:
        ds.close()
        raise ConfigError("results", f"{path} is not a spingpu results store")
    return ds


# every data variable a store holds (one made by an earlier spingpu may lack some)
STORE_VARIABLES = (*VARIABLES, *CELL_WRITTEN, "task_done")


def load_results(path, variables=None, last_epoch=()):
    """:func:`open_results` (only ``variables``, those named in ``last_epoch`` and task_done, where
    ``variables`` is given; of the variables named in ``last_epoch``, only the value at each
    network's last trained epoch, without the epoch dim: :func:`last_epoch_values`) read into
    memory; ConfigError where a chunk cannot be read or
    tasks marked done lost their numbers (:func:`lost_tasks`). A name that no store holds is a
    ConfigError naming ``variables`` or ``last_epoch`` (one a store made before it lacks is left out)."""
    per_epoch = [name for name, (dims, *_) in VARIABLES.items() if "epoch" in dims]
    variables = variables if variables is None or isinstance(variables, str) else list(variables)
    last_epoch = last_epoch if isinstance(last_epoch, str) else list(last_epoch)  # an iterator is read once
    for field, names, known, kind in (("variables", variables, STORE_VARIABLES, "a variable"),
                                      ("last_epoch", last_epoch, per_epoch, "a per-epoch variable")):
        if names is None:
            continue
        if isinstance(names, str):
            raise ConfigError(field, f"expected a list of variable names, got the string {names!r} (write [{names!r}])")
        for name in names:
            if name not in known:
                hint = did_you_mean(name, known) if isinstance(name, str) else ""
                raise ConfigError(field, f"{_short(name)} is not {kind} of a results store{hint}; allowed: "
                                         f"{', '.join(known)}")
    ds = open_results(path)
    try:
        lost = lost_tasks(ds)
        loaded = in_memory(ds, variables, last_epoch)
    except Exception as err:
        raise ConfigError("results", f"{path} is corrupt: its data cannot be read "
                                     f"({type(err).__name__}: {_first_line(err)}{_damaged_chunk_text(path, True)})") from None
    finally:
        ds.close()
    if lost.any():
        raise ConfigError("results", f"{path} is damaged: {int(lost.sum())} of the tasks marked done have lost their "
                                     "numbers (a chunk deleted?); spingpu run STUDY.toml --out STORE --resume trains "
                                     "them again")
    return loaded


def in_memory(ds, variables=None, last_epoch=()):
    """``ds`` (with ``variables`` alone, and task_done, where given; of the variables named in
    ``last_epoch``, each network's value at its last trained epoch, :func:`last_epoch_values`) read
    into memory, once: a figure or summary of a store opened lazily (:func:`open_results`) would
    otherwise read it and run its dask graph, a task per chunk, for every array it takes."""
    wanted = None if variables is None else set(variables) | set(last_epoch) | {"task_done"}
    sub = ds if wanted is None else ds[[v for v in ds.data_vars if v in wanted]]
    for name in last_epoch:
        if name in sub and "epoch" in sub[name].dims:
            sub = sub.assign({name: last_epoch_values(ds, name)})
    return sub.compute()  # a new dataset: the caller's ``ds`` stays as lazy as it was


def is_lazy(ds):
    """Whether any variable of ``ds`` is still to be read (dask arrays: :func:`open_results`)."""
    return any(var.chunks is not None for var in ds.data_vars.values())


def last_epoch_values(ds, name):
    """``ds[name]`` at each network's last trained epoch, without the epoch dim (as it is where it
    has none). A cell that trains fewer epochs than the study's longest is padded with NaN in the
    store, so the last trained epoch is a network's last with a finite ``train_loss`` (the
    variable's own last finite value where ``ds`` lacks train_loss). A diverged network (its metrics
    are NaN from the epoch it diverged) and a network never trained give NaN, as at the last epoch."""
    import xarray as xr

    var = ds[name]
    if "epoch" not in var.dims:
        return var
    ref = ds["train_loss"] if "train_loss" in ds and "epoch" in ds["train_loss"].dims else var
    position = xr.DataArray(np.arange(1, ref.sizes["epoch"] + 1), dims="epoch")  # 1, 2, ... along epoch
    last = position.where(np.isfinite(ref), 0).max("epoch")  # 0: no trained epoch
    value = var.where((position == last) & (last > 0)).sum("epoch", min_count=1)
    if "diverged" in ds:
        value = value.where(~ds["diverged"].astype(bool))
    return value.drop_vars("epoch", errors="ignore")


def _first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "no message"


def finished_networks(ds):
    """Boolean DataArray (sweep axes..., network): True for the networks of finished tasks (by
    ``task_done``). Networks of tasks that never ran are not failures: leave them out of statistics."""
    import xarray as xr

    npt = int(ds.attrs["networks_per_task"])
    task = xr.DataArray(ds.network.values // npt, dims="network", coords={"network": ds.network})
    return ds.task_done.isel(task=task).astype(bool).drop_vars("task", errors="ignore")


def task_progress(ds):
    """(finished tasks, tasks) of a store."""
    done = np.asarray(ds.task_done.values)
    return int((done != 0).sum()), int(done.size)
