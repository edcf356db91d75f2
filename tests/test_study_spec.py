"""Study files (spingpu.studies.spec): the digest depends on what determines the numbers, not on
where the study folder is; validation messages are one line naming the key and what is allowed.

No study is run here: a store is made with the store API (as a first run leaves it), so these tests
take a few seconds.
"""

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import spingpu
from spingpu.cli.main import main
from spingpu.errors import ConfigError
from spingpu.studies import load_study
from studyutil import BASE, FAST, run_main, store_every_task, write


# a csv: dataset and a tabulated model's measured curve, both relative to the study's folder
FILES_STUDY = """\
name = "files"
networks = 2

[dataset]
name = "csv:data/table.csv"

[model]
name = "tabulated"
iv_csv = "iv.csv"

[network]
hidden = [3]

[training]
epochs = 1
"""


def write_table(path, rng, rows=45):
    """A fresh random CSV table: 2 features, 3 classes (labelled by the first feature's sign and
    size, so every class has rows)."""
    x = rng.normal(size=(rows, 2))
    labels = np.arange(rows) % 3
    return write(path, "a,b,label\n" + "".join(f"{a!r},{b!r},{c}\n" for (a, b), c in zip(x.tolist(), labels)))


def write_iv(path, rng):
    """A fresh random measured V(I) curve: linear plus cubic, increasing."""
    current = np.linspace(-1e-4, 1e-4, 9)
    r, k = rng.uniform(800.0, 3000.0), rng.uniform(1e6, 1e7)
    return write(path, "current,voltage\n" + "".join(f"{i!r},{r * i + k * i ** 3!r}\n" for i in current.tolist()))


def files_folder(folder, rng):
    write_table(folder / "data" / "table.csv", rng)
    write_iv(folder / "iv.csv", rng)
    return write(folder / "study.toml", FILES_STUDY)


# --- the digest: contents, not places ------------------------------------------------------------


def test_a_copied_or_moved_study_folder_keeps_its_digest_and_changed_contents_change_it(tmp_path):
    rng = np.random.default_rng()
    study_path = files_folder(tmp_path / "a", rng)
    study = load_study(study_path)
    assert len(study.inputs) == 2
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "deeper" / "b")
    copy_path = tmp_path / "elsewhere" / "deeper" / "b" / "study.toml"
    copy = load_study(copy_path)
    assert copy.data != study.data  # its paths are other ones ...
    assert copy.digest == study.digest  # ... and its numbers the same
    shutil.move(tmp_path / "a", tmp_path / "moved")
    assert load_study(tmp_path / "moved" / "study.toml").digest == study.digest

    table = tmp_path / "elsewhere" / "deeper" / "b" / "data" / "table.csv"
    table.write_text(table.read_text().replace(",0\n", ",1\n", 1))  # one label changed
    assert load_study(copy_path).digest != study.digest
    shutil.copy(tmp_path / "moved" / "data" / "table.csv", table)
    assert load_study(copy_path).digest == study.digest
    write_iv(tmp_path / "elsewhere" / "deeper" / "b" / "iv.csv", rng)
    assert load_study(copy_path).digest != study.digest


def test_two_data_files_that_swap_contents_change_the_digest(tmp_path):
    """The digest knows which file holds which contents (csv dataset vs a swept csv), not just the
    set of contents."""
    rng = np.random.default_rng()
    write_table(tmp_path / "a.csv", rng)
    write_table(tmp_path / "b.csv", rng)
    study_path = write(tmp_path / "study.toml", BASE + '\n[sweep]\n"dataset.name" = ["csv:a.csv", "csv:b.csv"]\n')
    study = load_study(study_path)
    shutil.copytree(tmp_path, tmp_path.parent / (tmp_path.name + "-copy"))
    assert load_study(tmp_path.parent / (tmp_path.name + "-copy") / "study.toml").digest == study.digest
    a, b = (tmp_path / "a.csv").read_text(), (tmp_path / "b.csv").read_text()
    (tmp_path / "a.csv").write_text(b)
    (tmp_path / "b.csv").write_text(a)
    swapped = load_study(study_path)
    assert sorted(h for _, h in swapped.inputs) == sorted(h for _, h in study.inputs)
    assert swapped.digest != study.digest


def test_an_mnist_folder_elsewhere_with_the_same_files_gives_the_same_digest(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    rng = np.random.default_rng()
    arrays = dict(x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), y_train=np.arange(60) % 10,
                  x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)
    for where in ("one", "two"):
        (tmp_path / where).mkdir()
        np.savez(tmp_path / where / "mnist.npz", **arrays)
    text = BASE.replace('name = "iris"', 'name = "mnist"\ndata_dir = {}')
    one = load_study(write(tmp_path / "s1.toml", text.format(json.dumps(str(tmp_path / "one")))))
    two = load_study(write(tmp_path / "s2.toml", text.format(json.dumps(str(tmp_path / "two")))))
    assert one.digest == two.digest
    arrays["y_train"] = (arrays["y_train"] + 1) % 10
    np.savez(tmp_path / "two" / "mnist.npz", **arrays)
    assert load_study(tmp_path / "s2.toml").digest != one.digest


