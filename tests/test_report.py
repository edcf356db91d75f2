"""The HTML report and CSV summary of a study, from stores filled with known numbers."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from spingpu.cli.main import main
from spingpu.errors import ConfigError, SpingpuWarning
from spingpu.report import study_figures, summary_rows, write_report
from spingpu.studies import open_results
from spingpu.studies.spec import parse_study
from spingpu.studies.store import create_store, mark_done, task_count, write_task

N_NET, EPOCHS = 40, 5


def fake_store(tmp_path, sweep, name="fake", npt=20, diverge_cell=None, tables=None, zero_gradient_cell=None):
    """A store whose metrics are drawn at random (fixed seed), written through the real store API;
    ``tables``: more of the study's tables (e.g. its model); in ``zero_gradient_cell`` networks 5
    and 6 of each task end with no gradient (the ADC clipped every reading: cosine NaN)."""
    data = {"name": name, "networks": N_NET, "seed": 1, "dataset": {"name": "iris"}, "network": {"hidden": [3]},
            "training": {"epochs": EPOCHS}, "sweep": sweep, **(tables or {})}
    study = parse_study(data, tmp_path / f"{name}.toml", text="# fake study\n")
    path = tmp_path / f"{name}.zarr"
    create_store(path, study, npt, {"backend": "cpu", "device": "CPU", "spingpu_version": "test"})
    rng = np.random.default_rng(5)
    for cell in range(study.n_cells):
        for task in range(task_count(study, npt)):
            lo, hi = task * npt, min((task + 1) * npt, N_NET)
            n = hi - lo
            acc = np.clip(rng.normal(0.8 + 0.02 * cell, 0.1, n), 0, 1)
            diverged = np.zeros(n, dtype=bool)
            if cell == diverge_cell:
                diverged[:3] = True
                acc[:3] = np.nan
            metrics = dict(train_loss=rng.uniform(0.1, 1, (n, EPOCHS)), train_acc=rng.uniform(0.5, 1, (n, EPOCHS)),
                           val_acc=rng.uniform(0.5, 1, (n, EPOCHS)), grad_cosine=rng.uniform(0.3, 1, (n, EPOCHS)),
                           deriv_rel_err=rng.uniform(0.01, 1, (n, EPOCHS)), test_acc=acc, diverged=diverged,
                           extrapolated_readings=np.where(diverged, np.nan, rng.uniform(0, 0.2 * cell, n)))
            for name in ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err"):
                metrics[name][diverged, 2:] = np.nan  # as training leaves them: NaN from the epoch they diverged
            if cell == zero_gradient_cell:
                metrics["grad_cosine"][5:7, -1] = np.nan
            write_task(path, study, cell, lo, metrics)
            mark_done(path, study, cell, task)
    return path, study


@pytest.mark.parametrize("variable, whole", [("test_acc", False), ("train_loss", False), ("val_acc", False),
                                             ("train_acc", False), ("train_loss", True)])
def test_a_store_that_lost_a_tasks_numbers_is_refused_and_resume_trains_it_again(tmp_path, capsys, variable, whole):
    """A chunk of a variable deleted (it reads as its fill value, NaN) under a task marked done, or
    the whole variable: the report refuses the store in one line instead of reporting NaN for
    finished chips (or failing on a log axis of no data), and resuming counts the task as not done
    (with a warning). Diverged networks (NaN by right) are no loss."""
    import shutil

    from spingpu.studies.store import done_tasks, lost_tasks

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5]}, npt=20, diverge_cell=1)
    ds = open_results(path)
    assert not lost_tasks(ds).any()  # the diverged networks of cell 1 are not lost numbers
    ds.close()
    chunks = sorted(p for p in (path / variable).iterdir() if not p.name.startswith("."))
    for victim in chunks if whole else chunks[:1]:
        (victim.unlink() if victim.is_file() else shutil.rmtree(victim))
    ds = open_results(path)
    lost = lost_tasks(ds)
    ds.close()
    assert lost.sum() == (4 if whole else 1) and lost.shape == (2, 2)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged: " in err and "--resume trains them again" in err
    assert not (tmp_path / "fake.html").exists()
    with pytest.warns(SpingpuWarning, match="of the tasks marked done have lost their numbers"):
        done = done_tasks(path)
    np.testing.assert_array_equal(done, ~lost.reshape(-1, 2))


def test_summary_equals_reductions_of_the_dataset(tmp_path):
    from spingpu.stats import median_interval, yield_interval

    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5, 1e-4]}, diverge_cell=1)
    ds = open_results(path)
    rows = summary_rows(ds, threshold=0.85)
    assert len(rows) == 3
    for k, row in enumerate(rows):
        acc = ds.test_acc.isel(delta_i=k).values
        ok = acc[np.isfinite(acc)]
        assert row["delta_i"] == ds.delta_i.values[k]
        assert row["median_test_acc"] == pytest.approx(np.median(ok), abs=0)
        assert row["q25_test_acc"] == pytest.approx(np.quantile(ok, 0.25), abs=0)
        assert row["q95_test_acc"] == pytest.approx(np.quantile(ok, 0.95), abs=0)
        assert row["q75_test_acc"] == np.quantile(ok, 0.75) and row["q05_test_acc"] == np.quantile(ok, 0.05)
        assert row["yield"] == pytest.approx(np.sum(ok >= 0.85) / acc.size)  # diverged chips did not train
        assert row["diverged"] == (6 if k == 1 else 0)  # 3 in each of the 2 tasks
        # the 95 % intervals: order statistics of the finite accuracies; Clopper-Pearson over every network
        lo, hi = row["median_test_acc_lo95"], row["median_test_acc_hi95"]
        assert (lo, hi) == median_interval(ok) and lo <= row["median_test_acc"] <= hi  # not (min, max), not IQR
        assert (row["yield_lo95"], row["yield_hi95"]) == yield_interval(int(np.sum(ok >= 0.85)), acc.size)
        last = ds.isel(epoch=-1, delta_i=k)
        trained = ~last.diverged.values  # a diverged network's metrics are NaN at the last epoch
        assert np.isnan(last.grad_cosine.values[~trained]).all()
        assert row["median_grad_cosine"] == np.median(last.grad_cosine.values[trained])
        assert row["median_deriv_rel_err"] == np.median(last.deriv_rel_err.values[trained])
        assert row["max_extrapolated_readings"] == np.max(ds.extrapolated_readings.isel(delta_i=k).values[trained])
    assert rows[0]["max_extrapolated_readings"] == 0  # cell 0: every network read within the table


def test_report_one_axis_self_contained_with_csv(tmp_path, capsys):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": {"logspace": [-6, -4, 3]}}, diverge_cell=0)
    rc = main(["report", str(path), "--threshold", "0.85"])
    assert rc == 0
    html_path, csv_path = tmp_path / "fake.html", tmp_path / "fake.summary.csv"
    text = html_path.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "http://" not in text and "https://" not in text
    # accuracy vs delta_i, the dI trade-off, training curves, the junctions, divergence
    assert text.count("<figure>") == 5
    assert text.count('src="data:image/png;base64,') == 5
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and float(rows[0]["median_test_acc"]) == pytest.approx(
        summary_rows(open_results(path), 0.85)[0]["median_test_acc"])
    assert "fake study" in text and "<td>finite-difference step dI (delta_i, A)</td>" in text
    assert text.count("beyond table (max)") == 1 and "<td>0.0 %</td>" in text  # cells 1, 2 read beyond, cell 0 not


def test_report_three_axes_figure_count(tmp_path):
    sweep = {"variability.sigma_d2d": [0.0, 0.1], "readout.read_noise": [0.0, 1e-3, 2e-3],
             "training.grad_mode": ["fd_forward", "model"]}
    path, study = fake_store(tmp_path, sweep, name="three", npt=40)
    ds = open_results(path)
    titles = [t for t, _ in study_figures(ds)]
    # 2 numeric axes: 2 accuracy figures + 1 heatmap; training curves; junctions; nothing diverged
    assert titles == ["Accuracy and yield against sigma_d2d", "Accuracy and yield against read_noise",
                      "sigma_d2d x read_noise", "Training curves", "The study's junctions"]
    assert len(summary_rows(ds)) == 12
    rc = main(["report", str(path), "-o", str(tmp_path / "r.html")])
    assert rc == 0 and (tmp_path / "r.summary.csv").exists() and not (tmp_path / "r.csv").exists()


def test_report_categorical_only(tmp_path):
    path, _ = fake_store(tmp_path, {"training.grad_mode": ["fd_forward", "tanh"]}, name="cat")
    titles = [t for t, _ in study_figures(open_results(path))]
    assert titles[0] == "Accuracy and yield per cell" and "Training curves" in titles


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.zarr")]) == 2
    assert capsys.readouterr().err.startswith("spingpu report: error: results: no results store")
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    assert main(["report", str(path), "-o", str(tmp_path / "r.txt")]) == 2
    assert main(["report", str(path), "--threshold", "1.5"]) == 2
    capsys.readouterr()
    assert main(["report", str(path), "-o", ""]) == 2
    assert capsys.readouterr().err == ("spingpu report: error: out: expected a file name, got an empty one (leave -o "
                                       "out for the store's name with .html)\n")
    assert not (tmp_path / "r.txt").exists() and not (tmp_path / "fake.html").exists()


CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if __import__("shutil").which(c)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium to render the report")
def test_report_renders_in_headless_chromium(tmp_path):
    """The documented check: headless Chromium renders the report offline to a non-blank page."""
    import subprocess

    from matplotlib.image import imread

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    assert main(["report", str(path)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000",
                    f"--screenshot={shot}", (tmp_path / "fake.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    dark = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5  # text and figures drawn, not a blank or black page


# --- the summary CSV's name, and files the report did not write --------------------------------


def test_the_summary_is_name_dot_summary_csv_and_a_second_report_replaces_both(tmp_path, capsys):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    assert main(["report", str(path)]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'fake.html'} and {tmp_path / 'fake.summary.csv'}\n"
    first = (tmp_path / "fake.summary.csv").read_text()
    assert first.splitlines()[0] == ("delta_i,median_test_acc,q25_test_acc,q75_test_acc,q05_test_acc,q95_test_acc,"
                                     "yield,yield_threshold,diverged,networks,networks_done,median_grad_cosine,"
                                     "undefined_grad_cosine,median_deriv_rel_err,"
                                     "teacher_test_acc,median_test_acc_lo95,median_test_acc_hi95,yield_lo95,"
                                     "yield_hi95,max_extrapolated_readings")
    assert main(["report", str(path), "--threshold", "0.5"]) == 0  # its own earlier report: replaced
    second = (tmp_path / "fake.summary.csv").read_text()
    assert second != first
    column = first.splitlines()[0].split(",").index("yield_threshold")
    assert [line.split(",")[column] for line in first.splitlines()[1:]] == ["0.9", "0.9"]
    assert [line.split(",")[column] for line in second.splitlines()[1:]] == ["0.5", "0.5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.html", "fake.summary.csv", "fake.zarr"]


@pytest.mark.parametrize("name, text", [
    ("mine.csv", "a,b\n1,2\n"),  # the old summary name: never touched now
    ("mine.summary.csv", "a,b,label\n1,2,0\n"),  # a CSV of the user's at the summary's name
    ("mine.html", "<html>my notes</html>\n"),  # an HTML file the report did not write
])
def test_report_never_replaces_a_file_it_did_not_write(tmp_path, capsys, name, text):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    mine = tmp_path / name
    mine.write_text(text)
    out = tmp_path / "mine.html"
    rc = main(["report", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert mine.read_text() == text
    if name == "mine.csv":
        assert rc == 0 and (tmp_path / "mine.summary.csv").exists()
        return
    assert rc == 2 and err == (f"spingpu report: error: out: {mine} exists and was not written by spingpu report; "
                               "not overwritten: choose another -o, or remove it\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fake.zarr", name])


def test_a_report_of_another_studys_results_is_replaced_only_with_overwrite(tmp_path, capsys):
    """``-o`` naming the report of another store, of another study: refused in one line, both files
    kept, unless --overwrite; a report of the same store, or of the same study moved elsewhere, is
    replaced as before."""
    import shutil

    mine, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, name="mine")
    other, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, name="other")
    out = tmp_path / "shared.html"
    assert main(["report", str(other), "-o", str(out)]) == 0
    kept = {p: p.read_bytes() for p in (out, tmp_path / "shared.summary.csv")}
    capsys.readouterr()
    assert main(["report", str(mine), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"spingpu report: error: out: {out} is the report of another study's results "
                                       f"({other}); not overwritten: choose another -o, or pass --overwrite\n")
    assert {p: p.read_bytes() for p in kept} == kept
    with pytest.raises(ConfigError, match="is the report of another study's results"):
        write_report(mine, out)
    assert main(["report", str(mine), "-o", str(out), "--overwrite"]) == 0
    assert {p: p.read_bytes() for p in kept} != kept and "spingpu report: mine" in out.read_text()
    assert main(["report", str(mine), "-o", str(out)]) == 0  # its own: replaced
    moved = tmp_path / "moved" / "mine.zarr"
    shutil.copytree(mine, moved)
    assert write_report(moved, out) == out  # the same study, moved: replaced
    capsys.readouterr()


def write_data_csv(path):
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(3), 10)
    np.savetxt(path, np.column_stack([rng.normal(size=(30, 4)) + label[:, None], label]), delimiter=",",
               header="a,b,c,d,label", comments="", fmt=["%.6f"] * 4 + ["%d"])
    return path


def test_report_refuses_to_write_over_the_studys_data_file(tmp_path, capsys):
    data = write_data_csv(tmp_path / "mydata.summary.csv")
    before = data.read_bytes()
    study = parse_study({"name": "mydata", "networks": 2, "dataset": {"name": "csv:mydata.summary.csv"},
                         "training": {"epochs": 1}}, tmp_path / "mydata.toml")
    assert study.inputs == ((str(data), __import__("hashlib").sha256(before).hexdigest()),)
    path = tmp_path / "mydata.zarr"
    create_store(path, study, 2, {"backend": "cpu", "device": "CPU", "spingpu_version": "test"})
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"spingpu report: error: out: {data} is a data file of the study; the report does not overwrite "
                   "it: choose another -o\n"), err
    assert data.read_bytes() == before and not (tmp_path / "mydata.html").exists()


def test_run_refuses_before_running_when_its_report_would_replace_the_data_file(tmp_path, capsys):
    data = write_data_csv(tmp_path / "mydata.summary.csv")
    before = data.read_bytes()
    study = tmp_path / "mydata.toml"
    study.write_text('networks = 2\n[dataset]\nname = "csv:mydata.summary.csv"\n[training]\nepochs = 1\n')
    rc = main(["run", str(study), "--out", str(tmp_path / "mydata.zarr"), "--backend", "numpy"])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"spingpu run: error: out: {data} is a data file of the study; the report does not "
                               "overwrite it: choose another --out, or pass --no-report\n"), err
    assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata.summary.csv", "mydata.toml"]


# --- an interrupted store: statistics over the finished tasks' networks ------------------------


def test_partial_store_statistics_over_finished_tasks_only(tmp_path, capsys):
    # 2 cells x 4 tasks of 10 networks; cell 0 has 3 diverged networks in each task (those of its
    # finished tasks 0 and 1 are failed chips); tasks 2 and 3 of cell 0 and every task of cell 1
    # never ran (their numbers, written here, must be ignored).
    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, npt=10, diverge_cell=0)
    ds_full = open_results(path)
    acc = ds_full.test_acc.isel(delta_i=0).values[:20]
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group["task_done"][0, 2:] = 0
    group["task_done"][1, :] = 0
    group["test_acc"][0, 20:] = 0.0  # numbers of tasks that did not finish: none of them may count
    group["extrapolated_readings"][0, 20:] = 0.9
    rows = summary_rows(open_results(path), threshold=0.85)
    ok = acc[np.isfinite(acc)]
    from scipy import stats as scipy_stats

    median_ci = scipy_stats.quantile_test(ok, q=np.median(ok), p=0.5).confidence_interval(0.95)
    assert (rows[0]["median_test_acc_lo95"], rows[0]["median_test_acc_hi95"]) == (median_ci.low, median_ci.high)
    yield_ci = scipy_stats.binomtest(int(np.sum(ok >= 0.85)), 20).proportion_ci(method="exact")
    assert rows[0]["yield_lo95"] == pytest.approx(yield_ci.low, rel=1e-12, abs=1e-15)
    assert rows[0]["yield_hi95"] == pytest.approx(yield_ci.high, rel=1e-12)
    extrapolated = ds_full.extrapolated_readings.isel(delta_i=0).values[:20]
    assert rows[0]["max_extrapolated_readings"] == np.nanmax(extrapolated) < 0.9
    assert all(np.isnan(rows[1][k]) for k in ("median_test_acc_lo95", "median_test_acc_hi95", "yield_lo95",
                                              "yield_hi95", "max_extrapolated_readings"))
    assert np.isnan(acc[[0, 1, 2, 10, 11, 12]]).all() and ok.size == 14
    assert rows[0]["networks"] == 40 and rows[0]["networks_done"] == 20 and rows[0]["diverged"] == 6
    assert rows[0]["yield"] == np.sum(ok >= 0.85) / 20  # of the 20 trained; the 3 diverged failed
    assert rows[0]["median_test_acc"] == np.median(ok)
    assert rows[1]["networks_done"] == 0 and rows[1]["diverged"] == 0
    assert all(np.isnan(rows[1][k]) for k in ("yield", "median_test_acc", "q05_test_acc", "median_grad_cosine"))

    import warnings

    with warnings.catch_warnings(record=True) as caught:  # no "Mean of empty slice" from the empty cell
        warnings.simplefilter("always")
        assert main(["report", str(path), "--threshold", "0.85"]) == 0
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu report: warning: {path} is incomplete: 2 of 8 tasks finished; the statistics "
                            "are over the networks of finished tasks only\n")
    with open(tmp_path / "fake.summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["networks_done"] for r in table] == ["20", "0"] and [r["networks"] for r in table] == ["40", "40"]
    assert float(table[0]["yield"]) == rows[0]["yield"] and table[1]["yield"] == "nan"
    text = (tmp_path / "fake.html").read_text()
    assert "Incomplete store: 2 of 8 tasks finished." in text and "<td>20 of 40</td>" in text
    assert "<td>0 of 40</td>" in text and "<td>n/a</td>" in text

    from spingpu.studies.runner import summary_table

    from spingpu.stats import percent_text

    lines = summary_table(path, 0.85).splitlines()
    assert lines[0].split()[-3:] == ["cos", "networks", "diverged"] and "yield(>=85%)" in lines[0]
    assert rows[0]["diverged"] == 6 and lines[1].split()[-2:] == ["20", "6"]  # networks finished, of which diverged
    assert f"[{percent_text(rows[0]['yield_lo95']):>5}-{percent_text(rows[0]['yield_hi95']):>5}]" in lines[1]
    assert lines[1].split()[-3] == f"{rows[0]['median_grad_cosine']:.3f}"
    assert (f"{percent_text(rows[0]['median_test_acc'], 2)} % [{percent_text(rows[0]['median_test_acc_lo95'], 2):>6}-"
            f"{percent_text(rows[0]['median_test_acc_hi95'], 2):>6}]") in lines[1]  # the median's 95 % interval
    assert lines[2].split() == ["delta_i=10", "µA", "n/a", "[n/a]", "n/a", "n/a", "[n/a]", "n/a", "0", "0"]
    assert len(lines[1]) == len(lines[2])  # the columns stay aligned
    assert lines[-2] == "median and IQR over the networks that did not diverge; a diverged one counts as failed in the yield"
    assert lines[-1] == "incomplete store: 2 of 8 tasks finished; statistics over their networks only"
    from spingpu.plot import divergence_counts

    ax = divergence_counts(open_results(path)).axes[0]  # the 6 of cell 0's finished tasks, not its 12 written
    assert [bar.get_height() for bar in ax.patches] == [6, 0]
    assert ax.get_ylabel() == "networks diverged (of a cell's finished ones; 40 when complete)"


def test_a_store_with_whole_groups_unfinished_reports_without_numpy_warnings(tmp_path):
    """Only the first cell finished: heatmaps, curves and the dI figure meet cells and groups with no
    finished network, which are blank, not warnings ("Mean of empty slice", "All-NaN slice")."""
    import warnings

    import zarr

    path, _ = fake_store(tmp_path, {"training.grad_mode": ["fd_forward", "model"], "neuron.delta_i": [1e-6, 1e-5],
                                    "readout.read_noise": [0.0, 1e-3]}, npt=10)
    zarr.open_group(str(path), mode="r+")["task_done"][1:, :] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", str(path)]) == 0
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_a_store_with_no_task_finished_is_refused_in_one_line(tmp_path, capsys):
    """A store as a run stopped before its first task ended leaves it (created, every task_done
    false, every metric missing): the report and its API refuse it in one line and write nothing,
    where the dI trade-off figure's log axis raised matplotlib's "Data cannot be log-scaled"."""
    from spingpu.errors import ConfigError

    data = {"name": "fresh", "networks": 4, "dataset": {"name": "iris"}, "network": {"hidden": [3]},
            "training": {"epochs": 2}, "sweep": {"variability.sigma_d2d": [0.0, 0.1], "neuron.delta_i": [1e-6, 1e-5],
                                                 "training.grad_mode": ["fd_forward", "model"]}}
    study = parse_study(data, tmp_path / "fresh.toml", text="# fresh\n")
    path = tmp_path / "fresh.zarr"
    create_store(path, study, 2, {"backend": "cpu", "device": "CPU", "spingpu_version": "test"})
    assert main(["report", str(path), "-o", str(tmp_path / "out.html")]) == 2
    captured = capsys.readouterr()
    message = (f"results: no task of {path} has finished yet (0 of 16), so there is nothing to report; finish it "
               f"with spingpu run STUDY --out {path} --resume")
    assert captured.err == f"spingpu report: error: {message}\n" and captured.out == ""
    with pytest.raises(ConfigError) as err:
        write_report(path)
    assert str(err.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.zarr"]


def test_complete_store_says_nothing_of_incompleteness(tmp_path, capsys):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    assert main(["report", str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert "Incomplete" not in (tmp_path / "fake.html").read_text()


# --- what is not a good store: one line, exit 2 ---------------------------------------------------


def test_report_on_what_is_not_a_store_or_is_corrupt(tmp_path, capsys):
    import shutil

    good, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    (tmp_path / "plain.zarr").write_text("not a store\n")
    (tmp_path / "train.nc").write_bytes(b"CDF\x01" + bytes(60))
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello\n")
    bad_meta = tmp_path / "badmeta.zarr"
    shutil.copytree(good, bad_meta)
    (bad_meta / ".zmetadata").write_text("{ not json")
    bad_chunk = tmp_path / "badchunk.zarr"
    shutil.copytree(good, bad_chunk)
    (bad_chunk / "test_acc" / "0.0").write_bytes(b"\x00garbage" * 4)
    cases = [
        ("plain.zarr", "is not a spingpu results store (a file, not a zarr folder)"),
        ("train.nc", "is not a spingpu results store (a netCDF file, as spingpu train --out writes: open it with "
                     "xarray.open_dataset; a study's results are a .zarr folder)"),
        ("empty.zarr", "is not a spingpu results store (no zarr metadata)"),
        ("other", "is not a spingpu results store (no zarr metadata)"),
        ("badmeta.zarr", "is corrupt: its metadata cannot be read (JSONDecodeError: "),
        ("badchunk.zarr", "is corrupt: its data cannot be read ("),
    ]
    for name, message in cases:
        rc = main(["report", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, (name, err)
        assert err.startswith(f"spingpu report: error: results: {tmp_path / name} {message}"), (name, err)
        if name == "badchunk.zarr":  # the file that failed is named
            assert err.endswith(f"; the chunk file {bad_chunk / 'test_acc' / '0.0'} cannot be decoded; spingpu run "
                                "STUDY --out STORE --resume trains its task again)\n"), err
        assert not (tmp_path / f"{name.split('.')[0]}.html").exists()
    with pytest.raises(Exception, match="not a spingpu results store"):
        open_results(tmp_path / "other")


def test_a_zarr_group_that_is_not_a_store_is_one_line_without_zarrs_warning(tmp_path):
    """zarr warns as it opens an empty group's metadata: the command says only its own line (in a
    process of its own, where no test runner captures the warning)."""
    import subprocess
    import sys

    group = tmp_path / "group.zarr"
    group.mkdir()
    (group / ".zgroup").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "spingpu.cli.main", "report", str(group)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"spingpu report: error: results: {group} is not a spingpu results store\n"


# --- cells that train for different numbers of epochs ------------------------------------------------


def trained_store(tmp_path, sweep, networks=4, name="trained"):
    """A store of a tiny real study (iris, numpy engine), each cell trained in this process by the
    runner's own task function and written through the store API, as ``spingpu run`` does."""
    from spingpu.studies.tasks import train_task

    data = {"name": name, "networks": networks, "seed": 2, "dataset": {"name": "iris"}, "network": {"hidden": [3]},
            "training": {"epochs": 2, "lr": 0.05}, "variability": {"sigma_pair": 0.02}, "sweep": sweep}
    for key in sweep:  # a key swept is not also set (that is warned of)
        section, field = key.split(".")
        data[section] = {k: v for k, v in data.get(section, {}).items() if k != field}
    study = parse_study(data, tmp_path / f"{name}.toml", text="# trained study\n")
    path = tmp_path / f"{name}.zarr"
    create_store(path, study, networks, {"backend": "numpy", "device": "CPU", "spingpu_version": "test"})
    for cell in range(study.n_cells):
        write_task(path, study, cell, 0, train_task(study, cell, 0, networks, "numpy", 1))
        mark_done(path, study, cell, 0)
    return path, study


