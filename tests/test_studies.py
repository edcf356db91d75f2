"""``spingpu run``: study files, the Dask runner and the zarr results store (DESIGN.md 7).

Every study here is tiny (iris, 3-4 hidden units, 2-5 epochs, a few networks per cell) and runs
on the ``numpy`` engine: the fused ``cpu`` engine compiles for ~20 s in every worker process.
Each Dask run still costs ~5-10 s on 2 cores (worker start-up, scikit-learn import, the device
model's compilation in each worker), so the runs are shared between tests by module fixtures, and
the runs of tests that are not about the cluster join one worker started for the module
(``shared_scheduler``). The slowest tests are marked ``# slow``.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import spingpu
from spingpu.cli.main import main
from spingpu.errors import ConfigError
from spingpu.studies import load_study
from spingpu.studies.store import STORE_MARK
from spingpu.training.results import ENGINES, VARIABLES
from studyutil import BASE, FAST, FakeFuture, FakeFutures, model_file, run_main, run_ok, store_every_task, write

CLI = [sys.executable, "-m", "spingpu.cli.main", "run"]

# A 2 x 2 sweep: a categorical axis and a numeric (linspace) axis; 3 networks per cell so that
# --networks-per-task 2 splits each cell unevenly (2 + 1).
DET = """\
name = "det"
description = "determinism: gradient mode x device-to-device spread"
networks = 3
seed = 7

[dataset]
name = "iris"

[network]
hidden = [3]

[training]
epochs = 3
lr = 0.05

[variability]
sigma_pair = 0.02

[readout]
read_noise = 1e-3

[sweep]
"training.grad_mode" = ["fd_forward", "model"]
"variability.sigma_d2d" = {linspace = [0.0, 0.2, 2]}
"""

# Enough tasks (2 cells x 12 networks, one network per task) to kill a run part-way: at one
# network per task the last task is stored ~2.5-3 s after the first, on one worker or two (at 5
# epochs ~1.5 s, a window a loaded machine could miss).
LONG = """\
name = "long"
networks = 12
seed = 3

[dataset]
name = "iris"

[network]
hidden = [4]

[training]
epochs = 40
lr = 0.05

[variability]
sigma_d2d = 0.1
sigma_pair = 0.02

[sweep]
"training.grad_mode" = ["fd_forward", "model"]
"""


def load(path):
    with xr.open_zarr(path) as ds:
        return ds.load()


def assert_same_numbers(path_a, path_b, skip=("task_done",)):
    """Every variable of two stores identical (NaN where NaN), same dims and coordinates."""
    a, b = load(path_a), load(path_b)
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name in skip:
            continue
        assert a[name].dims == b[name].dims, name
        for dim in a[name].dims:
            assert np.array_equal(a[dim].values, b[dim].values), (name, dim)
        assert np.array_equal(a[name].values, b[name].values, equal_nan=a[name].dtype.kind == "f"), name


def task_done(path):
    """The store's task_done flags read with zarr (cheap enough to poll), or None if not readable yet."""
    try:
        return np.asarray(zarr.open_group(str(path), mode="r")["task_done"][:])
    except Exception:  # the store is still being created
        return None


def snapshot(folder):
    """{relative path: (size, mtime, sha256)} of every file under ``folder``."""
    files = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            files[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns,
                                                    hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def train_cell(study, flat):
    """Cell ``flat`` of ``study`` trained in this process with spingpu.train (numpy engine)."""
    cell = study.cell(flat)
    kw = dict(cell.dataset)
    data = spingpu.load_dataset(kw.pop("name"), seed=study.seed, **kw)
    return spingpu.train(data, cell.config, n_networks=study.networks, model=cell.model, backend="numpy")


def cell_selection(study, flat):
    return {axis.dim: value for axis, value in zip(study.axes, study.cell_values(flat).values())}


@pytest.fixture(scope="module")
def shared_scheduler():
    """The address of a Dask scheduler with one worker process, for runs to join (--scheduler) where
    the cluster is not what a test is about: a run's own LocalCluster costs ~6 s of CPU (its worker
    processes' imports). The LocalCluster a run starts is tested by det's first run, the kills and
    stops and the sizing to the workers' memory."""
    import logging

    import dask
    from dask.distributed import LocalCluster

    # quiet between runs, as it lives as long as the module (idle, Dask's defaults take ~0.1 s of CPU
    # a second): no sampling of the worker's threads and the GIL, an event-loop tick of 1 s, not 20 ms;
    # no dashboard, its HTTP server on a free port (8787 may be another cluster's)
    with dask.config.set({"distributed.worker.profile.enabled": False,
                          "distributed.admin.system-monitor.gil.enabled": False,
                          "distributed.admin.tick.interval": "1s"}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL)
    yield cluster.scheduler_address
    cluster.close()


# --- one study run three ways: split and worker count do not change a single bit ------------------


@pytest.fixture(scope="module")
def det(tmp_path_factory, shared_scheduler):  # slow: three Dask runs
    """DET run with 1 network per task on a LocalCluster of 2 workers, then with 2 and all 3 per task
    on the module's scheduler (1 worker), the last into the default --out (from a working directory
    of its own)."""
    folder = tmp_path_factory.mktemp("det")
    study = write(folder / "det.toml", DET)
    runs = {"folder": folder, "study": study, "a": folder / "a.zarr", "b": folder / "b.zarr"}
    runs["out_a"] = run_ok(["run", str(study), "--out", str(runs["a"]), "--networks-per-task", "1",
                            "--workers", "2", *FAST])
    run_ok(["run", str(study), "--out", str(runs["b"]), "--networks-per-task", "2", "--scheduler", shared_scheduler,
            *FAST])
    cwd = folder / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        runs["out_c"] = run_ok(["run", str(study), "--networks-per-task", "3", "--scheduler", shared_scheduler,
                                *FAST])
    runs["cwd"], runs["c"] = cwd, cwd / "results" / "det.zarr"
    return runs


def test_same_numbers_for_any_networks_per_task_and_worker_count(det):
    assert_same_numbers(det["a"], det["b"])
    assert_same_numbers(det["a"], det["c"])
    for path, npt, tasks in ((det["a"], 1, 3), (det["b"], 2, 2), (det["c"], 3, 1)):
        ds = load(path)
        assert ds.attrs["networks_per_task"] == npt
        assert ds.task_done.dims == ("grad_mode", "sigma_d2d", "task")
        assert ds.task_done.shape == (2, 2, tasks) and (ds.task_done.values == 1).all()
    ds = load(det["a"])
    for name in VARIABLES:
        if ds[name].dtype.kind == "f":
            assert np.isfinite(ds[name].values).all(), name
    # The cells really differ, so a mixed-up cell could not go unnoticed.
    loss = ds.train_loss
    assert not np.array_equal(loss.sel(grad_mode="fd_forward").values, loss.sel(grad_mode="model").values)
    assert not np.array_equal(loss.sel(sigma_d2d=0.0).values, loss.sel(sigma_d2d=0.2).values)


def test_store_equals_spingpu_train_of_each_cell(det):
    study = load_study(det["study"])
    assert study.n_cells == 4 and study.networks == 3
    ds = load(det["a"])
    for flat in range(study.n_cells):
        sel = cell_selection(study, flat)
        config = study.cell(flat).config
        assert config.grad_mode == sel["grad_mode"] and config.variability.sigma_d2d == sel["sigma_d2d"]
        assert config.epochs == 3 and config.hidden == (3,) and config.seed == 7
        expected = train_cell(study, flat)
        got = ds.sel(sel)
        assert np.array_equal(expected.network.values, got.network.values)
        for name in VARIABLES:
            assert np.array_equal(got[name].values, expected[name].values,
                                  equal_nan=expected[name].dtype.kind == "f"), (sel, name)


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # train_cell of the copied cells
def test_cells_that_train_alike_are_trained_once_and_stored_as_what_training_gives(tmp_path, shared_scheduler):
    """model and tanh cells ignore delta_i: of the 6 cells, 2 repeat another's training and are
    stored as copies of it, equal bit for bit to spingpu.train of each cell on its own."""
    from spingpu.studies.spec import same_training

    path = write(tmp_path / "alike.toml", BASE + '\n[readout]\nread_noise = 1e-3\n\n[sweep]\n'
                                                  '"training.grad_mode" = ["model", "fd_forward", "tanh"]\n'
                                                  '"neuron.delta_i" = [1e-5, 3e-5]\n')
    study = load_study(path)
    assert same_training(study) == [0, 0, 2, 3, 4, 4]
    printed = run_ok(["run", str(path), "--out", str(tmp_path / "alike.zarr"), "--scheduler", shared_scheduler,
                      *FAST])
    assert "4 tasks to run, and 2 stored as copies of them" in printed
    ds = load(tmp_path / "alike.zarr")
    assert (ds.task_done.values == 1).all()
    for flat in range(study.n_cells):
        expected, got = train_cell(study, flat), ds.sel(cell_selection(study, flat))
        for name in VARIABLES:
            assert np.array_equal(got[name].values, expected[name].values,
                                  equal_nan=expected[name].dtype.kind == "f"), (flat, name)
    loss = ds.train_loss.sel(delta_i=1e-5)  # the cells that are trained differ
    assert not np.array_equal(loss.sel(grad_mode="model").values, loss.sel(grad_mode="fd_forward").values)


def test_a_copy_whose_original_is_stored_already_is_trained_itself(monkeypatch):
    """A run stopped between storing a task and its copies (which one deferred interrupt keeps
    together, so only a hard kill) leaves copies to make: the original is not run again, the
    copy's cell is trained on its own (the same numbers)."""
    from types import SimpleNamespace

    from spingpu.studies.runner import _plan

    monkeypatch.setattr("spingpu.studies.spec.same_training", lambda study: [0, 0, 2, 2])  # 1 as 0, 3 as 2
    done = np.array([[True, False], [False, False], [False, False], [True, True]])
    todo, copies = _plan(SimpleNamespace(n_cells=4), done)
    assert list(todo) == [(0, 1), (1, 0), (2, 0), (2, 1)]
    assert copies == {(0, 1): [1]}


def test_store_layout_units_attrs_and_open_results(det):
    text = det["study"].read_text()
    with xr.open_zarr(det["a"]) as ds:  # plain xarray, no spingpu involved
        assert dict(ds.sizes) == {"grad_mode": 2, "sigma_d2d": 2, "network": 3, "epoch": 3, "task": 3}
        for name, (dims, units, long_name) in VARIABLES.items():
            assert ds[name].dims == ("grad_mode", "sigma_d2d", *dims)
            assert ds[name].attrs["units"] == units and ds[name].attrs["long_name"] == long_name
        assert list(ds.grad_mode.values) == ["fd_forward", "model"]
        assert np.array_equal(ds.sigma_d2d.values, [0.0, 0.2])
        assert np.array_equal(ds.network.values, [0, 1, 2]) and np.array_equal(ds.epoch.values, [1, 2, 3])
        for dim, key, long_name in (("grad_mode", "training.grad_mode", "gradient mode"),
                                    ("sigma_d2d", "variability.sigma_d2d", "device-to-device spread")):
            assert ds[dim].attrs["units"] == "1" and ds[dim].attrs["long_name"] == long_name
            assert ds[dim].attrs["sweep_key"] == key
        assert ds.epoch.attrs["units"] == "1" and ds.epoch.attrs["long_name"]
        assert ds.network.attrs["long_name"]
        assert ds.attrs["study_text"] == text
        assert ds.attrs["spingpu_version"] == spingpu.__version__
        assert ds.attrs["backend"] == "numpy" and ds.attrs["device"]
        assert ds.attrs["study_name"] == "det"
        assert ds.attrs[STORE_MARK] == load_study(det["study"]).digest
        assert json.loads(ds.attrs["sweep_axes"]) == ["grad_mode", "sigma_d2d"]
        assert ds.teacher_test_acc.dims == ("grad_mode", "sigma_d2d")  # a cell variable: no teacher here
        assert np.isnan(ds.teacher_test_acc.values).all() and ds.teacher_test_acc.attrs["units"] == "1"
        assert ds.engine.dims == ("grad_mode", "sigma_d2d") and (ds.engine.values == ENGINES.index("numpy")).all()
        assert ds.engine.attrs["flag_meanings"].split() == list(ENGINES)
        assert list(ds.engine.attrs["flag_values"]) == list(range(len(ENGINES)))
        acc = ds.test_acc.values
    opened = spingpu.open_results(det["a"])
    assert isinstance(opened, xr.Dataset)
    assert np.array_equal(opened.test_acc.values, acc) and opened.train_loss.dims == ds.train_loss.dims
    with pytest.raises(ConfigError, match="no results store"):
        spingpu.open_results(det["folder"] / "nothing.zarr")


ROW = re.compile(r"^(?P<label>\S.*?)\s+(?P<q50>[\d.]+) % \[(?:\s*(?P<mlo>[\d.]+)-\s*(?P<mhi>[\d.]+)|(?P<mna>n/a))\]\s+"
                 r"(?P<q25>[\d.]+)-\s*(?P<q75>[\d.]+) %\s+"
                 r"(?P<yield>[\d.]+) % \[\s*(?P<ylo>[\d.]+)-\s*(?P<yhi>[\d.]+)\]\s+(?P<cos>-?[\d.]+|n/a)\s+(?P<n>\d+)"
                 r"\s+(?P<diverged>\d+)$")


def test_summary_table_one_row_per_cell_with_the_stores_medians(det):
    from spingpu.stats import percent_text, yield_interval

    lines = det["out_a"].splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("cell ") and "median" in line)
    end = next(k for k, line in enumerate(lines) if line.startswith("results: "))
    assert lines[end] == f"results: {det['a']}"
    rows = [ROW.match(line) for line in lines[head + 1:end]]
    assert len(rows) == 4 and all(rows), lines[head:end]
    ds = load(det["a"])
    seen = set()
    for row in rows:
        values = dict(part.split("=") for part in row["label"].split(", "))
        assert set(values) == {"grad_mode", "sigma_d2d"}
        seen.add((values["grad_mode"], float(values["sigma_d2d"])))
        acc = ds.test_acc.sel(grad_mode=values["grad_mode"], sigma_d2d=float(values["sigma_d2d"])).values
        assert row["q50"] == f"{100 * np.median(acc):.2f}"
        assert row["mna"] == "n/a" and row["mlo"] is None  # a median's interval needs 6 networks; these cells have 3
        q25, q75 = np.quantile(acc, [0.25, 0.75])
        assert (row["q25"], row["q75"]) == (f"{100 * q25:.2f}", f"{100 * q75:.2f}")
        assert row["yield"] == percent_text(np.mean(acc >= 0.9))
        lo, hi = yield_interval(int(np.sum(acc >= 0.9)), acc.size)
        assert (row["ylo"], row["yhi"]) == (percent_text(lo), percent_text(hi))
        assert int(row["n"]) == 3 and int(row["diverged"]) == 0
        cos = ds.grad_cosine.sel(grad_mode=values["grad_mode"], sigma_d2d=float(values["sigma_d2d"])).values[:, -1]
        assert row["cos"] == f"{np.median(cos):.3f}"  # the last epoch's (every network trained all epochs)
    assert seen == {(g, s) for g in ("fd_forward", "model") for s in (0.0, 0.2)}


