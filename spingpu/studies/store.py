"""The results store of a study: one zarr group read as one xarray Dataset (DESIGN.md 7).

Variables have dims (sweep axes..., network[, epoch]) and are chunked one cell by
``networks_per_task`` networks, so every task writes its own chunks (region writes) and nothing is
rewritten. ``task_done`` (sweep axes..., task) marks the tasks whose numbers are in the store; a
task is marked only after its numbers are written, so a killed run loses at most the tasks in
flight. Attributes hold the study text, its digest, versions, backend and device.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..training.results import CELL_VARIABLES, VARIABLES

STORE_MARK = "spingpu_study_digest"


def task_count(study, networks_per_task):
    return math.ceil(study.networks / networks_per_task)


def create_store(path, study, networks_per_task, attrs):
    """Write the store's metadata (every value missing, no task done)."""
    import dask.array as da
    import xarray as xr

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
    data_vars["task_done"] = (dims + ["task"], da.zeros(study.shape + (task_count(study, networks_per_task),),
                                                        dtype=np.int8, chunks=cell_chunks + (1,)),
                              {"long_name": "1 once the task's networks are stored", "units": "1"})
    coords = {"network": ("network", np.arange(n), {"long_name": "network (chip) index", "units": "1"}),
              "epoch": ("epoch", np.arange(1, epochs + 1), {"long_name": "epoch", "units": "1"})}
    for axis in study.axes:
        values = np.array(axis.values) if axis.numeric else np.array([str(v) for v in axis.values])
        coords[axis.dim] = (axis.dim, values, {"units": axis.units, "long_name": axis.key, "sweep_key": axis.key})
    attrs = dict(attrs, **{STORE_MARK: study.digest, "networks_per_task": networks_per_task,
                           "study_name": study.name, "study_text": study.text,
                           "study_data": json.dumps(study.data, sort_keys=True),
                           "sweep_axes": json.dumps([a.dim for a in study.axes])})
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    ds.to_zarr(path, mode="w-", compute=False, consolidated=True, zarr_format=2)


def write_task(path, study, cell, lo, metrics):
    """Write one task's metrics (arrays (n_task[, epochs]) named as VARIABLES) into its chunks, and
    its cell's CELL_VARIABLES it holds (every task of a cell gives the same values)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    index = tuple(int(i) for i in study.cell_index(cell))
    hi = lo + len(metrics["test_acc"])
    epochs = group["train_loss"].shape[-1]  # the store's epoch axis (the study's longest training)
    for name, (vdims, _, _) in VARIABLES.items():
        value = np.asarray(metrics[name])
        if "epoch" in vdims and value.shape[1] < epochs:
            value = np.concatenate([value, np.full((value.shape[0], epochs - value.shape[1]), np.nan)], axis=1)
        group[name][index + (slice(lo, hi),)] = value
    for name in CELL_VARIABLES:
        if name in metrics and name in group:  # stores made before a variable existed lack it
            group[name][index] = float(metrics[name])


def mark_done(path, study, cell, task):
    """Mark a task stored (after :func:`write_task` returned)."""
    import zarr

    index = tuple(int(i) for i in study.cell_index(cell))
    zarr.open_array(str(Path(path) / "task_done"), mode="r+")[index + (task,)] = 1


def done_tasks(path):
    """Boolean array (cells flattened, tasks) of the tasks already stored."""
    import xarray as xr

    ds = xr.open_zarr(path)
    done = ds.task_done.values
    return done.reshape(-1, done.shape[-1]).astype(bool)


def check_existing(path, study, networks_per_task, resume, overwrite, backend=None):
    """Refuse to clobber or to mix studies (or engines); return True when resuming a store.
    ``networks_per_task`` or ``backend`` None: not checked."""
    import zarr

    path = Path(path)
    if not path.exists():
        if resume:
            raise ConfigError("resume", f"no store at {path} to resume")
        return False
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:
        attrs = {}
    if STORE_MARK not in attrs:
        raise ConfigError("out", f"{path} exists and is not a spingpu results store; choose another --out")
    if overwrite:
        shutil.rmtree(path)
        return False
    if not resume:
        raise ConfigError("out", f"{path} exists; pass --resume to complete it or --overwrite to replace it")
    if attrs[STORE_MARK] != study.digest:
        raise ConfigError("resume", f"{path} holds the results of a different study (or of a changed study file); "
                                    "use another --out or --overwrite")
    if networks_per_task is not None and attrs.get("networks_per_task") != networks_per_task:
        raise ConfigError("networks-per-task", f"{networks_per_task} differs from the store's "
                                               f"{attrs.get('networks_per_task')}; resume with the same value")
    if backend is not None and attrs.get("backend") != backend:
        raise ConfigError("backend", f"{backend!r} differs from the store's {attrs.get('backend')!r}; "
                                     "resume with the same backend")
    return True


def update_attrs(path, **attrs):
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(path))


def open_results(path):
    """The results of a study as one xarray Dataset (lazily loaded from the zarr store)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ConfigError("results", f"no results store at {path}")
    return xr.open_zarr(path)
