"""A study's own device models: a model file (``[model] module``, ``--model-file``) run once per
contents in a process, and registered models shipped to the Dask workers with each task, where
they neither replace the worker's models nor recompile per cell. Most tests run in a Python
process of their own: they register models under fixed names."""

import subprocess
import sys
import textwrap

import pytest
from studyutil import FakeFuture, FakeFutures, model_file

MODEL_FILE = model_file("softsat")
STUDY = 'name = "s"\nnetworks = 2\n[dataset]\nname = "iris"\n[model]\nname = "softsat"\nmodule = "{module}"\n'


def python(code, cwd):
    """Run ``code`` in a Python process of its own; its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_model_file_runs_once_per_contents_and_a_failed_edit_leaves_the_models_as_they_were(tmp_path):
    """v1 runs; an edit that fails leaves v1's model; v2 registers the name anew; v1 again is v1's
    model (these contents ran before); a copy of v2 elsewhere is v2's model, not run again; a model
    registered in the process before (not by a file) is kept when a file that would replace it
    fails."""
    path = tmp_path / "m.py"
    path.write_text(MODEL_FILE)
    out = python(f"""
        from pathlib import Path
        import spingpu
        from spingpu.devices.model_files import run_model_file
        path = {str(path)!r}
        good = Path(path).read_text()
        r_s = lambda: spingpu.get_model("softsat").nominal[0]
        run_model_file(path); print(r_s())
        Path(path).write_text(good + "\\nraise RuntimeError('oops')\\n")
        try:
            run_model_file(path)
        except spingpu.ConfigError as err:
            print(err)
        print(r_s())
        Path(path).write_text(good.replace("2000.0", "2500.0")); run_model_file(path); print(r_s())
        Path(path).write_text(good); run_model_file(path); print(r_s())
        Path({str(tmp_path / 'copy.py')!r}).write_text(good.replace("2000.0", "2500.0"))
        run_model_file({str(tmp_path / 'copy.py')!r}); print(r_s())
        spingpu.register_model("mine", voltage=lambda current, r: r * current, dvdi=lambda current, r: r + 0.0 * current,
                               parameters=[spingpu.Parameter("r", 900.0, "ohm", "r", low=0.0, low_open=True)])
        Path({str(tmp_path / 'bad.py')!r}).write_text("import spingpu\\nspingpu.register_model('mine', "
            "voltage=lambda current, r: r * current, dvdi=lambda current, r: r + 0.0 * current, replace=True, "
            "parameters=[spingpu.Parameter('r', 100.0, 'ohm', 'r', low=0.0, low_open=True)])\\nx = 1 / 0\\n")
        try:
            run_model_file({str(tmp_path / 'bad.py')!r})
        except spingpu.ConfigError as err:
            print(err)
        print(spingpu.get_model("mine").nominal[0])
    """, tmp_path)
    assert out.splitlines() == ["2000.0", f"model.module: {path} (line 12): RuntimeError: oops", "2000.0", "2500.0",
                                "2000.0", "2500.0",
                                f"model.module: {tmp_path / 'bad.py'} (line 3): ZeroDivisionError: division by zero",
                                "900.0"], out


def test_two_copies_of_a_study_folder_load_in_one_process_with_one_digest(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.py").write_text(MODEL_FILE)
        (tmp_path / name / "s.toml").write_text(STUDY.format(module="m.py"))
    out = python(f"""
        import spingpu
        a = spingpu.load_study({str(tmp_path / 'a' / 's.toml')!r})
        b = spingpu.load_study({str(tmp_path / 'b' / 's.toml')!r})
        print(a.digest == b.digest)
    """, tmp_path)
    assert out.strip() == "True"


def test_a_report_process_runs_the_model_file_named_through_a_link_again(tmp_path):
    """The store records the file's resolved path; a study naming it through a link (or ~ on a
    linked home folder) still finds it there."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (real / "m.py").write_text(MODEL_FILE)
    (real / "s.toml").write_text(STUDY.format(module=str(tmp_path / "link" / "m.py")))
    python(f"""
        import json, spingpu
        s = spingpu.load_study({str(real / 's.toml')!r})
        attrs = {{"study_name": "s", "study_data": json.dumps(s.data, sort_keys=True),
                 "input_files": json.dumps([list(i) for i in s.inputs]), "study_text": s.text}}
        open("attrs.json", "w").write(json.dumps(attrs))
    """, tmp_path)
    out = python("""
        import json
        from spingpu.studies.spec import stored_study
        study = stored_study(json.load(open("attrs.json")))
        print(study.cell(0).model.name)
    """, tmp_path)
    assert out.strip() == "softsat"