def test_default_out_is_results_slash_study_name_in_the_working_directory(det):
    assert sorted(os.listdir(det["cwd"])) == ["results"]
    assert sorted(os.listdir(det["cwd"] / "results")) == ["det.zarr"]
    assert load(det["c"]).attrs["study_name"] == "det"
    assert f"results: {Path('results') / 'det.zarr'}" in det["out_c"]
    assert not (det["folder"] / "results").exists()


# --- kills: the driver (SIGKILL, then --resume) and a worker --------------------------------------


@pytest.fixture(scope="module")
def long_ref(tmp_path_factory, shared_scheduler):  # slow: one Dask run
    """LONG, uninterrupted, 12 networks per task on the module's scheduler."""
    folder = tmp_path_factory.mktemp("long")
    study = write(folder / "long.toml", LONG)
    ref = folder / "ref.zarr"
    run_ok(["run", str(study), "--out", str(ref), "--networks-per-task", "12", "--scheduler", shared_scheduler,
            *FAST])
    return study, ref


def wait_part_done(path, proc, timeout=240.0):
    """Poll the store until at least one but not every task is stored; return task_done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = task_done(path)
        if done is not None and 1 <= done.sum() < done.size:
            return done
        if done is not None and done.sum() == done.size:
            pytest.fail("every task finished before the run could be killed")
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no task stored within {timeout} s")


def session_processes(sid):
    """(pid, state, command) of every process in session ``sid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid:
            found.append((int(entry), fields[0], cmd.strip()))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_leaves_no_worker_behind_and_resume_gives_the_uninterrupted_numbers(long_ref, tmp_path,
                                                                                     shared_scheduler):  # slow
    study, ref = long_ref
    out = tmp_path / "killed.zarr"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen([*CLI, str(study), "--out", str(out), "--networks-per-task", "1", "--workers", "1",
                                 *FAST], stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        wait_part_done(out, proc)
        assert len(session_processes(proc.pid)) >= 2  # the driver and its Dask worker process
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # The LocalCluster's worker processes exit with the driver (distributed's worker processes
    # watch their parent; death_timeout is 30 s): wait up to 40 s for the session to empty.
    deadline = time.monotonic() + 40
    left = session_processes(proc.pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = session_processes(proc.pid)
    # Observed here: the worker processes exit within ~0.1 s of the kill and init reaps them
    # within ~1.5 s. Zombies are dead (only waiting for whatever reaps orphans), so they are allowed.
    alive = [p for p in left if p[1] != "Z"]
    assert not alive, f"processes of the killed run still alive after 40 s: {alive}"
    if not left:
        with pytest.raises(ProcessLookupError):  # nothing at all left in the killed run's process group
            os.killpg(proc.pid, 0)

    done = task_done(out)
    assert done.shape == (2, 12) and 1 <= done.sum() < done.size
    stored, reference = load(out), load(ref)
    for cell, task in zip(*np.nonzero(done)):  # what is marked done is final
        for name in VARIABLES:
            a = stored[name].isel(grad_mode=cell, network=task).values
            b = reference[name].isel(grad_mode=cell, network=task).values
            assert np.array_equal(a, b, equal_nan=True), (cell, task, name)

    printed = run_ok(["run", str(study), "--out", str(out), "--resume", "--networks-per-task", "1",
                      "--scheduler", shared_scheduler, *FAST])
    assert f"{done.size - done.sum()} tasks to run (resuming)" in printed
    assert (task_done(out) == 1).all()
    assert_same_numbers(out, ref)


def _stopped_midway(folder, out, workers, stop):
    """Run LONG at 1000 epochs, one network per task, and ``stop(proc)`` once a task is stored:
    (exit status, stderr lines other than the progress bar). A task then takes ~2 s, the run ~25 s,
    so that the stop arrives before the last task even on a loaded machine (at 5 epochs the run
    ended within ~1.5 s of its first task)."""
    study = write(folder / "stoppable.toml", LONG.replace("epochs = 40", "epochs = 1000"))
    proc = subprocess.Popen([*CLI, str(study), "--out", str(out), "--networks-per-task", "1", "--workers",
                             str(workers), *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_part_done(out, proc)
        stop(proc)
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return proc.returncode, [ln for ln in err.replace("\r", "\n").splitlines()
                             if ln.strip() and "networks" not in ln.split("|")[-1]]


def test_ctrl_c_stops_the_run_with_one_line_and_keeps_the_finished_tasks(tmp_path):
    """Ctrl-C reaches the whole foreground process group: the Dask workers ignore it (the driver
    stops the run and closes them), so the terminal gets one line, not a traceback per worker."""
    out = tmp_path / "interrupted.zarr"
    returncode, lines = _stopped_midway(tmp_path, out, 2, lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert returncode == 130, lines
    assert len(lines) == 1 and re.fullmatch(rf"spingpu run: interrupted; the finished tasks \((\d+) of (\d+)\) are kept in "
                                            rf"{re.escape(str(out))}: rerun with --resume to complete it", lines[0]), lines
    done = re.search(r"\((\d+) of (\d+)\)", lines[0])
    assert (int(done[1]), int(done[2])) == (task_done(out).sum(), task_done(out).size)
    assert 1 <= task_done(out).sum() < task_done(out).size
    from spingpu.studies.store import store_attrs

    assert store_attrs(out)["run_seconds"] > 0  # the interrupted session's time is kept for the report


def test_sigterm_stops_the_run_like_ctrl_c_and_leaves_no_temporary(tmp_path):
    """A batch system's time limit (SIGTERM to the driver) runs the Ctrl-C clean-up: one line, exit
    143, the finished tasks kept for --resume, the workers closed."""
    out = tmp_path / "terminated.zarr"
    returncode, lines = _stopped_midway(tmp_path, out, 1, lambda proc: proc.terminate())
    assert returncode == 143, lines
    assert len(lines) == 1 and re.fullmatch(rf"spingpu run: terminated; the finished tasks \((\d+) of (\d+)\) are kept in "
                                            rf"{re.escape(str(out))}: rerun with --resume to complete it", lines[0]), lines
    done = re.search(r"\((\d+) of (\d+)\)", lines[0])
    assert (int(done[1]), int(done[2])) == (task_done(out).sum(), task_done(out).size)
    assert 1 <= task_done(out).sum() < task_done(out).size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stoppable.toml", "terminated.zarr"]


class _StopSwallowedByAFinaliser:
    """An object whose __del__ receives SIGINT: the handler's KeyboardInterrupt is raised inside
    __del__, where Python can only report it as unraisable (spingpu.signals), and is lost there."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)
        sum(range(10))  # bytecodes after the signal: its handler runs here


class _QuietClient:
    """Stands in for the Dask client of run_study."""

    def scheduler_info(self):
        return {"workers": {}}

    def close(self):
        pass


class _FakeClient(_QuietClient):
    """A stand-in Dask client whose closing swallows a Ctrl-C in a finaliser."""

    def close(self):
        import gc

        _StopSwallowedByAFinaliser()
        gc.collect()


def _run_without_dask(monkeypatch, argv, drive, connect=lambda *args: (_FakeClient(), None)):
    """``spingpu`` in this process with run_study's cluster and task loop replaced, and Python's
    default SIGINT handler (a test runner's process may have its own): (status, stdout, stderr
    lines other than the progress bar)."""
    from spingpu.studies import runner

    monkeypatch.setattr(runner, "_connect", connect)
    monkeypatch.setattr(runner, "_drive", drive)
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc, stdout, err = run_main(argv)
    finally:
        signal.signal(signal.SIGINT, saved)
    return rc, stdout, [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "networks/s" not in ln]


def test_a_ctrl_c_lost_while_the_workers_close_still_stops_the_run_after_its_last_task(tmp_path, monkeypatch):
    """The cause of runs that exited 0 after Ctrl-C: its exception was swallowed in a finaliser
    while the cluster closed, after the task loop's last check. run_study raises it once the
    cluster is closed: exit 130, no summary or report, and the line says the store is complete."""
    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        store_every_task(options.out, study, npt)

    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                      "--networks-per-task", "1"], drive)
    assert rc == 130 and "results:" not in stdout, (stdout, err)
    assert err == [f"spingpu run: interrupted; every task is stored in {out} (spingpu report {out} makes its report)"]
    assert task_done(out).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "s.zarr"]  # no report


@pytest.mark.parametrize("extra, option", [(["--networks-per-task", "1"], ""),
                                           (["--threshold", "0.75"], " --threshold 0.75")])  # the run's, kept
def test_a_ctrl_c_while_the_report_is_made_says_the_store_is_complete(tmp_path, monkeypatch, extra, option):
    """Every task stored, then Ctrl-C while the summary is printed or the report written: exit 130
    and the line of a stop after the last task (every task is stored, how to make the report, with
    the run's --threshold where it is not the default)."""
    from spingpu.cli import run as cli_run

    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        store_every_task(options.out, study, npt)

    def report(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "_report", report)
    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                      *extra], drive, lambda *args: (_QuietClient(), None))
    assert rc == 130 and f"results: {out}" in stdout, (stdout, err)
    assert err == [f"spingpu run: interrupted; every task is stored in {out} (spingpu report {out}{option} makes its "
                   "report)"]
    assert task_done(out).all()
    from spingpu.studies.store import store_attrs

    assert store_attrs(out)["yield_threshold"] == (0.75 if option else 0.9)  # a later `spingpu report`'s default


def test_overwrite_removes_the_report_of_the_store_it_replaces_and_nothing_else(tmp_path, monkeypatch):
    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        store_every_task(options.out, study, npt)

    argv = ["run", str(study_file), "--out", str(out), "--backend", "numpy"]
    rc, stdout, err = _run_without_dask(monkeypatch, argv, drive, lambda *args: (_QuietClient(), None))
    assert rc == 0 and (tmp_path / "s.html").is_file() and (tmp_path / "s.summary.csv").is_file(), err
    (tmp_path / "s.summary.csv.bak").write_bytes((tmp_path / "s.summary.csv").read_bytes())  # not the report's name
    rc, stdout, err = _run_without_dask(monkeypatch, argv + ["--overwrite", "--no-report"], drive,
                                        lambda *args: (_QuietClient(), None))
    assert rc == 0, err
    assert f"removed {tmp_path / 's.html'} and {tmp_path / 's.summary.csv'}: the report of the store replaced" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.summary.csv.bak", "s.toml", "s.zarr"]


@pytest.mark.parametrize("results", ["file", "broken link"])
def test_a_results_folder_that_is_not_one_is_a_one_line_error(tmp_path, monkeypatch, results):
    study_file = write(tmp_path / "s.toml", BASE)
    monkeypatch.chdir(tmp_path)
    if results == "file":
        (tmp_path / "results").write_text("notes")
    else:
        (tmp_path / "results").symlink_to(tmp_path / "nowhere")
    rc, stdout, err = run_main(["run", str(study_file), "--backend", "numpy"])
    assert (rc, stdout) == (2, "")
    assert err == ("spingpu run: error: out: results is not a folder, and the store goes in it (results/s.zarr); "
                   "move it, or choose another --out\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "s.toml"]


def test_a_study_whose_network_fits_no_worker_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from spingpu.backends import get_backend
    from spingpu.outputs import size_text
    from spingpu.studies import runner
    from spingpu.training import trainer

    study_file = write(tmp_path / "s.toml", BASE.replace("epochs = 2\n", "") + '[sweep]\n"training.epochs" = [2, 300]\n')
    study = load_study(study_file)
    need = trainer.host_bytes_per_network(spingpu.load_dataset("iris", seed=0), study.cell(1).config,
                                          spingpu.get_model("stt_compact"), get_backend("numpy"))
    # two workers' shares of a byte short of a network of the larger cell each, beside the driver's index
    monkeypatch.setattr(trainer, "available_memory",
                        lambda: runner.DRIVER_BYTES_PER_NETWORK * study.networks + 2 * need - 2)
    monkeypatch.setattr(runner, "check_driver_memory", lambda *args: None)  # the driver's share is another test's
    rc, stdout, err = run_main(["run", str(study_file), "--out", str(tmp_path / "s.zarr"), "--backend", "numpy",
                                "--workers", "2"])
    assert (rc, stdout) == (2, "")
    assert err == (f"spingpu run: error: networks: one network of the cell training.epochs=300 needs up to {size_text(need)} of "
                   f"memory to train, and each of the 2 workers has {size_text(need - 1)} here; allowed: narrower "
                   "layers, or fewer --workers, or a machine with more memory\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_stop_before_any_task_finished_says_the_store_holds_none(tmp_path, monkeypatch):
    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        raise KeyboardInterrupt

    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                      "--networks-per-task", "1"], drive,
                                        lambda *args: (_QuietClient(), None))
    assert rc == 130 and err == [f"spingpu run: interrupted; no task had finished: {out} holds none (rerun with "
                                 "--resume to start it, or --overwrite)"], err
    assert not task_done(out).any()

def test_a_full_disk_is_one_line_that_says_what_the_store_keeps(tmp_path, monkeypatch):
    """The disk fills after the first task is stored: one line naming the file and the error,
    the finished task kept and --resume to complete, exit 1, no summary or report; a full disk
    before the run (the lock's own file) is one line too, and leaves nothing."""
    import errno

    from spingpu.studies import store as results_store
    from spingpu.studies.store import mark_done, write_task

    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        metrics = {name: np.full((1, 2) if "epoch" in dims else 1, 0.5) for name, (dims, _, _) in VARIABLES.items()}
        metrics["diverged"] = np.zeros(1, dtype=bool)
        write_task(options.out, study, 0, 0, metrics)
        mark_done(options.out, study, 0, 0)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{options.out}/test_acc/c/0/1")

    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                      "--networks-per-task", "1"], drive,
                                        lambda *args: (_QuietClient(), None))
    assert rc == 1 and "results:" not in stdout, (stdout, err)
    assert err == [f"spingpu run: error: {out}/test_acc/c/0/1: No space left on device; the finished tasks (1 of 2) "
                   f"are kept in {out}: rerun with --resume to complete it"], err
    assert task_done(out).sum() == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "s.zarr"]

    def full(fd, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results_store.os, "ftruncate", full)
    other = tmp_path / "t.zarr"
    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(other), "--backend",
                                                      "numpy"], drive)
    assert rc == 2 and err == [f"spingpu run: error: out: cannot write beside {other}: No space left on device"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "s.zarr"]


