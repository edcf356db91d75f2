"""The installed package holds every subpackage of the source tree, and imports stay light."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"spingpu.kernels"} | {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "spingpu").rglob("__init__.py")
        if "kernels" not in init.parts}
    assert found == listed


def test_import_spingpu_is_light():
    code = ("import sys, spingpu; heavy = [m for m in ('dask', 'distributed', 'zarr', 'cupy', 'matplotlib', "
            "'xarray', 'sklearn', 'numba.cuda') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_spingpu_is_the_command():
    """``python -m spingpu`` runs the ``spingpu`` command: its exit status and its one-line errors."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "spingpu", "--version"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("spingpu "), (ok.stdout, ok.stderr)
    bad = subprocess.run([sys.executable, "-m", "spingpu", "train", "--networks", "0"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "networks" in bad.stderr, bad.stderr


def test_sources_pass_pyflakes():
    """No unused import or variable, undefined name, or test shadowed by a later one of its name
    (pytest would silently run only the last)."""
    import io

    from pyflakes.api import checkRecursive
    from pyflakes.reporter import Reporter

    out, err = io.StringIO(), io.StringIO()
    paths = [str(ROOT / d) for d in ("spingpu", "kernels", "tests", "benchmarks")]
    checkRecursive(paths, Reporter(out, err))
    assert (out.getvalue(), err.getvalue()) == ("", "")