def last_trained_by_hand(path, study):
    """{(epochs, delta_i): {variable: values of the networks that did not diverge at the cell's own
    last epoch}}, read from the raw zarr arrays with each cell's epochs from its configuration."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    raw = {name: np.asarray(group[name][:]) for name in ("grad_cosine", "deriv_rel_err", "diverged", "train_loss")}
    cells = {}
    for flat in range(study.n_cells):
        index = tuple(study.cell_index(flat))
        epochs = study.cell(flat).config.epochs
        loss = raw["train_loss"][index]
        assert np.isfinite(loss[:, :epochs]).all() and np.isnan(loss[:, epochs:]).all()  # padded with NaN
        ok = ~raw["diverged"][index]
        assert ok.any()
        values = tuple(study.cell_values(flat).values())
        cells[values] = {name: raw[name][index][ok, epochs - 1] for name in ("grad_cosine", "deriv_rel_err")}
    return cells


def test_cells_of_fewer_epochs_are_summarised_at_their_own_last_epoch(tmp_path, capsys):
    from spingpu.plot import delta_i_tradeoff
    from spingpu.report import LAST_EPOCH, SUMMARY_VARIABLES
    from spingpu.studies.store import load_results

    path, study = trained_store(tmp_path, {"training.epochs": [2, 4], "neuron.delta_i": [5e-6, 2e-5]})
    assert [a.dim for a in study.axes] == ["epochs", "delta_i"]
    expected = last_trained_by_hand(path, study)
    summaries = [summary_rows(open_results(path)), summary_rows(load_results(path, SUMMARY_VARIABLES, LAST_EPOCH))]
    assert main(["report", str(path)]) == 0
    with open(tmp_path / "trained.summary.csv") as handle:
        summaries.append([{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)])
    for rows in summaries:
        assert sorted((row["epochs"], row["delta_i"]) for row in rows) == sorted(expected)
        for row in rows:
            cell = expected[(row["epochs"], row["delta_i"])]
            assert row["median_grad_cosine"] == np.median(cell["grad_cosine"])
            assert row["median_deriv_rel_err"] == np.median(cell["deriv_rel_err"])
            assert np.isfinite(row["median_grad_cosine"]) and np.isfinite(row["median_deriv_rel_err"])
    # the dI trade-off: medians over the pooled networks of both epochs cells at each delta_i
    for ds in (open_results(path), load_results(path, ("test_acc", "grad_cosine", "deriv_rel_err"), LAST_EPOCH)):
        ax_err, ax_cos = delta_i_tradeoff(ds).axes[:2]
        for ax, name in ((ax_err, "deriv_rel_err"), (ax_cos, "grad_cosine")):
            pooled = [np.concatenate([expected[(e, d)][name] for e in (2, 4)]) for d in (5e-6, 2e-5)]
            np.testing.assert_array_equal(ax.lines[0].get_ydata(), [np.quantile(p, 0.5) for p in pooled])


# --- a study whose data files moved: the report without the junction figure -------------------------


def test_report_without_the_junction_figure_when_the_models_csv_moved(tmp_path, capsys):
    import html
    import json

    from spingpu.errors import ConfigError
    from spingpu.studies.spec import build_cell

    table = tmp_path / "measured.csv"
    i = np.linspace(-5e-4, 5e-4, 21)
    np.savetxt(table, np.column_stack([i, 800 * i + 0.1 * np.tanh(i / 2e-4)]), delimiter=",",
               header="current_A,voltage_V", comments="")
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, name="tab",
                         tables={"model": {"name": "tabulated", "iv_csv": str(table)}})
    assert main(["report", str(path), "-o", str(tmp_path / "before.html")]) == 0
    capsys.readouterr()
    before = (tmp_path / "before.summary.csv").read_text()
    table.rename(tmp_path / "moved.csv")
    with pytest.raises(ConfigError) as info:
        build_cell("", json.loads(open_results(path).attrs["study_data"]))
    reason = str(info.value)
    assert reason.startswith(f"model.iv_csv: file not found: {table}") and "\n" not in reason
    note = f"the figure of the study's junctions is left out: {reason}"

    assert main(["report", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"spingpu report: note: {note}\n"
    assert captured.out == f"wrote {tmp_path / 'tab.html'} and {tmp_path / 'tab.summary.csv'}\n"
    assert (tmp_path / "tab.summary.csv").read_text() == before
    text = (tmp_path / "tab.html").read_text()
    assert f'<p class="note">Note: {html.escape(note)}</p>' in text
    assert "<h3>The study&#x27;s junctions</h3>" not in text
    assert "<h3>The study&#x27;s junctions</h3>" in (tmp_path / "before.html").read_text()
    assert text.count("<figure>") == (tmp_path / "before.html").read_text().count("<figure>") - 1 == 3
    with pytest.raises(ConfigError, match="^model.iv_csv: file not found"):  # without notes it propagates
        study_figures(open_results(path))


@pytest.mark.parametrize("through_link", [False, True])
def test_report_without_the_junction_figure_when_the_models_csv_changed(tmp_path, capsys, through_link):
    """A measured curve whose contents changed since the study ran (same path; or named through a
    link to its folder) is not drawn as the study's junctions: one note says why; with its contents
    back, the figure is back."""
    import html

    (tmp_path / "real").mkdir()
    folder = tmp_path / "real"
    if through_link:
        (tmp_path / "link").symlink_to(folder, target_is_directory=True)
        folder = tmp_path / "link"
    table = folder / "measured.csv"
    rng = np.random.default_rng()
    i = np.linspace(-5e-4, 5e-4, 21)
    rows = np.column_stack([i, rng.uniform(700, 900) * i + 0.1 * np.tanh(i / 2e-4)])
    np.savetxt(table, rows, delimiter=",", header="current_A,voltage_V", comments="")
    original = table.read_bytes()
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, name="tab",
                         tables={"model": {"name": "tabulated", "iv_csv": str(table)}})
    rows[7, 1] *= 1.01  # one voltage 1 % off
    np.savetxt(table, rows, delimiter=",", header="current_A,voltage_V", comments="")
    assert main(["report", str(path)]) == 0
    note = (f"the figure of the study's junctions is left out: inputs: {table.resolve()} has changed since the "
            "study ran "
            "(its contents differ from those the store recorded), so the figure would not show the junctions trained")
    assert capsys.readouterr().err == f"spingpu report: note: {note}\n"
    text = (tmp_path / "tab.html").read_text()
    assert f'<p class="note">Note: {html.escape(note)}</p>' in text
    assert "<h3>The study&#x27;s junctions</h3>" not in text
    table.write_bytes(original)
    assert main(["report", str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert "<h3>The study&#x27;s junctions</h3>" in (tmp_path / "tab.html").read_text()


def test_a_store_made_before_extrapolated_readings_existed_is_resumed_and_reported_without_it(tmp_path):
    """Stores written before the count of readings beyond the table lack the variable: still
    complete, still written to (the new variable left out) and reported (no such column)."""
    import shutil

    import zarr

    from spingpu.studies.store import incomplete

    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]})
    shutil.rmtree(path / "extrapolated_readings")
    zarr.consolidate_metadata(str(path))
    assert incomplete(path) is None
    n = 20
    write_task(path, study, 1, 0, dict(train_loss=np.ones((n, EPOCHS)), train_acc=np.ones((n, EPOCHS)),
                                       val_acc=np.ones((n, EPOCHS)), grad_cosine=np.ones((n, EPOCHS)),
                                       deriv_rel_err=np.ones((n, EPOCHS)), test_acc=np.full(n, 0.5),
                                       diverged=np.zeros(n, dtype=bool), extrapolated_readings=np.full(n, 0.1)))
    ds = open_results(path)
    assert "extrapolated_readings" not in ds and (ds.test_acc.isel(delta_i=1).values[:n] == 0.5).all()
    assert all(np.isnan(row["max_extrapolated_readings"]) for row in summary_rows(ds))
    assert main(["report", str(path)]) == 0
    assert "beyond table" not in (tmp_path / "fake.html").read_text()


def test_stored_study_is_the_study_the_store_was_made_for(tmp_path):
    from spingpu.studies.spec import stored_study

    sweep = {"variability.sigma_d2d": {"linspace": [0.0, 0.1, 3]}, "training.grad_mode": ["fd_forward", "model"],
             "model.params.r_p": [900.0, 1100.0]}
    path, study = fake_store(tmp_path, sweep, name="again")
    again = stored_study(open_results(path).attrs)
    assert (again.name, again.text, again.networks, again.seed) == (study.name, study.text, study.networks, study.seed)
    assert again.axes == study.axes and again.data == study.data and again.inputs == study.inputs
    assert again.digest == study.digest
    for flat in range(study.n_cells):
        assert again.cell(flat).config == study.cell(flat).config


@pytest.mark.parametrize("d2d, pair, widest", [([0.0, 0.1], [0.0], (1, 0)), ([0.1, 0.0], [0.0], (0, 0)),
                                               ([0.0, 0.1], [0.1, 0.0], (1, 0)), ([0.0, 0.1], [0.0, 0.1], (1, 1))])
def test_junction_figure_shows_the_cell_of_the_widest_spread(tmp_path, d2d, pair, widest):
    """A sweep that starts without variability: the figure shows the cell whose junctions vary
    most, not the first cell, whose 12 pairs would be one curve."""
    from spingpu.report import widest_spread_cell

    sweep = {"readout.read_noise": [0.0, 1e-3], "variability.sigma_d2d": d2d, "variability.sigma_pair": pair}
    path, study = fake_store(tmp_path, sweep, name="widest")
    assert widest_spread_cell(study) == np.ravel_multi_index((0,) + widest, study.shape)
    fig = dict(study_figures(open_results(path)))["The study's junctions"]
    d, p = d2d[widest[0]], pair[widest[1]]
    assert " ".join(fig.get_suptitle().split("\n")) == (
        f"stt_compact: 12 sampled pairs of the cell read_noise=0 V, sigma_d2d={d:.3g}, sigma_pair={p:.3g} (spread "
        f"chip 0, d2d {d:g}, pair {p:g})")  # wrapped to two lines
    sampled = np.array([line.get_ydata() for line in fig.axes[0].lines[:24]])  # 12 pairs x (A, B)
    assert np.ptp(sampled, axis=0).max() > 0.05 * np.abs(sampled).max()  # a 10 % spread shows


# --- the figures' text: SI-prefixed values, wrapped titles, one accuracy scale --------------------------


@pytest.mark.parametrize("value, units, text", [
    (5e-6, "A", "5 µA"), (np.float64(2e-5), "A", "20 µA"), (np.float64(1500.0), "ohm", "1.5 kΩ"),
    (1e-3, "V", "1 mV"), (1e-9, "s", "1 ns"), (8e3, "A/m", "8 kA/m"), (0.0, "A", "0 A"),
    (0.1, "1", "0.1"), (np.float64(2.5e-5), None, "2.5e-05"), (np.int64(300), "K", "300"),
    (np.int64(3), "1", "3"), ("fd_forward", "1", "fd_forward"), (np.str_("model"), "1", "model")])
def test_sweep_values_are_written_with_an_si_prefix_where_their_units_take_one(value, units, text):
    from spingpu.plot.style import value_text

    assert value_text(value, units) == text


def test_figures_write_currents_in_ua_wrap_long_titles_and_share_the_accuracy_scale(tmp_path):
    from spingpu.plot import accuracy_vs_axis, heatmap, iv_spread_figure
    from spingpu.plot.style import TITLE_CHARACTERS

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [5e-6, 2e-5, 8e-5], "variability.sigma_d2d": [0.0, 0.2],
                                    "training.grad_mode": ["fd_forward", "model"]})
    ds = open_results(path)
    fig = accuracy_vs_axis(ds, "delta_i")
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_xlabel() == "finite-difference step dI (delta_i)"  # the unit is in every tick label
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(t.endswith(" µA") or t == "0 A" for t in labels), labels
    fig = heatmap(ds, "delta_i", "sigma_d2d")
    fig.canvas.draw()
    acc_axes = [ax for ax in fig.axes if ax.get_title().startswith("median test accuracy")]
    assert len(acc_axes) == 2
    assert [t.get_text() for t in acc_axes[0].get_xticklabels()] == ["5 µA", "20 µA", "80 µA"]
    assert [t.get_text() for t in acc_axes[0].get_yticklabels()] == ["0", "0.2"]
    medians = 100 * ds.test_acc.median("network")
    lowest = float(medians.min())
    scales = {ax.images[0].get_clim() for ax in acc_axes}
    assert scales == {(5 * np.floor(min(lowest, 95) / 5), 100.0)}  # one scale for both grad modes, up to 100 %
    # a title longer than a line wraps instead of running past the figure's edges
    title = "stt_compact: 12 sampled pairs of the cell " + ", ".join(f"axis_{k}=value_{k}" for k in range(9))
    assert len(title) > TITLE_CHARACTERS
    current = np.linspace(-4e-4, 4e-4, 11)
    fig = iv_spread_figure(current, 1e3 * current, 1e3 + 0 * current, title=title)
    lines = fig.get_suptitle().split("\n")
    assert len(lines) == 2 and all(len(ln) <= TITLE_CHARACTERS for ln in lines) and " ".join(lines) == title


def test_categorical_figure_draws_the_tables_quantiles_and_no_bar_for_a_cell_with_nothing_finished(tmp_path):
    """The box and whiskers are the summary's interpolated quantiles (matplotlib's boxplot moves a
    whisker to the nearest data point inside it); a cell with no finished network has no yield, drawn
    as "n/a", not as a 0 % bar."""
    import zarr

    from spingpu.plot import accuracy_categorical

    path, _ = fake_store(tmp_path, {"training.grad_mode": ["fd_forward", "model", "oracle"]}, npt=10, diverge_cell=0)
    zarr.open_group(str(path), mode="r+")["task_done"][2, :] = 0
    ds = open_results(path)
    rows = summary_rows(ds)
    fig = accuracy_categorical(ds)
    fig.canvas.draw()
    ax_acc, ax_yield = fig.axes[:2]
    for k, row in enumerate(rows[:2]):
        ends = {float(y) for line in ax_acc.lines if np.all(line.get_xdata() == k + 1) for y in line.get_ydata()}
        expected = {100 * row[f"{q}_test_acc"] for q in ("q05", "q25", "q75", "q95")}  # whiskers: box edge to end
        assert sorted(ends) == pytest.approx(sorted(expected), rel=1e-12), (ends, expected)
        middle = [line.get_ydata()[0] for line in ax_acc.lines
                  if np.ptp(line.get_xdata()) > 0 and np.mean(line.get_xdata()) == k + 1 and np.ptp(line.get_ydata()) == 0]
        assert pytest.approx(100 * row["median_test_acc"], rel=1e-12) in middle
    assert not any(np.any(np.asarray(line.get_xdata()) > 2.5) for line in ax_acc.lines)  # nothing finished: no box
    heights = [bar.get_height() for bar in ax_yield.patches]
    assert heights == pytest.approx([100 * rows[0]["yield"], 100 * rows[1]["yield"]], rel=1e-12)
    assert [t.get_text() for t in ax_yield.texts] == ["n/a"] and ax_yield.texts[0].get_position()[0] == 2


def test_yield_points_carry_their_interval_as_error_bars(tmp_path):
    """A band has no width at a lone point; the error bars show the interval there too."""
    from spingpu.plot import accuracy_vs_axis
    from spingpu.stats import yield_interval

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [5e-6, 2e-5]})
    ds = open_results(path)
    fig = accuracy_vs_axis(ds, "delta_i", threshold=0.8)
    ax_yield = fig.axes[1]
    segments = ax_yield.collections[-1].get_segments()  # the error bars' vertical lines
    for segment, k in zip(segments, range(2)):
        acc = ds.test_acc.isel(delta_i=k).values
        lo, hi = yield_interval(int(np.sum(acc >= 0.8)), acc.size)
        np.testing.assert_allclose(segment[:, 1], [100 * lo, 100 * hi], rtol=1e-12)


def test_training_curves_are_over_the_networks_that_did_not_diverge(tmp_path):
    """A diverged network's epochs are NaN from its divergence on: kept in the curves, each epoch's
    median would be over other networks. The curves are the median and quartiles of the networks
    that did not diverge, at every epoch, and the epoch axis has whole-number ticks."""
    from spingpu.plot import training_curves

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, diverge_cell=1)
    with open_results(path) as ds:
        fig = training_curves(ds)
        kept = ~ds.diverged.values.astype(bool)  # (cell, network)
        loss = ds.train_loss.values[kept]  # (networks kept, epoch)
        acc = ds.val_acc.values[kept] * 100
    ax_acc, ax_loss = fig.axes[:2]
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), np.median(loss, axis=0), rtol=1e-12)
    np.testing.assert_allclose(ax_acc.lines[0].get_ydata(), np.median(acc, axis=0), rtol=1e-12)
    assert all(float(t).is_integer() for t in ax_loss.get_xticks())
    assert "did not diverge" in fig.get_suptitle()


@pytest.mark.parametrize("values, scale", [([1e-4, 1e-2], "log"), ([1e-4, 1.5e-4], "linear"), ([0.0, 1e-2], "linear"),
                                           ([1e-4, 2e-3], "log"), ([1e-4, 1.9e-3], "linear")])
def test_a_two_value_sweep_spanning_decades_is_drawn_on_a_log_axis(tmp_path, values, scale):
    from spingpu.plot import accuracy_vs_axis

    path, _ = fake_store(tmp_path, {"readout.read_noise": values})
    with open_results(path) as ds:
        fig = accuracy_vs_axis(ds, "read_noise")
    assert {ax.get_xscale() for ax in fig.axes[:2]} == {scale}


@pytest.mark.parametrize("neuron, title", [({}, "dV/dI: the activation's derivative (up to v_scale i_gain)"),
                                           ({"readout": "bridge", "r_ref": 1500.0},
                                            "the activation's derivative is dV/dI - r_ref (bridge readout)")])
def test_the_junction_figure_shows_what_the_activations_derivative_is(tmp_path, neuron, title):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, tables={"neuron": neuron} if neuron else None)
    with open_results(path) as ds:
        figures = dict(study_figures(ds))
    ax_d = figures["The study's junctions"].axes[1]
    assert ax_d.get_title() == title
    reference = [line for line in ax_d.lines if line.get_linestyle() == ":"]
    if neuron:
        assert len(reference) == 1 and np.allclose(reference[0].get_ydata(), 1.5)  # kOhm
    else:
        assert not reference


def test_a_mode_whose_derivative_does_not_depend_on_di_gets_no_best_di(tmp_path):
    """In a dI sweep, grad_mode model reads no second junction: its cells are the same network
    trained once, its curves flat. They are drawn dashed, said not to depend on dI, without a star."""
    import zarr

    from spingpu.plot import delta_i_tradeoff

    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5, 1e-4],
                                        "training.grad_mode": ["fd_forward", "model"]})
    dims = [a.dim for a in study.axes]
    group = zarr.open_group(str(path), mode="r+")
    for name in ("deriv_rel_err", "grad_cosine"):
        values = group[name][...]
        model = [slice(None)] * values.ndim
        model[dims.index("grad_mode")] = 1
        first = list(model)
        first[dims.index("delta_i")] = slice(0, 1)
        values[tuple(model)] = values[tuple(first)]  # every dI cell of model mode: the same numbers
        group[name][...] = values
    with open_results(path) as ds:
        ax_err, ax_cos = delta_i_tradeoff(ds).axes[:2]
    for ax in (ax_err, ax_cos):
        labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
        assert labels == ["grad_mode=fd_forward", "grad_mode=model (does not depend on dI)"]
        stars = [line for line in ax.lines if line.get_marker() == "*"]
        assert len(stars) == 1 and stars[0].get_color() == ax.lines[0].get_color()


def test_an_axis_of_one_value_is_a_constant_in_the_figures(tmp_path):
    """A swept key of one value gives no figure against it (a single point, a 1 x 1 heatmap, a
    'best dI' of one dI): the figures are those of the other axes, and nothing is 'pooled over' it."""
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5], "readout.read_noise": [0.0, 1e-3, 2e-3],
                                    "training.grad_mode": ["fd_forward", "model"]})
    with open_results(path) as ds:
        figures = study_figures(ds)
    titles = [title for title, _ in figures]
    assert titles == ["Accuracy and yield against read_noise", "Training curves", "The study's junctions"]
    assert all("pooled over delta_i" not in fig.get_suptitle() for _, fig in figures)


def test_a_cell_whose_networks_all_diverged_is_marked_not_left_out(tmp_path):
    """No median exists where every network diverged: the accuracy figures mark the cell (an x at 0
    against a numeric axis, a note in place of a box per cell) instead of leaving a gap."""
    import zarr

    from spingpu.plot import accuracy_categorical, accuracy_vs_axis

    for sweep, dim in (({"readout.read_noise": [0.0, 1e-3, 2e-3]}, "read_noise"),
                       ({"training.grad_mode": ["fd_forward", "model"]}, None)):
        folder = tmp_path / (dim or "categorical")
        folder.mkdir()
        path, _ = fake_store(folder, sweep)
        group = zarr.open_group(str(path), mode="r+")
        test_acc, diverged = group["test_acc"][...], group["diverged"][...]
        test_acc[1], diverged[1] = np.nan, 1  # the second cell: every network diverged
        group["test_acc"][...], group["diverged"][...] = test_acc, diverged
        with open_results(path) as ds:
            fig = accuracy_vs_axis(ds, dim) if dim else accuracy_categorical(ds)
        ax_acc = fig.axes[0]
        if dim:
            marks = [line for line in ax_acc.lines if line.get_marker() == "x" and len(line.get_xdata())]
            assert len(marks) == 1 and list(marks[0].get_xdata()) == [1e-3] and list(marks[0].get_ydata()) == [0]
            assert "every network diverged" in [t.get_text() for t in ax_acc.get_legend().get_texts()]
        else:
            assert [t.get_text() for t in ax_acc.texts] == ["every network\ndiverged"]
            assert ax_acc.texts[0].get_position()[0] == 2


def test_the_reports_cell_count_names_the_axes(tmp_path):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5], "readout.read_noise": [0.0, 1e-3, 2e-3]})
    assert main(["report", str(path)]) == 0
    text = (tmp_path / "fake.html").read_text()
    assert re.search(r"<th>cells</th><td>6 \((2 delta_i x 3 read_noise|3 read_noise x 2 delta_i)\)</td>", text)


def diverge_everything(path):
    """Every network of every cell diverged at its third epoch, as training leaves such a store."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group["test_acc"][...] = np.nan
    group["diverged"][...] = 1
    for name in ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err"):
        values = group[name][...]
        values[..., 2:] = np.nan
        group[name][...] = values