def test_a_study_without_data_files_keeps_the_digest_of_its_tables_alone(tmp_path):
    """Stores written before the digest left out paths can still be resumed: a study that reads no
    data file has the same digest as then, sha256 of its parsed tables."""
    text = BASE + '\n[sweep]\n"training.grad_mode" = ["model", "tanh"]\n"dataset.name" = ["iris", "digits"]\n'
    study = load_study(write(tmp_path / "study.toml", text))
    assert study.inputs == ()
    assert study.digest == hashlib.sha256(json.dumps(study.data, sort_keys=True, default=str).encode()).hexdigest()


def test_a_store_resumes_from_a_moved_study_folder(tmp_path):
    from spingpu.studies.store import create_store

    study_path = files_folder(tmp_path / "first", np.random.default_rng())
    study = load_study(study_path)
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    store_every_task(out, study, study.networks)
    shutil.move(tmp_path / "first", tmp_path / "second")
    rc, printed, err = run_main(["run", str(tmp_path / "second" / "study.toml"), "--out", str(out), "--resume", *FAST])
    assert rc == 0, err
    assert f"every task of {out} is stored; nothing to run" in printed


def test_resuming_from_a_copied_folder_whose_data_file_changed_names_that_file(tmp_path):
    """Not the moved paths: the file whose contents differ from the store's."""
    from spingpu.studies.store import create_store

    rng = np.random.default_rng()
    study_path = files_folder(tmp_path / "first", rng)
    study = load_study(study_path)
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    write_iv(tmp_path / "second" / "iv.csv", rng)
    rc, printed, err = run_main(["run", str(tmp_path / "second" / "study.toml"), "--out", str(out), "--resume", *FAST])
    assert (rc, printed) == (2, "")
    assert err == (f"spingpu run: error: resume: {out} was made from other contents of {tmp_path / 'second' / 'iv.csv'}: "
                   "the input data changed since, and resuming would mix results of both; use another --out or "
                   "--overwrite\n")


