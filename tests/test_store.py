"""The results store: whole creation (a killed creation leaves no store), incomplete stores refused
in one line and replaced by --overwrite, and each network's last trained epoch."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr

import spingpu
from spingpu.errors import ConfigError
from spingpu.studies import load_study, open_results
from spingpu.studies.spec import parse_study
from spingpu.studies.store import (STORE_MARK, check_existing, create_store, incomplete, last_epoch_values,
                                   load_results, mark_done, store_attrs, task_count, write_task)
from spingpu.training.results import VARIABLES
from studyutil import run_main

FAST = ["--backend", "numpy", "--no-report", "--workers", "1"]
STUDY = """\
name = "s"
networks = 3
seed = 4

[dataset]
name = "iris"

[network]
hidden = [3]

[training]
epochs = 2

[sweep]
"training.grad_mode" = ["fd_forward", "model"]
"""


def attrs():
    return {"backend": "numpy", "device": "CPU", "spingpu_version": spingpu.__version__}


def study_file(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return path, load_study(path)


def files(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- creation is whole or nothing ----------------------------------------------------------------


def partial_to_zarr(real):
    """A Dataset.to_zarr that writes the group (its attributes hold the store mark) and one array,
    as an interrupted creation had, and then stops."""
    def to_zarr(self, store, *args, **kwargs):
        real(self[["test_acc"]], store, mode="w-", compute=False, consolidated=False, zarr_format=2)
        raise KeyboardInterrupt("interrupted while creating the store")
    return to_zarr


def test_an_interrupted_creation_leaves_nothing_at_out_nor_beside_it(tmp_path, monkeypatch):
    import xarray as xr

    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    monkeypatch.setattr(xr.Dataset, "to_zarr", partial_to_zarr(xr.Dataset.to_zarr))
    with pytest.raises(KeyboardInterrupt, match="interrupted while creating"):
        create_store(out, study, 2, attrs())
    assert sorted(os.listdir(tmp_path)) == ["study.toml"]
    with pytest.raises(ConfigError, match=f"^resume: no store at {out} to resume$"):
        check_existing(out, study, 2, True, False)
    monkeypatch.undo()
    create_store(out, study, 2, attrs())
    assert incomplete(out) is None and sorted(os.listdir(tmp_path)) == ["s.zarr", "study.toml"]


def test_a_stop_while_the_store_is_made_acts_once_it_is_whole(tmp_path, monkeypatch):
    """A Ctrl-C during the creation (zarr writes from a thread of its own, which would go on
    writing into a temporary being removed) acts once the store is in place, with nothing beside it."""
    import time

    from spingpu.studies import store

    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    real = store._move_into_place

    def move(tmp, path):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        real(tmp, path)

    monkeypatch.setattr(store, "_move_into_place", move)
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            create_store(out, study, 2, attrs())
    finally:
        signal.signal(signal.SIGINT, saved)
    assert incomplete(out) is None and sorted(os.listdir(tmp_path)) == ["s.zarr", "study.toml"]


def test_a_stop_while_a_store_is_removed_leaves_none_at_out(tmp_path, monkeypatch):
    """--overwrite renames the old store away before deleting it: a stop during the deletion leaves
    no half store at out, and its hidden remains go with the next creation once this process has
    ended (remove_stale_partials)."""
    from spingpu.studies import store

    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())

    def stopped(path, **kwargs):
        (path / ".zattrs").unlink()  # part of it deleted
        raise KeyboardInterrupt

    monkeypatch.setattr(store.shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt):
        store.remove_store(out)
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2 and left[0].startswith(f".s.zarr.partial-{socket.gethostname()}-{os.getpid()}-")
    assert left[1] == "study.toml"


KILLED = """\
import sys, time
import xarray as xr
sys.path.insert(0, {tests!r})
from test_store import attrs, partial_to_zarr
from spingpu.studies import load_study
from spingpu.studies.store import create_store

real = xr.Dataset.to_zarr
def stall(self, store, *args, **kwargs):
    try:
        partial_to_zarr(real)(self, store)
    except KeyboardInterrupt:
        print("partly written", flush=True)
        time.sleep(600)
