"""``spingpu train`` end to end: summary, results file, options, and bad input."""

import errno
import json
import os
import re

import numpy as np
import pytest
import xarray as xr
from pathlib import Path

from spingpu.cli.main import main
from spingpu.training.config import GRAD_MODES

SMALL = ["train", "--dataset", "iris", "--hidden", "4", "--networks", "6", "--epochs", "3"]
TINY = ["train", "--dataset", "iris", "--networks", "2", "--epochs", "1", "--backend", "numpy"]

SUMMARY = re.compile(
    r"test accuracy: median (?P<q50>[\d.]+) % \(95 % CI (?:(?P<mlo>[\d.]+)-(?P<mhi>[\d.]+) %|n/a under 6 networks that did not diverge)\), "
    r"IQR (?P<q25>[\d.]+)-(?P<q75>[\d.]+) %, "
    r"5-95 % (?P<q05>[\d.]+)-(?P<q95>[\d.]+) %\n"
    r"yield \(test accuracy >= 90 %\): (?P<yield>[\d.]+) % of (?P<n>\d+) networks "
    r"\(95 % CI (?P<ylo>[\d.]+)-(?P<yhi>[\d.]+) %\); diverged: (?P<div>\d+)\n"
    r"time: (?P<sec>[\d.]+) s \((?P<setup>[\d.]+) s set-up and compilation\); "
    r"(?P<rate>[\d.e+]+) network-epochs/s in the training loop")

VARIABLES = {"train_loss": ("network", "epoch"), "train_acc": ("network", "epoch"), "val_acc": ("network", "epoch"),
             "grad_cosine": ("network", "epoch"), "deriv_rel_err": ("network", "epoch"),
             "test_acc": ("network",), "diverged": ("network",)}


def run_ok(argv, out):
    rc = main([*argv, "--out", str(out)])
    assert rc == 0
    assert out.is_file()
    return xr.load_dataset(out)


# --- a successful run ------------------------------------------------------------------------------