def test_a_store_written_before_portable_digests_still_resumes_from_its_own_folder(tmp_path):
    """Stores carry the digest they were created with: one written by the earlier formula (resolved
    paths and the inputs as recorded) is still this study's where nothing moved; moved, it is not."""
    import zarr

    from spingpu.studies.store import STORE_MARK, create_store

    study_path = files_folder(tmp_path / "first", np.random.default_rng())
    study = load_study(study_path)
    legacy = hashlib.sha256(json.dumps(study.data, sort_keys=True, default=str).encode()
                            + json.dumps([list(item) for item in study.inputs]).encode()).hexdigest()
    assert study.digests[0] == study.digest and study.digests[-1] == legacy and legacy != study.digest
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    zarr.open_group(str(out), mode="r+").attrs[STORE_MARK] = legacy
    zarr.consolidate_metadata(str(out))
    store_every_task(out, study, study.networks)
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 0 and f"every task of {out} is stored; nothing to run" in printed, err
    shutil.move(tmp_path / "first", tmp_path / "second")
    rc, _, err = run_main(["run", str(tmp_path / "second" / "study.toml"), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and "resume: " in err, err


# --- one-line messages ---------------------------------------------------------------------------


TOP_LEVEL = ("name, description, networks, seed, dataset, model, network, neuron, training, distillation, "
             "variability, readout, sweep, cluster")


def with_line(section, line, text=BASE):
    header = f"[{section}]\n"
    if header in text:
        return text.replace(header, header + line + "\n")
    return text + f"\n{header}{line}\n"


MESSAGES = [
    # (id, study text, key, problem): the whole line after "<file>: <key>: "
    ("test fraction too small", with_line("dataset", "val_fraction = 0.01\ntest_fraction = 0.01"),
     "dataset.test_fraction", "0.01 of 150 rows is a test split of 2 row(s), fewer than the 3 classes; allowed: "
     "test_fraction >= 0.0167 (at least 3 rows)"),
    ("val fraction too small", with_line("dataset", "val_fraction = 0.005"), "dataset.val_fraction",
     "0.005 of 150 rows is a validation split of 1 row(s), fewer than the 3 classes; allowed: val_fraction >= "
     "0.0167 (at least 3 rows)"),
    ("fractions leave too few training rows", with_line("dataset", "val_fraction = 0.49\ntest_fraction = 0.49"),
     "dataset.val_fraction", "val_fraction + test_fraction = 0.98 of 150 rows leaves a training split of 2 row(s), "
     "fewer than the 3 classes; allowed: fractions that leave at least 3 training rows"),
    ("swept fraction too small", with_line("sweep", '"dataset.test_fraction" = [0.2, 0.01]'), "dataset.test_fraction",
     "0.01 of 150 rows is a test split of 2 row(s), fewer than the 3 classes; allowed: test_fraction >= 0.0167 "
     "(at least 3 rows) (in the cell dataset.test_fraction=0.01)"),
    ("csv: of a folder", BASE.replace('"iris"', '"csv:."'), "dataset.name",
     "{folder!r} is a folder, expected a CSV file"),
    ("csv: of a subfolder", BASE.replace('"iris"', '"csv:sub"'), "dataset.name",
     "{sub!r} is a folder, expected a CSV file"),
    ("csv: without a path", BASE.replace('"iris"', '"csv:"'), "dataset.name",
     "csv: needs a file path, as in csv:PATH"),
    ("csv: with spaces only", BASE.replace('"iris"', '"csv:   "'), "dataset.name",
     "csv: needs a file path, as in csv:PATH"),
    ("logspace beyond the float range", with_line("sweep", '"neuron.delta_i" = {logspace = [-6, 400, 3]}'),
     "sweep.neuron.delta_i", "logspace = [-6, 400, 3] overflows: 10**400 is beyond the largest float (about "
     "1.8e308); allowed: exponents up to 308"),
    ("linspace beyond the float range", with_line("sweep", '"training.lr" = {linspace = [-1.7e308, 1.7e308, 3]}'),
     "sweep.training.lr", "linspace = [-1.7e+308, 1.7e+308, 3] overflows: stop - start is beyond the largest float "
     "(about 1.8e308)"),
    ("string for a number", with_line("variability", 'sigma_pair = "0.1"'), "variability.sigma_pair",
     "expected a number, got '0.1'"),
    ("string for a top-level integer", 'seed = "1"\n' + BASE, "seed", "expected an integer, got '1'"),
    ("bool for a number", with_line("neuron", "delta_i = true"), "neuron.delta_i", "expected a number, got True"),
    ("data_dir for iris", with_line("dataset", 'data_dir = "mnist"'), "dataset.data_dir",
     "only mnist reads data_dir, and this study trains on 'iris'; remove data_dir"),
    ("data_dir for a sweep without mnist", with_line("dataset", 'data_dir = "."', BASE + '\n[sweep]\n'
                                                     '"dataset.name" = ["iris", "digits"]\n'),
     "dataset.data_dir", "only mnist reads data_dir, and this study trains on 'digits', 'iris'; remove data_dir"),
    ("read_noise with johnson_shot noise", with_line("readout", 'noise_model = "johnson_shot"\nread_noise = 1e-3'),
     "readout.read_noise", 'has no effect in any cell: it needs noise_model = "gaussian" (johnson_shot sets its '
     'own); remove it'),
    ("adc_range without an ADC", with_line("readout", "adc_range = [-2.0, 2.0]"), "readout.adc_range",
     "has no effect in any cell: it needs adc_bits > 0; remove it"),
    ("dac_range without a DAC", with_line("readout", "dac_range = [-2e-3, 2e-3]"),
     "readout.dac_range", "has no effect in any cell: it needs dac_bits > 0; remove it"),
    ("swept r_ref with a direct read", with_line("sweep", '"neuron.r_ref" = [1000.0, 2000.0]'),
     "neuron.r_ref", 'has no effect in any cell: it needs readout = "bridge"; remove it'),
    ("r_ref with a direct read", with_line("neuron", "r_ref = 1500.0"), "neuron.r_ref",
     'has no effect in any cell: it needs readout = "bridge"; remove it'),
    ("noise temperature with gaussian noise", with_line("readout", "temperature = 77.0"), "readout.temperature",
     'has no effect in any cell: it needs noise_model = "johnson_shot"; remove it'),
    ("momentum with adam", with_line("training", "momentum = 0.5"), "training.momentum",
     'has no effect in any cell: it needs optimizer = "momentum"; remove it'),
    ("spreads of digital networks", with_line("variability", "sigma_d2d = 0.1", with_line("training", 'grad_mode = "relu"')),
     "variability.sigma_d2d", "has no effect in any cell: it needs an MTJ grad_mode (fd_forward, fd_single, "
     "fd_symmetric, model, oracle; tanh, relu, sigmoid networks have no junctions); remove it"),
    ("read noise with johnson_shot or digital cells",
     with_line("readout", 'read_noise = 1e-3', with_line("sweep", '"training.grad_mode" = ["oracle", "tanh"]\n'
                                                          '"readout.noise_model" = ["johnson_shot"]')),
     "readout.read_noise", "has no effect in any cell: it needs an MTJ grad_mode (fd_forward, fd_single, fd_symmetric, "
     'model, oracle; tanh, relu, sigmoid networks have no junctions) and noise_model = "gaussian" (johnson_shot sets '
     "its own); remove it"),
    ("swept dI without a finite difference", with_line("sweep", '"neuron.delta_i" = [1e-5, 4e-5]\n'
                                                                '"training.grad_mode" = ["model", "oracle"]'),
     "neuron.delta_i", "has no effect in any cell: it needs a finite-difference grad_mode (fd_forward, fd_single, "
     "fd_symmetric); remove it"),
    ("a device model of digital networks", with_line("model", 'name = "stt_compact"\nparams = { r_p = 2000.0 }',
                                                     with_line("training", 'grad_mode = "sigmoid"')),
     "model", "has no effect in any cell: it needs an MTJ grad_mode (fd_forward, fd_single, fd_symmetric, model, "
     "oracle; tanh, relu, sigmoid networks have no junctions); remove it"),
    # an unknown top-level key or table: a did-you-mean and the allowed keys, as within a table
    ("unknown top-level table", BASE + "\n[foo]\nx = 1\n", "foo", "unknown key; allowed at the top level: " + TOP_LEVEL),
    ("misspelt top-level table", BASE + "\n[readuot]\nadc_bits = 8\n", "readuot",
     "unknown key (did you mean 'readout'?); allowed at the top level: " + TOP_LEVEL),
]


@pytest.mark.parametrize("text, key, problem", [
    (with_line("readout", "adc_range = [-1.0, 1.0]"), "readout.adc_range",
     "has no effect in any cell: it needs adc_bits > 0; remove it"),
    (with_line("readout", "dac_range = [-1e-3, 1e-3]"), "readout.dac_range",
     "has no effect in any cell: it needs dac_bits > 0; remove it"),
    (with_line("readout", "temperature = 300.0"), "readout.temperature",
     'has no effect in any cell: it needs noise_model = "johnson_shot"; remove it'),
    (with_line("variability.correlation", '"r_p,tmr0" = 0.5'), "variability.correlation",
     "has no effect in any cell: it needs a spread above 0 (sigma_chip, sigma_d2d, sigma_pair or per_parameter); "
     "remove it"),
    (with_line("training", "momentum = 0.9"), "training.momentum",
     'has no effect in any cell: it needs optimizer = "momentum"; remove it'),
    (with_line("model", 'name = "stt_compact"', with_line("training", 'grad_mode = "tanh"')), "model",
     "has no effect in any cell: it needs an MTJ grad_mode (fd_forward, fd_single, fd_symmetric, model, oracle; "
     "tanh, relu, sigmoid networks have no junctions); remove it"),
], ids=["adc_range", "dac_range", "temperature", "correlation", "momentum", "model"])
def test_a_setting_no_cell_uses_is_refused_at_its_default_value_too(tmp_path, text, key, problem):
    """The check reads which keys the file writes, not whether their values differ from the
    defaults (as spingpu train refuses --adc-range -1 1 without --adc-bits): adc_range = [-1, 1]
    without an ADC, the gaussian model's temperature = 300 K, a correlation where nothing varies."""
    path = write(tmp_path / "s.toml", text)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value) == f"{path}: {key}: {problem}"


def test_a_correlation_is_accepted_where_some_cell_has_a_spread(tmp_path):
    text = with_line("variability.correlation", '"r_p,tmr0" = 0.5',
                     with_line("sweep", '"variability.sigma_d2d" = [0.0, 0.1]'))
    assert load_study(write(tmp_path / "s.toml", text)).n_cells == 2
    per = with_line("variability.per_parameter", "r_p = [0.0, 0.05, 0.0]",
                    with_line("variability.correlation", '"r_p,tmr0" = 0.5'))
    assert load_study(write(tmp_path / "p.toml", per)).n_cells == 1


def test_cells_of_other_device_models_are_never_trained_as_one(tmp_path):
    """Two tanh cells of different device models train alike on a CPU, but on a GPU the model's
    parameter count picks the engine (fused float64 or batched float32): they stay apart, while
    tanh cells that differ in spread only are one."""
    from spingpu.studies.spec import same_training

    text = with_line("sweep", '"model.name" = ["stt_compact", "macrospin"]\n"training.grad_mode" = ["fd_forward", "tanh"]')
    assert same_training(load_study(write(tmp_path / "m.toml", text))) == [0, 1, 2, 3]
    text = with_line("sweep", '"variability.sigma_d2d" = [0.0, 0.1]\n"training.grad_mode" = ["fd_forward", "tanh"]')
    assert same_training(load_study(write(tmp_path / "s.toml", text))) == [0, 1, 2, 1]


def test_a_setting_some_cell_uses_is_accepted(tmp_path):
    """read_noise with noise_model swept over both models, r_ref with the readout swept: each is
    used by some cell (the CLI's "no effect" rule holds study-wide, not per cell)."""
    text = (with_line("readout", "read_noise = 1e-3") + with_line("neuron", "r_ref = 1500.0", "")
            + '\n[sweep]\n"readout.noise_model" = ["gaussian", "johnson_shot"]\n"neuron.readout" = ["direct", "bridge"]\n')
    study = load_study(write(tmp_path / "s.toml", text))
    assert study.n_cells == 4


@pytest.mark.parametrize("text, key, problem", [pytest.param(*case[1:], id=case[0]) for case in MESSAGES])
def test_bad_study_is_one_exact_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, text, key, problem):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    (tmp_path / "sub").mkdir()
    study = write(tmp_path / "study.toml", text)
    before = sorted(os.listdir(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy's overflow warning: not printed before the error
        rc = main(["run", str(study), "--workers", "1", *FAST])
    captured = capsys.readouterr()
    problem = problem.format(folder=str(tmp_path), sub=str(tmp_path / "sub"))
    assert rc == 2 and captured.out == ""
    assert captured.err == f"spingpu run: error: {study}: {key}: {problem}\n"
    assert sorted(os.listdir(tmp_path)) == before


def test_a_study_path_that_is_a_folder_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.toml").mkdir()
    assert main(["run", "adir.toml", *FAST]) == 2
    captured = capsys.readouterr()
    assert captured.err == "spingpu run: error: study: adir.toml is a folder, expected a study .toml file\n"
    assert captured.out == "" and os.listdir(tmp_path) == ["adir.toml"]
    with pytest.raises(ConfigError) as err:
        load_study(tmp_path / "absent.toml")
    assert str(err.value) == f"study: file not found: {tmp_path / 'absent.toml'}"


def tiny_mnist(folder):
    """A folder holding an mnist.npz of 60 training and 20 test images of random pixels."""
    rng = np.random.default_rng()
    folder.mkdir()
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
             y_train=np.arange(60) % 10, x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_test=np.arange(20) % 10)


def test_data_dir_is_accepted_where_some_cell_trains_on_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    tiny_mnist(tmp_path / "mnist")
    text = with_line("dataset", 'data_dir = "mnist"', BASE + '\n[sweep]\n"dataset.name" = ["mnist", "iris"]\n')
    study = load_study(write(tmp_path / "study.toml", text))
    assert [study.cell(flat).dataset["name"] for flat in range(2)] == ["mnist", "iris"]
    assert [p for p, _ in study.inputs] == [str((tmp_path / "mnist" / "mnist.npz").resolve())]


@pytest.mark.parametrize("model, key, unit, long_name", [
    ("stt_compact", "r_p", "ohm", "parallel-state resistance"), ("macrospin", "temperature", "K", ""),
    ("macrospin", "h_ext", "A/m", ""), ("macrospin", "table_points", "1", ""), ("macrospin", "eta_form", "1", ""),
    ("macrospin", "k_u", "J/m^3", "uniaxial anisotropy energy density along easy_axis")])
def test_a_swept_model_parameter_or_setting_carries_its_unit(tmp_path, model, key, unit, long_name):
    """... and a parameter its description as its long name (a setting has none)."""
    values = {"r_p": "[800.0, 1200.0]", "temperature": "[0.0, 300.0]", "h_ext": '["0,8e3,0", "0,9e3,0"]',
              "table_points": "[16, 24]", "eta_form": '["constant", "slonczewski"]', "k_u": "[1e4, 3e4]"}[key]
    text = BASE + f'\n[model]\nname = "{model}"\n\n[sweep]\n"model.params.{key}" = {values}\n'
    (axis,) = load_study(write(tmp_path / "s.toml", text)).axes
    assert axis.key == f"model.params.{key}" and axis.units == unit and axis.long_name == long_name


def test_every_sweepable_key_is_named_for_the_figures():
    from spingpu.studies.spec import KEY_NAMES, SWEEPABLE

    assert set(KEY_NAMES) == SWEEPABLE
    assert all(isinstance(name, str) and name and name not in SWEEPABLE for name in KEY_NAMES.values())


def test_a_byte_order_mark_is_read_past_and_a_huge_integer_is_one_line(tmp_path):
    """Some editors start a UTF-8 file with a byte-order mark: the study reads as without it. An
    integer of more digits than Python reads from text is a one-line error, not a traceback."""
    plain = load_study(write(tmp_path / "plain.toml", BASE))
    marked = tmp_path / "marked.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_study(marked).digest == plain.digest
    huge = write(tmp_path / "huge.toml", BASE.replace("networks = 2", "networks = " + "9" * 5000))
    with pytest.raises(ConfigError) as err:
        load_study(huge)
    assert str(err.value) == f"{huge}: not valid TOML: an integer of more than 4300 digits"


def test_test_fraction_is_refused_where_every_cell_trains_on_mnist(tmp_path, monkeypatch):
    """mnist's test split is the official test set: a test_fraction, whatever its value (the
    default 0.2 too), does nothing there and is refused; a sweep where another dataset reads it
    takes it."""
    monkeypatch.delenv("SPINGPU_DATA", raising=False)
    tiny_mnist(tmp_path / "mnist")
    mnist = BASE.replace('name = "iris"', 'name = "mnist"\ndata_dir = "mnist"')
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path / "a.toml", with_line("dataset", "test_fraction = 0.5", mnist)))
    assert str(err.value) == (f"{tmp_path / 'a.toml'}: dataset.test_fraction: mnist's test split is its official "
                              "10,000 images, so test_fraction has no effect; remove it")
    with pytest.raises(ConfigError, match="so test_fraction has no effect; remove it"):
        load_study(write(tmp_path / "b.toml", with_line("dataset", "test_fraction = 0.2", mnist)))
    swept = with_line("dataset", "test_fraction = 0.5", mnist + '\n[sweep]\n"dataset.name" = ["mnist", "iris"]\n')
    assert load_study(write(tmp_path / "c.toml", swept)).n_cells == 2