xr.Dataset.to_zarr = stall
create_store({out!r}, load_study({study!r}), 2, attrs())
"""


def test_a_killed_creation_leaves_a_hidden_folder_that_the_next_creation_removes(tmp_path):
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    code = KILLED.format(tests=os.path.dirname(__file__), out=str(out), study=str(study_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "partly written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = sorted(os.listdir(tmp_path))
    partial = f".s.zarr.partial-{socket.gethostname()}-{proc.pid}-"
    assert len(left) == 2 and left[0].startswith(partial) and left[1] == "study.toml", left
    assert STORE_MARK in store_attrs(tmp_path / left[0])  # the mark was written, but not at --out
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert (rc, printed, err) == (2, "", f"spingpu run: error: resume: no store at {out} to resume\n")
    create_store(out, study, 2, attrs())  # the killed creation's folder goes: its process is gone
    assert sorted(os.listdir(tmp_path)) == ["s.zarr", "study.toml"] and incomplete(out) is None


def test_the_partial_folders_of_running_or_other_hosts_creations_are_left_alone(tmp_path):
    _, study = study_file(tmp_path)
    mine = tmp_path / f".s.zarr.partial-{socket.gethostname()}-{os.getpid()}-0a1b2c3d"
    other_host = tmp_path / f".s.zarr.partial-not-{socket.gethostname()}-999999999-0a1b2c3d"  # a dead pid
    other_name = tmp_path / f".t.zarr.partial-{socket.gethostname()}-999999999-0a1b2c3d"
    for folder in (mine, other_host, other_name):
        folder.mkdir()
        (folder / ".zgroup").write_text('{"zarr_format": 2}')
    create_store(tmp_path / "s.zarr", study, 2, attrs())
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, other_host.name, other_name.name, "s.zarr",
                                                   "study.toml"])


def test_creation_never_replaces_what_is_at_out(tmp_path):
    _, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    out.mkdir()  # an empty folder: a rename would silently replace it
    with pytest.raises(ConfigError, match=f"^out: {out} appeared while the store was being created; not replaced"):
        create_store(out, study, 2, attrs())
    assert sorted(os.listdir(tmp_path)) == ["s.zarr", "study.toml"] and os.listdir(out) == []


# --- an incomplete store: refused in one line, replaced by --overwrite -------------------------------


def remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


DAMAGE = {  # what is removed from a whole store, and what the error says is missing
    "consolidated metadata": ([".zmetadata"], "no consolidated metadata"),
    "an array": (["task_done"], "missing task_done"),
    "array metadata": (["test_acc/.zarray", "val_acc/.zattrs"], "missing val_acc, test_acc"),
    "the group": ([".zgroup", ".zmetadata"], "no consolidated metadata"),  # zarr cannot open it
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_incomplete_store_is_refused_in_one_line_and_left_untouched(tmp_path, damage):
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    removed, missing = DAMAGE[damage]
    for name in removed:
        remove(out / name)
    before = files(tmp_path)
    message = (f"out: {out} is an incomplete spingpu results store ({missing}: its creation was interrupted, or it "
               "was damaged); replace it with --overwrite or choose another --out")
    for extra in (["--resume"], []):
        rc, printed, err = run_main(["run", str(study_path), "--out", str(out), *extra, *FAST])
        assert (rc, printed, err) == (2, "", f"spingpu run: error: {message}\n")
    assert files(tmp_path) == before
    assert STORE_MARK in store_attrs(out)
    assert check_existing(out, study, 2, False, True) is False  # --overwrite may replace it


def test_overwrite_replaces_an_incomplete_store_zarr_cannot_open(tmp_path):
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    for name in (".zgroup", ".zmetadata", "task_done", "train_loss"):
        remove(out / name)
    with pytest.raises(Exception):
        zarr.open_group(str(out), mode="r")
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--overwrite", "--networks-per-task", "2",
                                 *FAST])
    assert rc == 0, err
    assert "2 cells x 3 networks, 2 tasks of up to 2 networks per cell; 4 tasks to run\n" in printed
    assert incomplete(out) is None and sorted(os.listdir(tmp_path)) == ["s.zarr", "study.toml"]
    with open_results(out) as ds:
        assert (ds.task_done.values == 1).all() and np.isfinite(ds.test_acc.values).all()


def test_a_store_with_unreadable_attributes_is_refused_as_damaged_and_overwrite_replaces_it(tmp_path):
    """A store whose group attributes are garbage is still known as spingpu's (by the copy in its
    consolidated metadata): refused as damaged, not as someone else's folder, and --overwrite replaces it."""
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    (out / ".zattrs").write_bytes(bytes(np.random.default_rng().integers(0, 256, 64, dtype=np.uint8)) + b"{")
    before = files(tmp_path)
    message = (f"out: {out} is an incomplete spingpu results store (unreadable group metadata: its creation was "
               "interrupted, or it was damaged); replace it with --overwrite or choose another --out")
    for extra in (["--resume"], []):
        assert run_main(["run", str(study_path), "--out", str(out), *extra, *FAST]) == (
            2, "", f"spingpu run: error: {message}\n")
    assert files(tmp_path) == before
    rc, _, err = run_main(["run", str(study_path), "--out", str(out), "--overwrite", *FAST])
    assert rc == 0, err
    with open_results(out) as ds:
        assert (ds.task_done.values == 1).all() and np.isfinite(ds.test_acc.values).all()


