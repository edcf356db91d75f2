"""Test session set-up.

CUDA kernels run in Numba's CUDA simulator in this process (the variable must be set before
numba.cuda is first imported), its cuda.syncthreads() on a condition variable instead of a polling
loop (tests/simulator_barrier.py). PTX compilation needs the real numba-cuda, so those tests run
``spingpu info --check-kernels`` in a subprocess without the variable.
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
# Compiled kernels of this test session go to a fresh folder, not the user's cache
# (spingpu.kernel_cache): one folder for the whole session, made by pytest-xdist's controller (or
# the single process) and inherited by its worker processes, their subprocesses and Dask workers,
# so that a model's kernels compiled by one worker are loaded by the others (a fused trainer takes
# 20-40 s to compile, ~1 s to load).
# The controller removes the folder when it exits, after its workers have (~10 MB per session).
if "PYTEST_XDIST_WORKER" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SPINGPU_CACHE_DIR"] = tempfile.mkdtemp(prefix="spingpu-test-kernels-")
    atexit.register(shutil.rmtree, os.environ["SPINGPU_CACHE_DIR"], ignore_errors=True)
# Numba's own cache (cache=True in kernels/, beside the sources) checks only the changed function's
# file, not the files of the functions it calls: after an edit of kernels/philox.py, a caller in
# kernels/variability.py would load its old machine code. Where the kernels' source differs from the
# last session's, their cache files go first (once, by the session's controller).
if "PYTEST_XDIST_WORKER" not in os.environ and not os.environ.get("NUMBA_CACHE_DIR"):
    import hashlib
    from pathlib import Path

    _kernels = Path(__file__).resolve().parent.parent / "kernels"
    _digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_kernels.glob("*.py")))).hexdigest()
    _stamp = _kernels / "__pycache__" / "spingpu-sources.sha256"
    try:
        if not _stamp.is_file() or _stamp.read_text() != _digest:
            for _cached in _stamp.parent.glob("*.nb[ic]"):
                _cached.unlink()
            _stamp.parent.mkdir(exist_ok=True)
            _stamp.write_text(_digest)
    except OSError:  # a read-only checkout: Numba caches elsewhere (spingpu.kernel_cache)
        pass

import numba  # noqa: E402

numba.config.reload_config()
assert numba.config.ENABLE_CUDASIM, "the CUDA simulator must be on before numba.cuda is imported"


import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import simulator_barrier  # noqa: E402

simulator_barrier.install()

# Tests draw fresh random inputs: np.random.default_rng() without a seed. Each such generator's seed
# is recorded, and the report of a test that fails lists them: SPINGPU_TEST_SEEDS=S1,S2,... with the
# test run alone (-n 0 -k NAME) gives its generators those seeds, in order, to reproduce the failure.
FRESH_SEEDS = []  # of the running test (and of the fixtures its set-up made)
_replay = [int(s) for s in os.environ.get("SPINGPU_TEST_SEEDS", "").split(",") if s.strip()]
_default_rng = np.random.default_rng


def _default_rng_recorded(seed=None):
    if seed is None:
        seed = _replay.pop(0) if _replay else int(np.random.SeedSequence().entropy)
        FRESH_SEEDS.append(seed)
    return _default_rng(seed)


np.random.default_rng = _default_rng_recorded


def pytest_runtest_logstart(nodeid, location):
    FRESH_SEEDS.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed and FRESH_SEEDS:
        report.sections.append(("fresh random seeds", "SPINGPU_TEST_SEEDS=" + ",".join(map(str, FRESH_SEEDS))))


@pytest.fixture
def fragile_model():
    """r I with NaN above a threshold resistance: networks with such a junction diverge.
    Registered for the test, removed afterwards."""
    from spingpu import Parameter, register_model
    from spingpu.devices import models

    saved = dict(models._REGISTRY)

    def voltage(current, r, r_max):
        return r * current if r < r_max else math.nan

    def dvdi(current, r, r_max):
        return r if r < r_max else math.nan

    model = register_model("fragile_ohmic", voltage, [Parameter("r", 1000.0, "ohm", "", low=0.0, low_open=True),
                                                      Parameter("r_max", 1800.0, "ohm", "", low=0.0, low_open=True)],
                           dvdi=dvdi)
    yield model
    models._REGISTRY.clear()
    models._REGISTRY.update(saved)


@pytest.fixture
def models_restored():
    """The device model registry and the model files run (spingpu.devices.model_files) as they
    were before the test: a model it registers does not reach the lists of later tests."""
    from spingpu.devices import model_files, models

    saved, run = dict(models._REGISTRY), dict(model_files._RUN)
    yield
    models._REGISTRY.clear()
    models._REGISTRY.update(saved)
    model_files._RUN.clear()
    model_files._RUN.update(run)


def gaussian_blobs(seed, n_samples, n_features, split_seed, n_classes=3):
    """A small classification Dataset: Gaussian clusters around random centres."""
    import numpy as np

    from spingpu import from_arrays

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (n_classes, n_features))
    y = rng.integers(0, n_classes, n_samples)
    x = centres[y] + rng.normal(0, 1.0, (n_samples, n_features))
    return from_arrays(x, y, name="blobs", seed=split_seed)


@pytest.fixture(scope="session")
def compiler_python():
    """``compiler_python(*args, timeout=600)``: ``python *args`` in a process of its own with the
    real numba-cuda (the compiler, not the simulator: NUMBA_ENABLE_CUDASIM unset), its output
    captured as text; the CompletedProcess. Skips the test where numba-cuda is not installed."""
    import subprocess
    import sys

    pytest.importorskip("numba_cuda")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}

    def run(*args, timeout=600):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def make_blobs():
    """``make_blobs(seed, n_samples, n_features, split_seed)``: see :func:`gaussian_blobs`."""
    return gaussian_blobs
