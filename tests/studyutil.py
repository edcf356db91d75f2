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


def model_file(name):
    """The text of a model file (``[model] module``, ``--model-file``) that registers ``name``:
    V = r_s i_s tanh(I / i_s), r_s 2000 ohm and i_s 200 uA nominal, with its exact dV/dI."""
    return f"""\
import math
import spingpu

spingpu.register_model(
    {name!r},
    voltage=lambda current, r_s, i_s: r_s * i_s * math.tanh(current / i_s),
    dvdi=lambda current, r_s, i_s: r_s / math.cosh(current / i_s) ** 2,
    parameters=[spingpu.Parameter("r_s", 2000.0, "ohm", "small-signal resistance", low=0.0, low_open=True),
                spingpu.Parameter("i_s", 2e-4, "A", "saturation current", low=0.0, low_open=True)],
)
"""


class FakeFuture:
    """A finished Dask task for ``runner._collect``: ``result()`` returns ``outcome``, or raises it
    where it is an exception; ``cancel()`` is recorded."""

    def __init__(self, key, outcome):
        self.key, self.outcome, self.cancelled = key, outcome, False

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


class FakeFutures(list):
    """Dask's as_completed over FakeFutures: they come back in order; ``futures`` lists them."""

    futures = property(lambda self: list(self))
