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


def store_every_task(path, study, networks_per_task):
    """Write every task of a store made with ``create_store`` with made-up numbers (finite, no
    network diverged) and mark it done, as a finished run leaves it."""
    import numpy as np

    from spingpu.studies.store import mark_done, task_count, write_task
    from spingpu.training.results import VARIABLES

    for cell in range(study.n_cells):
        epochs = study.cell(cell).config.epochs
        for task in range(task_count(study, networks_per_task)):
            n = min(networks_per_task, study.networks - task * networks_per_task)
            metrics = {name: np.full((n, epochs) if "epoch" in dims else n, 0.5)
                       for name, (dims, _, _) in VARIABLES.items()}
            metrics["diverged"] = np.zeros(n, dtype=bool)
            write_task(path, study, cell, task * networks_per_task, metrics)
            mark_done(path, study, cell, task)