@pytest.mark.parametrize("sweep", [{"neuron.delta_i": [1e-6, 1e-5], "readout.read_noise": [0.0, 1e-3]},
                                   {"training.grad_mode": ["fd_forward", "model"]}, {}])
def test_a_study_whose_every_network_diverged_is_reported_not_a_traceback(tmp_path, capsys, sweep):
    """Nothing to put on a log scale or in a box: the panels say that every network diverged, and
    the summary gives n/a for the medians and their intervals and 0 % for the yields."""
    path, _ = fake_store(tmp_path, sweep)
    diverge_everything(path)
    assert main(["report", str(path)]) == 0, capsys.readouterr().err
    text = (tmp_path / "fake.html").read_text()
    assert text.count("<img") >= 3 and "n/a-n/a" not in text
    rows = list(csv.DictReader(open(tmp_path / "fake.summary.csv")))
    assert rows and all(r["yield"] == "0.0" and r["median_test_acc"] in ("", "nan") for r in rows), rows
    with open_results(path) as ds:
        figures = dict(study_figures(ds))
    for title, fig in figures.items():
        if title.startswith("Accuracy and yield against"):
            assert fig.axes[0].get_ylim() == (-3, 103)  # the per cent scale, not one around the marks at 0
    notes = [t.get_text() for ax in figures["Training curves"].axes[:2] for t in ax.texts]
    assert notes == ["every network diverged"] * 2
    assert figures["Training curves"].axes[1].get_yscale() == "linear"


