"""The HTML report and CSV summary of a study, from stores filled with known numbers."""

import csv
import re

import numpy as np
import pytest

from spingpu.cli.main import main
from spingpu.report import study_figures, summary_rows
from spingpu.studies import open_results
from spingpu.studies.spec import parse_study
from spingpu.studies.store import create_store, mark_done, task_count, write_task

N_NET, EPOCHS = 40, 5


def fake_store(tmp_path, sweep, name="fake", npt=20, diverge_cell=None):
    """A store whose metrics are drawn at random (fixed seed), written through the real store API."""
    data = {"name": name, "networks": N_NET, "seed": 1, "dataset": {"name": "iris"}, "network": {"hidden": [3]},
            "training": {"epochs": EPOCHS}, "sweep": sweep}
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
                           deriv_rel_err=rng.uniform(0.01, 1, (n, EPOCHS)), test_acc=acc, diverged=diverged)
            write_task(path, study, cell, lo, metrics)
            mark_done(path, study, cell, task)
    return path, study


def test_summary_equals_reductions_of_the_dataset(tmp_path):
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
        assert row["yield"] == pytest.approx(np.sum(ok >= 0.85) / acc.size)  # diverged chips did not train
        assert row["diverged"] == (6 if k == 1 else 0)  # 3 in each of the 2 tasks
        last = ds.isel(epoch=-1, delta_i=k)
        assert row["median_grad_cosine"] == pytest.approx(np.median(last.grad_cosine.values))


def test_report_one_axis_self_contained_with_csv(tmp_path, capsys):
    path, _ = fake_store(tmp_path, {"neuron.delta_i": {"logspace": [-6, -4, 3]}}, diverge_cell=0)
    rc = main(["report", str(path), "--threshold", "0.85"])
    assert rc == 0
    html_path, csv_path = tmp_path / "fake.html", tmp_path / "fake.csv"
    text = html_path.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "http://" not in text and "https://" not in text
    # accuracy vs delta_i, the dI trade-off, training curves, the junctions, divergence
    assert text.count("<figure>") == 5
    assert text.count('src="data:image/png;base64,') == 5
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and float(rows[0]["median_test_acc"]) == pytest.approx(
        summary_rows(open_results(path), 0.85)[0]["median_test_acc"])
    assert "fake study" in text and "delta_i (A)" in text


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
    assert rc == 0 and (tmp_path / "r.csv").exists()


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