def test_a_folder_with_only_a_copied_consolidated_metadata_file_is_not_taken_for_a_store(tmp_path):
    """The consolidated metadata stands in for a zarr group's garbled attributes only: a folder that
    merely holds a store's .zmetadata (no group) is not a store, and --overwrite does not delete it."""
    study_path, study = study_file(tmp_path)
    store = tmp_path / "s.zarr"
    create_store(store, study, 2, attrs())
    other = tmp_path / "thesis.zarr"
    other.mkdir()
    (other / "thesis.tex").write_text("\\documentclass{article}\n")
    shutil.copy(store / ".zmetadata", other / ".zmetadata")
    before = files(tmp_path)
    rc, printed, err = run_main(["run", str(study_path), "--out", str(other), "--overwrite", *FAST])
    assert (rc, printed) == (2, "") and err == (f"spingpu run: error: out: {other} exists and is not a spingpu results "
                                                "store; choose another --out\n")
    assert files(tmp_path) == before


@pytest.mark.parametrize("variable, which", [("train_loss", 0), ("grad_cosine", -1), ("engine", -1)])
def test_resuming_sets_aside_an_undecodable_task_chunk_and_trains_its_task_again(tmp_path, variable, which):
    """A chunk that is there but cannot be decoded, of a task's numbers (one always read, or one
    that only the report reads; the first task or the last, partial one) or of a cell's (written
    by each of its tasks): a resume that cannot start (a bad --scheduler) leaves the store as it
    is; one that can renames the file KEY.damaged, says so in one warning, trains one task again
    and the store ends as the run that wrote it did, every other chunk untouched."""
    study_path, _ = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    assert run_main(["run", str(study_path), "--out", str(out), "--networks-per-task", "2", *FAST])[0] == 0
    with open_results(out) as ds:
        before_values = ds.load()
    chunk = [p for p in sorted((out / variable).iterdir()) if not p.name.startswith(".")][which]
    chunk.write_bytes(b"\x02garbage" * 8)
    before = files(tmp_path)
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", "--scheduler", "nowhere",
                                 "--backend", "numpy", "--no-report"])
    assert (rc, printed) == (2, "") and "scheduler" in err and files(tmp_path) == before
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 0, err
    assert f"{out}: 1 chunk file cannot be decoded ({chunk}): set aside as *.damaged; 1 task to train to write " \
        "it anew" in err
    assert "1 task to run (resuming)" in printed
    assert chunk.with_name(chunk.name + ".damaged").read_bytes() == b"\x02garbage" * 8
    after = files(tmp_path)
    changed = {k for k in after if after[k] != before.get(k)} | (set(before) - set(after))
    ours = {str(chunk.relative_to(tmp_path)), str(chunk.relative_to(tmp_path)) + ".damaged"}
    assert ours <= changed and all(k.startswith("s.zarr/") for k in changed)
    kept = {k for k in before if k.startswith("s.zarr/") and k not in changed}
    assert sum(k.count("/") == 2 and not k.rsplit("/", 1)[1].startswith(".") for k in kept) > 20  # chunks untouched
    with open_results(out) as ds:
        assert (ds.task_done.values == 1).all()
        xr.testing.assert_identical(ds.load().drop_attrs(), before_values.drop_attrs())
    # the same chunk damaged again: the first file set aside is kept, the second beside it
    chunk.write_bytes(b"\x03garbage" * 8)
    assert run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])[0] == 0
    assert chunk.with_name(chunk.name + ".damaged").read_bytes() == b"\x02garbage" * 8
    assert chunk.with_name(chunk.name + ".damaged.2").read_bytes() == b"\x03garbage" * 8