def test_small_numpy_run_summary_and_file(tmp_path, capsys):
    out = tmp_path / "r.nc"
    rc = main([*SMALL, "--backend", "numpy", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "6 networks 4-4-3 on iris (90 train / 30 val / 30 test), grad fd_forward, backend numpy" in printed
    assert f"wrote {out}" in printed
    match = SUMMARY.search(printed)
    assert match, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]  # no temporary left behind
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF4: no netCDF3 limit of 2 GiB per variable

    with xr.open_dataset(out) as ds:
        assert dict(ds.sizes) == {"network": 6, "epoch": 3}
        for name, dims in VARIABLES.items():
            assert ds[name].dims == dims
            assert ds[name].attrs["units"] == "1"
            assert isinstance(ds[name].attrs["long_name"], str) and ds[name].attrs["long_name"]
        assert ds.attrs["backend"] == "numpy"
        config = json.loads(ds.attrs["config"])
        assert config["hidden"] == [4] and config["epochs"] == 3 and config["grad_mode"] == "fd_forward"
        rate = float(ds.attrs["network_epochs_per_second"])
        acc = ds.test_acc.values
        diverged = ds.diverged.values.astype(bool)
        train_acc = ds.train_acc.values

    assert np.isfinite(rate) and rate > 0
    assert not diverged.any() and np.isfinite(acc).all()
    # Accuracies are counts over the 30 test / 90 training rows.
    np.testing.assert_allclose(acc * 30, np.round(acc * 30), atol=1e-9)
    np.testing.assert_allclose(train_acc * 90, np.round(train_acc * 90), atol=1e-9)
    assert ((acc >= 0) & (acc <= 1)).all()

    # The printed summary, recomputed independently from the file.
    q05, q25, q50, q75, q95 = 100 * np.percentile(acc, [5, 25, 50, 75, 95])
    assert float(match["q50"]) == pytest.approx(100 * np.median(acc), abs=0.006)
    for key, value in (("q05", q05), ("q25", q25), ("q50", q50), ("q75", q75), ("q95", q95)):
        assert float(match[key]) == pytest.approx(value, abs=0.006), key
    assert float(match["yield"]) == pytest.approx(100 * np.mean(acc >= 0.9), abs=0.06)
    from spingpu.stats import yield_interval

    lo, hi = yield_interval(int(np.sum(acc >= 0.9)), acc.size)
    assert (float(match["ylo"]), float(match["yhi"])) == pytest.approx((100 * lo, 100 * hi), abs=0.06)
    s = np.sort(acc)  # 6 networks: the median's 95 % interval is the whole range (1 - 2 / 64 >= 0.95)
    assert (float(match["mlo"]), float(match["mhi"])) == pytest.approx((100 * s[0], 100 * s[-1]), abs=0.006)
    assert int(match["n"]) == 6 and int(match["div"]) == diverged.sum() == 0
    assert float(match["sec"]) >= float(match["setup"]) >= 0
    assert float(match["rate"]) == pytest.approx(rate, rel=1e-3)


def test_cpu_backend_matches_numpy_with_oracle_gradients(tmp_path, capsys):
    argv = [*SMALL, "--grad", "oracle"]
    ref = run_ok([*argv, "--backend", "numpy"], tmp_path / "numpy.nc")
    fused = run_ok([*argv, "--backend", "cpu"], tmp_path / "cpu.nc")
    printed = capsys.readouterr().out
    assert "backend cpu" in printed and SUMMARY.search(printed)
    assert ref.attrs["backend"] == "numpy" and fused.attrs["backend"] == "cpu"
    assert dict(fused.sizes) == {"network": 6, "epoch": 3}
    np.testing.assert_allclose(fused.test_acc, ref.test_acc, atol=1e-6)
    np.testing.assert_allclose(fused.train_acc, ref.train_acc, atol=1e-6)
    np.testing.assert_allclose(fused.val_acc, ref.val_acc, atol=1e-6)
    np.testing.assert_allclose(fused.train_loss, ref.train_loss, rtol=1e-4)  # numpy: float32 weights
    np.testing.assert_array_equal(fused.diverged, ref.diverged)


# --- options accepted ------------------------------------------------------------------------------


def test_repeated_hidden_makes_a_multilayer_network(tmp_path, capsys):
    ds = run_ok([*TINY, "--hidden", "5", "--hidden", "3"], tmp_path / "r.nc")
    assert "2 networks 4-5-3-3 on iris" in capsys.readouterr().out
    assert json.loads(ds.attrs["config"])["hidden"] == [5, 3]
    assert np.isfinite(ds.test_acc).all()


def test_neuron_noise_converter_and_dtype_options_reach_the_training(tmp_path):
    """Every physical option of the command line ends in the run: the file equals spingpu.train
    given the same configuration directly, and differs from a run without the options."""
    from spingpu import PairNeuron, Readout, TrainConfig, Variability, get_model, load_dataset, train

    options = ["--readout", "bridge", "--r-ref", "700", "--i-bias", "1e-5", "--i-gain", "1.5e-4", "--v-scale", "4",
               "--delta-i", "1e-5", "--noise-model", "johnson_shot", "--noise-temperature", "350",
               "--noise-bandwidth", "2e8", "--dac-bits", "6", "--dac-range", "-5e-4", "5e-4", "--adc-bits", "10",
               "--adc-range", "-2", "2", "--optimizer", "momentum", "--momentum", "0.8", "--dtype", "float64",
               "--sigma-d2d", "0.05", "--seed", "3"]
    ds = run_ok([*TINY, "--hidden", "4", "--epochs", "2", *options], tmp_path / "r.nc")
    config = TrainConfig(hidden=(4,), epochs=2, optimizer="momentum", momentum=0.8, dtype="float64", seed=3,
                         neuron=PairNeuron(i_bias=1e-5, i_gain=1.5e-4, readout="bridge", r_ref=700.0, v_scale=4.0,
                                           delta_i=1e-5),
                         variability=Variability(sigma_d2d=0.05),
                         readout=Readout(noise_model="johnson_shot", temperature=350.0, bandwidth=2e8, dac_bits=6,
                                         dac_range=(-5e-4, 5e-4), adc_bits=10, adc_range=(-2.0, 2.0)))
    ref = train(load_dataset("iris", seed=3), config, n_networks=2, model=get_model("stt_compact"), backend="numpy")
    assert json.loads(ds.attrs["config"]) == json.loads(ref.attrs["config"])
    for name in VARIABLES:
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)
    plain = run_ok([*TINY, "--hidden", "4", "--epochs", "2", "--sigma-d2d", "0.05", "--seed", "3"],
                   tmp_path / "plain.nc")
    assert not np.array_equal(plain.train_loss.values, ds.train_loss.values)


@pytest.mark.parametrize("schedule", ["exp:0.9", "step:2:0.5", "cosine"])
def test_lr_schedules_accepted(tmp_path, schedule):
    ds = run_ok([*TINY, "--hidden", "4", "--epochs", "3", "--lr-schedule", schedule], tmp_path / "r.nc")
    assert json.loads(ds.attrs["config"])["lr_schedule"] == schedule
    assert dict(ds.sizes) == {"network": 2, "epoch": 3}