def test_a_stored_study_whose_model_file_is_gone_or_edited_names_the_file(tmp_path):
    """Where the report rebuilds a study whose model file has moved or changed since the run, the
    line that leaves out its junction figure names the file and why, not the unknown model alone."""
    (tmp_path / "m.py").write_text(MODEL_FILE)
    (tmp_path / "s.toml").write_text(STUDY.format(module=str(tmp_path / "m.py")))
    python(f"""
        import json, spingpu
        s = spingpu.load_study({str(tmp_path / 's.toml')!r})
        attrs = {{"study_name": "s", "study_data": json.dumps(s.data, sort_keys=True),
                 "input_files": json.dumps([list(i) for i in s.inputs]), "study_text": s.text}}
        open("attrs.json", "w").write(json.dumps(attrs))
    """, tmp_path)
    rebuild = """
        import json, types
        from spingpu.errors import ConfigError
        from spingpu.report import _devices_figure
        try:
            _devices_figure(types.SimpleNamespace(attrs=json.load(open("attrs.json"))))
        except ConfigError as err:
            print(err)
    """
    (tmp_path / "m.py").write_text(MODEL_FILE + "\n# edited\n")
    edited = python(rebuild, tmp_path).strip()
    (tmp_path / "m.py").unlink()
    missing = python(rebuild, tmp_path).strip()
    assert edited == (f"inputs: {tmp_path / 'm.py'} has changed since the study ran (its contents differ from those "
                      "the store recorded), so the figure would not show the junctions trained")
    assert missing.startswith(f"model.module: {tmp_path / 'm.py'} is missing, and the study's models come from it "
                              "(model.name: unknown device model 'softsat'"), missing


def test_a_worker_trains_the_shipped_model_and_keeps_its_own_registry(tmp_path):
    """A driver that replaced stt_compact (replace=True) ships it; the worker's cell is built with
    it, compiled once for all the cells (one copy per fingerprint), and the worker's own
    stt_compact is untouched: a later run that ships nothing trains the built-in one."""
    (tmp_path / "s.toml").write_text('name = "s"\nnetworks = 2\n[dataset]\nname = "iris"\n'
                                     '[sweep]\n"neuron.delta_i" = [5e-6, 2e-5]\n')
    python("""
        import pickle, spingpu
        from spingpu.devices.models import registered_models
        spingpu.register_model("stt_compact", voltage=lambda current, r: r * current,
                               dvdi=lambda current, r: r + 0.0 * current,
                               parameters=[spingpu.Parameter("r", 1000.0, "ohm", "r", low=0.0, low_open=True)],
                               replace=True)
        study = spingpu.load_study("s.toml")
        open("shipped.pkl", "wb").write(pickle.dumps((study, registered_models(study.model_names))))
    """, tmp_path)
    out = python("""
        import pickle
        from distributed.protocol.pickle import dumps, loads
        from spingpu.devices import get_model
        from spingpu.devices.models import shipped_models
        study, shipped = pickle.load(open("shipped.pkl", "rb"))
        first = study.cell(0, models=shipped_models(loads(dumps(shipped))))   # a task of cell 0 ...
        second = study.cell(1, models=shipped_models(loads(dumps(shipped))))  # ... one of cell 1
        print(first.model.parameter_names, first.model._compiled is second.model._compiled)
        print(get_model("stt_compact").parameter_names, study.cell(0, models=shipped_models(())).model.parameter_names)
    """, tmp_path)
    assert out.splitlines() == ["('r',) True", "('r_p', 'tmr0', 'v_h', 'theta0', 'dtheta', 'i_c') "
                                "('r_p', 'tmr0', 'v_h', 'theta0', 'dtheta', 'i_c')"], out


def test_an_edited_model_file_is_named_when_a_run_without_resume_is_refused(tmp_path):
    out = python(f"""
        import pathlib, spingpu
        from spingpu.studies import store
        base = pathlib.Path({str(tmp_path)!r})
        (base / "m.py").write_text({MODEL_FILE!r})
        (base / "s.toml").write_text({STUDY.format(module="m.py")!r})
        study = spingpu.load_study(base / "s.toml")
        store.create_store(str(base / "s.zarr"), study, 2, {{"spingpu_version": spingpu.__version__,
                           "backend": "numpy", "device": "CPU", "created": "now"}})
        (base / "m.py").write_text((base / "m.py").read_text().replace("2000.0", "2500.0"))
        try:
            store.check_existing(str(base / "s.zarr"), spingpu.load_study(base / "s.toml"), None, False, False)
        except spingpu.ConfigError as err:
            print(err)
    """, tmp_path)
    assert out.strip() == (f"out: {tmp_path / 's.zarr'} exists and was made from other contents of "
                           f"{(tmp_path / 'm.py').resolve()}; choose another --out, or --overwrite to replace it"), out