def test_a_chunk_that_cannot_be_read_is_not_taken_for_a_damaged_one(tmp_path):
    """A read that fails (an OSError: a network filesystem's fault; here a chunk file that is a
    link to itself) is not a chunk that cannot be decoded: nothing is set aside, one line."""
    from spingpu.studies.store import damaged_chunks

    study_path, _ = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    assert run_main(["run", str(study_path), "--out", str(out), "--networks-per-task", "2", *FAST])[0] == 0
    chunk = next(p for p in sorted((out / "test_acc").iterdir()) if not p.name.startswith("."))
    chunk.unlink()
    chunk.symlink_to(chunk.name)
    before = files(tmp_path)
    with pytest.raises(ConfigError, match=r"^out: .*s\.zarr cannot be read \(OSError: \[Errno 40\] "):
        damaged_chunks(out)
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert (rc, printed) == (2, "") and err.count("\n") == 1 and "cannot be read (OSError: [Errno 40]" in err
    assert files(tmp_path) == before and chunk.is_symlink()


def test_resuming_a_store_whose_damage_is_not_a_tasks_is_one_line(tmp_path):
    """A chunk that cannot be decoded outside the tasks' numbers (task_done here): nothing to train
    again that would mend it: one line naming the store and the file, exit 2, nothing written."""
    study_path, _ = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    assert run_main(["run", str(study_path), "--out", str(out), "--networks-per-task", "2", *FAST])[0] == 0
    chunk = next(p for p in sorted((out / "task_done").iterdir()) if not p.name.startswith("."))
    chunk.write_bytes(b"\x02garbage" * 8)
    before = files(tmp_path)
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert (rc, printed) == (2, "") and err.count("\n") == 1, err
    assert err == (f"spingpu run: error: out: {out} is corrupt: the chunk file {chunk} cannot be decoded, and no task "
                   "writes it anew; replace the store with --overwrite or choose another --out\n")
    assert files(tmp_path) == before


# --- each network's last trained epoch ---------------------------------------------------------------


def test_last_epoch_values_are_at_each_networks_last_trained_epoch(tmp_path):
    """Cells of 2 and 4 epochs (the 2-epoch one padded with NaN). In the short cell: network 0 trained;
    network 1 diverged in its 2nd epoch (NaN, as at the last epoch before); network 2 trained but its
    cosine is NaN at its last epoch (NaN, not an earlier epoch's value); network 3 never trained (its
    task did not run)."""
    data = {"name": "ep", "networks": 4, "seed": 1, "dataset": {"name": "iris"}, "network": {"hidden": [3]},
            "sweep": {"training.epochs": [2, 4]}}
    study = parse_study(data, tmp_path / "ep.toml")
    path = tmp_path / "ep.zarr"
    create_store(path, study, 3, attrs())
    rng = np.random.default_rng(3)
    written = []
    for cell, epochs in enumerate((2, 4)):
        metrics = {name: rng.uniform(0.1, 1.0, (3, epochs) if "epoch" in dims else 3)
                   for name, (dims, _, _) in VARIABLES.items()}
        metrics["diverged"] = np.zeros(3, dtype=bool)
        if epochs == 2:
            for name, (dims, _, _) in VARIABLES.items():
                if "epoch" in dims:
                    metrics[name][1, 1:] = np.nan
            metrics["test_acc"][1], metrics["diverged"][1] = np.nan, True
            metrics["grad_cosine"][2, 1] = np.nan
        write_task(path, study, cell, 0, metrics)
        mark_done(path, study, cell, 0)
        if epochs == 4:
            write_task(path, study, cell, 3, {k: v[:1] for k, v in metrics.items()})
            mark_done(path, study, cell, 1)
        written.append(metrics)
    short, long = written
    expected = {
        "grad_cosine": [[short["grad_cosine"][0, 1], np.nan, np.nan, np.nan],
                        list(long["grad_cosine"][:, 3]) + [long["grad_cosine"][0, 3]]],
        "deriv_rel_err": [[short["deriv_rel_err"][0, 1], np.nan, short["deriv_rel_err"][2, 1], np.nan],
                          list(long["deriv_rel_err"][:, 3]) + [long["deriv_rel_err"][0, 3]]],
    }
    with open_results(path) as ds:
        assert task_count(study, 3) == 2 and ds.sizes["epoch"] == 4
        for name, values in expected.items():
            got = last_epoch_values(ds, name)
            assert got.dims == ("epochs", "network")
            np.testing.assert_array_equal(got.values, np.array(values))
            assert last_epoch_values(ds, "test_acc") is ds["test_acc"] or \
                last_epoch_values(ds, "test_acc").identical(ds["test_acc"])
    loaded = load_results(path, ("grad_cosine", "deriv_rel_err", "test_acc"), ("grad_cosine", "deriv_rel_err"))
    for name, values in expected.items():
        assert loaded[name].dims == ("epochs", "network")
        np.testing.assert_array_equal(loaded[name].values, np.array(values))
    assert "train_loss" not in loaded and "diverged" not in loaded  # used, not loaded
    # in memory, so Dask's refusal of a median across chunks does not apply (the README's example)
    median = spingpu.load_results(path, ["test_acc"]).test_acc.median("network")
    readme = spingpu.load_results(path, ["test_acc"], last_epoch=["grad_cosine"])  # the README's call
    np.testing.assert_array_equal(readme.grad_cosine.values, np.array(expected["grad_cosine"]))
    with open_results(path) as ds:
        np.testing.assert_array_equal(median.values, ds.test_acc.load().median("network").values)