def test_param_sets_the_nominal_device(tmp_path):
    ds = run_ok([*TINY, "--hidden", "4", "--param", "r_p=1200"], tmp_path / "r.nc")
    assert json.loads(ds.attrs["device_parameters"])["r_p"] == 1200.0
    assert ds.attrs["device_model"] == "stt_compact"
    assert json.loads(ds.attrs["device_parameter_units"]) == {"r_p": "ohm", "tmr0": "1", "v_h": "V", "theta0": "rad",
                                                              "dtheta": "rad", "i_c": "A"}  # README's table
    assert json.loads(ds.attrs["device_settings_units"]) == {}


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_every_grad_mode_accepted(tmp_path, capsys, mode):
    ds = run_ok([*TINY, "--hidden", "4", "--grad", mode], tmp_path / "r.nc")
    assert f"grad {mode}, backend numpy" in capsys.readouterr().out
    assert json.loads(ds.attrs["config"])["grad_mode"] == mode
    err, cos = ds.deriv_rel_err.values, ds.grad_cosine.values
    assert np.isfinite(ds.test_acc).all()
    if mode.startswith("fd_"):  # finite differences over dI = 20 uA: a small, nonzero error
        assert ((err > 0) & (err < 0.1)).all() and (cos > 0.99).all()
    else:  # exact derivatives (no variability, so the model's equals each junction's)
        np.testing.assert_array_equal(err, 0.0)
        np.testing.assert_allclose(cos, 1.0, atol=1e-6)


# --- bad input -------------------------------------------------------------------------------------


