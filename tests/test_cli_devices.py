"""``spingpu devices`` and ``spingpu info`` end to end: outputs, numbers, and bad input."""

import csv
import shutil
import subprocess

import numpy as np
import pytest

from spingpu import Variability, get_model, sample_layer
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
    (["--model", "nope"], "model: unknown device model 'nope'; allowed: macrospin, stt_compact, tabulated"),
    (["--param", "r_p=-1"], "param r_p: -1.0 is out of range; allowed: 1.0 <= value <= 10000000.0"),
    (["--param", "r_p=inf"], "param r_p: expected a finite number, got inf; allowed: 1.0 <= value <= 10000000.0"),
    (["--param", "v_h=1e-300"], "param v_h: 1e-300 is out of range; allowed: 0.001 <= value <= 1000.0 or inf"),
    (["--param", "v_h=-inf"], "param v_h: expected a finite number, got -inf"),
    (["--model", "macrospin", "--param", "k_u=1e300"],
     "param k_u: 1e+300 is out of range; allowed: 0.0 < value <= 100000000.0"),
    (["--model", "macrospin", "--param", "ms=inf"], "param ms: expected a finite number, got inf"),
    (["--model", "macrospin", "--param", "alpha=inf"], "param alpha: expected a finite number, got inf"),
    (["--i-max", "inf"], "i-max: expected a finite number, got inf"),
    (["--i-min", "-inf"], "i-min: expected a finite number, got -inf"),
    (["--i-max", "1e300"], "i-max: 1e+300 is out of range; allowed: -1.0 <= value <= 1.0"),
    (["--csv", ""], "csv: expected a file name, got an empty one"),
    (["--plot", ""], "plot: expected a file name, got an empty one"),
    (["--param", "r_q=5"], "param: unknown parameter 'r_q' for model 'stt_compact'"),
    (["--param", "r_p"], "param: 'r_p': expected NAME=VALUE"),
    (["--param", "tmr0=abc"], "param tmr0: 'abc' is not a number"),
    (["--points", "1"], "points: 1 is out of range; allowed: 2 <= value <= 1000000"),
    (["--samples", "0"], "samples: 0 is out of range; allowed: 1 <= value <= 100000"),
    (["--i-min", "1e-4", "--i-max", "1e-4"], "i-min: 0.0001 must be below i-max (0.0001)"),
    (["--sigma-d2d", "-0.1"], "sigma-d2d: -0.1 is out of range; allowed: 0.0 <= value <= 2.0"),
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
    assert rc == 2
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
    proc = subprocess.run([exe, "devices", "--points", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["info", "--arch", "sm_80"], "spingpu info: error: arch: is only used with --check-kernels\n"),
    (["info", "--jobs", "2"], "spingpu info: error: jobs: is only used with --check-kernels\n"),
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
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("spingpu devices: warning: param dt: ")
    assert "junctions turn by more than 1 rad per step of 2e-12 s" in err[0]

    seen = []
    show = _one_line_warnings("x", lambda *a: seen.append(a[:2]))
    show(DeprecationWarning("old"), DeprecationWarning, "f.py", 3)
    assert [(str(m), c) for m, c in seen] == [("old", DeprecationWarning)]
