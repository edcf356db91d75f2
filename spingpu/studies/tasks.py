"""The unit of work of a study, run on a Dask worker: train one chunk of one cell's networks."""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import numpy as np

from ..errors import SpingpuWarning, UnusedSettingWarning
from ..installation import identity
from ..training.results import VARIABLES, engine_code

_CELLS = {}  # per worker process: built cells and teachers' logits, reused by later tasks
_TEACHERS = {}


def train_task(study, cell_number, lo, hi, backend, threads, models=()):
    """Metrics (dict of arrays, VARIABLES' names) of networks lo .. hi - 1 of one cell, with
    ``teacher_test_acc`` (CELL_VARIABLES) for a distilled cell, the ``engine`` code, and the
    ``warnings`` (one-line texts of the SpingpuWarnings) the training gave, and ``spingpu``, which
    spingpu trained them (:func:`spingpu.installation.identity`). ``models``: the
    driver's registered models the study uses, (fingerprint, model) pairs
    (:func:`spingpu.devices.models.registered_models`): not this process's models of those names."""
    import numba
    from threadpoolctl import threadpool_limits

    from ..devices.models import shipped_models
    from ..training import teacher_logits, train

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    # a moved copy has the digest, not the paths; a model file edited between runs, its fingerprint
    key = (study.digest, study.path, cell_number, tuple(fingerprint for fingerprint, _ in models))
    if key not in _CELLS:  # the cell's model keeps its compiled kernels between tasks
        _CELLS[key] = study.cell(cell_number, models=shipped_models(models))
    cell = _CELLS[key]
    dataset = _dataset(json.dumps(cell.dataset, sort_keys=True), study.seed)
    teacher, extra = None, {}
    if cell.teacher is not None:
        tkey = (json.dumps(cell.dataset, sort_keys=True), study.seed, repr(cell.teacher))
        if tkey not in _TEACHERS:
            _TEACHERS[tkey] = teacher_logits(dataset, cell.teacher)
        teacher, extra["teacher_test_acc"] = _TEACHERS[tkey]
    # OpenMP pools only: the engines that call BLAS run it with one thread, and a BLAS limit set here
    # would reach into another task running concurrently in this worker (the limit is per process)
    # spingpu's warnings go back with the metrics, for the driver to say once (a worker's own stderr
    # would print them in Python's two-line form, over the progress bar, at every task); a cell may
    # not use a setting other cells of its sweep use, which the study checks study-wide
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpingpuWarning)
        warnings.simplefilter("ignore", UnusedSettingWarning)
        with threadpool_limits(threads, user_api="openmp"):
            results = train(dataset, cell.config, networks=np.arange(lo, hi), model=cell.model, backend=backend,
                            teacher_logits=teacher)
    for w in caught:
        if not issubclass(w.category, SpingpuWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    said = [str(w.message) for w in caught if issubclass(w.category, SpingpuWarning)]
    return {**{name: results[name].values for name in VARIABLES}, **extra, "engine": engine_code(results.attrs),
            "warnings": said, "spingpu": identity()}


@lru_cache(maxsize=4)
def _dataset(spec, seed):
    from .spec import load_cell_dataset

    return load_cell_dataset(json.loads(spec), seed)