BAD = [
    (["--grad", "fd_backward"], ["grad: 'fd_backward'", "allowed: fd_forward, fd_single, fd_symmetric, "
                                                              "model, oracle, tanh, relu, sigmoid"]),
    (["--optimizer", "lbfgs"], ["optimizer: 'lbfgs'", "allowed: sgd, momentum, adam"]),
    (["--lr-schedule", "linear"], ["lr-schedule: 'linear'", "allowed: constant, step:EVERY:GAMMA, exp:GAMMA, cosine"]),
    (["--lr", "-1"], ["lr: -1.0 is out of range", "allowed: 0 < value <= 100"]),
    (["--epochs", "0"], ["epochs: 0 is out of range", "allowed: 1 <= value"]),
    (["--networks", "0"], ["networks: 0 is out of range", "allowed: 1 <= value"]),
    (["--hidden", "0"], ["hidden: 0 is out of range", "allowed: 1 <= value"]),
    (["--hidden", "4", "--hidden", "0"], ["hidden: 0 is out of range", "allowed: 1 <= value"]),
    (["--dataset", "nope"], ["dataset: unknown dataset 'nope'", "allowed: iris, digits, mnist, csv:PATH"]),
    (["--dataset", "csv:{tmp}/nowhere/missing.csv"], ["dataset: CSV file", "missing.csv", "not found"]),
    (["--dataset", "mnist", "--data-dir", "{tmp}/mnist"],
     ["data-dir: no MNIST data in", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "mnist.npz"]),
    (["--dataset", "mnist", "--data-dir", "{tmp}/mnist.txt"], ["data-dir: '", "mnist.txt' is a file, not a .npz; "
                                                              "expected a folder holding the four MNIST IDX files"]),
    (["--device-model", "tabulated", "--iv-csv", "{tmp}/mnist"], ["iv-csv: ", "mnist is a folder; expected a CSV file"]),
    (["--backend", "tpu"], ["backend: 'tpu'", "allowed: auto, numpy, cpu, cuda"]),
    (["--delta-i", "0"], ["delta-i: 0.0 is out of range", "allowed: 0 < value <= 1"]),
    (["--adc-bits", "30"], ["adc-bits: 30 is out of range", "allowed: 0 <= value <= 24"]),
    (["--sigma-d2d", "-1"], ["sigma-d2d: -1.0 is out of range", "allowed: 0 <= value"]),
    (["--param", "r_p=-5"], ["param r_p: -5.0 is out of range", "allowed: 1 <= value <= 1e7"]),
    (["--param", "r_p=inf"], ["param r_p: expected a finite number, got inf", "allowed: 1 <= value <= 1e7"]),
    (["--param", "v_h=1e-300"], ["param v_h: 1e-300 is out of range", "allowed: 0.001 <= value <= 1000 or inf"]),
    (["--param", "i_c=nan"], ["param i_c: expected a number, got NaN; allowed: 1e-8 <= value <= 1"]),
    (["--adc-bits", "8", "--adc-range", "-inf", "1"], ["adc-range: expected finite numbers, got -inf; allowed: -1000 <= low"]),
    (["--adc-bits", "8", "--adc-range", "-1e-3", "-2e-3"], ["adc-range: lower end -0.001 must be below upper end "
                                                           "-0.002"]),
    (["--adc-bits", "8", "--adc-range", "-1e308", "1e308"], ["adc-range: (-1e+308, 1e+308) is out of range; allowed: "
                                                             "-1000 <= low < high <= 1000 (V)"]),
    (["--dac-bits", "8", "--dac-range", "-1e9", "1e9"], ["dac-range: (-1e+09, 1e+09) is out of range; allowed: "
                                                         "-1 <= low < high <= 1 (A)"]),
    (["--adc-range", "-0.5", "0.5"], ["adc-range: has no effect without an ADC; give --adc-bits N too, or remove "
                                      "--adc-range"]),
    (["--data-dir", "{tmp}"], ["data-dir: only mnist reads --data-dir, and this run trains on 'iris'; remove "
                               "--data-dir"]),
    (["--read-noise", "-.5"], ["read-noise: -0.5 is out of range", "allowed: 0 <= value <= 1"]),
    (["--out", ""], ["out: expected a file name, got an empty one"]),
    (["--networks", "1000000000"], ["networks: 1000000000 networks need up to", "GiB of memory",
                                    "allowed here: at most"]),
    (["--param", "r_q=5"], ["param: unknown parameter 'r_q'", "allowed: r_p, tmr0"]),
    (["--device-model", "foo"], ["device-model: unknown device model 'foo'", "allowed: macrospin, stt_compact, stt_compact_f32, tabulated"]),
    (["--out", "{tmp}/out/no/r.nc"], ["out: folder", "does not exist"]),
    (["--out", "{tmp}/out/r.txt"], ["out:", "r.txt': expected a file name ending in .nc (netCDF), such as results.nc"]),
    (["--batch-size", "0"], ["batch-size: 0 is out of range", "allowed: 1 <= value"]),
    (["--lr-schedule", "exp:1.5"], ["lr-schedule GAMMA: 1.5 is out of range", "allowed: 0 < value <= 1"]),
    (["--lr-schedule", "step:0:0.5"], ["lr-schedule EVERY: 0 is out of range", "allowed: 1 <= value <= 1000000000"]),
    (["--lr-schedule", "step:2:2"], ["lr-schedule GAMMA: 2.0 is out of range", "allowed: 0 < value <= 1"]),
    (["--lr-schedule", "exp:inf"], ["lr-schedule GAMMA: expected a finite number, got inf"]),
    (["--readout", "mirror"], ["readout: 'mirror'", "allowed: direct, bridge"]),
    (["--r-ref", "100"], ["r-ref: has no effect without --readout bridge; give --readout bridge, or remove --r-ref"]),
    (["--readout", "bridge", "--r-ref", "-1"], ["r-ref: -1.0 is out of range", "allowed: 0 <= value <= 1e9"]),
    (["--i-gain", "0"], ["i-gain: 0.0 is out of range", "allowed: 0 < value <= 1"]),
    (["--i-bias", "2"], ["i-bias: 2.0 is out of range", "allowed: -1 <= value <= 1"]),
    (["--v-scale", "-1"], ["v-scale: -1.0 is out of range", "allowed: 0 < value <= 1e9"]),
    (["--noise-model", "pink"], ["noise-model: 'pink'", "allowed: gaussian, johnson_shot"]),
    (["--noise-temperature", "300"], ["noise-temperature: has no effect without --noise-model johnson_shot; give "
                                      "--noise-model johnson_shot, or remove --noise-temperature"]),
    (["--noise-bandwidth", "1e6"], ["noise-bandwidth: has no effect without --noise-model johnson_shot"]),
    (["--noise-model", "johnson_shot", "--noise-temperature", "-1"], ["noise-temperature: -1.0 is out of range",
                                                                      "allowed: 0 <= value <= 10000"]),
    (["--noise-model", "johnson_shot", "--noise-bandwidth", "0"], ["noise-bandwidth: 0.0 is out of range",
                                                                   "allowed: 0 < value <= 1e12"]),
    (["--noise-model", "johnson_shot", "--read-noise", "1e-3"], ["read-noise: has no effect without --noise-model "
                                                                 "gaussian (johnson_shot sets its own); give "
                                                                 "--noise-model gaussian, or remove --read-noise"]),
    (["--dac-range", "-1e-3", "1e-3"], ["dac-range: has no effect without a DAC; give --dac-bits N too, or remove "
                                        "--dac-range"]),
    (["--dac-bits", "4", "--dac-range", "1e-3", "-1e-3"], ["dac-range: lower end 0.001 must be below upper end "
                                                           "-0.001"]),
    (["--dac-bits", "99"], ["dac-bits: 99 is out of range", "allowed: 0 <= value <= 24"]),
    (["--momentum", "0.5"], ["momentum: has no effect without --optimizer momentum; give --optimizer momentum, or "
                                "remove --momentum"]),
    (["--grad", "tanh", "--read-noise", "1e-3"], ["read-noise: has no effect with --grad tanh (a digital baseline has "
                                                   "no junctions); give an MTJ --grad (fd_forward, fd_single, "
                                                   "fd_symmetric, model, oracle), or remove --read-noise"]),
    (["--grad", "relu", "--sigma-pair", "0.02"], ["sigma-pair: has no effect with --grad relu (a digital baseline"]),
    (["--grad", "sigmoid", "--readout", "direct"], ["readout: has no effect with --grad sigmoid (a digital baseline"]),
    (["--grad", "tanh", "--device-model", "macrospin"], ["device-model: has no effect with --grad tanh (a digital"]),
    (["--grad", "tanh", "--param", "r_p=2000"], ["param: has no effect with --grad tanh (a digital baseline has no "
                                                 "junctions); give an MTJ --grad", "or remove --param"]),
    (["--grad", "relu", "--iv-csv", "{tmp}/missing.csv"], ["iv-csv: has no effect with --grad relu (a digital "
                                                           "baseline has no junctions); give an MTJ", "or remove --iv-csv"]),
    (["--grad", "oracle", "--delta-i", "1e-5"], ["delta-i: has no effect with --grad oracle (only fd_forward, "
                                                 "fd_single and fd_symmetric take a step dI); give one of those, or "
                                                 "remove --delta-i"]),
    (["--optimizer", "momentum", "--momentum", "1.5"], ["momentum: 1.5 is out of range"]),
    (["--dtype", "float16"], ["dtype: 'float16'", "allowed: float32, float64"]),
]