def test_resuming_with_a_changed_study_file_names_the_first_setting_that_changed(tmp_path):
    """The store keeps the tables it was made from: a refused resume says which setting differs,
    a table the store lacks key by key."""
    out = tmp_path / "s.zarr"
    create_store(out, study_file(tmp_path)[1], 2, attrs())
    for text, change in ((STUDY.replace("epochs = 2", "epochs = 3"), "training.epochs = 2 in the store, 3 in the study"),
                         (STUDY + "\n[readout]\nread_noise = 2e-3\n",
                          "readout.read_noise = not set in the store, 0.002 in the study")):
        (tmp_path / "study.toml").write_text(text)
        with pytest.raises(ConfigError) as err:
            check_existing(out, load_study(tmp_path / "study.toml"), 2, True, False)
        assert str(err.value) == (f"resume: {out} holds the results of a different study (or of a changed study "
                                  f"file: {change}); use another --out or --overwrite")


def test_a_store_of_an_earlier_results_scheme_is_not_resumed(tmp_path):
    """spingpu's version stays 0.1.0 while results change (a macrospin junction's thermal field,
    spaced sweep values; the model and dataset axes' names): a store made before records no
    results scheme (0) and is refused, in one line, as is one of scheme 1 whose model.name axis was
    named name; one of scheme 1 without such an axis, and one of this scheme, resume."""
    from spingpu.studies.store import RESULTS_SCHEME

    path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    assert store_attrs(out)["results_scheme"] == RESULTS_SCHEME == 2
    assert check_existing(out, study, 2, True, False) is True
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["results_scheme"] = 1
    zarr.consolidate_metadata(str(out))
    assert check_existing(out, study, 2, True, False) is True  # its axes are named as now

    def refused(store, study, earlier):
        with pytest.raises(ConfigError) as err:
            check_existing(store, study, 2, True, False)
        assert str(err.value) == (
            f"resume: {store} was written by a spingpu whose results differ from this one's (results scheme {earlier}, "
            "this is 2: macrospin junctions at T > 0 and spaced sweep values changed on 2026-12-01, the model.name "
            "and dataset.name axes were renamed model and dataset on 2026-12-02); resuming would mix both; use "
            "another --out or --overwrite")

    del group.attrs["results_scheme"]
    zarr.consolidate_metadata(str(out))
    refused(out, study, 0)
    swept = tmp_path / "models.toml"
    swept.write_text(STUDY.replace('"training.grad_mode"', '"model.name" = ["stt_compact", "stt_compact_f32"]\n'
                                                           '"training.grad_mode"'))
    models = load_study(swept)
    old = tmp_path / "m.zarr"
    create_store(old, models, 2, attrs())
    group = zarr.open_group(str(old), mode="r+")
    group.attrs.update(results_scheme=1, sweep_axes='["name", "grad_mode"]')  # as scheme 1 wrote it
    zarr.consolidate_metadata(str(old))
    refused(old, models, 1)