@pytest.mark.parametrize("caller", ["plain", "inside an except block"])
def test_a_ctrl_c_while_a_finished_run_closes_acts_whoever_calls_run_study(tmp_path, monkeypatch, caller):
    """A run that ended well and a Ctrl-C while its workers close: the stop acts once they are
    closed, also where run_study is called while the caller handles an exception of its own."""
    import signal

    from spingpu.studies import runner
    from spingpu.studies.spec import load_study

    (tmp_path / "s.toml").write_text('name = "s"\nnetworks = 2\n[dataset]\nname = "iris"\n[training]\nepochs = 1\n')
    study = load_study(tmp_path / "s.toml")
    closed = []

    class Client:
        def scheduler_info(self):
            return {"workers": {}}

        def close(self):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while the workers close
            closed.append(True)

    monkeypatch.setattr(runner, "_connect", lambda *args: (Client(), None))
    monkeypatch.setattr(runner, "_drive", lambda *args: None)  # the run ends well
    options = runner.RunOptions(out=str(tmp_path / "s.zarr"), backend="numpy", networks_per_task=1)
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            if caller == "plain":
                runner.run_study(study, options, progress=False, log=lambda text: None)
            else:
                try:
                    raise ValueError("an earlier attempt failed")
                except ValueError:
                    runner.run_study(study, options, progress=False, log=lambda text: None)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert closed == [True]


def test_the_source_digest_reads_modules_only(tmp_path, monkeypatch):
    """An editor's lock file (Emacs: '.#NAME.py', a link to nothing) or backup beside the sources
    of a checkout being edited is not read: the digest is that of the modules alone."""
    import shutil

    from spingpu import installation

    package = tmp_path / "spingpu"
    shutil.copytree(installation.PACKAGE, package, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(installation, "PACKAGE", package)
    clean = installation.source_digest.__wrapped__()
    (package / ".#runner.py").symlink_to("user@host.1234:1700000000")
    (package / "studies" / "runner.py~.py").write_text("backup")
    assert installation.source_digest.__wrapped__() == clean
    (package / "studies" / "runner.py").write_text((package / "studies" / "runner.py").read_text() + "\n# edited\n")
    assert installation.source_digest.__wrapped__() != clean


def test_a_task_of_an_older_spingpu_is_refused(tmp_path):
    """A worker whose train_task returns no identity (a spingpu before the check)."""
    from collections import deque

    from spingpu.studies import runner
    from spingpu.studies.spec import load_study

    (tmp_path / "s.toml").write_text('name = "s"\nnetworks = 2\n[dataset]\nname = "iris"\n')
    study = load_study(tmp_path / "s.toml")

    with pytest.raises(runner.TaskFailed, match="^a Dask worker runs an older spingpu, which does not say which "
                                                "sources it has, whose sources differ from this run's"):
        runner._collect(study, runner.RunOptions(out=str(tmp_path / "s.zarr")), 1, deque(), {}, None,
                        FakeFutures([FakeFuture("k", {"test_acc": [0.5], "warnings": []})]), {"k": (0, 0, 0, 1)}, submit=None)


def test_a_model_file_no_cell_uses_is_refused(tmp_path, models_restored):
    """[model] module whose models no cell names would do nothing: one line naming the file and
    what it registers; a sweep of model.name that includes one of them takes it."""
    import spingpu
    from spingpu.errors import ConfigError

    (tmp_path / "m.py").write_text(MODEL_FILE)
    unused = STUDY.format(module=str(tmp_path / "m.py")).replace('name = "softsat"\n', "")
    (tmp_path / "s.toml").write_text(unused)
    with pytest.raises(ConfigError) as caught:
        spingpu.load_study(tmp_path / "s.toml")
    assert str(caught.value) == (f"{tmp_path / 's.toml'}: model.module: {tmp_path / 'm.py'} registers 'softsat', and "
                                 "no cell uses it (model.name: 'stt_compact'): name one of its models in model.name "
                                 "(or its sweep), or remove model.module")
    (tmp_path / "s.toml").write_text(unused + '[sweep]\n"model.name" = ["stt_compact", "softsat"]\n')
    assert spingpu.load_study(tmp_path / "s.toml").model_names == ("stt_compact", "softsat")
