"""A study started at a script's top level, which Dask's spawned local workers would import and start again:
refused in one line before anything starts (spingpu.studies.script_guard)."""

import subprocess
import sys
import textwrap

import pytest

from spingpu.studies.script_guard import guarded
from studyutil import BASE

CHECK = "from spingpu.studies.script_guard import check_main_guard\n"


def python(cwd, *args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("source, line, inside", [
    ("run()\n", 1, False),
    ('if __name__ == "__main__":\n    run()\n', 2, True),
    ("if '__main__' == __name__:\n    x = 1\n\n    run()\n", 4, True),
    ('if __name__ == "__main__":\n    pass\nrun()\n', 3, False),
    ('if __name__ != "__main__":\n    run()\n', 2, False),
    ('import sys\nif sys.argv:\n    if __name__ == "__main__":\n        run()\n', 4, True),
    ('import sys\nif __name__ == "__main__" and len(sys.argv) > 0:\n    run()\n', 3, True),
    ('import sys\nif __name__ == "__main__" or sys.argv:\n    run()\n', 3, False),
    ("def f(:\n", 1, None),
])
def test_a_line_is_guarded_inside_a_main_block_only(source, line, inside):
    assert guarded(source, line) is inside


def test_a_top_level_call_is_refused_and_a_guarded_one_or_a_function_of_it_is_not(tmp_path):
    (tmp_path / "script.py").write_text(CHECK + textwrap.dedent("""\
        def start():
            check_main_guard()
        if __name__ == "__main__":
            start()
            print("guarded: fine")
        start()
        """))
    proc = python(tmp_path, "script.py")
    assert proc.returncode == 1 and proc.stdout == "guarded: fine\n"
    assert proc.stderr.splitlines()[-1] == (
        f"spingpu.errors.ConfigError: run_study: called at the top level of {tmp_path / 'script.py'} (line 7), which "
        "each Dask worker process imports again as it starts, and would start the study again; call it under "
        'if __name__ == "__main__": (or run the study with spingpu run STUDY.toml)')
    # not re-imported by spawned workers: python -c, a package's __main__ (python -m), forked workers
    assert python(tmp_path, "-c", CHECK + "check_main_guard()").returncode == 0
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(CHECK + "check_main_guard()\n")
    assert python(tmp_path, "-m", "pkg").returncode == 0
    (tmp_path / "forked.py").write_text(
        CHECK + 'import dask\ndask.config.set({"distributed.worker.multiprocessing-method": "fork"})\ncheck_main_guard()\n')
    assert python(tmp_path, "forked.py").returncode == 0


def test_run_study_at_a_scripts_top_level_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "s.toml").write_text(BASE)
    (tmp_path / "script.py").write_text(
        "import spingpu\nfrom spingpu.studies import RunOptions, run_study\n"
        'run_study(spingpu.load_study("s.toml"), RunOptions(out="results/s.zarr", workers=1))\n')
    proc = python(tmp_path, "script.py")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(
        f"spingpu.errors.ConfigError: run_study: called at the top level of {tmp_path / 'script.py'} (line 3)")
    assert "Nanny" not in proc.stderr and not (tmp_path / "results").exists()