def test_a_pooled_yield_takes_the_chips_not_the_cells_results_as_its_trials(tmp_path):
    """Against delta_i, a point pools the read_noise cells, which share their chips: its interval
    is pooled_yield_interval with the 40 networks as trials (not Clopper-Pearson of k of 80), and
    where the pooled cells are copies it is the one cell's interval."""
    import zarr

    from spingpu.plot import accuracy_vs_axis
    from spingpu.stats import pooled_yield_interval, yield_interval

    path, study = fake_store(tmp_path, {"neuron.delta_i": [5e-6, 2e-5], "readout.read_noise": [0.0, 1e-3]})
    group = zarr.open_group(str(path), mode="r+")
    dims = [a.dim for a in study.axes]
    test_acc = group["test_acc"][...]
    index = [slice(None)] * test_acc.ndim
    index[dims.index("delta_i")], index[dims.index("read_noise")] = 1, 1
    copy_of = list(index)
    copy_of[dims.index("read_noise")] = 0
    test_acc[tuple(index)] = test_acc[tuple(copy_of)]  # delta_i = 2e-5: both noise cells the same chips' numbers
    group["test_acc"][...] = test_acc
    with open_results(path) as ds:
        ax_yield = accuracy_vs_axis(ds, "delta_i", threshold=0.8).axes[1]
        segments = ax_yield.collections[-1].get_segments()
        for k, segment in enumerate(segments):
            acc = ds.test_acc.isel(delta_i=k).values  # (read_noise, network) or (network, read_noise)
            hits = int(np.sum(acc >= 0.8))
            expected = pooled_yield_interval(hits, acc.size, N_NET)
            np.testing.assert_allclose(segment[:, 1], [100 * e for e in expected], rtol=1e-12)
            assert expected[1] - expected[0] > np.subtract(*yield_interval(hits, acc.size)[::-1])
        one_cell = ds.test_acc.isel(delta_i=1, read_noise=0).values
        np.testing.assert_allclose(segments[1][:, 1], [100 * e for e in yield_interval(int(np.sum(one_cell >= 0.8)),
                                                                                          N_NET)], rtol=1e-8)
    assert "chips as the trials" in ax_yield.get_title()


