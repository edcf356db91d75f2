"""``spingpu devices`` and ``spingpu info`` end to end: outputs, numbers, and bad input."""

import csv
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from spingpu import ConfigError, Variability, get_model, sample_layer
from spingpu.cli.main import main


def read_rows(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return rows


def test_devices_writes_csv_matching_the_model_and_a_png(tmp_path, capsys):
    out_csv, out_png = tmp_path / "iv.csv", tmp_path / "iv.png"
    rc = main(["devices", "--model", "stt_compact", "--samples", "8", "--sigma-d2d", "0.1",
               "--sigma-pair", "0.02", "--seed", "5", "--points", "41", "--csv", str(out_csv), "--plot", str(out_png)])
    assert rc == 0
    rows = read_rows(out_csv)
    assert list(rows[0]) == ["sample", "member", "current", "voltage", "dvdi"]
    assert len(rows) == 41 + 8 * 2 * 41
    model = get_model("stt_compact")
    nominal = [r for r in rows if r["sample"] == "-1"]
    i_nom = np.array([float(r["current"]) for r in nominal])
    np.testing.assert_allclose(i_nom, np.linspace(-400e-6, 400e-6, 41), rtol=1e-9)
    v_ref, d_ref = model.iv(i_nom)
    np.testing.assert_allclose([float(r["voltage"]) for r in nominal], v_ref, rtol=1e-8)
    np.testing.assert_allclose([float(r["dvdi"]) for r in nominal], d_ref, rtol=1e-8)
    # Sample 3 member B is network 3, layer 0, unit 0, member 1 of the seeded hierarchy.
    params = sample_layer(model, Variability(sigma_d2d=0.1, sigma_pair=0.02), 5, [3], 0, 1)[0, 0, 1]
    rows_3b = [r for r in rows if r["sample"] == "3" and r["member"] == "B"]
    v3, d3 = model.iv(i_nom, params)
    np.testing.assert_allclose([float(r["voltage"]) for r in rows_3b], v3, rtol=1e-8)
    np.testing.assert_allclose([float(r["dvdi"]) for r in rows_3b], d3, rtol=1e-8)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 20_000
    printed = capsys.readouterr().out
    assert "dV/dI spread" in printed and "q50" in printed and str(out_csv) in printed


def test_devices_tabulated_from_csv(tmp_path):
    table = tmp_path / "measured.csv"
    i = np.linspace(-5e-4, 5e-4, 21)
    np.savetxt(table, np.column_stack([i, 800 * i + 0.1 * np.tanh(i / 2e-4)]), delimiter=",",
               header="current_A,voltage_V", comments="")
    out_csv = tmp_path / "iv.csv"
    rc = main(["devices", "--model", "tabulated", "--iv-csv", str(table), "--samples", "2",
               "--sigma-d2d", "0.05", "--i-min", "-4e-4", "--i-max", "4e-4", "--points", "9", "--csv", str(out_csv)])
    assert rc == 0
    rows = [r for r in read_rows(out_csv) if r["sample"] == "-1"]
    expected = 800 * 4e-4 + 0.1 * np.tanh(2.0)
    assert float(rows[-1]["voltage"]) == pytest.approx(expected, rel=1e-12)  # a knot of the table


BAD = [
    (["--model", "nope"], "model: unknown device model 'nope'; allowed: macrospin, stt_compact, stt_compact_f32, tabulated"),
    (["--param", "r_p=-1"], "param r_p: -1.0 is out of range; allowed: 1 <= value <= 1e7"),
    (["--param", "r_p=inf"], "param r_p: expected a finite number, got inf; allowed: 1 <= value <= 1e7"),
    (["--param", "v_h=1e-300"], "param v_h: 1e-300 is out of range; allowed: 0.001 <= value <= 1000 or inf"),
    (["--param", "v_h=-inf"], "param v_h: expected a finite number, got -inf"),
    (["--model", "macrospin", "--param", "k_u=1e300"],
     "param k_u: 1e+300 is out of range; allowed: 0 < value <= 1e8"),
    (["--model", "macrospin", "--param", "ms=inf"], "param ms: expected a finite number, got inf"),
    (["--model", "macrospin", "--param", "alpha=inf"], "param alpha: expected a finite number, got inf"),
    (["--i-max", "inf"], "i-max: expected a finite number, got inf"),
    (["--i-min", "-inf"], "i-min: expected a finite number, got -inf"),
    (["--i-max", "1e300"], "i-max: 1e+300 is out of range; allowed: -1 <= value <= 1"),
    (["--csv", ""], "csv: expected a file name, got an empty one"),
    (["--plot", ""], "plot: expected a file name, got an empty one"),
    (["--csv", "results.nc"], "csv: results.nc must end in .csv"),  # not a netCDF result, replaced by mistake
    (["--plot", "iv.jpg"], "plot: iv.jpg must end in .png, .pdf or .svg"),
    (["--param", "r_q=5"], "param: unknown parameter 'r_q' for model 'stt_compact'"),
    (["--param", "r_p"], "param: 'r_p': expected NAME=VALUE"),
    (["--param", "tmr0=abc"], "param tmr0: 'abc' is not a number"),
    (["--points", "1"], "points: 1 is out of range; allowed: 2 <= value <= 1000000"),
    (["--samples", "0"], "samples: 0 is out of range; allowed: 1 <= value <= 100000"),
    (["--i-min", "1e-4", "--i-max", "1e-4"], "i-min: 0.0001 A must be below i-max (0.0001 A)"),
    (["--sigma-d2d", "-0.1"], "sigma-d2d: -0.1 is out of range; allowed: 0 <= value <= 2"),
    (["--model", "tabulated"], "iv-csv: the tabulated model needs exactly one measured curve"),
    (["--iv-csv", "x.csv"], "iv-csv: a measured curve is only used by the 'tabulated' model"),
    (["--seed", "-3"], "seed: -3 is out of range"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[b[1].split(":")[0] + str(k) for k, b in enumerate(BAD)])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, extra, message):
    out = tmp_path / "iv.csv"
    rc = main(["devices", "--csv", str(out), "--plot", str(tmp_path / "iv.png"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("spingpu devices: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_csv_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("spingpu.outputs.tempfile.mkstemp", refuse)
    rc = main(["devices", "--samples", "2", "--points", "5", "--csv", str(tmp_path / "a.csv")])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err == f"spingpu devices: error: csv: cannot write {tmp_path / 'a.csv'}: Permission denied\n"
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_names_the_option_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    from spingpu.cli import devices

    def full(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(devices, "_write_plot", full)
    rc = main(["devices", "--samples", "2", "--points", "5", "--csv", str(tmp_path / "a.csv"),
               "--plot", str(tmp_path / "a.png")])
    captured = capsys.readouterr()
    assert rc == 1  # the machine's error: not a bad value
    assert captured.err.count("\n") == 1 and "No space left on device" in captured.err
    # the disk filled while writing both: each could be the one, so both are named
    assert captured.err.startswith(f"spingpu devices: error: csv/plot: cannot write {tmp_path / 'a.csv'} or "
                                   f"{tmp_path / 'a.png'}: ")
    assert list(tmp_path.iterdir()) == []


def test_bad_tabulated_csv_exit_2_and_existing_output_kept(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("current,voltage\n0,0\n1e-4,0.1\n5e-5,0.05\n2e-4,0.2\n")
    out = tmp_path / "iv.csv"
    out.write_text("precious\n")
    rc = main(["devices", "--model", "tabulated", "--iv-csv", str(bad), "--csv", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("spingpu devices: error: iv-csv: ") and "not sorted" in err
    assert out.read_text() == "precious\n"


def test_outputs_never_overwrite_the_measured_curve_or_each_other(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng()
    i = np.sort(rng.uniform(-4e-4, 4e-4, 30))
    measured = tmp_path / "meas.csv"
    measured.write_text("current,voltage\n" + "".join(f"{a:.17g},{1e3 * a + 2e5 * a**3:.17g}\n" for a in i))
    before = measured.read_bytes()
    monkeypatch.chdir(tmp_path)
    cases = [(["--model", "tabulated", "--iv-csv", str(measured), "--csv", "meas.csv"],
              "csv: meas.csv is an input of this run; not overwritten: choose another file name"),
             (["--csv", "same.png", "--plot", "same.png"],
              "plot: same.png is also the csv output; choose another file name")]
    for extra, message in cases:
        assert main(["devices", "--samples", "2", "--points", "5", *extra]) == 2
        assert capsys.readouterr().err == f"spingpu devices: error: {message}\n"
    assert measured.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["meas.csv"]
    assert main(["train", "--dataset", "csv:meas.nc", "--out", "meas.nc", "--networks", "2", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == ("spingpu train: error: out: meas.nc is an input of this run; not overwritten: "
                                       "choose another file name\n")


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["devices", "--samples", "many"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "spingpu devices: error: samples: expected a whole number, got 'many'\n"


def test_info_and_console_script():
    exe = shutil.which("spingpu")
    assert exe, "the console entry point is installed"
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith("spingpu ") and "numpy" in proc.stdout and "cpu" in proc.stdout
    from spingpu import kernel_cache

    lines = proc.stdout.splitlines()
    caches = lines.index("kernel caches (compiled code kept between runs):")
    assert lines[caches + 1] == f"  spingpu  {kernel_cache.cache_dir()}"  # tests/conftest.py's folder
    assert lines[caches + 2].startswith("  numba    /")  # beside the package, or a NUMBA_CACHE_DIR
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, SPINGPU_KERNEL_CACHE="0"))
    assert "  spingpu  off (SPINGPU_KERNEL_CACHE): each process compiles the training kernels again\n" in proc.stdout
    proc = subprocess.run([exe, "devices", "--points", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["info", "--arch", "sm_80"], "spingpu info: error: arch: is only used with --check-kernels\n"),
    (["info", "--jobs", "2"], "spingpu info: error: jobs: is only used with --check-kernels\n"),
    (["info", "--check-kernels", "--jobs", "0"], "spingpu info: error: jobs: 0 is out of range; allowed: value >= 1\n"),
])
def test_info_options_of_check_kernels_alone_are_refused(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message and captured.out == ""


def test_macrospin_samples_carry_their_own_thermal_field(tmp_path, capsys):
    """At T > 0 and without any spread, each junction's curve differs by its thermal field alone,
    drawn from its own stream (network k, layer 0, unit 0, member m) under --seed, as in training:
    at the table's knots the CSV's voltage is I times the junction's simulated mean resistance."""
    settings = ["--param", "temperature=300", "--param", "table_points=9", "--param", "settle_time=1e-9",
                "--param", "average_time=1e-9"]
    out = tmp_path / "iv.csv"
    assert main(["devices", "--model", "macrospin", *settings, "--samples", "3", "--seed", "5",
                 "--i-min", "-6e-4", "--i-max", "6e-4", "--points", "9", "--csv", str(out)]) == 0
    capsys.readouterr()
    rows = read_rows(out)
    model = get_model("macrospin", temperature=300, table_points=9, settle_time=1e-9, average_time=1e-9)
    current = model.settings.table_currents
    volts = {(int(r["sample"]), r["member"]): [] for r in rows}
    for r in rows:
        volts[(int(r["sample"]), r["member"])].append(float(r["voltage"]))
    members = sorted({m for s, m in volts if s >= 0})
    keys = np.array([[k, 0, 0, j] for k in range(3) for j in range(2)])
    resistance, _ = model.simulate(current, np.tile(model.nominal, (6, 1)), keys, seed=5)
    for (k, _, _, j), r in zip(keys, resistance):  # the CSV holds 10 significant digits
        np.testing.assert_allclose(volts[(k, members[j])], current * r, rtol=1e-9, atol=1e-15)
    sampled = np.array([volts[(k, m)] for k in range(3) for m in members])
    assert np.all(np.ptp(sampled, axis=0)[current != 0] > 1e-6)  # every junction differs from the others
    assert main(["devices", "--model", "macrospin", *settings, "--samples", "3", "--seed", "6",
                 "--i-min", "-6e-4", "--i-max", "6e-4", "--points", "9", "--csv", str(tmp_path / "b.csv")]) == 0
    other = read_rows(tmp_path / "b.csv")
    assert any(a["voltage"] != b["voltage"] for a, b in zip(rows, other) if int(a["sample"]) >= 0)


def test_warnings_of_spingpu_are_one_line_and_others_keep_their_form(tmp_path, capsys):
    """Sampled macrospin junctions too fast for dt: the curves are written, with one warning line."""
    import warnings

    from spingpu.cli.main import _one_line_warnings

    out = tmp_path / "iv.csv"
    before = warnings.showwarning
    rc = main(["devices", "--model", "macrospin", "--samples", "8", "--sigma-d2d", "0.3", "--points", "5",
               "--param", "ms=2.5e6", "--param", "table_points=5", "--param", "settle_time=0.1e-9",
               "--param", "average_time=0.05e-9", "--csv", str(out)])
    assert rc == 0 and len(read_rows(out)) == 5 + 8 * 2 * 5
    assert warnings.showwarning is before  # main() puts the process's warning display back
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("spingpu devices: warning: param dt: ")
    # settings and parameters printed with their units; dimensionless ones bare
    assert "h_ext=(0.0, 0.0, 0.0) A/m, " in captured.out and ", dt=2e-12 s, " in captured.out
    assert ", alpha=0.02, " in captured.out and ", table_points=5\n" in captured.out
    assert "param dt: 8 of 16 junctions turn by more than 1 rad per step of 2e-12 s" in err[0]  # 8 pairs

    seen = []
    show = _one_line_warnings("x", lambda *a: seen.append(a[:2]))
    show(DeprecationWarning("old"), DeprecationWarning, "f.py", 3)
    assert [(str(m), c) for m, c in seen] == [("old", DeprecationWarning)]


# --- memory: refused up front, the estimate against what the command allocates -----------------

def test_more_samples_x_points_than_memory_holds_is_refused_up_front(tmp_path, capsys, monkeypatch):
    from spingpu.cli import devices
    from spingpu.training import trainer

    monkeypatch.setattr(trainer, "available_memory", lambda: 16 * 2**30)  # the same on every machine
    monkeypatch.setattr("spingpu.devices.sample_layer", lambda *a, **k: pytest.fail("computed before refusing"))
    out = tmp_path / "iv.csv"
    rc = main(["devices", "--samples", "100000", "--points", "1000000", "--csv", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and list(tmp_path.iterdir()) == []
    # stt_compact, counted by hand: per sample and current, evaluating the pair's curves takes
    # currents (2 x 8 B), parameter rows (2 x 6 x 8 B), V and dV/dI (2 x 2 x 8 B) = 144 B (writing
    # the CSV takes less: the kept curves 32 B and the columns 72 B); per sample 2 x 3 x 6 x 8 B of
    # parameter rows = 288 B; per current the grid and the nominal curve, 24 B. Needed:
    # 1e5 x 1e6 x 144 + 1e5 x 288 + 1e6 x 24 B = 13411.1 GiB. Largest that fit:
    # (16 GiB - 1e5 x 288) // (24 + 1e5 x 144) = 1191 points, (16 GiB - 1e6 x 24) // (288 + 1e6 x 144)
    # = 119 samples.
    assert captured.err == ("spingpu devices: error: samples/points: 100000 samples x 1000000 points need at least "
                            "13411.1 GiB of memory, and 16.0 GiB is available; allowed here: at most 1191 points "
                            "with 100000 samples or at most 119 samples with 1000000 points\n")
    model = get_model("stt_compact")
    devices.check_memory(model, 100000, 1191, csv=True)  # the largest values given fit
    devices.check_memory(model, 119, 1000000, csv=True)
    for samples, points in ((100000, 1192), (120, 1000000)):
        with pytest.raises(ConfigError, match="^samples/points: "):
            devices.check_memory(model, samples, points, csv=True)
    monkeypatch.setattr(trainer, "available_memory", lambda: 10_000)
    with pytest.raises(ConfigError) as err:
        devices.check_memory(model, 1, 1000)
    # 144 x 1000 + 288 + 24 x 1000 = 168288 B; (10000 - 288) // (24 + 144) = 57 points;
    # (10000 - 24000) < 0: no samples at 1000 points
    assert str(err.value) == ("samples/points: 1 sample x 1000 points need at least 168288 bytes of memory, and "
                              "10000 bytes is available; allowed here: at most 57 points with 1 sample")
    monkeypatch.setattr(trainer, "available_memory", lambda: 500)  # 1 x 2 x 144 + 288 + 2 x 24 = 624 B
    with pytest.raises(ConfigError, match=r"allowed here: nothing \(1 sample at 2 points needs 624 bytes\)$"):
        devices.check_memory(model, 1, 1000)


@pytest.mark.parametrize("model, samples, points, outputs", [
    ({"name": "stt_compact"}, 100, 10000, ()),
    ({"name": "tabulated", "iv_csv": "m.csv"}, 100, 10000, ()),
    ({"name": "tabulated", "iv_csv": "m.csv"}, 40, 500, ("csv",)),
    ({"name": "stt_compact"}, 40, 4000, ("plot",)),
    ({"name": "macrospin", "table_points": 256, "settle_time": 0.1e-9, "average_time": 0.05e-9}, 200, 2, ()),
], ids=["stt", "tabulated", "csv", "plot", "macrospin-tables"])
def test_the_memory_estimate_is_what_the_command_allocates(tmp_path, capsys, model, samples, points, outputs):
    """tracemalloc (which sees NumPy's and matplotlib's arrays) measures the command's peak: the
    estimate is at most that (the message says "at least") and not far below it."""
    import tracemalloc

    from spingpu.cli import devices

    i = np.linspace(-5e-4, 5e-4, 21)
    np.savetxt(tmp_path / "m.csv", np.column_stack([i, 800 * i]), delimiter=",")
    model = dict(model)
    name = model.pop("name")
    if "iv_csv" in model:
        model["iv_csv"] = tmp_path / model["iv_csv"]
    argv = ["devices", "--model", name, "--samples", str(samples), "--points", str(points)]
    argv += ["--iv-csv", str(model["iv_csv"])] if "iv_csv" in model else []
    argv += [a for k, v in model.items() if k != "iv_csv" for a in ("--param", f"{k}={v}")]
    suffix = {"csv": ".csv", "plot": ".png"}

    def outs(stem):
        return [a for o in outputs for a in (f"--{o}", str(tmp_path / (stem + suffix[o])))]

    assert main([*argv, "--samples", "2", *outs("warm")]) == 0  # compiled and imported before measuring
    tracemalloc.start()
    try:
        assert main([*argv, *outs("out")]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    capsys.readouterr()
    estimate = devices.memory_needed(get_model(name, **model), samples, points,
                                     csv="csv" in outputs, plot="plot" in outputs)[0]
    assert 0.9 * peak <= estimate <= peak, (estimate, peak)


# --- currents beyond a table: one warning line -------------------------------------------------

TINY_MACROSPIN = ["--model", "macrospin", "--param", "table_points=5", "--param", "settle_time=0.1e-9",
                  "--param", "average_time=0.05e-9", "--samples", "1", "--points", "5"]
LINEAR = ("there V(I) is the end tangent continued linearly (dV/dI constant)")


@pytest.mark.parametrize("currents, warning", [
    (["--i-min", "-1e-3", "--i-max", "1e-3"],
     "i-min/i-max: currents from -0.001 A to 0.001 A go beyond the macrospin table's range, -0.0006 A to 0.0006 A "
     f"(4 of 10 points of the sampled junctions' curves lie beyond their own); {LINEAR}; "
     "widen it with --param table_i_min=... --param table_i_max=..."),
    (["--i-min", "-4e-4", "--i-max", "7e-4"],
     "i-max: currents up to 0.0007 A go beyond the macrospin table's range, -0.0006 A to 0.0006 A "
     f"(2 of 10 points of the sampled junctions' curves lie beyond their own); {LINEAR}; "
     "widen it with --param table_i_min=... --param table_i_max=..."),
    (["--i-min", "-4e-4", "--i-max", "7e-4", "--param", "table_i_max=8e-4"], None),
    (["--i-min", "-6e-4", "--i-max", "6e-4"], None),  # the table's own ends
])
def test_macrospin_currents_beyond_its_table_are_warned_of(tmp_path, capsys, currents, warning):
    out = tmp_path / "iv.csv"
    assert main(["devices", *TINY_MACROSPIN, *currents, "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("" if warning is None else f"spingpu devices: warning: {warning}\n")
    assert len(read_rows(out)) == 5 + 2 * 5  # the curves are still written
    if warning is not None:  # and beyond the table, dV/dI is indeed the end knot's, constant
        rows = [r for r in read_rows(out) if r["sample"] == "-1"]
        i = np.array([float(r["current"]) for r in rows])
        d = np.array([float(r["dvdi"]) for r in rows])
        beyond = i > 6e-4
        assert beyond.any() and np.all(d[beyond] == d[beyond][0])


def test_tabulated_currents_beyond_the_measured_curve_are_warned_of(tmp_path, capsys):
    table = tmp_path / "measured.csv"
    i = np.linspace(-5e-4, 5e-4, 11)
    np.savetxt(table, np.column_stack([i, 800 * i + 0.1 * np.tanh(i / 2e-4)]), delimiter=",")
    base = ["devices", "--model", "tabulated", "--iv-csv", str(table), "--samples", "2", "--points", "9"]
    assert main([*base, "--i-min", "-1e-3"]) == 0  # --i-max stays 4e-4, inside
    assert capsys.readouterr().err == (
        "spingpu devices: warning: i-min: currents down to -0.001 A go beyond the measured curve's range, "
        f"-0.0005 A to 0.0005 A (12 of 36 points of the sampled junctions' curves lie beyond their own); {LINEAR}\n")
    assert main([*base, "--i-min", "-1e-3", "--param", "i_scale=2"]) == 0  # the nominal curve reaches twice as far
    assert capsys.readouterr().err == ""
    assert main([*base, "--i-min", "-5e-4", "--i-max", "5e-4"]) == 0
    assert capsys.readouterr().err == ""


def test_sampled_tables_narrower_than_the_nominal_one_are_counted(tmp_path, capsys):
    """A tabulated junction's table reaches i_scale times the measured currents: with a spread of
    i_scale, currents within the nominal table lie beyond some sampled junctions' tables. The count
    is that of an independent reference, |I| > 5e-4 A x the junction's drawn i_scale."""
    table = tmp_path / "measured.csv"
    i = np.linspace(-5e-4, 5e-4, 11)
    np.savetxt(table, np.column_stack([i, 800 * i + 0.1 * np.tanh(i / 2e-4)]), delimiter=",")
    model = get_model("tabulated", iv_csv=str(table))
    grid = np.linspace(-5e-4, 5e-4, 41)
    rng = np.random.default_rng()
    expected = 0
    while not 0 < expected < 6 * 2 * 41:  # a seed whose 12 junctions are not all wider (1 in ~4,000)
        seed = int(rng.integers(2**32))
        params = sample_layer(model, Variability(sigma_d2d=0.05), seed, np.arange(6), 0, 1)[:, 0]  # (6, 2, P)
        i_scale = params[..., model.parameter_names.index("i_scale")]
        expected = int(np.sum(np.abs(grid / i_scale[..., None]) > 5e-4))  # as the kernel compares
    assert main(["devices", "--model", "tabulated", "--iv-csv", str(table), "--samples", "6", "--points", "41",
                 "--i-min", "-5e-4", "--i-max", "5e-4", "--sigma-d2d", "0.05", "--seed", str(seed)]) == 0
    assert capsys.readouterr().err == (
        "spingpu devices: warning: i-min/i-max: currents from -0.0005 A to 0.0005 A lie within the measured curve's "
        f"range, -0.0005 A to 0.0005 A, but {expected} of 492 points of the sampled junctions' curves lie beyond "
        f"their own tables (each reaches i_scale times its currents); {LINEAR}\n")


def test_closed_form_models_never_warn_of_extrapolation(capsys):
    assert main(["devices", "--model", "stt_compact", "--samples", "2", "--points", "5", "--i-min", "-0.01",
                 "--i-max", "0.01"]) == 0
    assert capsys.readouterr().err == ""


# --- existing outputs: kept unless --overwrite ---------------------------------------------------

def test_existing_outputs_are_refused_unless_overwrite(tmp_path, capsys):
    out_csv, out_png = tmp_path / "iv.csv", tmp_path / "iv.png"
    out_csv.write_bytes(b"precious,csv\n\x00")
    argv = ["devices", "--samples", "2", "--points", "5"]
    assert main([*argv, "--csv", str(out_csv), "--plot", str(out_png)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu devices: error: csv: {out_csv} exists; not overwritten: pass --overwrite to "
                            "replace it, or choose another file name\n")
    assert captured.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["iv.csv"]
    assert out_csv.read_bytes() == b"precious,csv\n\x00"

    out_png.write_bytes(b"precious png")
    assert main([*argv, "--csv", str(tmp_path / "new.csv"), "--plot", str(out_png)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu devices: error: plot: {out_png} exists; not overwritten: pass --overwrite to "
                            "replace it, or choose another file name\n")
    assert captured.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["iv.csv", "iv.png"]
    assert out_png.read_bytes() == b"precious png" and out_csv.read_bytes() == b"precious,csv\n\x00"

    assert main([*argv, "--csv", str(out_csv), "--plot", str(out_png), "--overwrite"]) == 0
    assert len(read_rows(out_csv)) == 5 + 2 * 2 * 5
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote csv: {out_csv}" in capsys.readouterr().out


def test_overwrite_without_an_output_is_refused(capsys):
    assert main(["devices", "--overwrite"]) == 2
    assert capsys.readouterr().err == ("spingpu devices: error: overwrite: has no effect without --csv or --plot; "
                                       "give one, or remove --overwrite\n")


def test_an_input_is_not_overwritten_even_with_overwrite(tmp_path, capsys):
    measured = tmp_path / "meas.csv"
    i = np.linspace(-5e-4, 5e-4, 11)
    np.savetxt(measured, np.column_stack([i, 800 * i]), delimiter=",")
    before = measured.read_bytes()
    assert main(["devices", "--model", "tabulated", "--iv-csv", str(measured), "--csv", str(measured),
                 "--overwrite"]) == 2
    assert capsys.readouterr().err == (f"spingpu devices: error: csv: {measured} is an input of this run; not "
                                       "overwritten: choose another file name\n")
    assert measured.read_bytes() == before


# --- spingpu info --check-kernels: an architecture numba-cuda cannot compile for ------------------

def _nvrtc_archs():
    """What NVRTC (cuda.bindings, as numba-cuda asks it) compiles for, as sm_XY names."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    result, archs = nvrtc.nvrtcGetSupportedArchs()
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        pytest.skip("NVRTC is not usable here")
    _, major, minor = nvrtc.nvrtcVersion()
    return f"{major}.{minor}", [f"sm_{a}" for a in sorted(archs)]


def test_check_kernels_refuses_an_arch_below_numba_cudas_at_once(compiler_python):
    """In a process of its own with the real numba-cuda: sm_10 is refused in about a second (it
    compiled for 39 s and failed with numba-cuda's CCSupportError), before anything is printed."""
    version, names = _nvrtc_archs()
    assert names[0] == "sm_75" or int(names[0][3:]) > 10
    proc = compiler_python("-m", "spingpu.cli.main", "info", "--check-kernels", "--arch", "sm_10", timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"spingpu info: error: arch: sm_10 is not an architecture numba-cuda compiles for (NVRTC "
                           f"{version}); allowed: {names[0]} to {names[-1]}, namely {', '.join(names)}\n")


@pytest.mark.parametrize("argv, gpus, arch", [
    (["--arch", "sm_70"], (), "sm_70"),  # below the lowest
    (["--arch", "sm_85"], (), "sm_85"),  # between two: numba-cuda would compile sm_80, nvJitLink not assemble it
    (["--arch", "sm_100"], (), "sm_100"),  # above the highest
])
def test_check_kernels_allows_what_nvrtc_lists(monkeypatch, capsys, argv, gpus, arch):
    from spingpu import backends, cuda_kernels

    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "missing_cuda_packages", lambda need_cupy=True: [])
    monkeypatch.setattr(backends, "gpu_devices", lambda: gpus)
    monkeypatch.setattr(cuda_kernels, "nvrtc_archs", lambda: ((12, 4), ((7, 5), (8, 0), (8, 6), (9, 0))))
    monkeypatch.setattr(cuda_kernels, "check_kernels", lambda target, jobs: pytest.fail("compiled"))
    assert main(["info", "--check-kernels", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"spingpu info: error: arch: {arch} is not an architecture numba-cuda compiles for "
                            "(NVRTC 12.4); allowed: sm_75 to sm_90, namely sm_75, sm_80, sm_86, sm_90\n")
    with pytest.raises(ConfigError, match=f"^arch: {arch} is not an architecture"):  # the API refuses it too
        cuda_kernels.check_arch(arch)
    seen = []
    monkeypatch.setattr(cuda_kernels, "check_kernels", lambda target, jobs: seen.append(target) or 0)
    assert main(["info", "--check-kernels", "--arch", "sm_86"]) == 0
    monkeypatch.setattr(cuda_kernels, "nvrtc_archs", lambda: None)  # NVRTC cannot be asked: compiling will say
    assert main(["info", "--check-kernels", "--arch", arch]) == 0
    assert seen == ["sm_86", arch]


def test_check_kernels_refuses_a_visible_gpu_that_nvrtc_does_not_list(monkeypatch, capsys):
    from spingpu import backends, cuda_kernels

    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "missing_cuda_packages", lambda need_cupy=True: [])
    monkeypatch.setattr(backends, "gpu_devices", lambda: (("Tesla V100", (7, 0), 16 << 30),))
    monkeypatch.setattr(cuda_kernels, "nvrtc_archs", lambda: ((13, 0), ((7, 5), (8, 0), (9, 0))))
    monkeypatch.setattr(cuda_kernels, "check_kernels", lambda target, jobs: pytest.fail("compiled"))
    assert main(["info", "--check-kernels"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("spingpu info: error: arch: the visible GPU's sm_70 is not an architecture numba-cuda "
                            "compiles for (NVRTC 13.0); allowed: sm_75 to sm_90, namely sm_75, sm_80, sm_90; give "
                            "--arch to compile for another\n")


def test_the_current_grid_is_written_as_its_decimal_values(tmp_path):
    """linspace alone gives -5.4e-20 for the 0 of a symmetric grid and -0.00039600000000000003 for
    -396 uA: the CSV holds 0 and -0.000396 (12 significant digits of the larger end)."""
    from spingpu.cli.devices import current_grid

    grid = current_grid(-6e-4, 6e-4, 51)
    assert grid[25] == 0.0 and not np.signbit(grid[25]) and str(grid[1]) == "-0.000576"
    np.testing.assert_allclose(grid, np.linspace(-6e-4, 6e-4, 51), rtol=0, atol=1e-15)
    tiny = current_grid(-3e-12, 3e-12, 7)  # picoamperes keep their digits
    np.testing.assert_allclose(tiny, np.linspace(-3e-12, 3e-12, 7), rtol=1e-12, atol=0)
    out_csv = tmp_path / "iv.csv"
    assert main(["devices", "--samples", "1", "--points", "51", "--i-min", "-6e-4", "--i-max", "6e-4",
                 "--csv", str(out_csv)]) == 0
    currents = sorted({r["current"] for r in read_rows(out_csv)}, key=float)
    assert "0.0" in currents and not any("e-2" in c for c in currents), currents[20:30]
    assert not any("0000000" in c or "9999999" in c for c in currents), currents  # no rounding noise


def test_info_says_when_a_kernel_cache_cannot_be_written(monkeypatch, tmp_path):
    """spingpu info's cache lines where spingpu's folder is not writable and where Numba finds no
    folder it can write (root writes anywhere here, so both are simulated)."""
    from spingpu import kernels
    from spingpu.cli import info

    monkeypatch.setenv("SPINGPU_CACHE_DIR", str(tmp_path / "not" / "made"))
    monkeypatch.setattr(info.os, "access", lambda path, mode: False)
    assert info._spingpu_cache() == (f"{tmp_path / 'not' / 'made'} (not writable: each process compiles the "
                                     "training kernels again)")
    monkeypatch.setattr(kernels, "numba_cache_folder", lambda: None)
    assert info._numba_cache() == "none writable: each process compiles the kernels again"
    monkeypatch.undo()
    (tmp_path / "file").write_text("")  # a file where the folder should be
    monkeypatch.setenv("SPINGPU_CACHE_DIR", str(tmp_path / "file"))
    assert info._spingpu_cache() == f"{tmp_path / 'file'} (not a folder: each process compiles the training kernels again)"
    for off in ("0", "off", "False", " no "):
        monkeypatch.setenv("SPINGPU_KERNEL_CACHE", off)
        assert info._spingpu_cache() == "off (SPINGPU_KERNEL_CACHE): each process compiles the training kernels again"


def test_a_model_file_registers_the_model_the_commands_name(tmp_path, capsys, models_restored):
    """--model-file FILE.py: its spingpu.register_model calls make the model --model (devices) or
    --device-model (train) names; the curves are the file's function; a file that is missing or
    fails is one line naming it (and its line), exit 2, nothing written."""
    import uuid

    name = f"soft_{uuid.uuid4().hex[:8]}"  # this process may keep the models of other tests
    models = tmp_path / "models.py"
    models.write_text("import math\nimport spingpu\n\n"
                      f"spingpu.register_model({name!r},\n"
                      "    voltage=lambda current, r_s, i_s: r_s * i_s * math.tanh(current / i_s),\n"
                      "    dvdi=lambda current, r_s, i_s: r_s / math.cosh(current / i_s) ** 2,\n"
                      "    parameters=[spingpu.Parameter('r_s', 2000.0, 'ohm', 'resistance', low=0.0, low_open=True),\n"
                      "                spingpu.Parameter('i_s', 2e-4, 'A', 'saturation current', low=0.0, "
                      "low_open=True)])\n")
    out = tmp_path / "iv.csv"
    assert main(["devices", "--model-file", str(models), "--model", name, "--param", "r_s=1500", "--samples", "2",
                 "--points", "7", "--csv", str(out)]) == 0
    rows = [r for r in read_rows(out) if r["sample"] == "nominal"]
    current = np.array([float(r["current"]) for r in rows])
    np.testing.assert_allclose([float(r["voltage"]) for r in rows], 1500.0 * 2e-4 * np.tanh(current / 2e-4),
                               rtol=1e-14)
    np.testing.assert_allclose([float(r["dvdi"]) for r in rows], 1500.0 / np.cosh(current / 2e-4) ** 2, rtol=1e-14)
    assert main(["train", "--model-file", str(models), "--device-model", name, "--networks", "2", "--epochs", "2",
                 "--hidden", "3", "--backend", "numpy"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.py"
    bad.write_text("import spingpu\n\nraise RuntimeError('no such junction')\n")
    for path, message in ((tmp_path / "missing.py", f"'{tmp_path / 'missing.py'}' is not a file; expected a Python "
                                                    "file that calls spingpu.register_model"),
                          (bad, f"{bad}: (line 3): RuntimeError: no such junction".replace(": (", " (", 1))):
        assert main(["devices", "--model-file", str(path), "--model", name, "--csv", str(tmp_path / "x.csv")]) == 2
        assert capsys.readouterr().err == f"spingpu devices: error: model-file: {message}\n"
    assert not (tmp_path / "x.csv").exists()
    # a file whose models the command does not name would do nothing: refused
    empty = tmp_path / "empty.py"
    empty.write_text("import spingpu\n")
    for command, option, path, made in (("devices", "model", models, f"registers {name!r}"),
                                        ("train", "device-model", models, f"registers {name!r}"),
                                        ("train", "device-model", empty, "registers no model")):
        assert main([command, "--model-file", str(path), "--csv" if command == "devices" else "--out",
                     str(tmp_path / ("x.csv" if command == "devices" else "x.nc"))]) == 2
        assert capsys.readouterr().err == (f"spingpu {command}: error: model-file: {path} {made}, and --{option} is "
                                           f"'stt_compact': name one of its models with --{option}, or leave "
                                           "--model-file out\n")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.nc").exists()


@pytest.mark.parametrize("points", [3, 7])
def test_the_printed_spread_is_at_currents_of_the_grid_written(tmp_path, capsys, points):
    """The table printed shows the grid's own currents (all of a short grid, else 5 with its ends),
    its numbers those of the CSV: the nominal dV/dI and the quantiles over every junction."""
    out = tmp_path / "iv.csv"
    assert main(["devices", "--points", str(points), "--i-min", "-5e-4", "--i-max", "3e-4", "--samples", "6",
                 "--sigma-d2d", "0.1", "--sigma-pair", "0.02", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].endswith("uA" if points <= 5 else "uA; the table below shows 5 of them")
    head = next(k for k, line in enumerate(printed) if line.startswith("current"))
    table = [line.split() for line in printed[head + 1:]
             if line.strip() and line.split()[0].lstrip("-").replace(".", "").isdigit()]
    rows = read_rows(out)
    grid = sorted({float(r["current"]) for r in rows})
    assert len(grid) == points and len(table) == min(points, 5)
    assert [float(t[0]) for t in table][::len(table) - 1] == [-500.0, 300.0]  # the ends
    for t in table:
        i = min(grid, key=lambda g: abs(g * 1e6 - float(t[0])))
        assert abs(i * 1e6 - float(t[0])) < 0.05
        at = [r for r in rows if float(r["current"]) == i]
        nominal = float(next(r["dvdi"] for r in at if r["sample"] == "-1"))
        sampled = np.array([float(r["dvdi"]) for r in at if r["sample"] != "-1"])
        assert sampled.size == 12 and float(t[1]) == pytest.approx(nominal, abs=0.051)
        assert float(t[4]) == pytest.approx(np.quantile(sampled, 0.5), abs=0.051)


def test_the_model_options_help_names_every_built_in_model():
    from spingpu.cli.options import MODEL_HELP
    from spingpu.devices import models

    built_in = set(models._BUILT_IN) | set(models.TABLE_MODELS) | set(models.MODULE_MODELS)
    assert len(built_in) == 4 and all(re.search(rf"\b{name}\b", MODEL_HELP) for name in built_in), MODEL_HELP


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".PNG", b"\x89PNG")])
def test_the_plot_is_written_in_the_format_its_name_says(tmp_path, suffix, magic):
    """A paper's figure as PDF or SVG: the file is of the format its suffix names."""
    out = tmp_path / f"iv{suffix}"
    assert main(["devices", "--samples", "2", "--points", "5", "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(magic) and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