def _ids():
    return [f"{b[0][0].lstrip('-')}={b[0][1].split('/')[-1]}" + ("-" + b[0][2] if len(b[0]) > 2 else "") for b in BAD]


@pytest.mark.parametrize("extra, pieces", BAD, ids=_ids())
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, monkeypatch, extra, pieces):
    from spingpu.training import trainer

    monkeypatch.setattr(trainer, "available_memory", lambda: 16 * 2**30)  # the same on every machine
    out_dir = tmp_path / "out"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist.txt").write_text("not MNIST")
    out_dir.mkdir()
    extra = [e.format(tmp=tmp_path) for e in extra]
    rc = main([*TINY, "--out", str(out_dir / "r.nc"), *extra])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")
    assert captured.err.startswith("spingpu train: error: ")
    for piece in pieces:
        assert piece in captured.err, captured.err
    assert captured.out == ""  # validated before anything ran
    assert list(out_dir.iterdir()) == []
    assert list((tmp_path / "mnist").iterdir()) == []


def test_backend_cuda_runs_in_the_simulator(tmp_path, capsys):
    # tests/conftest.py turns on Numba's CUDA simulator: --backend cuda runs the GPU kernels there.
    argv = [*TINY, "--hidden", "2", "--networks", "1", "--grad", "oracle"]
    cuda = run_ok([*argv, "--backend", "cuda"], tmp_path / "cuda.nc")
    cpu = run_ok([*argv, "--backend", "cpu"], tmp_path / "cpu.nc")
    assert cuda.attrs["backend"] == "cuda" and cuda.attrs["device"] == "Numba CUDA simulator"
    for name in ("train_loss", "val_acc", "test_acc", "grad_cosine"):
        np.testing.assert_allclose(cuda[name].values, cpu[name].values, rtol=1e-10, err_msg=name)


def test_argparse_type_error_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--networks", "many", "--out", str(tmp_path / "r.nc")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "spingpu train: error: networks: expected a whole number, got 'many'\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "--bogus: not an option or argument of spingpu train (spingpu train --help lists them)"),
    (["--sigma_d2d", "0.1"], "--sigma_d2d: not an option or argument of spingpu train (did you mean '--sigma-d2d'?) "
                             "(spingpu train --help lists them)"),
    (["--grad", "fd_fwd"], "grad: 'fd_fwd' (did you mean 'fd_forward'?); allowed: fd_forward, fd_single, fd_symmetric, "
                           "model, oracle, tanh, relu, sigmoid"),
    (["--optimizer", "adma"], "optimizer: 'adma' (did you mean 'adam'?); allowed: sgd, momentum, adam"),
    (["--grad-mode", "tanh"], "--grad-mode: not an option or argument of spingpu train (did you mean '--grad'?) "
                              "(spingpu train --help lists them)"),  # by spelling --read-noise is closer
    # options are given whole (argparse would take --model as --model-file, --net as --networks)
    (["--model", "macrospin"], "--model: not an option or argument of spingpu train (did you mean '--device-model' or "
                               "'--model-file' or '--noise-model'?) (spingpu train --help lists them)"),
    (["--net", "2"], "--net: not an option or argument of spingpu train (did you mean '--networks'?) "
                     "(spingpu train --help lists them)"),
    (["--dataset", "irsi"], "dataset: unknown dataset 'irsi' (did you mean 'iris'?); allowed: iris, digits, mnist, "
                            "csv:PATH"),
    (["--lr"], "lr: expects a value"),
    (["--adc-range", "1"], "adc-range: expects 2 values"),
    (["--lr", "fast"], "lr: expected a number, got 'fast'"),
    (["--epochs", "2.5"], "epochs: expected a whole number, got '2.5'"),
    (["--epochs", "1e999999999"],  # not built
     "epochs: 1e999999999 is out of range; allowed: whole numbers of at most 30 digits"),
    (["--networks", "-1e31"], "networks: -1e31 is out of range; allowed: whole numbers of at most 30 digits"),
    (["--epochs", "1e29"], "epochs: 100000000000000000000000000000 is out of range; allowed: 1 <= value <= 1000000"),
])
def test_argparse_errors_name_the_field_like_every_other_error(tmp_path, capsys, argv, message):
    try:
        rc = main([*TINY, *argv, "--out", str(tmp_path / "r.nc")])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2 and capsys.readouterr().err == f"spingpu train: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_counts_may_be_written_in_exponent_notation():
    from spingpu.cli.options import integer

    assert integer("1e6") == 10**6 and integer("300") == 300 and integer("2.0") == 2 and integer("-1") == -1
    assert integer(" +3 ") == 3 and integer("1e23") == 10**23 and integer("9007199254740993.0") == 2**53 + 1
    assert integer("18446744073709551615") == 2**64 - 1  # the largest seed
    for bad in ("1.5", "inf", "nan", "-inf", "ten", "", "0x10", "1e-3"):
        with pytest.raises(ValueError):
            integer(bad)