def test_legends_name_the_axis_their_curves_are_values_of_and_si_ticks_do_not_crowd(tmp_path):
    """Curves of network.hidden are labelled 4 and 4-4: the legend's title says they are hidden
    widths. A linear axis of SI-prefixed values (1.05 kOhm) has at most 6 tick labels."""
    from spingpu.plot import accuracy_vs_axis, training_curves

    with pytest.warns(SpingpuWarning):  # fake_store sets network.hidden too
        path, _ = fake_store(tmp_path, {"network.hidden": [[4], [4, 4]],
                                        "model.params.r_p": [1000.0, 1050.0, 1100.0, 1150.0, 1200.0]})
    with open_results(path) as ds:
        figures = [accuracy_vs_axis(ds, "r_p"), training_curves(ds)]
    for fig in figures:
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends and all(legend.get_title().get_text() == "hidden layers (hidden)" for legend in legends)
        assert [t.get_text() for t in legends[0].get_texts()] == ["4", "4-4"]
    assert figures[0].axes[0].get_xlabel() == "parallel-state resistance (r_p)"  # the model's own description
    ax = figures[0].axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert 2 <= len(ticks) <= 6 and any("kΩ" in t.get_text() for t in ticks), [t.get_text() for t in ticks]


def test_junction_figure_finds_the_junction_cells_of_a_sweep_that_starts_with_a_digital_mode(tmp_path):
    """grad_mode tanh first: its cells have no junctions. The figure shows the widest-spread cell of
    the fd_forward ones (it was left out: only the first value of a non-variability axis was looked at)."""
    from spingpu.report import widest_spread_cell

    sweep = {"training.grad_mode": ["tanh", "fd_forward"], "variability.sigma_d2d": [0.0, 0.1]}
    path, study = fake_store(tmp_path, sweep, name="digital_first")
    assert widest_spread_cell(study) == np.ravel_multi_index((1, 1), study.shape)
    fig = dict(study_figures(open_results(path)))["The study's junctions"]
    assert "grad_mode=fd_forward, sigma_d2d=0.1" in " ".join(fig.get_suptitle().split("\n"))
    only_digital, _ = fake_store(tmp_path, {"training.grad_mode": ["tanh", "relu"]}, name="digital")
    assert "The study's junctions" not in dict(study_figures(open_results(only_digital)))