@pytest.mark.parametrize("first", ["ctrl-c", "sigterm", "none"])
def test_a_ctrl_c_while_the_workers_close_lets_them_close(tmp_path, monkeypatch, first):
    """A second Ctrl-C while the client closes after a first: the cluster still closes, and the one
    line of the first stop is said (it cut the shutdown into a Dask traceback). After a run that
    ended well, a Ctrl-C while closing acts once the cluster is closed."""
    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"
    closed = []

    class Client(_QuietClient):
        def close(self):
            signal.raise_signal(signal.SIGINT)
            closed.append("client")

    class Cluster:
        def close(self):
            closed.append("cluster")

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        store_every_task(options.out, study, npt)
        if first == "ctrl-c":
            raise KeyboardInterrupt
        if first == "sigterm":  # a batch system's time limit: the Ctrl-C after it is dropped, not said instead
            from spingpu.signals import Terminated

            raise Terminated

    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                      "--networks-per-task", "1"], drive,
                                        lambda *args: (Client(), Cluster()))
    what, status = ("terminated", 143) if first == "sigterm" else ("interrupted", 130)
    assert closed == ["client", "cluster"] and rc == status and "results:" not in stdout, (closed, stdout, err)
    assert err == [f"spingpu run: {what}; every task is stored in {out} (spingpu report {out} makes its report)"]


def test_a_failed_task_is_what_is_said_when_a_ctrl_c_follows_it(tmp_path, monkeypatch):
    """A task fails, and a Ctrl-C arrives while the workers close: the failure's two lines and exit
    status 1, not a third line for the stop."""
    from spingpu.studies.runner import TaskFailed

    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"

    def drive(*args):
        raise TaskFailed("task 0 (networks 0-0) of the study's only cell failed: ValueError: bad")

    rc, _, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy"],
                                   drive)
    assert rc == 1 and err == [
        "spingpu run: error: task 0 (networks 0-0) of the study's only cell failed: ValueError: bad",
        f"spingpu run: the finished tasks are kept in {out}; fix the cause and rerun with --resume"], err


def test_a_stop_before_an_overwrite_says_nothing_of_the_store_it_did_not_write(tmp_path, monkeypatch):
    """Ctrl-C while the cluster starts, with --overwrite of a complete store: that store is another
    run's (here, untouched), so the line does not describe it."""
    from spingpu.studies.store import create_store

    study_file = write(tmp_path / "s.toml", BASE)
    out = tmp_path / "s.zarr"
    create_store(out, load_study(study_file), 1, {"backend": "numpy", "device": "CPU", "spingpu_version": "test"})
    store_every_task(out, load_study(study_file), 1)
    before = snapshot(out)

    def connect(*args):
        raise KeyboardInterrupt

    rc, _, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(out), "--backend", "numpy",
                                                 "--overwrite", "--networks-per-task", "1"], None, connect)
    assert rc == 130 and err == ["spingpu run: interrupted"], err
    assert snapshot(out) == before