@pytest.mark.parametrize("extra", [["--grad", "fd_backward"], ["--backend", "tpu"]], ids=["grad", "backend"])
def test_existing_output_kept_when_run_fails(tmp_path, capsys, extra):
    out = tmp_path / "r.nc"
    out.write_text("precious")
    rc = main([*TINY, "--hidden", "2", "--networks", "1", "--out", str(out), "--overwrite", *extra])
    assert rc == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert out.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]


def test_existing_output_refused_without_overwrite_and_replaced_with_it(tmp_path, capsys):
    out = tmp_path / "r.nc"
    out.write_text("precious")
    argv = [*TINY, "--hidden", "2", "--networks", "1", "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu train: error: out: {out} exists; not overwritten: pass --overwrite to replace "
                            "it, or choose another file name\n")
    assert captured.out == "" and out.read_text() == "precious"
    ds = run_ok([*TINY, "--hidden", "2", "--networks", "1", "--overwrite"], out)
    assert dict(ds.sizes) == {"network": 1, "epoch": 1}
    capsys.readouterr()
    assert main([*TINY, "--overwrite"]) == 2
    assert capsys.readouterr().err == ("spingpu train: error: overwrite: has no effect without --out FILE.nc; give "
                                       "--out, or remove --overwrite\n")


# --- output files that cannot be written -----------------------------------------------------------