def test_the_summary_carries_each_cells_teacher_accuracy(tmp_path):
    """teacher_test_acc, one value per cell, is the summary's, the CSV's and the HTML's teacher
    column; a store without a teacher has NaN and no such column."""

    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5]}, npt=40)
    plain = summary_rows(open_results(path), 0.9)
    assert all(np.isnan(row["teacher_test_acc"]) for row in plain)
    assert "<th>teacher</th>" not in (Path(write_report(path))).read_text()
    teachers = np.random.default_rng().uniform(0.8, 1.0, 2)
    ds = open_results(path)
    for cell, value in enumerate(teachers):
        metrics = {name: ds[name].isel(delta_i=cell).values for name in ("train_loss", "train_acc", "val_acc",
                   "grad_cosine", "deriv_rel_err", "test_acc", "diverged", "extrapolated_readings")}
        write_task(path, study, cell, 0, dict(metrics, teacher_test_acc=value))
        mark_done(path, study, cell, 0)
    rows = summary_rows(open_results(path), 0.9)
    assert [row["teacher_test_acc"] for row in rows] == list(teachers)
    html = Path(write_report(path)).read_text()
    assert "<th>teacher</th>" in html
    with open(tmp_path / "fake.summary.csv") as handle:
        assert [float(r["teacher_test_acc"]) for r in csv.DictReader(handle)] == list(teachers)


def test_the_figures_draw_the_tables_numbers_of_an_incomplete_store(tmp_path):
    """In a store whose unfinished tasks hold numbers (0 here), the accuracy-vs-axis medians, the
    heatmaps' medians and yields at a threshold other than the default, and the 5-95 % and IQR
    bands are the summary's (numbers of the finished networks only; NaN where nothing finished)."""
    import matplotlib

    matplotlib.use("Agg")
    import zarr

    from spingpu.plot.study import accuracy_vs_axis, heatmap

    path, study = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5, 4e-5], "readout.read_noise": [0.0, 1e-3]},
                             npt=10)
    group = zarr.open_group(str(path), mode="r+")
    group["task_done"][0, 0, 2:] = 0  # delta_i 1e-5, read_noise 0: tasks 2 and 3 never finished
    group["task_done"][2, 1, :] = 0  # delta_i 4e-5, read_noise 1e-3: nothing finished
    group["test_acc"][0, 0, 20:] = 0.0
    group["test_acc"][2, 1, :] = 0.0
    ds = open_results(path)
    threshold = 0.85
    rows = summary_rows(ds, threshold)
    grid = {key: np.array([row[key] for row in rows]).reshape(3, 2).T * 100 for key in ("median_test_acc", "yield")}
    fig = heatmap(ds, "delta_i", "read_noise", threshold=threshold)
    for ax, key in ((fig.axes[0], "median_test_acc"), (next(a for a in fig.axes if a.get_title().startswith("yield")),
                                                       "yield")):
        shown = np.ma.filled(ax.get_images()[0].get_array().astype(float), np.nan)
        np.testing.assert_allclose(shown, grid[key], rtol=1e-12, err_msg=key)
    assert np.isnan(grid["median_test_acc"][1, 2])
    one = open_results(path).sel(read_noise=0.0)  # one numeric axis left: one curve
    rows = [r for r in summary_rows(ds, threshold) if r["read_noise"] == 0.0]
    ax = accuracy_vs_axis(one, "delta_i", threshold).axes[0]
    line = next(line for line in ax.lines if line.get_marker() == "o")
    np.testing.assert_allclose(line.get_ydata(), [100 * r["median_test_acc"] for r in rows], rtol=1e-12)
    done = [ds.test_acc.values[0, 0, :20], ds.test_acc.values[1, 0], ds.test_acc.values[2, 0]]  # finished networks
    for band, (lo, hi) in zip(ax.collections[:2], ((0.05, 0.95), (0.25, 0.75))):
        ys = band.get_paths()[0].vertices[:, 1]
        for k, acc in enumerate(done):
            ok = 100 * acc[np.isfinite(acc)]
            assert np.isclose(ys, np.quantile(ok, lo), rtol=1e-12).any() and np.isclose(ys, np.quantile(ok, hi),
                                                                                           rtol=1e-12).any(), (k, lo)


def test_a_pooled_points_chips_are_those_with_a_result_in_any_pooled_cell(tmp_path):
    """Pooled cells that finished different tasks: against delta_i, the point of 5e-6 pools 20
    results of read_noise 0 (its task 1 unfinished) and 40 of read_noise 1e-3, from 40 distinct
    chips (any cell's), not 20 (every cell's): the interval is Clopper-Pearson at n = 40,
    k = 40 hits / 60 (scipy.stats.beta, written out here)."""
    import zarr
    from scipy.stats import beta

    from spingpu.plot import accuracy_vs_axis

    path, study = fake_store(tmp_path, {"neuron.delta_i": [5e-6, 2e-5], "readout.read_noise": [0.0, 1e-3]}, npt=20)
    dims = [a.dim for a in study.axes]
    group = zarr.open_group(str(path), mode="r+")
    done = group["task_done"][...]
    index = [0] * len(dims) + [1]
    index[dims.index("read_noise")] = 0
    done[tuple(index)] = 0  # delta_i 5e-6, read_noise 0: networks 20-39 unfinished
    group["task_done"][...] = done
    with open_results(path) as ds:
        acc = ds.test_acc.isel(delta_i=0).transpose("read_noise", "network").values
        results = np.concatenate([acc[0, :20], acc[1]])
        hits = int(np.sum(results >= 0.8))
        k = 40 * hits / 60
        expected = (beta.ppf(0.025, k, 40 - k + 1), beta.ppf(0.975, k + 1, 40 - k))
        segment = accuracy_vs_axis(ds, "delta_i", threshold=0.8).axes[1].collections[-1].get_segments()[0]
    np.testing.assert_allclose(segment[:, 1], [100 * e for e in expected], rtol=1e-12)