def test_a_csv_name_in_capitals_or_with_spaces_is_taken_from_the_study_folder(tmp_path, monkeypatch):
    """load_dataset reads ' CSV: PATH ' as csv:PATH, so the study resolves and hashes it alike."""
    rng = np.random.default_rng()
    table = write_table(tmp_path / "study" / "t.csv", rng)
    monkeypatch.chdir(tmp_path)  # not the study's folder
    study = load_study(write(tmp_path / "study" / "s.toml", BASE.replace('"iris"', '" CSV: t.csv "')))
    assert study.data["dataset"]["name"] == f"csv:{table.resolve()}"
    assert [p for p, _ in study.inputs] == [str(table.resolve())]


def test_a_home_relative_path_is_the_users_home(tmp_path, monkeypatch):
    rng = np.random.default_rng()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    table = write_table(tmp_path / "home" / "t.csv", rng)
    study = load_study(write(tmp_path / "study" / "s.toml", BASE.replace('"iris"', '"csv:~/t.csv"')))
    assert study.data["dataset"]["name"] == f"csv:{table}"
    assert [p for p, _ in study.inputs] == [str(table.resolve())]


@pytest.mark.filterwarnings("ignore:model.iv_csv. set to")  # set and swept: warned of (tests/test_studies.py)
def test_a_data_file_path_that_a_sweep_replaces_does_not_tie_the_digest_to_the_folder(tmp_path):
    """iv_csv in [model] is replaced by the swept iv_csv in every cell, so no cell reads it: its
    place is not part of the digest either."""
    rng = np.random.default_rng()
    for name in ("iv.csv", "a.csv", "b.csv"):
        write_iv(tmp_path / "a" / name, rng)
    text = BASE + '\n[model]\nname = "tabulated"\niv_csv = "iv.csv"\n\n[sweep]\n"model.iv_csv" = ["a.csv", "b.csv"]\n'
    study = load_study(write(tmp_path / "a" / "study.toml", text))
    assert [Path(p).name for p, _ in study.inputs] == ["a.csv", "b.csv"]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert load_study(tmp_path / "b" / "study.toml").digest == study.digest
    write_iv(tmp_path / "b" / "b.csv", rng)
    assert load_study(tmp_path / "b" / "study.toml").digest != study.digest