def test_a_disk_too_full_for_the_results_fails_before_the_run(tmp_path, capsys, monkeypatch):
    """The results are written when training ends: a folder without room for them is refused at
    the start, with the estimate of :func:`netcdf_nbytes`, and an existing file is kept."""
    import shutil
    from collections import namedtuple

    from spingpu.training.results import netcdf_nbytes

    out = tmp_path / "r.nc"
    out.write_text("precious")
    usage = namedtuple("usage", "total used free")
    free, real_disk_usage = netcdf_nbytes(6, 3) // 2, shutil.disk_usage
    monkeypatch.setattr("spingpu.outputs.shutil.disk_usage", lambda path: usage(2**40, 2**40 - free, free))
    assert main([*SMALL, "--backend", "numpy", "--out", str(out), "--overwrite"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu train: error: out: {out} needs about 1.0 MiB and {tmp_path} has {free} "
                            "bytes free; free some space or choose another folder\n")
    assert "networks 4-4-3" not in captured.out  # refused before training
    assert out.read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["r.nc"]
    monkeypatch.setattr("spingpu.outputs.shutil.disk_usage", real_disk_usage)
    assert main([*SMALL, "--backend", "numpy", "--out", str(out), "--overwrite"]) == 0


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    long = tmp_path / ("x" * 300 + ".nc")
    assert main([*SMALL, "--backend", "numpy", "--out", str(long)]) == 2
    assert capsys.readouterr().err == (f"spingpu train: error: {long}: a name in this path is too long for the file "
                                       "system (most allow 255 bytes per name)\n")
    assert list(tmp_path.iterdir()) == []


def test_the_results_file_size_bound_holds(tmp_path, capsys):
    """netcdf_nbytes bounds the file written (and is not far above it: the data dominate)."""
    from spingpu.training.results import netcdf_nbytes

    out = tmp_path / "r.nc"
    assert main(["train", "--dataset", "iris", "--hidden", "3", "--networks", "3000", "--epochs", "20", "--grad",
                 "tanh", "--backend", "cpu", "--out", str(out)]) == 0
    size, bound = out.stat().st_size, netcdf_nbytes(3000, 20)
    assert size <= bound <= 1.1 * size + 2**20, (size, bound)



def _refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_unwritable_out_fails_before_the_run(tmp_path, capsys, monkeypatch):
    # a folder that os.access calls writable but that refuses new files (root on /sys, a read-only mount)
    monkeypatch.setattr("spingpu.outputs.tempfile.mkstemp", _refuse)
    rc = main([*TINY, "--out", str(tmp_path / "r.nc")])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err == f"spingpu train: error: out: cannot write {tmp_path / 'r.nc'}: Permission denied\n"
    assert captured.out == ""  # nothing trained
    assert list(tmp_path.iterdir()) == []


def test_a_netcdf_write_the_machine_refuses_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """netCDF4 (HDF5) reports a full disk or a file size limit met while writing as RuntimeError."""
    def full(self, path, **kwargs):
        Path(path).write_bytes(b"CDF partial")
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full)
    rc = main([*TINY, "--hidden", "2", "--out", str(tmp_path / "r.nc")])
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert rc == 1
    assert lines[-1] == (f"spingpu train: error: out: cannot write {tmp_path / 'r.nc'}: the netCDF library failed to "
                         "write it (NetCDF: HDF error: a full disk or a file size limit?); the results were not saved")
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_after_the_run_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    def refuse_replace(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr("spingpu.outputs.os.replace", refuse_replace)
    monkeypatch.setattr("spingpu.outputs.os.link", refuse_replace)  # a new file is placed by a hard link
    rc = main([*TINY, "--hidden", "2", "--out", str(tmp_path / "r.nc")])
    err = capsys.readouterr().err
    assert rc == 1  # the machine's error, after the run: not a bad value
    # the run's progress bar (rewritten with carriage returns) comes first; the error is one line after it
    lines = err.replace("\r", "\n").strip().splitlines()
    assert lines[-1] == f"spingpu train: error: out: cannot write {tmp_path / 'r.nc'}: Permission denied"
    assert err.endswith("\n") and not any("spingpu" in line or "Error" in line for line in lines[:-1])
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary


def test_negative_numbers_are_values_not_options(tmp_path):
    from spingpu.cli.main import NEGATIVE_NUMBER

    for text in ("-1", "-4e-4", "-.5", "-1E+3", "-inf", "-Infinity", "-nan"):
        assert NEGATIVE_NUMBER.match(text), text
    for text in ("-h", "--lr", "-o", "-e5", "-infinite"):
        assert not NEGATIVE_NUMBER.match(text), text
    ds = run_ok([*TINY, "--hidden", "2", "--adc-bits", "4", "--adc-range", "-1e-0", "-.5"], tmp_path / "r.nc")
    assert json.loads(ds.attrs["config"])["readout"]["adc_range"] == [-1.0, -0.5]


def test_sigterm_ends_train_in_one_line_exit_143_and_writes_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r.nc"
    # 200 networks x 2000 epochs: ~100 s of training, in chunks of one network (under a second each;
    # a chunk, once started, runs to its end)
    proc = subprocess.Popen([sys.executable, "-m", "spingpu.cli.main", "train", "--networks", "200", "--epochs", "2000",
                             "--backend", "cpu", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert "200 networks 4-8-3 on iris" in proc.stdout.readline()  # printed as training starts
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 143, err[-3000:]  # the end of stderr, to see why where it fails
    assert err.replace("\r", "\n").strip().splitlines()[-1] == "spingpu train: terminated"
    assert list(tmp_path.iterdir()) == []


def test_train_whose_output_pipe_closes_carries_on_and_writes_its_results(tmp_path):
    """``spingpu train ... --out r.nc | head -1``: the reader leaves after the first line; the run
    must not die at its next line (a BrokenPipeError traceback, exit 1, no results file)."""
    import os
    import subprocess
    import sys

    import xarray as xr

    out = tmp_path / "r.nc"
    proc = subprocess.Popen([sys.executable, "-m", "spingpu.cli.main", "train", "--networks", "3", "--epochs", "2",
                             "--backend", "numpy", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert "3 networks 4-8-3 on iris" in proc.stdout.readline()
        proc.stdout.close()  # as head -1 does
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err
    with xr.open_dataset(out) as ds:
        assert ds.sizes["network"] == 3 and np.isfinite(ds.test_acc.values).all()

def test_version_and_a_missing_command(capsys):
    import spingpu

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None) and capsys.readouterr().out == f"spingpu {spingpu.__version__}\n"
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("spingpu: error: command: required; allowed: info, devices, train, run, report "
                                       "(spingpu COMMAND --help)\n")


def test_an_output_another_run_wrote_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    """The existence check runs at start-up; a second run with the same --out may write the file
    before this one ends. Without --overwrite its file stays (os.replace took it), this run's
    outputs placed so far are removed again, and the temporaries go; with --overwrite it is replaced."""
    from spingpu.errors import ConfigError
    from spingpu.outputs import staged_files

    first, second = tmp_path / "a.nc", tmp_path / "b.png"
    with pytest.raises(ConfigError) as err:
        with staged_files(first, second, fields=("out", "plot"), overwrite=False) as temps:
            for tmp in temps:
                tmp.write_text("ours")
            second.write_text("theirs")  # another run, meanwhile
    assert str(err.value) == (f"plot: {second} was written by something else while this run ran; not overwritten: "
                              "pass --overwrite to replace it, or choose another file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"] and second.read_text() == "theirs"
    with staged_files(first, second, overwrite=True) as temps:
        for tmp in temps:
            tmp.write_text("ours")
    assert first.read_text() == second.read_text() == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nc", "b.png"]


def test_progress_never_costs_the_run_and_redraws_rarely_into_a_log(monkeypatch):
    """A stderr whose writes fail (closed with 2>&-, a full log disk) made tqdm's write raise and
    the run end with nothing written; where stderr is a file, the bar redrew 10 times a second."""
    import io

    from spingpu import progress

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")

    for stream in (Full(), None):
        monkeypatch.setattr("sys.stderr", stream)
        with progress.progress_bar(True, 100, "networks") as bar:
            for _ in range(100):
                bar.update(1)
        with progress.status(True):
            pass
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert progress.tqdm_options()["mininterval"] == progress.LOG_INTERVAL_S == 30.0


def test_where_hard_links_are_refused_a_new_output_is_renamed_into_place_after_a_check(tmp_path, monkeypatch):
    """A filesystem without hard links (EPERM, as FAT and some network mounts say): the output is
    renamed into place where its name is free, and still not over a file that appeared meanwhile."""
    import errno

    from spingpu.errors import ConfigError
    from spingpu.outputs import staged_files

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted", str(dst))

    monkeypatch.setattr("spingpu.outputs.os.link", no_links)
    target = tmp_path / "a.nc"
    with staged_files(target, fields=("out",), overwrite=False) as (tmp,):
        tmp.write_text("ours")
    assert target.read_text() == "ours" and [p.name for p in tmp_path.iterdir()] == ["a.nc"]
    other = tmp_path / "b.nc"
    with pytest.raises(ConfigError, match="was written by something else while this run ran"):
        with staged_files(other, fields=("out",), overwrite=False) as (tmp,):
            tmp.write_text("ours")
            other.write_text("theirs")
    assert other.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["a.nc", "b.nc"]


def test_the_temporary_file_of_a_killed_run_goes_at_the_next_write_of_that_file(tmp_path):
    """SIGKILL leaves a run's hidden temporary beside its output; the next write of that output on
    this host removes it (its process is gone), and leaves those of running processes, of other
    hosts and of other outputs alone."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    target = tmp_path / "r.nc"
    code = ("import time\nfrom spingpu.outputs import staged_files\n"
            f"with staged_files({str(target)!r}) as (tmp,):\n"
            "    tmp.write_text('partly written')\n    print(tmp.name, flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        killed = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    host = socket.gethostname()
    assert killed.startswith(f".r.nc.partial-{host}-{proc.pid}-") and killed.endswith(".tmp.nc"), killed
    kept = [f".r.nc.partial-{host}-{os.getpid()}-abcdefgh.tmp.nc",  # a running process's
            f".r.nc.partial-not-{host}-{proc.pid}-abcdefgh.tmp.nc",  # another host's
            f".s.nc.partial-{host}-{proc.pid}-abcdefgh.tmp.nc",  # another output's
            f".r.nc.partial-{host}-{proc.pid}-abcdefgh.tmp.png"]  # not a temporary of r.nc
    for name in kept:
        (tmp_path / name).write_text("theirs")
    run_ok([*TINY, "--hidden", "2", "--networks", "1"], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["r.nc"])


@pytest.mark.parametrize("code, said", [(errno.ENOSPC, True), (errno.EROFS, True), (errno.EDQUOT, True),
                                        (errno.ENOENT, False)])
def test_a_machine_error_is_one_line_and_exit_status_1(monkeypatch, capsys, code, said):
    """A full disk or quota, a read-only file system (an OSError of the machine, not the program),
    from any command: one line naming the file, exit 1; other OSErrors are not hidden."""
    from spingpu.cli import report as cli_report

    def run(args):
        raise OSError(code, os.strerror(code), "/data/s.html")

    monkeypatch.setattr(cli_report, "run", run)
    if not said:
        with pytest.raises(FileNotFoundError):
            main(["report", "s.zarr"])
        return
    assert main(["report", "s.zarr"]) == 1
    assert capsys.readouterr().err == f"spingpu report: error: /data/s.html: {os.strerror(code)}\n"


def test_split_seed_splits_the_data_and_seed_draws_the_rest(tmp_path):
    out = {}
    for name, extra in (("both", ["--seed", "3"]), ("split", ["--seed", "3", "--split-seed", "0"]),
                        ("default", ["--seed", "0"])):
        assert main([*TINY, *extra, "--out", str(tmp_path / f"{name}.nc")]) == 0
        out[name] = xr.open_dataset(tmp_path / f"{name}.nc")
    split = {k: json.loads(v.attrs["dataset_split"])["seed"] for k, v in out.items()}
    assert split == {"both": 3, "split": 0, "default": 0}
    assert out["split"].attrs["dataset_sha256"] == out["default"].attrs["dataset_sha256"] != out["both"].attrs[
        "dataset_sha256"]
    assert json.loads(out["split"].attrs["config"])["seed"] == 3
    for ds in out.values():
        ds.close()


def test_a_bad_split_seed_is_one_line_naming_it(tmp_path, capsys):
    assert main([*TINY, "--split-seed", "-1", "--out", str(tmp_path / "r.nc")]) == 2
    assert capsys.readouterr().err == ("spingpu train: error: split-seed: -1 is out of range; allowed: 0 <= value <= "
                                       "18446744073709551615\n")
    assert list(tmp_path.iterdir()) == []