def test_networks_without_a_gradient_are_counted_not_hidden_in_the_cosine_median(tmp_path, capsys):
    """A network that did not diverge but whose gradient used was exactly 0 has an undefined cosine:
    the median is over the others and ``undefined_grad_cosine`` counts it, in the CSV, the HTML
    and the run's summary table; cells without such networks say nothing."""
    from spingpu.studies.runner import summary_table

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, diverge_cell=0, zero_gradient_cell=0)
    ds = open_results(path)
    rows = summary_rows(ds)
    last = ds.grad_cosine.isel(epoch=-1, delta_i=0).values
    trained = ~ds.diverged.isel(delta_i=0).values
    assert np.isnan(last[trained]).sum() == 2 * (N_NET // 20) and rows[0]["diverged"] == 3 * (N_NET // 20)
    assert rows[0]["undefined_grad_cosine"] == 2 * (N_NET // 20) and rows[1]["undefined_grad_cosine"] == 0
    assert rows[0]["median_grad_cosine"] == np.median(last[trained & np.isfinite(last)])
    assert main(["report", str(path)]) == 0
    capsys.readouterr()
    with open(tmp_path / "fake.summary.csv") as handle:
        assert [r["undefined_grad_cosine"] for r in csv.DictReader(handle)] == [str(2 * (N_NET // 20)), "0"]
    text = (tmp_path / "fake.html").read_text()
    assert text.count(" undefined)</td>") == 1
    assert f"<td>{rows[0]['median_grad_cosine']:.3f} ({2 * (N_NET // 20)} undefined)</td>" in text
    assert summary_table(path).splitlines()[-1] == (
        f"grad cos leaves out {2 * (N_NET // 20)} networks whose gradient used or exact was exactly 0 (no signal "
        "reached a hidden layer: every reading clipped by an ADC, or every unit off): a cosine with a zero vector is "
        "undefined")


def test_a_report_of_a_store_a_run_is_writing_says_so(tmp_path, capsys):
    """An incomplete store whose run holds its lock (spingpu.studies.store.run_lock) is reported with
    the warning naming that run; once the lock is free, not."""
    import fcntl
    import socket

    import zarr

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5]}, npt=10)
    zarr.open_group(str(path), mode="r+")["task_done"][1, :] = 0
    warning = (f"spingpu report: warning: {path} is incomplete: 4 of 8 tasks finished; the statistics are over the "
               "networks of finished tasks only")
    lock = tmp_path / ".fake.zarr.lock"
    with open(lock, "w") as held:
        held.write(f"{socket.gethostname()} 4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["report", str(path)]) == 0
        writer = f"process 4242 on {socket.gethostname()}"
        assert capsys.readouterr().err == f"{warning} (a run, {writer}, is writing it now)\n"
    assert main(["report", str(path)]) == 0  # the file is left, its lock is not held
    assert capsys.readouterr().err == warning + "\n"


def test_every_label_of_a_fine_sweep_tells_its_value_from_the_others(tmp_path, capsys):
    """Three significant digits made 1.5, 1.5, 1.51, 1.51, 1.52 of a linspace from 1.5 to 1.52: two
    rows of the report's table and two ticks of a heatmap that could not be told apart."""
    from spingpu.plot import heatmap

    path, _ = fake_store(tmp_path, {"model.params.tmr0": {"linspace": [1.5, 1.52, 5]},
                                    "neuron.delta_i": [1e-5, 1.00001e-5]})
    with open_results(path) as ds:
        fig = heatmap(ds, "delta_i", "tmr0")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1.5", "1.505", "1.51", "1.515", "1.52"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10 µA", "10.0001 µA"]
    assert main(["report", str(path)]) == 0, capsys.readouterr().err
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", (tmp_path / "fake.html").read_text())
    assert len(set(rows)) == 10, rows
    assert {r[0] for r in rows} == {"1.5", "1.505", "1.51", "1.515", "1.52"}


@pytest.mark.parametrize("key, sweep, scale", [
    ("neuron.delta_i", {"logspace": [-5, -4.7, 3]}, "log"),  # 10, 14.1, 20 uA: logspace, though within 20x
    ("neuron.delta_i", {"linspace": [1e-6, 1e-4, 3]}, "linear"),  # linspace, though over 100x
    ("neuron.delta_i", [1e-6, 1e-5, 1e-4], "log"),  # a list: its span decides
    ("readout.read_noise", [0.0, 1e-4, 1e-3, 1e-2], "symlog"),  # a 0 and decades: linear only up to 1e-4
    ("readout.read_noise", [0.0, 1e-3, 2e-3], "linear"),
])
def test_an_axis_is_drawn_on_the_scale_its_sweep_was_declared_with(tmp_path, key, sweep, scale):
    from spingpu.plot import accuracy_vs_axis, delta_i_tradeoff

    path, _ = fake_store(tmp_path, {key: sweep})
    dim = key.split(".")[1]
    with open_results(path) as ds:
        figures = [accuracy_vs_axis(ds, dim)] + ([delta_i_tradeoff(ds)] if dim == "delta_i" else [])
    for fig in figures:
        assert {ax.get_xscale() for ax in fig.axes[:2]} == {scale}
        if scale == "symlog":
            assert fig.axes[0].xaxis.get_transform().linthresh == 1e-4


def test_an_adc_of_0_bits_is_drawn_as_no_adc_apart_from_the_resolutions(tmp_path):
    """adc_bits = 0 is no ADC, not a resolution of 0 bits: a tick of its own named so, its points not
    joined by a line to the 4-bit ones; the values in their order on the axis, not the study's."""
    from spingpu.plot import accuracy_vs_axis, heatmap

    path, _ = fake_store(tmp_path, {"readout.adc_bits": [8, 0, 4], "neuron.delta_i": [1e-5, 2e-5]})
    with open_results(path) as ds:
        fig = accuracy_vs_axis(ds, "adc_bits")
        grid = heatmap(ds, "delta_i", "adc_bits")
        medians = ds.test_acc.median(["network", "delta_i"]).sel(adc_bits=[0, 4, 8]).values * 100
    for ax in fig.axes[:2]:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["no ADC", "4", "8"]
        assert list(ax.get_xticks()) == [0, 1, 2]
        joined = [line for line in ax.lines if line.get_marker() == "o" and line.get_linestyle() == "-"]
        apart = [line for line in ax.lines if line.get_marker() == "o" and line.get_linestyle() == "None"]
        assert len(joined) == len(apart) == 1
        assert np.isnan(joined[0].get_ydata()[0]) and np.isfinite(joined[0].get_ydata()[1:]).all()
        assert list(apart[0].get_xdata()) == [0]
    acc_joined = next(line for line in fig.axes[0].lines if line.get_marker() == "o" and line.get_linestyle() == "-")
    acc_apart = next(line for line in fig.axes[0].lines if line.get_marker() == "o" and line.get_linestyle() == "None")
    np.testing.assert_allclose(acc_joined.get_ydata()[1:], medians[1:])  # pooled over delta_i: the same median
    np.testing.assert_allclose(acc_apart.get_ydata(), medians[:1])
    assert [t.get_text() for t in grid.axes[0].get_yticklabels()] == ["no ADC", "4", "8"]
    assert grid.axes[0].get_ylabel() == "ADC bits (adc_bits)"
    page = Path(write_report(path)).read_text()  # the report's table names them as the figures do
    assert '<th title="ADC bits (adc_bits)">adc_bits</th>' in page
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", page)
    assert sorted(rows) == sorted((a, d) for a in ("8", "no ADC", "4") for d in ("10 µA", "20 µA"))


def test_a_figure_of_a_selection_says_the_values_fixed_and_a_bad_axis_is_one_line(tmp_path):
    """ds.sel(delta_i=2e-5) or [2e-5]: the title says "at delta_i = 20 µA" (the figure would not
    otherwise say which cells it shows); an axis the results do not have is a ConfigError naming
    the argument and the allowed axes."""
    from spingpu import ConfigError
    from spingpu.plot import accuracy_vs_axis, heatmap

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5], "variability.sigma_d2d": [0.0, 0.1, 0.2],
                                    "readout.read_noise": [1e-4, 1e-3]})
    with open_results(path) as ds:
        for picked in (ds.sel(delta_i=2e-5), ds.sel(delta_i=[2e-5])):
            title = accuracy_vs_axis(picked, "sigma_d2d")._suptitle.get_text()
            assert title == "Test accuracy against sigma_d2d at delta_i = 20 µA (pooled over read_noise)", title
        title = heatmap(ds.sel(read_noise=1e-3), "sigma_d2d", "delta_i")._suptitle.get_text()
        assert title == "delta_i x sigma_d2d at read_noise = 1 mV", title
        with pytest.raises(ConfigError, match=r"^dim: 'sigma_d2' is not a numeric sweep axis of more than one value "
                                              r"of these results \(did you mean 'sigma_d2d'\?\); allowed: "):
            accuracy_vs_axis(ds, "sigma_d2")
        with pytest.raises(ConfigError, match=r"^y_dim: 'tmr' is not a numeric sweep axis"):
            heatmap(ds, "sigma_d2d", "tmr")


def test_a_heatmap_cell_whose_every_network_diverged_is_not_one_that_never_ran(tmp_path):
    import zarr

    from spingpu.plot import heatmap

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5], "readout.read_noise": [0.0, 1e-3]})
    group = zarr.open_group(str(path), mode="r+")
    test_acc, diverged = group["test_acc"][...], group["diverged"][...]
    test_acc[1, 0], diverged[1, 0] = np.nan, 1  # delta_i 20 uA, no read noise: every network diverged
    group["test_acc"][...], group["diverged"][...] = test_acc, diverged
    with open_results(path) as ds:
        fig = heatmap(ds, "read_noise", "delta_i")
    median_texts = {(t.get_position()): t.get_text() for t in fig.axes[0].texts}
    yield_texts = {(t.get_position()): t.get_text() for t in fig.axes[1].texts}
    assert median_texts[(0, 1)] == "all div." and list(median_texts.values()).count("all div.") == 1
    assert yield_texts[(0, 1)] == "0"