def test_a_study_trains_the_models_of_its_python_file_on_workers_that_never_ran_it(tmp_path, shared_scheduler,
                                                                                    models_restored):
    """[model] module: the file (relative to the study) runs in the driver once per contents, its
    models reach the scheduler's worker (another process, which never saw the file) with the tasks,
    and the numbers are spingpu.train's with the same model in this process; an edited file is a
    changed input (--resume refused), and a file that fails is one line naming it and its line."""
    import uuid

    tag = uuid.uuid4().hex[:8]  # a name of its own: this process may keep the models of other tests
    write(tmp_path / "models" / "softsat.py", model_file(f"softsat_{tag}"))
    study_file = write(tmp_path / "s.toml", BASE + f'[model]\nname = "softsat_{tag}"\nmodule = "models/softsat.py"\n'
                       '[variability]\nsigma_d2d = 0.1\n')
    out = tmp_path / "s.zarr"
    run_ok(["run", str(study_file), "--out", str(out), "--scheduler", shared_scheduler, *FAST])
    study = load_study(study_file)
    cell = study.cell(0)
    direct = spingpu.train(spingpu.load_dataset("iris", seed=study.seed), cell.config, networks=np.arange(2),
                           model=cell.model, backend="numpy")
    with xr.open_zarr(out) as ds:
        np.testing.assert_array_equal(ds.test_acc.values, direct.test_acc.values)
        np.testing.assert_array_equal(ds.train_loss.values, direct.train_loss.values)
    assert str((tmp_path / "models" / "softsat.py").resolve()) in dict(study.inputs)
    load_study(study_file)  # the same contents: not run again (it would register the name twice)
    # a report in a process of its own runs the file again for the junction figure
    done = subprocess.run([*CLI[:-1], "report", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "left out" not in done.stderr and (tmp_path / "s.html").is_file(), done.stderr

    write(tmp_path / "models" / "softsat.py", model_file(f"softsat_{tag}").replace("2000.0", "2500.0"))
    rc, _, err = run_main(["run", str(study_file), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and "was made from other contents of" in err and "softsat.py" in err, err

    write(tmp_path / "models" / "softsat.py", "import math\n\nx = 1\ny = math.nope\n")
    rc, _, err = run_main(["run", str(study_file), "--out", str(tmp_path / "t.zarr"), *FAST])
    assert rc == 2 and err == (f"spingpu run: error: {study_file}: model.module: {(tmp_path / 'models' / 'softsat.py').resolve()}"
                               " (line 4): AttributeError: module 'math' has no attribute 'nope'\n"), err
    write(tmp_path / "s2.toml", BASE + '[model]\nname = "x"\nmodule = "missing.py"\n')
    rc, _, err = run_main(["run", str(tmp_path / "s2.toml"), *FAST])
    assert rc == 2 and err == (f"spingpu run: error: {tmp_path / 's2.toml'}: model.module: '{tmp_path / 'missing.py'}' is "
                               "not a file; expected the path of a Python file that calls spingpu.register_model "
                               "(relative to the study file)\n"), err


def test_existing_store_is_refused_untouched_without_resume_or_overwrite(long_ref, tmp_path, det):
    study, ref = long_ref
    before = snapshot(ref)
    refusals = [
        ([], "out: ", "exists; pass --resume to complete it or --overwrite to replace it"),
        (["--resume", "--networks-per-task", "4"], "networks-per-task: ", "differs from the store's 12"),
        (["--resume", "--overwrite"], "resume: ", "--resume and --overwrite exclude each other"),
    ]
    for extra, field, message in refusals:
        rc, _, err = run_main(["run", str(study), "--out", str(ref), "--workers", "1", *FAST, *extra])
        assert rc == 2 and err.count("\n") == 1, err
        assert err.startswith(f"spingpu run: error: {field}") and message in err, err
    # The store of another study, or of this study's file changed, is not resumed.
    changed = write(tmp_path / "long.toml", LONG.replace("lr = 0.05", "lr = 0.06"))
    for other in (det["study"], changed):
        rc, _, err = run_main(["run", str(other), "--out", str(ref), "--resume", "--networks-per-task", "12", *FAST])
        assert rc == 2 and err.count("\n") == 1, err
        assert err.startswith("spingpu run: error: resume: ") and "different study" in err, err
    assert "(or of a changed study file: training.lr = 0.05 in the store, 0.06 in the study)" in err, err
    # without --resume, the refusal says at once that --resume would not do either
    rc, _, err = run_main(["run", str(changed), "--out", str(ref), *FAST])
    assert rc == 2 and err == (f"spingpu run: error: out: {ref} exists and holds the results of another study (or of "
                               "a changed study file: training.lr = 0.05 in the store, 0.06 in the study); choose "
                               "another --out, or --overwrite to replace it\n"), err
    assert snapshot(ref) == before
    # --resume without a store, and an --out that is not a .zarr, write nothing.
    for extra, message in ((["--out", str(tmp_path / "new.zarr"), "--resume"], "resume: no store at"),
                           (["--out", str(tmp_path / "new.nc")], "must end in .zarr")):
        rc, _, err = run_main(["run", str(study), *extra, *FAST])
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(os.listdir(tmp_path)) == ["long.toml"]


def test_out_that_is_not_a_spingpu_store_is_refused_untouched(long_ref, tmp_path):
    study, _ = long_ref
    folder = tmp_path / "mine.zarr"
    write(folder / "notes.txt", "my own data\n")
    write(folder / ".zgroup", '{"zarr_format": 2}\n')  # even a zarr group, if not a spingpu store
    plain = write(tmp_path / "file.zarr", "not a folder\n")
    before = snapshot(tmp_path)
    for out in (folder, plain):
        for extra in ([], ["--overwrite"], ["--resume"]):
            rc, _, err = run_main(["run", str(study), "--out", str(out), *extra, *FAST])
            assert rc == 2 and err.count("\n") == 1, err
            assert err.startswith("spingpu run: error: out: ") and "is not a spingpu results store" in err, err
    assert snapshot(tmp_path) == before


TINY = """\
name = "tiny"
networks = 1
seed = 2

[dataset]
name = "iris"

[network]
hidden = [3]

[sweep]
"training.epochs" = [1, 2]
"""


def test_overwrite_replaces_a_store_and_shorter_cells_are_nan_padded(long_ref, tmp_path, shared_scheduler):
    _, ref = long_ref
    out = tmp_path / "replaced.zarr"
    shutil.copytree(ref, out)
    study = write(tmp_path / "tiny.toml", TINY)
    printed = run_ok(["run", str(study), "--out", str(out), "--overwrite", "--scheduler", shared_scheduler, *FAST])
    assert "2 tasks to run" in printed
    ds = load(out)
    assert ds.attrs["study_name"] == "tiny" and ds.attrs["study_text"] == TINY
    assert dict(ds.sizes) == {"epochs": 2, "network": 1, "epoch": 2, "task": 1}
    assert "grad_mode" not in ds.dims and (ds.task_done.values == 1).all()
    spec = load_study(study)
    for flat in range(spec.n_cells):
        expected = train_cell(spec, flat)
        got = ds.sel(cell_selection(spec, flat))
        epochs = spec.cell(flat).config.epochs
        for name, (dims, _, _) in VARIABLES.items():
            value = got[name].values
            if "epoch" in dims:  # a cell of fewer epochs than the longest is padded with NaN
                assert np.isnan(value[:, epochs:]).all(), name
                value = value[:, :epochs]
            assert np.array_equal(value, expected[name].values, equal_nan=True), (flat, name)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_worker_is_replaced_and_the_study_completes_with_the_same_numbers(long_ref, tmp_path):  # slow
    import logging

    from dask.distributed import Client, LocalCluster

    study, ref = long_ref
    out = tmp_path / "worker_killed.zarr"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    client = Client(cluster)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 2
        with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
            proc = subprocess.Popen([*CLI, str(study), "--out", str(out), "--networks-per-task", "1",
                                     "--scheduler", cluster.scheduler_address, *FAST], stdout=stdout, stderr=stderr)
        try:
            wait_part_done(out, proc)
            busy = [address for address, keys in client.processing().items() if keys]
            victim = busy[0] if busy else next(iter(pids))
            os.kill(pids[victim], signal.SIGKILL)
            at_kill = task_done(out)
            proc.wait(timeout=240)
        finally:
            proc.kill()
        printed = (tmp_path / "stdout").read_text()
        assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
        assert f"joined the Dask scheduler at {cluster.scheduler_address}" in printed
        assert at_kill.sum() < at_kill.size  # the worker died while the study was running
        new_pids = client.run(os.getpid)
        assert pids[victim] not in new_pids.values()
    finally:
        client.close()
        cluster.close()
    assert (task_done(out) == 1).all()
    assert_same_numbers(out, ref)


# --- a task that raises ---------------------------------------------------------------------------


def write_csv(path, rows_per_class=20):
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(3), rows_per_class)
    features = rng.normal(size=(label.size, 4)) + label[:, None]
    np.savetxt(path, np.column_stack([features, label]), delimiter=",", header="a,b,c,d,label", comments="",
               fmt=["%.6f"] * 4 + ["%d"])
    return path


def test_a_failing_task_names_its_cell_keeps_finished_tasks_and_resume_completes(tmp_path, monkeypatch, capsys,
                                                                                  shared_scheduler):  # slow
    data = write_csv(tmp_path / "data.csv")
    study = write(tmp_path / "fails.toml", f"""\
name = "fails"
networks = 2

[dataset]
name = "csv:data.csv"

[network]
hidden = [3]

[training]
epochs = 2

[sweep]
"dataset.name" = ["iris", "csv:{data}"]
""")
    from spingpu.studies import runner

    drive = runner._drive

    def delete_then_drive(*args):  # the data file disappears after validation, before the tasks run
        data.unlink()
        return drive(*args)

    monkeypatch.setattr(runner, "_drive", delete_then_drive)
    out = tmp_path / "fails.zarr"
    rc = main(["run", str(study), "--out", str(out), "--networks-per-task", "1", "--scheduler", shared_scheduler,
               *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"spingpu run: error: task 0 (networks 0-0) of cell dataset.name=csv:{data} failed: " in err
    assert "not found" in err and "--resume" in err
    done = task_done(out)
    assert done.tolist() == [[1, 1], [0, 0]]  # the iris cell finished before the csv cell failed
    ds = load(out)
    assert np.isfinite(ds.test_acc.sel(dataset="iris").values).all()
    assert np.isnan(ds.test_acc.sel(dataset=f"csv:{data}").values).all()

    monkeypatch.setattr(runner, "_drive", drive)
    write_csv(data)  # fix the cause, then --resume as the message says
    rc = main(["run", str(study), "--out", str(out), "--resume", "--networks-per-task", "1", "--scheduler",
               shared_scheduler, *FAST])
    printed = capsys.readouterr().out
    assert rc == 0 and "2 tasks to run (resuming)" in printed
    assert (task_done(out) == 1).all()
    resumed = load(out)
    assert np.array_equal(resumed.train_loss.sel(dataset="iris").values, ds.train_loss.sel(dataset="iris").values)
    assert np.isfinite(resumed.test_acc.values).all()


# --- malformed study files: one line, exit 2, nothing written -------------------------------------


DISTILL = 'name = "distill"\nseed = 5\n' + BASE + """\
lr = 0.05

[distillation]
temperature = 2.0

[distillation.teacher]
hidden = [6]
grad_mode = "tanh"
epochs = 4
lr = 0.05

[sweep]
"distillation.alpha" = [0.0, 0.5]
"""


def test_a_distilled_cell_stores_its_teachers_test_accuracy(tmp_path, shared_scheduler):
    from spingpu.report import write_report
    from spingpu.training import teacher_logits

    study_path = write(tmp_path / "distill.toml", DISTILL)
    run_ok(["run", str(study_path), "--out", str(tmp_path / "d.zarr"), "--scheduler", shared_scheduler, *FAST])
    ds, study = load(tmp_path / "d.zarr"), load_study(study_path)
    for flat in range(study.n_cells):
        cell = study.cell(flat)
        kw = dict(cell.dataset)
        _, expected = teacher_logits(spingpu.load_dataset(kw.pop("name"), seed=study.seed, **kw), cell.teacher)
        got = float(ds.teacher_test_acc.sel(cell_selection(study, flat)))
        assert got == expected and 0.3 < got <= 1.0, (flat, got, expected)
    report = write_report(tmp_path / "d.zarr")
    assert "<th>teacher</th>" in Path(report).read_text()


def with_line(section, line, text=BASE):
    """BASE with ``line`` added to ``[section]`` (a new table at the end if BASE has none)."""
    header = f"[{section}]\n"
    if header in text:
        return text.replace(header, header + line + "\n")
    return text + f"\n{header}{line}\n"


SWEEP_KEYS = "allowed: dataset.data_dir"
MALFORMED = [
    # (id, study text, key named, what the message says is allowed or wrong[, known library bug])
    ("unknown top-level key", "netwroks = 3\n" + BASE, "netwroks", "unknown key (did you mean 'networks'?)"),
    ("unknown key in a table", BASE.replace("epochs = 2", "epoch = 2"), "training.epoch",
     "unknown key (did you mean 'epochs'?); allowed in [training]: grad_mode, epochs"),
    ("wrong type", BASE.replace("epochs = 2", 'epochs = "ten"'), "training.epochs",
     "expected an integer, got 'ten'"),
    ("table given as a value", "network = 5\n" + BASE.replace("[network]\nhidden = [3]\n", ""), "network",
     "expected a table [network]"),
    ("negative lr", with_line("training", "lr = -1"), "training.lr", "allowed: 0 < value"),
    ("sigma_d2d too large", with_line("variability", "sigma_d2d = 5"), "variability.sigma_d2d",
     "allowed: 0 <= value <= 2"),
    ("adc_bits too large", with_line("readout", "adc_bits = 40"), "readout.adc_bits", "allowed: 0 <= value <= 24"),
    ("zero networks", BASE.replace("networks = 2", "networks = 0"), "networks",
     "0 is out of range; allowed: an integer, 1 <= value"),
    ("negative seed", "seed = -1\n" + BASE, "seed", "-1 is out of range; allowed: an integer, 0 <= value"),
    ("networks not an integer", BASE.replace("networks = 2", "networks = 2.5"), "networks",
     "expected an integer, got 2.5"),
    ("unknown dataset", BASE.replace('"iris"', '"cifar"'), "dataset.name",
     "unknown dataset 'cifar'; allowed: iris, digits, mnist, csv:PATH"),
    ("missing dataset", BASE.replace('[dataset]\nname = "iris"\n', ""), "dataset.name",
     "missing; allowed: iris, digits, mnist, csv:PATH"),
    ("mnist without data_dir", BASE.replace('"iris"', '"mnist"'), "dataset.data_dir",
     "pass data_dir (--data-dir on the command line) or set the environment variable SPINGPU_DATA"),
    ("csv file missing", BASE.replace('"iris"', '"csv:nothere.csv"'), "dataset.name", "nothere.csv' not found"),
    ("fractions leave no training rows", with_line("dataset", "val_fraction = 0.9"), "dataset.val_fraction",
     "allowed: a sum below 1"),
    ("unknown grad_mode", with_line("training", 'grad_mode = "fd_backward"'), "training.grad_mode",
     "allowed: fd_forward, fd_single, fd_symmetric, model, oracle, tanh, relu, sigmoid"),
    ("bad lr_schedule", with_line("training", 'lr_schedule = "step:x:0.5"'), "training.lr_schedule",
     "allowed: constant, step:EVERY:GAMMA, exp:GAMMA, cosine"),
    ("unknown optimizer", with_line("training", 'optimizer = "adamw"'), "training.optimizer",
     "allowed: sgd, momentum, adam"),
    ("zero hidden width", BASE.replace("hidden = [3]", "hidden = [0]"), "network.hidden",
     "allowed: 1 <= value <= 65536"),
    ("bad model param value", with_line("model.params", "r_p = -5.0"), "model.params.r_p", "allowed: 1 <= value <= 1e7"),
    ("unknown model", with_line("model", 'name = "stt_compakt"'), "model.name", "allowed: macrospin, stt_compact, stt_compact_f32, tabulated"),
    ("unknown model param", with_line("model.params", "r_q = 5.0"), "model.params",
     "unknown parameter 'r_q' for model 'stt_compact' (did you mean 'r_p'?); allowed: r_p, tmr0"),
    ("correlation key malformed", with_line("variability.correlation", '"r_p" = 0.5'), "variability.correlation",
     "key 'r_p' must be 'NAME_A,NAME_B'"),
    ("correlation out of range", with_line("variability.correlation", '"r_p,tmr0" = 1.5'),
     "variability.correlation.r_p.tmr0", "1.5 is out of range; allowed: -1 < value < 1"),
    ("per_parameter of two spreads", with_line("variability.per_parameter", "r_p = [0.1, 0.2]"),
     "variability.per_parameter.r_p", "expected three spreads (chip, d2d, pair)"),
    ("digital teacher only", with_line("distillation.teacher", 'grad_mode = "fd_forward"',
                                       BASE + "\n[distillation]\ntemperature = 2.0\n"),
     "distillation.teacher.grad_mode", "allowed: tanh, relu, sigmoid"),
    ("sweep of an unknown key", with_line("sweep", '"training.learning_rate" = [0.1, 0.2]'),
     "sweep.training.learning_rate", "not a sweepable key (did you mean 'training.lr'?); " + SWEEP_KEYS),
    ("sweep key unquoted", with_line("sweep", 'neuron.delta_i = [1e-6, 1e-5]'), "sweep.neuron",
     'a table, as TOML reads an unquoted dotted key: quote the key, "neuron.delta_i" = [...]'),
    ("sweep parameter unquoted", with_line("sweep", 'model.params.r_p = {linspace = [1e3, 2e3, 2]}'), "sweep.model",
     'a table, as TOML reads an unquoted dotted key: quote the key, "model.params.r_p" = [...]'),
    ("sweep of a non-sweepable key", with_line("sweep", '"distillation.teacher.epochs" = [1, 2]'),
     "sweep.distillation.teacher.epochs", "not a sweepable key"),
    ("sweep with an empty list", with_line("sweep", '"training.lr" = []'), "sweep.training.lr",
     "expected a non-empty array of values, or {linspace = ...} / {logspace = ...}"),
    ("sweep linspace of two numbers", with_line("sweep", '"training.lr" = {linspace = [0.1, 0.2]}'),
     "sweep.training.lr", "linspace takes [start, stop, num] with an integer num >= 1"),
    ("sweep logspace of zero points", with_line("sweep", '"training.lr" = {logspace = [-3, -1, 0]}'),
     "sweep.training.lr", "logspace takes [start, stop, num] with an integer num >= 1"),
    ("sweep table of an unknown kind", with_line("sweep", '"training.lr" = {range = [0.1, 0.2, 2]}'),
     "sweep.training.lr", "a table must be {linspace = [start, stop, num]} or {logspace"),
    ("sweep of booleans", with_line("sweep", '"training.lr" = [true, false]'), "sweep.training.lr",
     "values must be numbers or strings"),
    ("sweep repeated values", with_line("sweep", '"training.grad_mode" = ["model", "fd_forward", "model"]'),
     "sweep.training.grad_mode", "repeated values in ['model', 'fd_forward', 'model']"),
    ("sweep of one dataset named twice", with_line("sweep", '"dataset.name" = ["iris", " Iris", "digits"]'),
     "sweep.dataset.name", "repeated values in ['iris', ' Iris', 'digits']: the names of the built-in datasets "
                           "are read in any case and without surrounding spaces"),
    ("set and swept, the value set out of range", with_line("neuron", "delta_i = nan",
                                                               with_line("sweep", '"neuron.delta_i" = [5e-6, 2e-5]')),
     "neuron.delta_i", "expected a number, got NaN; allowed: 0 < value <= 1 (A) (set in its table, where "
                       "sweep.neuron.delta_i replaces it in every cell)"),
    ("set and swept, a dataset name unknown", BASE.replace('"iris"', '"irsi"') + '[sweep]\n"dataset.name" = '
                                                                                 '["iris", "digits"]\n',
     "dataset.name", "unknown dataset 'irsi' (did you mean 'iris'?); allowed: iris, digits, mnist, csv:PATH (set in"),
    ("sweep of a negative width", with_line("sweep", '"network.hidden" = [[4], [4, -1]]'), "sweep.network.hidden",
     "width -1 is out of range; allowed: 1 <= width"),
    ("sweep of hidden not lists", with_line("sweep", '"network.hidden" = [3, 4]'), "sweep.network.hidden",
     "values must be lists of widths, e.g. [[8], [8, 8]]"),
    ("sweep with one bad cell", with_line("sweep", '"variability.sigma_d2d" = [0.0, 0.1, -0.1]'),
     "variability.sigma_d2d", "allowed: 0 <= value <= 2 (in the cell variability.sigma_d2d=-0.1)"),
    ("sweep with one bad cell of two axes",
     with_line("sweep", '"training.grad_mode" = ["model", "tanh"]\n"training.lr" = [0.1, -1.0]'),
     "training.lr", "-1.0 is out of range; allowed: 0 < value <= 100 (in the cell training.grad_mode=model, "
     "training.lr=-1.0)"),
    ("a misspelt model beside another axis", with_line("sweep", '"model.name" = ["stt_compact", "stt_compct"]\n'
                                                                '"neuron.delta_i" = [1e-5, 2e-5]'),
     "model.name", "--model-file) (in the cell model.name=stt_compct)\n"),  # the model's key alone, not delta_i
    ("a bad setting beside a sweep is every cell's", with_line("sweep", '"variability.sigma_d2d" = [0.0, 0.1]',
                                                               with_line("training", "lr = -0.05")),
     "training.lr", "-0.05 is out of range; allowed: 0 < value <= 100"),  # no cell named: it is not one cell's
    # sweep values are checked against the key's type before anything runs
    ("sweep of strings for a number", with_line("sweep", '"training.lr" = ["0.1", "0.2"]'), "sweep.training.lr",
     "expected numbers, got '0.1'"),
    ("sweep of strings for an integer", with_line("sweep", '"training.epochs" = ["1", "2"]'),
     "sweep.training.epochs", "expected integers (whole numbers), got '1'"),
    ("sweep of fractions for an integer", with_line("sweep", '"training.batch_size" = [8, 12.5]'),
     "sweep.training.batch_size", "expected integers (whole numbers), got 12.5"),
    ("sweep linspace of fractions for an integer", with_line("sweep", '"training.epochs" = {linspace = [1, 2, 3]}'),
     "sweep.training.epochs", "expected integers (whole numbers), got 1.5"),
    ("sweep of numbers for a string", with_line("sweep", '"training.grad_mode" = [1, 2]'),
     "sweep.training.grad_mode", "expected strings, got 1"),
    ("sweep linspace of 10**12 values", with_line("sweep", '"training.lr" = {linspace = [0.1, 0.2, 1000000000000]}'),
     "sweep.training.lr", "linspace of 1000000000000 values; at most 100000 cells in a study"),
    ("sweep logspace of 10**12 values", with_line("sweep", '"training.lr" = {logspace = [-3, -1, 1000000000000]}'),
     "sweep.training.lr", "logspace of 1000000000000 values; at most 100000 cells in a study"),
    # the name names the default store results/<name>.zarr: one plain component
    ("name with a parent folder", 'name = "../escaped"\n' + BASE, "name",
     "'../escaped' is not a plain name; allowed: 1-200 characters (bytes in UTF-8) without '/', '\\' or control "
     "or format characters, not starting with '.' or a space"),
    ("name with a right-to-left override", 'name = "\u202eevil"\n' + BASE, "name",
     "'\\u202eevil' is not a plain name"),
    ("name of 270 bytes", 'name = "' + "\u2603" * 90 + '"\n' + BASE, "name", "is not a plain name; allowed: 1-200"),
    ("absolute name", 'name = "/tmp/abs"\n' + BASE, "name", "'/tmp/abs' is not a plain name"),
    ("empty name", 'name = ""\n' + BASE, "name", "'' is not a plain name"),
    ("hidden name", 'name = ".zarr"\n' + BASE, "name", "'.zarr' is not a plain name"),
    ("name with a leading space", 'name = " study"\n' + BASE, "name", "' study' is not a plain name"),
    ("name with a backslash", 'name = "a\\\\b"\n' + BASE, "name", "'a\\\\b' is not a plain name"),
    # messages name the study's key and say what is expected
    ("distillation alpha out of range", with_line("distillation", "alpha = 2"), "distillation.alpha",
     "2 is out of range; allowed: 0 <= value <= 1"),
    ("per_parameter of one number", with_line("variability.per_parameter", "r_p = 0.1"),
     "variability.per_parameter.r_p", "expected three spreads (chip, d2d, pair), e.g. [0.0, 0.05, 0.01], got 0.1"),
]


def malformed_cases():
    for name, text, key, allowed, *bug in MALFORMED:
        marks = [pytest.mark.xfail(strict=True, reason=bug[0])] if bug else []
        yield pytest.param(text, key, allowed, id=name, marks=marks)


@pytest.mark.parametrize("text, key, allowed", list(malformed_cases()))
def test_malformed_study_is_refused_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, text, key,
                                                                     allowed):
    monkeypatch.chdir(tmp_path)  # the default --out would be results/<name>.zarr here
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    study = write(tmp_path / "study.toml", text)
    rc = main(["run", str(study), "--workers", "1", *FAST])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert captured.err.startswith(f"spingpu run: error: {study}: {key}: "), captured.err
    assert allowed in captured.err
    assert ("(in the cell" in allowed) == ("(in the cell" in captured.err), captured.err  # named where it is one cell's
    assert captured.out == ""
    assert sorted(os.listdir(tmp_path)) == ["study.toml"]


def test_invalid_toml_and_missing_study_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", BASE + "lr = \n")
    assert main(["run", str(study), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"spingpu run: error: {study}: not valid TOML: "), err
    assert "line 11" in err
    assert main(["run", str(tmp_path / "absent.toml"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spingpu run: error: study: file not found: "), err
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'name = "b"\n\xff\xfe\x00\x01')
    assert main(["run", str(binary), *FAST]) == 2
    err = capsys.readouterr().err
    assert err == (f"spingpu run: error: {binary}: not a text file: byte 0xff at offset 11 is not UTF-8; "
                   "a study file is UTF-8 TOML\n"), err
    assert sorted(os.listdir(tmp_path)) == ["binary.toml", "study.toml"]


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "workers: 0 is out of range; allowed: 1 <= value <= 4096"),
    (["--networks-per-task", "0"], "networks-per-task: 0 is out of range"),
    (["--threshold", "2"], "threshold: 2.0 is out of range; allowed: 0 <= value <= 1 (a fraction: 0.02 for 2 %)"),
    (["--threshold", "101"], "threshold: 101.0 is out of range; allowed: 0 <= value <= 1"),
    (["--threshold", "-0.5"], "threshold: -0.5 is out of range; allowed: 0 <= value <= 1"),
    (["--cluster", "k8s"], "cluster: 'k8s'; allowed: local, slurm, pbs"),
    (["--cluster", "pbs", "--scheduler", "tcp://127.0.0.1:8786"], "cluster: --cluster pbs starts a cluster of its own "
                                                                  "and --scheduler joins a running one; give one of them"),
    (["--backend", "tpu"], "backend: 'tpu' (did you mean 'cpu'?); allowed: auto, numpy, cpu, cuda"),
    (["--resume"], "resume: no store at results/tiny.zarr to resume"),
    (["--out", "missing/s.zarr"], "out: folder missing does not exist"),
    (["--out", " "], "out: expected a store name, got an empty one (leave --out out for results/<study name>.zarr)"),
    *[(["--out", name], f"out: {name!r}: expected a store name such as results/NAME.zarr, not a hidden one (names "
                        "beginning with '.' are spingpu's temporaries)") for name in (".zarr", "results/.s.zarr", ".")],
])
def test_bad_run_options_are_refused_in_one_line(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE)
    rc = main(["run", str(study), *extra, "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err == f"spingpu run: error: {message}\n" or err.startswith(f"spingpu run: error: {message}"), err
    assert not (tmp_path / "results" / "tiny.zarr").exists()


class ScriptedScheduler:
    """The Dask client runner._watch_workers asks: each look takes the next step of ``script`` and
    answers ``look(step)`` workers (an exception: raised, the scheduler did not answer); after the
    last step, ``stop`` is set (the run ended). ``processing``: the tasks each worker holds."""

    def __init__(self, script, stop, look=lambda step: step, processing=None):
        self.script, self.stop, self.look, self.held = iter(script), stop, look, processing or {}

    def scheduler_info(self):
        step = next(self.script, None)
        if step is None:
            self.stop.set()
            raise OSError("closed")
        answer = self.look(step)
        if isinstance(answer, Exception):
            raise answer
        return {"workers": {f"tcp://w{k}": {} for k in range(answer)}}

    def processing(self):
        return self.held


def test_a_run_says_when_its_scheduler_has_lost_every_worker_and_when_some_are_back():
    """The scheduler's worker counts, one per look (an OSError: it did not answer): a line when the
    last worker is gone, none while there are still none, a line when some are back, and none for
    more or fewer workers while there are some."""
    import threading

    from spingpu.studies import runner

    stop, said = threading.Event(), []
    client = ScriptedScheduler([2, OSError("scheduler gone"), 0, 0, 1, 3, 1, 0], stop)
    runner._watch_workers(client, stop, said.append, had=2, every=0.0)
    gone = ("the Dask scheduler has no workers now (stopped, killed, or their jobs ended): the tasks wait until "
            "some join; Ctrl-C stops the run, --resume continues it")
    assert said == [gone, "1 Dask worker now: the tasks go on", gone]
    said.clear()
    stop = threading.Event()
    runner._watch_workers(ScriptedScheduler([0, 2], stop), stop, said.append, had=0, every=0.0)  # none at the start
    assert said == ["2 Dask workers now: the tasks go on"]


def test_a_stalled_run_is_said_once_per_stall_naming_the_workers_that_hold_its_tasks():
    """No task back for longer than STALL_SECONDS (120 s) and 3x the longest a task took from its
    submission: one line per stall (not one per look), naming the workers holding this run's tasks
    (by key prefix); nothing before the first task is back (the workers set up) or while there are
    no workers; tasks of equal length coming back in waves are no stall."""
    import threading

    from spingpu.studies import runner

    now = [0.0]
    pace = runner.Pace(clock=lambda: now[0])
    for k in range(8):
        pace.submitted(k)
    assert pace.stalled() is None
    now[0] = 300.0
    assert pace.stalled() is None  # setting up: no task back yet
    for k in range(4):  # the first wave: 4 workers' first tasks, ~300 s each
        now[0] += 1.0
        pace.task_back(k)
    now[0] += 299.0  # the second wave is due: no stall between waves
    assert pace.stalled() is None and pace.longest == 304.0
    for k in range(4, 8):  # sent at 0 s with the first wave, they waited their turn: 603 s each
        pace.task_back(k)
    assert pace.longest == 603.0
    now[0] += 3 * 603.0
    assert pace.stalled() is None
    now[0] += 1.0
    assert pace.stalled() == 1810.0

    pace = runner.Pace(clock=lambda: now[0])
    now[0] = 500.0
    pace.submitted("a")
    now[0] = 550.0
    pace.task_back("a")  # the longest task: 50 s, so a stall is > max(120, 150) s
    pace.submitted("b")
    now[0] = 701.0
    def look(step):  # (seconds since the previous look, workers, a task came back meanwhile)
        advance, workers, task_back = step
        now[0] += advance
        if task_back:
            pace.task_back("b")
        return workers

    def client(*script):
        return ScriptedScheduler(script, stop, look, {"tcp://w1": ["train-run-0-3"], "tcp://w0": ["train-other-0-1"],
                                                      "tcp://w2": []})

    stop, said = threading.Event(), []

    class Bar:
        drawn, last_print_t, mininterval = 0, 0.0, 0.0

        def refresh(self):
            Bar.drawn += 1

    runner._watch_workers(client((10.0, 2, False), (10.0, 2, False), (10.0, 0, False), (10.0, 2, True),
                                 (560.0, 2, False), (20.0, 2, False), (10.0, 2, False)),
                          stop, said.append, had=2, every=0.0, pace=pace, keys="train-run-", bar=Bar())
    stalled = ("no task has come back for {} s (the longest a task took was {} s): a worker may hang (frozen, or on "
               "a hung file system; its log says); working on this run's tasks: tcp://w1; Ctrl-C stops the run, "
               "--resume continues it")
    # the last task back at 550 s, the longest 50 s: at 711 s, 161 s > 150 s; then task b, sent at
    # 550 s, is back at 741 s: the longest is 191 s, and 560 s later is not yet 573 s, 580 s is
    assert said == [stalled.format(161, 50),
                    "the Dask scheduler has no workers now (stopped, killed, or their jobs ended): the tasks wait until "
                    "some join; Ctrl-C stops the run, --resume continues it",
                    "2 Dask workers now: the tasks go on", stalled.format(580, 191)], said
    assert Bar.drawn == 8
    Bar.mininterval, Bar.last_print_t, Bar.drawn = 1e9, __import__("time").time(), 0  # a log's 30 s: not redrawn
    stop = threading.Event()
    runner._watch_workers(client((10.0, 2, False)), stop, said.append, had=2, every=0.0, pace=pace, keys="train-run-",
                          bar=Bar())
    assert Bar.drawn == 0

    def closed(text):  # stdout closed (| head): the watch ends quietly
        raise BrokenPipeError(32, "Broken pipe")

    stop = threading.Event()
    runner._watch_workers(client((10.0, 0, False), (10.0, 0, False)), stop, closed, had=2, every=0.0)


@pytest.mark.parametrize("error, message", [
    (RuntimeError("train-ab-0-1 cancelled for reason: scheduler-connection-lost.\nClient lost the connection to the "
                  "scheduler. Please check your connection and re-run your work."),
     "lost the connection to the Dask scheduler (it stopped, or the network between failed)"),
    (type("KilledWorker", (Exception,), {})("attempted to run task train-ab-1-3 on 4 different workers"),
     "task 3 (networks 6-7) of cell neuron.delta_i=2e-05 failed: KilledWorker: the worker process died each time it ran "
     "the task (out of memory, or killed: its log says which); fewer --networks-per-task need less memory, in a new "
     "store (--out, or --overwrite: --resume keeps the store's split)"),
    (ValueError("bad value"), "task 3 (networks 6-7) of cell neuron.delta_i=2e-05 failed: ValueError: bad value"),
])
def test_a_failed_task_is_said_in_one_line_that_blames_the_scheduler_where_it_is_lost(tmp_path, error, message):
    """A task's error as the run says it (runner._collect), the other tasks cancelled: a lost
    scheduler cancels every task, which is no cell's fault."""
    from spingpu.studies import runner

    study = load_study(write(tmp_path / "study.toml", BASE.replace("networks = 2", "networks = 8")
                             + '[sweep]\n"neuron.delta_i" = [5e-6, 2e-5]\n'))

    other = FakeFuture("train-ab-1-4", None)
    with pytest.raises(runner.TaskFailed) as failed:
        runner._collect(study, None, 2, deque(), {}, None, FakeFutures([FakeFuture("train-ab-1-3", error), other]),
                        {"train-ab-1-3": (1, 3, 6, 8)}, submit=None)
    assert str(failed.value) == message and other.cancelled


def test_a_worker_running_other_spingpu_sources_is_refused_and_its_task_not_stored(tmp_path):
    """A task trained by a worker whose spingpu sources differ (another checkout, an older install:
    the same __version__) stops the run in one line naming its host and folder; nothing of it is
    stored. A task of this process's spingpu (train_task itself) is stored."""
    import socket

    from spingpu.installation import PACKAGE, identity, source_digest
    from spingpu.studies import runner
    from spingpu.studies.store import create_store
    from spingpu.studies.tasks import train_task

    study = load_study(write(tmp_path / "study.toml", BASE))
    out = tmp_path / "s.zarr"
    create_store(out, study, 1, {"backend": "numpy", "device": "CPU", "spingpu_version": "test"})
    own = train_task(study, 0, 0, 1, "numpy", 1)
    assert own["spingpu"] == identity() and len(source_digest()) == 64
    other = dict(train_task(study, 0, 1, 2, "numpy", 1), spingpu=("0" * 64, "node7", "/old/site-packages/spingpu"))

    options = runner.RunOptions(out=str(out))
    runner._collect(study, options, 1, deque(), {}, None, FakeFutures([FakeFuture("a", own)]), {"a": (0, 0, 0, 1)},
                    submit=None)
    assert task_done(out).tolist() == [True, False]
    with pytest.raises(runner.TaskFailed) as failed:
        runner._collect(study, options, 1, deque(), {}, None, FakeFutures([FakeFuture("b", other)]), {"b": (0, 1, 1, 2)},
                        submit=None)
    assert str(failed.value) == (f"a Dask worker on node7 runs spingpu from /old/site-packages/spingpu, whose sources "
                                 f"differ from this run's ({PACKAGE} on {socket.gethostname()}); its task 1 is not "
                                 "stored: start the workers with this run's spingpu")
    assert task_done(out).tolist() == [True, False]
    assert np.isnan(xr.open_zarr(out).test_acc.values[1])


@pytest.mark.parametrize("extra", [["--workers", "0"], ["--backend", "tpu"], ["--resume"], ["--out", ""]])
def test_bad_run_options_write_nothing(tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", BASE)
    assert main(["run", str(study), *extra, "--no-report"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["study.toml"]


def _refuses_new_files(folder):
    """Whether ``folder`` exists and refuses a new file (as /sys does, even to root)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return os.path.isdir(folder)
    os.close(fd)
    os.unlink(name)
    return False


@pytest.mark.skipif(not _refuses_new_files("/sys"), reason="needs a folder that refuses new files even to root")
@pytest.mark.parametrize("report", [[], ["--no-report"]])
def test_a_store_whose_folder_refuses_new_files_is_named_before_its_report(tmp_path, monkeypatch, capsys, report):
    """--out /sys/x.zarr: the error names the store (field out), not the report /sys/x.html beside
    it, and comes before any worker starts; with --no-report it was zarr's traceback, exit 1."""
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", BASE)
    rc = main(["run", str(study), "--out", "/sys/x.zarr", "--backend", "numpy", *report])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("spingpu run: error: out: cannot write /sys/x.zarr: "), captured.err
    assert sorted(os.listdir(tmp_path)) == ["study.toml"]


# --- swept datasets and paths ------------------------------------------------------------------


def test_a_swept_dataset_is_validated_before_anything_runs(tmp_path):
    study = write(tmp_path / "study.toml", with_line("sweep", '"dataset.name" = ["iris", "cifar"]'))
    with pytest.raises(ConfigError, match="cifar"):
        load_study(study)


def test_a_swept_relative_csv_path_is_taken_from_the_study_folder(tmp_path):
    data = write_csv(tmp_path / "data.csv")
    study = write(tmp_path / "study.toml", with_line("sweep", '"dataset.name" = ["iris", "csv:data.csv"]'))
    assert load_study(study).cell(1).dataset["name"] == f"csv:{data}"


def test_config_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("training.lr", "-1 is out of range")))
    assert isinstance(err, ConfigError) and err.field == "training.lr" and str(err) == "training.lr: -1 is out of range"


def tiny_study_and_store(folder, backend):
    """The study BASE as ``folder``/study.toml and an empty store of it at results/tiny.zarr
    (relative: the caller has changed to ``folder``), written with ``backend``."""
    from spingpu.studies.store import create_store

    study_path = write(folder / "study.toml", 'name = "tiny"\n' + BASE)
    study = load_study(study_path)
    out = Path("results") / "tiny.zarr"
    out.parent.mkdir()
    create_store(out, study, study.networks, {"backend": backend, "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    return study_path, study, out


def test_resume_with_another_backend_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_path, study, _ = tiny_study_and_store(tmp_path, "numpy")
    rc = main(["run", str(study_path), "--resume", "--backend", "cpu", "--networks-per-task", str(study.networks),
               "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and err == ("spingpu run: error: backend: 'cpu' differs from the store's 'numpy'; "
                               "resume with the same backend\n")


def test_resume_takes_the_stores_backend_when_none_is_given(tmp_path, monkeypatch, shared_scheduler):
    """As with --networks-per-task, --resume without --backend continues with the store's own."""
    from spingpu.studies.store import store_attrs

    monkeypatch.chdir(tmp_path)
    study_path, _, out = tiny_study_and_store(tmp_path, "numpy")
    run_ok(["run", str(study_path), "--resume", "--scheduler", shared_scheduler, "--no-report"])
    assert store_attrs(out)["backend"] == "numpy"
    assert np.isfinite(load(out).test_acc.values).all()


def test_resume_of_a_store_whose_backend_cannot_run_here_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_path, _, _ = tiny_study_and_store(tmp_path, "tpu")
    rc, _, err = run_main(["run", str(study_path), "--resume", "--no-report"])
    assert rc == 2 and err == ("spingpu run: error: backend: results/tiny.zarr was written with the 'tpu' backend, "
                               "which cannot run here (backend: 'tpu' (did you mean 'cpu'?); allowed: auto, numpy, cpu, cuda); resume it "
                               "where it can, or start a new store\n"), err


def test_tasks_are_sized_to_the_memory_of_the_local_workers(tmp_path, monkeypatch):
    """The default split is capped to what one worker's share of the memory holds; a split given
    that does not fit is refused before anything is written."""
    from spingpu.backends import get_backend
    from spingpu.datasets import load_dataset
    from spingpu.studies.store import store_attrs
    from spingpu.training import trainer

    monkeypatch.chdir(tmp_path)
    study_path = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE.replace("networks = 2", "networks = 5"))
    cell = load_study(study_path).cell(0)
    need = trainer.host_bytes_per_network(load_dataset("iris"), cell.config, cell.model, get_backend("numpy"))
    monkeypatch.setattr(trainer, "available_memory", lambda: int(2 * 2.5 * need))  # 2 workers, 2 networks each
    rc, _, err = run_main(["run", str(study_path), "--workers", "2", "--networks-per-task", "3", *FAST])
    assert rc == 2 and err == ("spingpu run: error: networks-per-task: 3 networks per task do not fit in the memory "
                               "each of 2 workers has here; allowed here: at most 2\n"), err
    assert not Path("results").exists()
    run_ok(["run", str(study_path), "--workers", "2", *FAST])
    assert store_attrs("results/tiny.zarr")["networks_per_task"] == 2
    assert np.isfinite(load("results/tiny.zarr").test_acc.values).all()


def test_a_study_whose_results_this_process_could_not_summarise_is_refused_before_it_runs(tmp_path, monkeypatch):
    """The summary and report read every network's results into this process: a study too large
    for its memory is refused at once (exit 2, one line, nothing written), not after its training
    (a billion networks made a 49 MB store, then failed); without the report it needs less."""
    from spingpu.studies import runner
    from spingpu.training import trainer

    monkeypatch.chdir(tmp_path)
    study_path = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE.replace("networks = 2", "networks = 5")
                       + '[sweep]\n"neuron.delta_i" = [5e-6, 2e-5, 4e-5]\n')
    report = 5 * (runner.DRIVER_BYTES_PER_NETWORK + 3 * runner.REPORT_BYTES_PER_NETWORK_CELL)
    monkeypatch.setattr(trainer, "available_memory", lambda: report - 1)
    rc, _, err = run_main(["run", str(study_path), "--backend", "numpy"])
    assert rc == 2 and err == (f"spingpu run: error: networks: 5 networks x 3 cells need about {report} bytes of "
                               f"memory here for the summary and report of their results, and {report - 1} bytes "
                               f"is available; allowed here: at most 4 networks (9 with --no-report)\n"), err
    assert os.listdir(tmp_path) == ["study.toml"]
    # the summary alone fits (the workers' share of this tiny memory, which no network fits, is another test's)
    monkeypatch.setattr(runner, "networks_fitting_a_worker", lambda *args, **kwargs: None)
    run_ok(["run", str(study_path), *FAST])
    assert np.isfinite(load("results/tiny.zarr").test_acc.values).all()


def test_one_worker_per_gpu_needs_dask_cuda(monkeypatch, tmp_path):
    import sys

    from spingpu import backends
    from spingpu.backends import Backend
    from spingpu.studies import runner

    monkeypatch.setattr(backends, "cuda_gpus", lambda: ("GPU A (cc 9.0, 139.8 GiB)", "GPU B (cc 9.0, 139.8 GiB)"))
    opts = runner.RunOptions(out=str(tmp_path / "r.zarr"), backend="cuda")
    assert runner._gpu_workers(Backend("cuda"), opts) == 2
    assert runner._gpu_workers(Backend("cuda", simulator=True), opts) == 0  # simulator: CPU worker processes
    assert runner._gpu_workers(Backend("cpu"), opts) == 0
    assert runner._gpu_workers(Backend("cuda"), runner.RunOptions(out=opts.out, scheduler="tcp://h:8786")) == 0
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed
    with pytest.raises(ConfigError, match=r"^backend: one Dask worker per GPU needs dask-cuda: "
                                          r"pip install 'spingpu\[cluster-gpu\]'"):
        runner._connect(opts, 2, print, gpus=2)
    assert list(tmp_path.iterdir()) == []


def test_a_cluster_table_the_run_does_not_use_is_said_in_one_warning(tmp_path):
    """On the local cluster (or an existing scheduler) the study's [cluster] table, dask-jobqueue's
    arguments, does nothing: the run says so, naming its keys, and runs."""
    study = write(tmp_path / "s.toml", BASE + '\n[cluster]\nqueu = "gpu"\njobs = -2\n')
    rc, printed, err = run_main(["run", str(study), "--out", str(tmp_path / "r.zarr"), "--workers", "1", *FAST])
    assert rc == 0, err
    assert err.splitlines()[0] == ("spingpu run: warning: the study's [cluster] table (queu, jobs) is for --cluster "
                                   "slurm or pbs; not used with the local cluster")
    assert "warning" not in "\n".join(err.splitlines()[1:])


def test_workers_given_with_a_scheduler_are_said_to_be_unused(tmp_path, monkeypatch):
    study_file = write(tmp_path / "s.toml", BASE)

    def drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log):
        store_every_task(options.out, study, npt)

    rc, stdout, err = _run_without_dask(monkeypatch, ["run", str(study_file), "--out", str(tmp_path / "s.zarr"),
                                                      "--scheduler", "tcp://127.0.0.1:8786", "--workers", "3", *FAST],
                                        drive, lambda *args: (_QuietClient(), None))
    assert rc == 0, err
    assert err == ["spingpu run: warning: workers: --workers 3 starts local workers; with --scheduler the tasks run on "
                   "the scheduler's workers, however many they are"], err


def test_resume_and_overwrite_together_are_refused_whether_or_not_the_store_exists(tmp_path):
    study = write(tmp_path / "s.toml", BASE)
    rc, printed, err = run_main(["run", str(study), "--out", str(tmp_path / "none.zarr"), "--resume", "--overwrite",
                                 *FAST])
    assert (rc, printed, err) == (2, "", "spingpu run: error: resume: --resume and --overwrite exclude each other\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_every_shipped_study_file_loads_and_builds_its_cells(path, tmp_path):
    """Every key validates and every cell builds. MNIST studies read a stand-in mnist.npz in place
    of their data_dir (the real files are not on every machine that runs the tests)."""
    text = path.read_text()
    if re.search(r"(?m)^data_dir\s*=", text):
        rng = np.random.default_rng()
        np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
                 y_train=np.arange(60, dtype=np.uint8) % 10, x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
                 y_test=np.arange(20, dtype=np.uint8) % 10)
        text = re.sub(r"(?m)^data_dir\s*=.*$", f"data_dir = {json.dumps(str(tmp_path))}", text)
    copy = tmp_path / path.name
    copy.write_text(text)
    study = load_study(copy)
    assert study.n_cells >= 1 and study.name == path.stem


# --- resume: the same inputs, the same spingpu, the store's own split; bad schedulers and links --


CSV_STUDY = """\
name = "csvdata"
networks = 2

[dataset]
name = "csv:data.csv"

[network]
hidden = [3]

[training]
epochs = 1
"""


def made_store(tmp_path, text, npt=None, version=None, done=False, out="s.zarr"):
    """A store of the study ``text`` created with the real store API (no task run; with ``done``,
    every task written with made-up numbers and marked done), as a first run would have left it."""
    from spingpu.studies.store import create_store

    study_path = write(tmp_path / "study.toml", text)
    study = load_study(study_path)
    npt = npt or study.networks
    path = tmp_path / out
    create_store(path, study, npt, {"backend": "numpy", "device": "CPU",
                                    "spingpu_version": version or spingpu.__version__})
    if done:
        store_every_task(path, study, npt)
    return study_path, study, path


def test_resume_is_refused_when_an_input_files_contents_changed(tmp_path):
    data = write_csv(tmp_path / "data.csv")
    study_path, study, out = made_store(tmp_path, CSV_STUDY)
    assert [p for p, _ in study.inputs] == [str(data.resolve())]
    assert json.loads(load(out).attrs["input_files"]) == [list(item) for item in study.inputs]
    before = snapshot(out)
    rows = data.read_text().splitlines()
    relabelled = [r.rsplit(",", 1)[0] + f",{(int(r.rsplit(',', 1)[1]) + 1) % 3}" for r in rows[1:]]
    data.write_text("\n".join(rows[:1] + relabelled) + "\n")  # the same features, other labels
    changed = load_study(study_path)
    assert changed.data == study.data and changed.digest != study.digest
    rc, out_text, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and out_text == "", err
    assert err == (f"spingpu run: error: resume: {out} was made from other contents of {data.resolve()}: the input data "
                   "changed since, and resuming would mix results of both; use another --out or --overwrite\n")
    assert snapshot(out) == before


def test_resume_of_a_store_from_before_input_hashing_says_so(tmp_path):
    import zarr

    write_csv(tmp_path / "data.csv")
    study_path, study, out = made_store(tmp_path, CSV_STUDY)
    group = zarr.open_group(str(out), mode="r+")
    del group.attrs["input_files"]
    group.attrs["spingpu_study_digest"] = "an older digest, without the data files' contents"
    zarr.consolidate_metadata(str(out))
    before = snapshot(out)
    rc, out_text, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and out_text == "", err
    assert err == (f"spingpu run: error: resume: {out} was written before spingpu recorded the contents of a study's "
                   "data files, so it cannot be checked against them; rerun it with --overwrite or use another "
                   "--out\n")
    assert snapshot(out) == before


def test_resume_is_refused_across_spingpu_versions(tmp_path):
    study_path, _, out = made_store(tmp_path, BASE, version="0.0.1")
    before = snapshot(out)
    rc, _, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 2
    assert err == (f"spingpu run: error: resume: {out} was written by spingpu 0.0.1, this is spingpu "
                   f"{spingpu.__version__}: numbers may differ between versions; resume with spingpu 0.0.1, or use "
                   "another --out or --overwrite\n")
    assert snapshot(out) == before


def test_resume_adopts_the_stores_networks_per_task_unless_another_is_given(tmp_path):
    # 2 networks in tasks of 1: the default for 1 or 4 workers would be 2, so a recomputed default
    # would not match the store's split
    study_path, study, out = made_store(tmp_path, BASE, npt=1, done=True)
    before = snapshot(out)
    for workers in ("1", "4"):
        printed = run_ok(["run", str(study_path), "--out", str(out), "--resume", "--workers", workers, *FAST])
        assert f"study study: every task of {out} is stored; nothing to run" in printed
    rc, _, err = run_main(["run", str(study_path), "--out", str(out), "--resume", "--networks-per-task", "2", *FAST])
    assert rc == 2 and err == ("spingpu run: error: networks-per-task: 2 differs from the store's 1; resume with "
                               "the same value\n")
    assert snapshot(out) == before


@pytest.mark.parametrize("scheduler, message", [
    ("notaurl", "scheduler: 'notaurl' is not a scheduler address; expected e.g. tcp://HOST:PORT"),
    ("tcp://", "scheduler: 'tcp://' is not a scheduler address; expected e.g. tcp://HOST:PORT"),
    ("tcp://127.0.0.1:1", "scheduler: cannot connect to tcp://127.0.0.1:1: nothing listens there (connection refused "
                          "for 1 s); start the scheduler first, or give its address, e.g. tcp://HOST:8786"),
    ("tcp://no-such-host.invalid:8786", "scheduler: cannot connect to tcp://no-such-host.invalid:8786: unknown host "
                                        "'no-such-host.invalid' ("),
    ("silent", "scheduler: nothing at tcp://127.0.0.1:PORT answered as a Dask scheduler within 3 s (a dashboard's or "
               "another service's port?); give the scheduler's address, e.g. tcp://HOST:8786"),
    ("greeting", "scheduler: "),  # either it answers something unreadable, or never: both said as such
])
def test_a_bad_scheduler_writes_nothing_and_keeps_a_store_to_overwrite(tmp_path, monkeypatch, scheduler, message):
    """A closed port, and servers that are not a Dask scheduler: one that takes the connection and
    never answers (an HTTP port waits for a request: a hang), one that greets first (an SSH
    server: a 2.8 EiB allocation from reading its banner as a message's length)."""
    import socket
    import threading

    from spingpu.studies import runner

    monkeypatch.setattr(runner, "SCHEDULER_SECONDS", 1)
    monkeypatch.setattr(runner, "JOIN_GRACE_SECONDS", 2)
    monkeypatch.setattr(runner, "REFUSED_SECONDS", 1)
    if scheduler in ("silent", "greeting"):
        server = socket.create_server(("127.0.0.1", 0))
        held = []

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                held.append(conn)
                if scheduler == "greeting":
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6 banner that is not Dask's protocol\r\n" * 4)

        threading.Thread(target=serve, daemon=True).start()
        port = server.getsockname()[1]
        scheduler, message = f"tcp://127.0.0.1:{port}", message.replace("PORT", str(port))
    if message == "scheduler: ":  # the greeting
        message = re.escape(message) + rf".*{re.escape(scheduler)} .*as a Dask scheduler"
    else:
        message = re.escape(message)
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE)
    rc, _, err = run_main(["run", str(study), "--scheduler", scheduler, *FAST])
    assert rc == 2 and err.count("\n") == 1 and re.match(f"spingpu run: error: {message}", err), err
    assert sorted(os.listdir(tmp_path)) == ["study.toml"]
    _, _, out = made_store(tmp_path, 'name = "tiny"\n' + BASE, done=True)
    before = snapshot(out)
    rc, _, err = run_main(["run", str(study), "--out", str(out), "--overwrite", "--scheduler", scheduler, *FAST])
    assert rc == 2 and re.match(f"spingpu run: error: {message}", err), err
    assert snapshot(out) == before


def test_overwrite_of_a_symlinked_store_is_refused_and_deletes_nothing(tmp_path):
    study_path, _, target = made_store(tmp_path, BASE, done=True)
    link = tmp_path / "link.zarr"
    link.symlink_to(target, target_is_directory=True)
    before = snapshot(target)
    rc, _, err = run_main(["run", str(study_path), "--out", str(link), "--overwrite", *FAST])
    assert rc == 2 and err == (f"spingpu run: error: out: {link} is a symbolic link; --overwrite does not delete "
                               "through a link: remove the link or choose another --out\n"), err
    assert link.is_symlink() and snapshot(target) == before


def test_whole_number_sweep_values_of_integer_keys_become_integers(tmp_path):
    text = with_line("sweep", '"training.epochs" = {linspace = [1, 2, 2]}\n"training.batch_size" = [8.0, 16.0]',
                     BASE.replace("epochs = 2\n", ""))
    study = load_study(write(tmp_path / "study.toml", text))
    assert study.axes[0].values == (1, 2) and study.axes[1].values == (8, 16)
    assert all(type(v) is int for axis in study.axes for v in axis.values)
    config = study.cell(3).config
    assert (config.epochs, config.batch_size) == (2, 16) and type(config.epochs) is int
    _, _, out = made_store(tmp_path, text)
    ds = load(out)
    assert ds.epochs.dtype.kind == "i" and ds.batch_size.dtype.kind == "i" and ds.sizes["epoch"] == 2
    assert json.loads(ds.attrs["study_data"])["sweep"]["training.batch_size"] == [8.0, 16.0]


def test_whole_number_floats_and_one_layer_width_are_read_as_the_python_api_reads_them(tmp_path):
    """``epochs = 2.0``, ``networks = 3e0``, ``hidden = 5``: the study of ``epochs = 2``, ``networks = 3``,
    ``hidden = [5]`` (same digest, same cells, integers); a fraction for an integer key is refused."""
    plain = with_line("training", "batch_size = 16", BASE).replace("networks = 2", "networks = 3")
    plain = re.sub(r"hidden = \[\d+\]", "hidden = [5]", plain)
    floats = re.sub(r"epochs = (\d+)", r"epochs = \1.0", plain).replace("networks = 3", "networks = 3e0")
    floats = floats.replace("batch_size = 16", "batch_size = 1.6e1").replace("hidden = [5]", "hidden = 5")
    assert floats != plain
    a, b = (load_study(write(tmp_path / name, text)) for name, text in (("a.toml", plain), ("b.toml", floats)))
    assert a.digest == b.digest and a.data == b.data and b.networks == 3 and type(b.networks) is int
    config = b.cell(0).config
    assert config.hidden == (5,) and type(config.epochs) is int and config.batch_size == 16
    bad = floats.replace("batch_size = 1.6e1", "batch_size = 16.5")
    with pytest.raises(ConfigError, match=r"training.batch_size: expected an integer, got 16.5$"):
        load_study(write(tmp_path / "c.toml", bad))
    huge = floats.replace("networks = 3e0", "networks = 1e300")  # stays a float: a short error, not 301 digits
    with pytest.raises(ConfigError, match=r"networks: expected an integer, got 1e\+300$"):
        load_study(write(tmp_path / "d.toml", huge))


def test_the_digest_covers_the_contents_of_every_data_file_a_study_reads(tmp_path, monkeypatch):
    """MNIST under data_dir (as the loader picks: mnist.npz here) and a tabulated model's iv_csv;
    a file of data_dir the loader does not read is not part of it."""
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    rng = np.random.default_rng(1)
    mnist = tmp_path / "mnist" / "mnist.npz"
    mnist.parent.mkdir()
    np.savez(mnist, x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), y_train=np.arange(60) % 10,
             x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)
    write(tmp_path / "mnist" / "notes.txt", "not read\n")
    current = [float(i) for i in np.linspace(-1e-4, 1e-4, 9)]
    iv = write(tmp_path / "iv.csv", "current,voltage\n" + "".join(f"{i!r},{2e3 * i + 1e7 * i ** 3!r}\n"
                                                                   for i in current))
    text = BASE.replace('name = "iris"', 'name = "mnist"\ndata_dir = "mnist"') + \
        '\n[model]\nname = "tabulated"\niv_csv = "iv.csv"\n'
    path = write(tmp_path / "study.toml", text)
    study = load_study(path)
    assert [p for p, _ in study.inputs] == sorted([str(iv.resolve()), str(mnist.resolve())])
    assert dict(study.inputs)[str(mnist.resolve())] == hashlib.sha256(mnist.read_bytes()).hexdigest()
    write(tmp_path / "mnist" / "notes.txt", "changed\n")
    assert load_study(path).digest == study.digest
    iv.write_text(iv.read_text() + "# a comment changes the file\n")
    assert load_study(path).digest != study.digest


def test_a_swept_model_parameter_carries_the_parameters_unit(tmp_path):
    text = with_line("sweep", '"model.params.r_p" = [800.0, 1200.0]\n"model.params.theta0" = [1.4, 1.6]\n'
                              '"training.lr" = [0.01, 0.1]')
    axes = {a.dim: a.units for a in load_study(write(tmp_path / "study.toml", text)).axes}
    assert axes == {"r_p": "ohm", "theta0": "rad", "lr": "1"}
    swept = with_line("sweep", '"model.name" = ["stt_compact", "macrospin"]\n"model.params.v_h" = [0.4, 0.6]')
    axes = {a.dim: a.units for a in load_study(write(tmp_path / "swept.toml", swept)).axes}
    assert axes == {"model": "1", "v_h": "V"}


def test_a_study_file_name_with_spaces_or_accents_is_a_valid_default_name(tmp_path):
    study = load_study(write(tmp_path / "my étude 2.toml", BASE))
    assert study.name == "my étude 2"


def test_store_records_the_engine_of_each_cell(tmp_path, shared_scheduler):
    """Widths up to 64 train in the fused CPU engine (float64), wider in the batched one (float32):
    the store says which, per cell, as `spingpu train`'s attributes do."""
    study = write(tmp_path / "e.toml", BASE.replace("hidden = [3]\n", "") +
                  '\n[sweep]\n"network.hidden" = [[3], [70]]\n')
    rc, out, err = run_main(["run", str(study), "--out", str(tmp_path / "e.zarr"), "--backend", "cpu", "--no-report",
                             "--scheduler", shared_scheduler])
    assert rc == 0, err
    # the bar says it sets up until the first task is back, and not after
    from spingpu.progress import STUDY_SETUP

    refreshes = [ln for ln in err.split("\r") if "networks" in ln]
    assert STUDY_SETUP in refreshes[0] and "0/4" in refreshes[0], refreshes
    assert STUDY_SETUP not in refreshes[-1] and "4/4" in refreshes[-1], refreshes
    ds = spingpu.open_results(tmp_path / "e.zarr")
    assert [ENGINES[int(code)] for code in ds.engine.values] == ["fused_cpu", "batched_cpu"]
    # a store as its creation leaves it (no task run): every cell's engine reads "not_run"
    from spingpu.studies.store import create_store

    create_store(tmp_path / "fresh.zarr", load_study(study), 3, {})
    fresh = spingpu.open_results(tmp_path / "fresh.zarr")
    assert [ENGINES[int(code)] for code in fresh.engine.values] == ["not_run", "not_run"]
    alone = spingpu.train(spingpu.load_dataset("iris"), load_study(study).cell(1).config, n_networks=1, backend="cpu")
    assert (alone.attrs["engine"], alone.attrs["backend"], alone.attrs["weights_dtype"]) == ("batched", "cpu", "float32")


def test_warnings_of_the_workers_are_said_once_in_one_line(tmp_path, shared_scheduler):
    """Sampled macrospin junctions too fast for dt, and readings beyond their tables, in both tasks
    of a cell: one warning line each from the driver, not a two-line Python warning from the worker
    at every task."""
    study = write(tmp_path / "m.toml", BASE.replace("networks = 2", "networks = 4") + """
[model]
name = "macrospin"

[model.params]
ms = 2.5e6
table_points = 5
settle_time = 0.1e-9
average_time = 0.05e-9

[variability]
sigma_d2d = 0.3
""")
    rc, out, err = run_main(["run", str(study), "--out", str(tmp_path / "m.zarr"), "--networks-per-task", "2",
                             "--scheduler", shared_scheduler, *FAST])
    assert rc == 0, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "warning" in ln.lower()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("spingpu run: warning: param dt: ") and lines[0].endswith(
        "resolves them all (said once, for the first task that gave it)")
    assert lines[1].startswith("spingpu run: warning: extrapolated_readings: ") and (
        "of 2 networks read junctions beyond their macrospin tables' current range" in lines[1]) and lines[1].endswith(
        "(i_bias, i_gain, dac_range) (said once, for the first task that gave it)"), lines


@pytest.mark.parametrize("text, key, fixed", [
    (with_line("sweep", '"training.epochs" = [1, 2]'), "training.epochs", "2"),
    (with_line("sweep", '"model.params.v_h" = [0.4, 0.6]', with_line("model.params", "v_h = 0.5")),
     "model.params.v_h", "0.5")])
def test_a_value_both_set_and_swept_is_warned_of_once(tmp_path, text, key, fixed):
    """Every cell takes the sweep's values; the fixed one, shown in the study's text, is used by none."""
    from spingpu import UnusedSettingWarning

    with pytest.warns(UnusedSettingWarning) as caught:
        study = load_study(write(tmp_path / "s.toml", text))
    assert [str(w.message) for w in caught] == [f"{key}: set to {fixed} and swept (sweep.{key}): the sweep's values "
                                                "replace it in every cell"]
    assert len(study.axes) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_study(write(tmp_path / "plain.toml", BASE))  # nothing set twice: no warning
        load_study(write(tmp_path / "name.toml", with_line("sweep", '"dataset.name" = ["iris", "digits"]')))


def test_errors_stay_one_bounded_line_whatever_the_study_file_holds(tmp_path):
    """A key or a path with a line break in it, and a value of 100,000 characters quoted whole,
    made errors of several lines and of 100 KB; the line break is written \\n, a value is quoted
    short, and the item of a sweep that is not a number is named."""
    from spingpu.errors import MAX_PROBLEM

    for text, start, end in (
            (with_line("training", '"lr\\nx" = 1'), "study.toml: training.lr\\nx: unknown key", None),
            (BASE.replace("epochs = 2", 'epochs = "' + "x" * 100_000 + '"'), "study.toml: training.epochs: expected "
             "an integer, got 'xxx", "xxx..."),
            (with_line("sweep", '"training.lr" = [' + "0.1, " * 30_000 + "true]"), "study.toml: sweep.training.lr: "
             "values must be numbers or strings, got True (value 30001 of 30001)", None)):
        study = write(tmp_path / "study.toml", text)
        rc, out, err = run_main(["run", str(study), *FAST])
        line = err.removeprefix(f"spingpu run: error: {tmp_path}/")
        assert rc == 2 and out == "" and err.count("\n") == 1 and line.startswith(start), err[:300]
        assert len(line) <= MAX_PROBLEM + 200 and (end is None or line.rstrip("\n").endswith(end)), err[-300:]
        assert sorted(os.listdir(tmp_path)) == ["study.toml"]


def test_a_store_is_written_by_one_run_at_a_time(tmp_path, monkeypatch):
    """A run holds its store by an exclusive flock on a file beside it (.NAME.lock, saying host and
    pid): a second --resume would train the same tasks again, an --overwrite would replace the
    store under the first run. Either is refused in one line while the lock is held (also through
    a link to the store, and on a study's first run, before results/ existed), the store untouched;
    a lock file whose holder is gone (the kernel drops a killed process's lock) is taken; a
    finished run leaves none."""
    import fcntl
    import socket

    monkeypatch.chdir(tmp_path)
    study_path, _, out = tiny_study_and_store(tmp_path, "numpy")
    lock = out.with_name(".tiny.zarr.lock")
    before = sorted(p.name for p in out.iterdir())
    owner = f"{socket.gethostname()} 4242"
    link = tmp_path / "link.zarr"
    link.symlink_to(out.resolve(), target_is_directory=True)
    with open(lock, "w") as held:  # another run, here or on another host sharing the folder
        held.write(owner + "\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        for flags in (["--resume"], ["--overwrite"], ["--resume", "--out", str(link)]):
            rc, printed, err = run_main(["run", str(study_path), *flags, *FAST])
            shown = link if str(link) in flags else out
            assert rc == 2 and printed == "" and err == (
                f"spingpu run: error: out: {shown} is being written by another run (process 4242 on "
                f"{socket.gethostname()}); wait for it to end\n"), err
            assert sorted(p.name for p in out.iterdir()) == before and lock.read_text() == owner + "\n"
    run_ok(["run", str(study_path), "--resume", *FAST])  # the file is left, its lock is not held
    assert not lock.exists() and np.isfinite(load(out).test_acc.values).all()
    run_ok(["run", str(study_path), "--overwrite", *FAST])
    assert sorted(os.listdir("results")) == ["tiny.zarr"]


def test_a_first_run_holds_its_store_before_results_exists(tmp_path, monkeypatch):
    """The default store's folder (results/) is made before the lock is taken, and removed again
    where the run is refused before its store is made."""
    from spingpu.studies import runner, store

    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE)
    held = []
    real = store.run_lock

    def spy(path):
        held.append(Path(path).parent.is_dir())
        return real(path)

    monkeypatch.setattr(store, "run_lock", spy)
    run_ok(["run", str(study), *FAST])
    assert held == [True] and sorted(os.listdir("results")) == ["tiny.zarr"]
    shutil.rmtree("results")
    monkeypatch.setattr(runner, "_run_held", lambda *a: {}.pop("refused"))
    with pytest.raises(KeyError):
        runner.run_study(load_study(study), runner.RunOptions(out="results/tiny.zarr", backend="numpy"))
    assert os.listdir(tmp_path) == ["study.toml"]


def test_joining_a_scheduler_without_workers_says_so():
    """An external scheduler with no workers took the tasks and the run waited without a word."""
    from dask.distributed import LocalCluster

    from spingpu.studies import runner

    said = []
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        client = runner._join_scheduler(cluster.scheduler_address, said.append)
        client.close()
    assert said == [f"joined the Dask scheduler at {cluster.scheduler_address}",
                    f"the scheduler at {cluster.scheduler_address} has no workers yet: the tasks wait until some "
                    f"join (dask worker {cluster.scheduler_address})"]


def test_an_output_under_a_file_says_it_is_a_file(tmp_path, monkeypatch):
    """--out study.toml/x.zarr said "folder study.toml does not exist" of a file that exists."""
    monkeypatch.chdir(tmp_path)
    study = write(tmp_path / "study.toml", 'name = "tiny"\n' + BASE)
    rc, _, err = run_main(["run", str(study), "--out", f"{study}/x.zarr", *FAST])
    assert (rc, err) == (2, f"spingpu run: error: out: {study} is a file, not a folder\n")
    rc, _, err = run_main(["train", "--epochs", "1", "--networks", "1", "--out", f"{study}/r.nc"])
    assert (rc, err) == (2, f"spingpu train: error: out: {study} is a file, not a folder\n")
    rc, _, err = run_main(["run", str(study), "--out", "nowhere/x.zarr", *FAST])
    assert (rc, err) == (2, "spingpu run: error: out: folder nowhere does not exist\n")
    assert os.listdir(tmp_path) == ["study.toml"]


def test_the_dask_event_loops_tracebacks_are_silenced_during_a_run_and_only_then(tmp_path, monkeypatch, capfd):
    """A Ctrl-C inside a call of the Dask client can leave distributed's ``sync`` in a NameError,
    which its event loop logs through ``tornado.application`` as a traceback above the run's own
    stop line: that logger is silenced while the run holds its store, and restored after."""
    import logging

    pytest.importorskip("distributed")  # its import sets the logger's level: the level before a run

    from spingpu.studies import runner

    tornado = logging.getLogger("tornado.application")
    before = tornado.level
    seen = []

    def held(study, options, *rest):
        seen.append(tornado.getEffectiveLevel())
        tornado.error("a callback's traceback")  # nothing reaches stderr
        return options.out

    monkeypatch.setattr(runner, "_run_held", held)
    study = load_study(write(tmp_path / "s.toml", BASE))
    out = str(tmp_path / "r.zarr")
    assert runner.run_study(study, runner.RunOptions(out=out, backend="numpy"), progress=False) == out
    assert seen == [logging.CRITICAL] and tornado.level == before < logging.CRITICAL
    assert "a callback's traceback" not in capfd.readouterr().err
