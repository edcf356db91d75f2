"""Helpers of the study tests: writing study files and running the CLI in this process."""

import contextlib
import io
from pathlib import Path

from spingpu.cli.main import main

FAST = ["--backend", "numpy", "--no-report"]  # the quickest engine, no report

# A tiny study: 2 networks of iris 4-3-3, 2 epochs.
BASE = """\
networks = 2

[dataset]
name = "iris"

[network]
hidden = [3]

[training]
epochs = 2
"""


def write(path, text):
    """Write ``text`` to ``path`` (making its folder); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_main(argv):
    """``spingpu`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_ok(argv):
    """``spingpu`` in this process, which must succeed; its stdout."""
    rc, out, err = run_main(argv)
    assert rc == 0, err[-3000:]
    return out