@pytest.mark.parametrize("path", [3, None, ["study.toml"]])
def test_load_study_of_what_is_not_a_path_is_one_line(path):
    with pytest.raises(ConfigError, match=rf"^study: expected the path of a study .toml file, got {re.escape(repr(path))}$"):
        load_study(path)


def test_spaced_sweep_values_are_the_decimals_a_user_types(tmp_path):
    """numpy's logspace(-6, -4, 5) holds 9.999999999999999e-06 for 1e-05; the study's axis holds
    1e-05, so that ds.sel(delta_i=1e-5) finds it. Random spans: every value within 15 digits of numpy's."""
    text = BASE + ('\n[sweep]\n"neuron.delta_i" = {logspace = [-6, -4, 5]}\n'
                   '"training.lr" = {linspace = [0.1, 0.4, 4]}\n')
    delta_i, lr = load_study(write(tmp_path / "s.toml", text)).axes
    assert delta_i.values == (1e-06, 3.16227766016838e-06, 1e-05, 3.16227766016838e-05, 1e-04)
    assert lr.values == (0.1, 0.2, 0.3, 0.4)  # numpy: 0.30000000000000004
    rng = np.random.default_rng()
    start, stop = sorted(float(v) for v in rng.uniform(-8, -2, 2))
    n = int(rng.integers(2, 40))
    text = BASE + f'\n[sweep]\n"neuron.delta_i" = {{logspace = [{start!r}, {stop!r}, {n}]}}\n'
    (axis,) = load_study(write(tmp_path / "r.toml", text)).axes
    np.testing.assert_allclose(axis.values, np.logspace(start, stop, n), rtol=1e-14, atol=0)
    assert all(float(f"{v:.15g}") == v for v in axis.values)
    from spingpu.studies.spec import _spaced  # at the top of the float range, rounding would give inf

    assert _spaced("s.toml", "sweep.x", "linspace", [0.0, 1.7976931348623157e308, 2]) == (0.0, 1.7976931348623157e308)