def test_figures_of_a_study_whose_every_network_diverged_keep_their_axes(tmp_path):
    """Nothing drawn: the categories still sit inside the panel on a per cent scale, the curves'
    panel still runs over the epochs (it ran from -0.045 to 0.045 epochs)."""
    from spingpu.plot import accuracy_categorical, training_curves

    path, _ = fake_store(tmp_path, {"training.grad_mode": ["fd_forward", "model"]})
    diverge_everything(path)
    with open_results(path) as ds:
        cats, curves = accuracy_categorical(ds), training_curves(ds)
    assert cats.axes[0].get_xlim() == (0.4, 2.6) and cats.axes[0].get_ylim() == (-3, 103)
    assert [t.get_position()[0] for t in cats.axes[0].texts] == [1, 2]
    assert all(ax.get_xlim() == (1, EPOCHS) for ax in curves.axes[:2])


def test_a_report_made_again_counts_the_yield_at_the_threshold_the_run_used(tmp_path, capsys):
    """`spingpu run --threshold 0.8` records it in the store; `spingpu report` without --threshold
    uses it (it went back to 0.9), with --threshold the one given; a bad one is refused first."""
    from spingpu.studies.store import update_attrs

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5]})
    update_attrs(path, yield_threshold=0.8)  # as spingpu run --threshold 0.8 leaves it
    with open_results(path) as ds:
        acc = ds.test_acc.values
    csv_path = tmp_path / "fake.summary.csv"
    for argv, threshold in (([], 0.8), (["--threshold", "0.95"], 0.95)):
        assert main(["report", str(path), *argv]) == 0, capsys.readouterr().err
        rows = list(csv.DictReader(open(csv_path)))
        assert [float(r["yield_threshold"]) for r in rows] == [threshold, threshold]
        assert [float(r["yield"]) for r in rows] == pytest.approx(list(np.mean(acc >= threshold, axis=-1)))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "none.zarr"), "--threshold", "90"]) == 2
    assert "threshold: " in capsys.readouterr().err


def test_make_results_runs_and_draws_with_the_librarys_axes(tmp_path):
    """studies/make_results.py, which regenerates the README's tables and figures, imports the
    library's plotting helpers: it runs where no store exists, and its metric figure draws an
    axis as the library does (it imported a helper that had gone)."""
    import importlib.util
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "studies" / "make_results.py"
    done = subprocess.run([sys.executable, str(script), "--runs", str(tmp_path), "--figures", str(tmp_path / "f")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "no store of that study" in done.stdout, done.stderr[-2000:]
    spec = importlib.util.spec_from_file_location("make_results", script)
    make_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_results)
    path, _ = fake_store(tmp_path, {"readout.read_noise": [0.0, 1e-4, 1e-3, 1e-2],
                                    "training.grad_mode": ["fd_forward", "model"]})
    with open_results(path) as ds:
        fig = make_results.metric_vs_axis(ds, "read_noise", "title")
    assert [ax.get_xscale() for ax in fig.axes[:3]] == ["symlog"] * 3
    assert len(fig.axes[0].get_lines()) == 2  # a curve per gradient mode


@pytest.mark.parametrize("recorded", [None, "0.8", 90, 1.5, True])
def test_a_recorded_threshold_that_is_not_one_is_named_as_the_stores(tmp_path, capsys, recorded):
    from spingpu.studies.store import update_attrs

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-5, 2e-5]})
    update_attrs(path, yield_threshold=recorded)
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == (f"spingpu report: error: threshold: the store's recorded yield_threshold, "
                                       f"{recorded!r}, is not a fraction from 0 to 1 (edited by hand?); give one with "
                                       "--threshold\n")
    assert main(["report", str(path), "--threshold", "0.8"]) == 0


@pytest.mark.parametrize("study_data", ["null", "[]", "3", "{\"sweep\": []}", "not json"])
def test_an_axis_of_a_dataset_without_the_studys_tables_is_drawn_from_its_values(tmp_path, study_data):
    from spingpu.plot import accuracy_vs_axis

    path, _ = fake_store(tmp_path, {"neuron.delta_i": {"logspace": [-5, -4.7, 3]}})
    with open_results(path) as ds:
        ds.attrs["study_data"] = study_data
        fig = accuracy_vs_axis(ds, "delta_i")  # 10-20 uA: linear from the values (the declared logspace unknown)
    assert fig.axes[0].get_xscale() == "linear"


def test_a_point_no_band_reaches_has_its_bands_as_bars(tmp_path):
    """adc_bits = [0, 8]: neither point joins a neighbour, so both carry their IQR and 5-95 % as bars."""
    from spingpu.plot import accuracy_vs_axis

    path, _ = fake_store(tmp_path, {"readout.adc_bits": [0, 8]})
    with open_results(path) as ds:
        ax = accuracy_vs_axis(ds, "adc_bits").axes[0]
        acc = ds.test_acc.values * 100
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert len(bars) == 2  # 5-95 % and IQR
    for bar, (lo, hi) in zip(bars, [(0.05, 0.95), (0.25, 0.75)]):
        segments = bar.get_segments()
        assert [s[0][0] for s in segments] == [0, 1]
        np.testing.assert_allclose([[s[0][1], s[1][1]] for s in segments], np.quantile(acc, [lo, hi], axis=-1).T)


def test_make_results_pairs_only_networks_trained_in_both_cells():
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "studies" / "make_results.py"
    spec = importlib.util.spec_from_file_location("make_results", script)
    make_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_results)
    line = make_results.paired_comparison([0.9, 0.8, np.nan, 0.85], [0.85, 0.8, 0.7, 0.8], "distilled")
    assert line.startswith("distilled minus labels-only, same networks: mean +3.33 points (min +0.00, max +5.00; "
                           "2 of 3 better, 1 equal; 1 network diverged in a cell, left out)")
    assert "nan" not in line and "Wilcoxon signed-rank p (distilled better) = " in line


def test_equal_curves_stay_visible_one_over_the_other(tmp_path):
    """Two categories with the same accuracies (two models that agree) draw the same points: the
    curve drawn later is narrower, in marker and line, than the one it covers, and of another colour,
    so both stay visible; a lone curve keeps matplotlib's default sizes."""
    from spingpu.plot.study import accuracy_vs_axis, training_curves

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5, 1e-4], "training.grad_mode": ["fd_forward", "model"]})
    ds = open_results(path).load()
    for name in ("test_acc", "val_acc", "train_loss"):
        same = ds[name].sel(grad_mode="fd_forward").values
        ds[name].loc[dict(grad_mode="model")] = same
    fig = accuracy_vs_axis(ds, "delta_i")
    for ax in fig.axes[:2]:
        first, second = [line for line in ax.lines if line.get_label() in ("fd_forward", "model")]
        np.testing.assert_array_equal(first.get_ydata(), second.get_ydata())
        assert first.get_color() != second.get_color()
        assert first.get_markersize() >= 1.5 * second.get_markersize()
        assert first.get_linewidth() >= 1.5 * second.get_linewidth()
    for ax in training_curves(ds).axes[:2]:
        first, second = [line for line in ax.lines if line.get_label() in ("fd_forward", "model")]
        np.testing.assert_array_equal(first.get_ydata(), second.get_ydata())
        assert first.get_linewidth() >= 1.5 * second.get_linewidth() and first.get_color() != second.get_color()
    lone = accuracy_vs_axis(ds.sel(grad_mode="model"), "delta_i").axes[0]
    line = next(line for line in lone.lines if line.get_marker() == "o")
    assert (line.get_markersize(), line.get_linewidth()) == (6.0, 1.5)


def test_figures_and_summary_count_the_yield_at_the_runs_threshold_by_default(tmp_path):
    """A run's ``--threshold`` is recorded (``yield_threshold``); the figures and the summary drawn
    from its results in Python count the yield at it unless told another, as the report does."""
    from spingpu.plot.study import accuracy_categorical, accuracy_vs_axis, heatmap

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [1e-6, 1e-5], "readout.read_noise": [0.0, 1e-3]})
    ds = open_results(path).load()
    threshold = float(np.round(np.random.default_rng().uniform(0.6, 0.85), 2))
    ds.attrs["yield_threshold"] = threshold
    said = f"accuracy >= {round(100 * threshold)} %"
    rows = summary_rows(ds)
    assert [r["yield_threshold"] for r in rows] == [threshold] * 4
    assert [r["yield"] for r in rows] == [r["yield"] for r in summary_rows(ds, threshold)]
    assert [r["yield"] for r in rows] != [r["yield"] for r in summary_rows(ds, 0.9)]
    assert said in accuracy_vs_axis(ds, "delta_i").axes[1].get_ylabel()
    assert said in next(a for a in heatmap(ds, "delta_i", "read_noise").axes if a.get_title().startswith("yield")
                        ).get_title()
    assert said in accuracy_categorical(ds.isel(delta_i=0)).axes[1].get_ylabel()
    assert ">= 90 %" in accuracy_vs_axis(ds, "delta_i", 0.9).axes[1].get_ylabel()
    del ds.attrs["yield_threshold"]
    assert ">= 90 %" in accuracy_vs_axis(ds, "delta_i").axes[1].get_ylabel()
    ds.attrs["yield_threshold"] = 7.5
    with pytest.raises(ConfigError, match="^threshold: the store's recorded yield_threshold, 7.5, is not a fraction"):
        summary_rows(ds)


def test_an_axis_of_a_few_spread_values_has_a_tick_at_each(tmp_path):
    """2 µA and 5 µA are named on the axis, as the legends write them; values too close for their
    labels (or too many) keep matplotlib's ticks."""
    from spingpu.plot.study import _ticks_at_values, accuracy_vs_axis

    path, _ = fake_store(tmp_path, {"neuron.delta_i": [5e-6, 2e-6, 2e-5, 5e-5]})
    ax = accuracy_vs_axis(open_results(path), "delta_i").axes[0]
    np.testing.assert_array_equal(ax.get_xticks(), [2e-6, 5e-6, 2e-5, 5e-5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2 µA", "5 µA", "20 µA", "50 µA"]
    assert _ticks_at_values([0.01, 0.02, 0.05], "linear") and _ticks_at_values([1e-6, 1e-3], "log")
    assert not _ticks_at_values([0.01, 0.0101, 0.05], "linear")  # 0.01 and 0.0101 would overlap
    assert not _ticks_at_values(np.arange(8.0), "linear") and not _ticks_at_values([0.0, 1e-4, 1e-2], "symlog")