def test_last_epoch_values_of_networks_trained_one_epoch_and_of_none():
    """A network whose train_loss is finite at epoch 1 alone has its epoch-1 value (a one-epoch
    cell's cosine was n/a where the first position counted as none); one with no finite epoch,
    NaN; a diverged one, NaN whatever it holds."""
    import xarray as xr

    rng = np.random.default_rng()
    cosine = rng.uniform(0.2, 1.0, (4, 3))
    loss = rng.uniform(0.1, 1.0, (4, 3))
    loss[0, 1:] = np.nan  # trained one epoch
    loss[1, :] = np.nan  # none
    loss[2, 2:] = np.nan  # two
    ds = xr.Dataset({"train_loss": (("network", "epoch"), loss), "grad_cosine": (("network", "epoch"), cosine),
                     "diverged": ("network", np.array([False, False, False, True]))},
                    coords={"network": np.arange(4), "epoch": np.arange(1, 4)})
    got = last_epoch_values(ds, "grad_cosine").values
    np.testing.assert_array_equal(got, [cosine[0, 0], np.nan, cosine[2, 1], np.nan])


def test_load_results_refuses_names_no_store_holds(tmp_path):
    """A misspelt variable, a string for the list, or a last_epoch variable without epochs is one
    ConfigError naming the argument, not a Dataset silently without it."""
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    for kwargs, message in (
            (dict(variables=["test_accuracy"]), "variables: 'test_accuracy' is not a variable of a results store "
                                                "(did you mean 'test_acc'?); allowed: train_loss, "),
            (dict(variables="test_acc"), "variables: expected a list of variable names, got the string 'test_acc' "
                                         "(write ['test_acc'])"),
            (dict(variables=["test_acc"], last_epoch=["grad_cos"]), "last_epoch: 'grad_cos' is not a per-epoch "
                                                                    "variable of a results store (did you mean "
                                                                    "'grad_cosine'?)"),
            (dict(last_epoch=["test_acc"]), "last_epoch: 'test_acc' is not a per-epoch variable of a results store; "
                                            "allowed: train_loss, train_acc, val_acc, grad_cosine, deriv_rel_err")):
        with pytest.raises(ConfigError) as caught:
            spingpu.load_results(out, **kwargs)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    loaded = spingpu.load_results(out, ["test_acc", "teacher_test_acc"], last_epoch=["grad_cosine"])
    assert sorted(loaded.data_vars) == ["grad_cosine", "task_done", "teacher_test_acc", "test_acc"]


def test_a_store_records_the_device_models_its_cells_use(tmp_path):
    """Each model the cells use, with its nominal parameters, settings and their SI units, as the
    first cell that uses it builds it: the study's [model.params] applied, defaults included."""
    import json

    from spingpu.devices import get_model
    from spingpu.devices.models import model_attrs

    path = tmp_path / "m.toml"
    path.write_text('name = "m"\nnetworks = 2\n[dataset]\nname = "iris"\n[model.params]\nr_p = 1500.0\n'
                    '[sweep]\n"model.name" = ["stt_compact", "macrospin"]\n"neuron.delta_i" = [1e-5, 2e-5]\n')
    study = load_study(path)
    create_store(tmp_path / "m.zarr", study, 2, attrs())
    recorded = json.loads(open_results(tmp_path / "m.zarr").attrs["device_models"])
    assert sorted(recorded) == ["macrospin", "stt_compact"]
    for name in recorded:
        expected = model_attrs(get_model(name, r_p=1500.0))
        assert recorded[name] == json.loads(json.dumps(expected, default=lambda o: o.tolist())), name
    assert recorded["stt_compact"]["device_parameters"]["r_p"] == 1500.0
    assert recorded["stt_compact"]["device_parameter_units"]["r_p"] == "ohm"
    assert recorded["macrospin"]["device_settings_units"]["temperature"] == "K"



def test_a_run_takes_its_lock_from_under_a_reports_probe(tmp_path):
    """spingpu report's store_writer holds a shared lock on the run lock file for an instant: a run
    starting then waits for it (LOCK_PROBE_SECONDS) instead of taking the report for a run."""
    import fcntl
    import threading
    import time

    from spingpu.studies.store import _lock_file, run_lock, store_writer

    out = tmp_path / "s.zarr"
    lock = _lock_file(out)
    lock.write_text("deadhost 4242\n")  # a killed run's file
    probe = os.open(lock, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.1, lambda: (fcntl.flock(probe, fcntl.LOCK_UN), os.close(probe))).start()
    start = time.monotonic()
    with run_lock(out):
        assert 0.05 < time.monotonic() - start < 0.5
        assert store_writer(out) == f"process {os.getpid()} on {socket.gethostname()}"
    assert store_writer(out) is None and not lock.exists()