def test_resuming_a_store_whose_sweep_values_differ_is_refused_in_one_line(tmp_path):
    """A store written before spaced values were rounded holds 9.999999999999999e-06 where the study
    now has 1e-05: resuming would label its finished cells with the other value."""
    import zarr

    from spingpu.studies.store import create_store

    study_path = write(tmp_path / "s.toml", BASE + '\n[sweep]\n"neuron.delta_i" = {logspace = [-6, -4, 3]}\n')
    study = load_study(study_path)
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    # what np.logspace(-6, -4, 3) gave on an AVX-512 machine (NumPy's SIMD pow; elsewhere it is 1e-05)
    zarr.open_array(str(out / "delta_i"), mode="r+")[:] = [1e-06, 9.999999999999999e-06, 1e-04]
    zarr.consolidate_metadata(str(out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    rc, _, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.strip().endswith(f"resume: {out} holds delta_i = [1e-06, 9.999999999999999e-06, 0.0001] where the "
                                "study has [1e-06, 1e-05, 0.0001]: resuming would label its results with the "
                                "other values; use another --out or --overwrite"), err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_resuming_with_the_sweep_keys_in_another_order_is_refused(tmp_path):
    """The digest reads the tables with sorted keys, so a study file listing its [sweep] keys in
    another order matched the store's; its cells are numbered in that order, and resuming wrote
    (oracle, 0.0)'s networks into (fd_forward, 0.3) (found by a review). It is refused, in one line."""
    from spingpu.studies.store import create_store

    lines = ['"training.grad_mode" = ["fd_forward", "oracle"]', '"variability.sigma_d2d" = [0.0, 0.3]']
    first = write(tmp_path / "a" / "s.toml", BASE + "\n[sweep]\n" + "\n".join(lines) + "\n")
    swapped = write(tmp_path / "b" / "s.toml", BASE + "\n[sweep]\n" + "\n".join(lines[::-1]) + "\n")
    study = load_study(first)
    assert load_study(swapped).digest == study.digest
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    rc, _, err = run_main(["run", str(swapped), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.strip().endswith(f"resume: {out} has its sweep axes in the order (grad_mode, sigma_d2d) and the study "
                                "in the order (sigma_d2d, grad_mode): resuming would store results in other cells; "
                                "list the study's [sweep] keys in the store's order, or use another --out or "
                                "--overwrite"), err
    rc, printed, err = run_main(["run", str(first), "--out", str(out), "--resume", *FAST])
    assert rc == 0, err


def test_a_study_whose_description_changed_resumes_its_store(tmp_path):
    """The description describes; it determines no number: a store resumes after it is edited
    (it was refused, naming it), and a store made when the digest still counted it resumes too."""
    import zarr

    from spingpu.studies.store import STORE_MARK, create_store

    text = 'name = "tiny"\ndescription = "small"\n' + BASE
    study_path = write(tmp_path / "study.toml", text)
    study = load_study(study_path)
    out = tmp_path / "r.zarr"
    create_store(out, study, study.networks, {"backend": "numpy", "device": "CPU",
                                              "spingpu_version": spingpu.__version__})
    store_every_task(out, study, study.networks)
    write(study_path, text.replace('"small"', '"changed: a longer description"'))
    assert load_study(study_path).digest == study.digest
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 0 and f"every task of {out} is stored; nothing to run" in printed, err
    write(study_path, text)
    zarr.open_group(str(out), mode="r+").attrs[STORE_MARK] = study._digest(study.data)  # as made before
    zarr.consolidate_metadata(str(out))
    rc, printed, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 0 and f"every task of {out} is stored; nothing to run" in printed, err
    write(study_path, text.replace("epochs = 2", "epochs = 3").replace('"small"', '"other"'))
    rc, _, err = run_main(["run", str(study_path), "--out", str(out), "--resume", *FAST])
    assert rc == 2 and "training.epochs = 2 in the store, 3 in the study" in err and "description =" not in err, err


def test_a_set_value_that_only_another_cells_settings_refuse_is_not_an_error(tmp_path):
    """[model] name = "stt_compact" with a macrospin parameter, and model.name swept to macrospin
    alone: every cell is a valid macrospin model, so the study loads (with the warning that the
    set name is replaced); a set name that is no model is refused."""
    text = ('name = "m"\n' + BASE + '\n[model]\nname = "stt_compact"\n[model.params]\nalpha = 0.02\n'
            '[sweep]\n"model.name" = ["macrospin"]\n')
    with pytest.warns(spingpu.UnusedSettingWarning, match="model.name: set to 'stt_compact' and swept"):
        assert load_study(write(tmp_path / "m.toml", text)).n_cells == 1
    with pytest.raises(spingpu.ConfigError, match=r"model.name: 'stt_compakt' \(did you mean 'stt_compact'\?\)"):
        load_study(write(tmp_path / "m.toml", text.replace('"stt_compact"', '"stt_compakt"')))


def test_split_seed_splits_the_data_and_the_studys_seed_the_rest(tmp_path):
    """dataset.split_seed splits every cell's data (sweepable); the study's seed still draws the
    chips and training; without split_seed the study's seed splits too."""
    from spingpu.studies.spec import load_cell_dataset

    rng = np.random.default_rng()
    seed, split_seed = (int(v) for v in rng.integers(0, 2**32, 2))
    text = BASE.replace("networks = 2", f"networks = 2\nseed = {seed}")
    fixed_split = text.replace('name = "iris"', f'name = "iris"\nsplit_seed = {split_seed}')
    fixed = load_study(write(tmp_path / "a.toml", fixed_split))
    swept = load_study(write(tmp_path / "b.toml", text + f'\n[sweep]\n"dataset.split_seed" = [{split_seed}, {seed}]\n'))
    plain = load_study(write(tmp_path / "c.toml", text))
    digest = {k: spingpu.load_dataset("iris", seed=k).sha256 for k in (seed, split_seed)}
    assert digest[seed] != digest[split_seed]
    assert [ax.dim for ax in swept.axes] == ["split_seed"]
    for study, flat, split in ((fixed, 0, split_seed), (swept, 0, split_seed), (swept, 1, seed), (plain, 0, seed)):
        cell = study.cell(flat)
        assert load_cell_dataset(cell.dataset, study.seed).sha256 == digest[split], (study.name, flat)
        assert cell.config.seed == seed
    assert fixed.digest != plain.digest


@pytest.mark.parametrize("value, problem", [("-1", "-1 is out of range; allowed: 0 <= value <= 18446744073709551615"),
                                            ("1.5", "expected an integer, got 1.5")])
def test_a_bad_split_seed_is_one_line_naming_it(tmp_path, value, problem):
    study = write(tmp_path / "s.toml", BASE.replace('name = "iris"', f'name = "iris"\nsplit_seed = {value}'))
    with pytest.raises(ConfigError) as err:
        load_study(study)
    assert str(err.value) == f"{study}: dataset.split_seed: {problem}"


MODELS_STUDY = BASE + """
[model]
iv_csv = "iv.csv"
[model.params]
i_c = {i_c}

[sweep]
"model.name" = [{names}]
"""


def test_cells_of_a_model_sweep_take_the_model_settings_their_model_has(tmp_path):
    """A measured curve beside the compact model with its own i_c, in one study: each cell's model
    takes what is its own; one that no cell's model takes is refused, naming it."""
    rng = np.random.default_rng()
    i_c = float(rng.uniform(5e-5, 2e-4))
    current = np.linspace(-1e-3, 1e-3, 11)
    np.savetxt(tmp_path / "iv.csv", np.stack([current, 0.4 * np.tanh(current / 4e-4)], 1), delimiter=",",
               header="current,voltage", comments="")
    study = load_study(write(tmp_path / "s.toml", MODELS_STUDY.format(i_c=i_c, names='"stt_compact", "tabulated"')))
    compact, tabulated = (study.cell(flat).model for flat in range(2))
    assert compact.nominal[compact.parameter_names.index("i_c")] == i_c
    assert compact.nominal[compact.parameter_names.index("r_p")] == spingpu.get_model("stt_compact").nominal[0]
    assert np.array_equal(tabulated.table[0], current)  # the curve of iv.csv
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path / "b.toml", MODELS_STUDY.format(i_c=i_c, names='"stt_compact", "macrospin"')))
    assert str(err.value) == (f"{tmp_path / 'b.toml'}: model.iv_csv: a measured curve is only used by the 'tabulated' "
                              "model, and no cell uses it (model.name: 'macrospin', 'stt_compact'); remove it")
    text = MODELS_STUDY.format(i_c=i_c, names='"tabulated", "macrospin"')
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path / "c.toml", text))
    assert str(err.value) == (f"{tmp_path / 'c.toml'}: model.params.i_c: not a parameter of any model the cells use "
                              "(did you mean 'i_scale'?); allowed: macrospin: alpha, area, beta_fl, k_u, ms, r_p, "
                              "spin_polarization, stt_lambda, t_free, tmr0, v_h; tabulated: i_scale, v_offset, v_scale")