def test_load_results_reads_names_from_any_iterable(tmp_path):
    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    loaded = spingpu.load_results(out, (v for v in ["test_acc"]), last_epoch=iter(["grad_cosine"]))
    assert sorted(loaded.data_vars) == ["grad_cosine", "task_done", "test_acc"]
    assert "epoch" not in loaded.grad_cosine.dims


def test_a_replaced_store_that_cannot_be_deleted_is_named_in_a_warning(tmp_path, monkeypatch):
    from spingpu.errors import SpingpuWarning
    from spingpu.studies import store

    study_path, study = study_file(tmp_path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store.shutil, "rmtree", refused)
    with pytest.warns(SpingpuWarning, match=r"^the replaced store, moved to .*\.s\.zarr\.partial-.*, could not be "
                                            r"deleted \(Permission denied\); delete it by hand$"):
        store.remove_store(out)
    assert not out.exists()


def test_a_store_is_not_resumed_with_another_model_registered_under_its_name(tmp_path, models_restored):
    """A model registered in Python is in no file the study's digest hashes: the store records its
    signature (parameters, V and dV/dI at fixed currents and parameter rows), and a resume with a
    model of that name whose junction differs, edited or registered over a built-in in only one of
    the runs, is refused in one line naming the first value that differs; the same model resumes."""
    from spingpu.devices.models import DERIVATIVE_CHECK_CURRENTS_A

    r_ohm = float(np.random.default_rng().uniform(500.0, 2000.0))

    def register(r, name="ohmic", gain=1.0):
        spingpu.register_model(name, voltage=lambda current, r: gain * r * current,
                               dvdi=lambda current, r: gain * r + 0.0 * current,
                               parameters=[spingpu.Parameter("r", r, "ohm", "r", low=0.0, low_open=True)], replace=True)

    register(r_ohm)
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace('name = "iris"', 'name = "iris"\n\n[model]\nname = "ohmic"'))
    study = load_study(path)
    out = tmp_path / "s.zarr"
    create_store(out, study, 2, attrs())
    assert check_existing(out, study, 2, True, False) is True
    register(r_ohm, gain=1 + 1e-6)  # the same parameters, another junction
    with pytest.raises(ConfigError) as err:
        check_existing(out, study, 2, True, False)
    i = DERIVATIVE_CHECK_CURRENTS_A[0]
    assert str(err.value) == (f"resume: {out} was trained with another model 'ohmic' than the one here now: its V at "
                              f"{i:.4g} A differs ({r_ohm * i:.10g} V in the store, {r_ohm * (1 + 1e-6) * i:.10g} V "
                              "now); resuming would mix both: register the model as it was, or use another --out or "
                              "--overwrite")
    register(2 * r_ohm)  # another nominal value: its parameters differ
    with pytest.raises(ConfigError, match="another model 'ohmic' than the one here now: its parameters .* differ;"):
        check_existing(out, study, 2, True, False)
    register(r_ohm)
    assert check_existing(out, study, 2, True, False) is True

    (tmp_path / "plain.toml").write_text(STUDY)
    plain = load_study(tmp_path / "plain.toml")
    create_store(tmp_path / "p.zarr", plain, 2, attrs())  # the built-in stt_compact
    register(r_ohm, "stt_compact")
    with pytest.raises(ConfigError, match="another model 'stt_compact' than the one here now: its parameters"):
        check_existing(tmp_path / "p.zarr", plain, 2, True, False)


def test_a_signature_is_compared_to_its_models_precision():
    """Another machine's libm may round a float32 junction's tanhf or cosf otherwise (an ulp, 6e-8,
    moves V by a few): a float32 model's signature is compared to 1e-5 relative, a float64 one's to
    1e-9; an edited model differs by far more."""
    from spingpu.devices.models import closed_form_signatures, signature_difference

    recorded = closed_form_signatures(["stt_compact", "stt_compact_f32"])
    for name, kept, refused in (("stt_compact", 1e-10, 1e-8), ("stt_compact_f32", 1e-6, 1e-4)):
        assert signature_difference(recorded[name], name) is None
        for factor, ok in ((1 + kept, True), (1 + refused, False)):
            moved = dict(recorded[name], voltage_V=(np.asarray(recorded[name]["voltage_V"]) * factor).tolist())
            assert (signature_difference(moved, name) is None) == ok, (name, factor)