def test_cells_of_a_model_sweep_take_the_spreads_and_correlations_of_their_parameters(tmp_path):
    text = BASE + """
[variability]
sigma_d2d = 0.05
[variability.per_parameter]
i_c = [0.0, 0.2, 0.0]
[variability.correlation]
"r_p,tmr0" = 0.5
{extra}
[sweep]
"model.name" = ["stt_compact", "macrospin"]
"""
    study = load_study(write(tmp_path / "s.toml", text.format(extra="")))
    compact, macrospin = (study.cell(flat) for flat in range(2))
    i_c = compact.model.parameter_names.index("i_c")
    assert compact.config.variability.level_sigmas(compact.model)[1, i_c] == 0.2
    assert "i_c" not in macrospin.config.variability.per_parameter
    for cell in (compact, macrospin):
        names = cell.model.parameter_names
        corr = cell.config.variability.cholesky(cell.model) @ cell.config.variability.cholesky(cell.model).T
        assert corr[names.index("r_p"), names.index("tmr0")] == pytest.approx(0.5)
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path / "b.toml", text.format(extra='"i_c,alpha" = 0.2')))
    assert str(err.value).startswith(f"{tmp_path / 'b.toml'}: variability.correlation.i_c,alpha: no model the cells "
                                     "use has both parameters; allowed: macrospin: alpha, ")
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path / "c.toml", text.format(extra="").replace("i_c = [", "i_cc = [")))
    assert str(err.value).startswith(f"{tmp_path / 'c.toml'}: variability.per_parameter.i_cc: not a parameter of any "
                                     "model the cells use (did you mean 'i_c'?); allowed: macrospin: ")


def test_mnist_cells_read_the_folder_spingpu_data_named_where_the_study_was_loaded(tmp_path, monkeypatch):
    """A worker's own SPINGPU_DATA (another copy, or none) is not read: its cells take the loading
    process's folder, whose files the study's inputs hashed (a worker's copy trained other numbers)."""
    import pickle

    from spingpu.studies.spec import load_cell_dataset

    tiny_mnist(tmp_path / "here")
    tiny_mnist(tmp_path / "worker")  # other random images
    monkeypatch.setenv("SPINGPU_DATA", str(tmp_path / "here"))
    monkeypatch.chdir(tmp_path)
    study = load_study(write(tmp_path / "s.toml", BASE.replace('name = "iris"', 'name = "mnist"')))
    want = spingpu.load_dataset("mnist", seed=study.seed).sha256
    assert [p for p, _ in study.inputs] == [str((tmp_path / "here" / "mnist.npz").resolve())]
    for worker_env in (str(tmp_path / "worker"), None):
        if worker_env is None:
            monkeypatch.delenv("SPINGPU_DATA")
        else:
            monkeypatch.setenv("SPINGPU_DATA", worker_env)
        shipped = pickle.loads(pickle.dumps(study))
        assert load_cell_dataset(shipped.cell(0).dataset, shipped.seed).sha256 == want, worker_env
    assert spingpu.load_dataset("mnist", seed=0, data_dir=str(tmp_path / "worker")).sha256 != want


def test_the_model_and_dataset_axes_are_named_model_and_dataset(tmp_path):
    """``model.name`` and ``dataset.name`` give the dims ``model`` and ``dataset`` (``name`` would not
    say which name); a figure labels the model axis by what it is and its dim, the dataset axis once."""
    import xarray as xr

    from spingpu.plot.study import axis_label

    text = BASE + ('\n[readout]\nnoise_model = "johnson_shot"\n\n[sweep]\n"model.name" = ["stt_compact", "stt_compact_f32"]\n"dataset.name" = ["iris", "digits"]\n'
                   '"readout.temperature" = [300.0, 350.0]\n"neuron.delta_i" = [1e-5, 2e-5]\n')
    study = load_study(write(tmp_path / "s.toml", text))
    assert [a.dim for a in study.axes] == ["model", "dataset", "temperature", "delta_i"]
    ds = xr.Dataset(coords={a.dim: (a.dim, list(a.values), {"sweep_key": a.key, "units": a.units})
                            for a in study.axes})
    assert axis_label(ds, "model") == "junction model (model)"
    assert axis_label(ds, "dataset") == "dataset"
    assert axis_label(ds, "delta_i") == "finite-difference step dI (delta_i, A)"
