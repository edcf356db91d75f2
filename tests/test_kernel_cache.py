"""Kernels compiled once per machine (spingpu.kernel_cache): same numbers as the per-process
closures, loaded from disk by a second process, and a clean fallback where they cannot be."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spingpu import Readout, Variability, get_model, kernel_cache, register_model
from spingpu.devices import models
from spingpu.training import TrainConfig, train

CFG = TrainConfig(hidden=(5,), epochs=2, lr=0.05, seed=3, batch_size=40, grad_mode="fd_forward",
                  variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))


def test_generated_kernels_equal_the_closures(make_blobs, monkeypatch):
    data = make_blobs(8, 120, 4, 1)
    model = get_model("stt_compact")
    assert kernel_cache.generated_kernels(model.kernel_model) is not None
    cached = train(data, CFG, n_networks=3, model=model, backend="cpu")
    monkeypatch.setenv("SPINGPU_KERNEL_CACHE", "0")
    # a model object, and kernel form (what the kernels evaluate), that have compiled nothing yet
    fresh = dataclasses.replace(model, _compiled={}, kernel_form=dataclasses.replace(model.kernel_form, _compiled={}))
    closures = train(data, CFG, n_networks=3, model=fresh, backend="cpu")
    compiled = fresh.kernel_form._compiled
    assert compiled.get("generated") is None and "train_networks" in compiled
    for name in ("train_loss", "val_acc", "grad_cosine", "deriv_rel_err", "test_acc"):
        np.testing.assert_array_equal(cached[name].values, closures[name].values, err_msg=name)


TRAIN = """
from spingpu import from_arrays
from spingpu.training import TrainConfig, train
import numpy as np
import pytest
rng = np.random.default_rng(0)
y = np.arange(60) % 3
data = from_arrays(rng.normal(size=(60, 4)) + y[:, None], y, seed=0)
train(data, TrainConfig(hidden=(4,), epochs=1), n_networks=2, backend="cpu")
"""
COUNT = """
from spingpu import get_model
from spingpu.training.fused_engine import fused_trainer
stats = fused_trainer(get_model("stt_compact")).stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_a_second_process_loads_the_compiled_trainer_from_disk(tmp_path):
    """A process that trains (this one) leaves the compiled trainer in the cache folder; a second
    process, given a copy of that folder, loads it instead of compiling."""
    import shutil

    exec(TRAIN, {})  # this test session's cache folder (tests/conftest.py): compiled here or by another test
    folder = tmp_path / "cache"
    shutil.copytree(kernel_cache.cache_dir(), folder)
    assert len(list(folder.glob("spingpu_kernels_stt_compact_prepared_*.py"))) == 1  # the kernels' form
    assert list(folder.glob("__pycache__/spingpu_kernels_stt_compact_prepared_*.train_networks-*.nbi"))
    env = dict(os.environ, SPINGPU_CACHE_DIR=str(folder))
    run = subprocess.run([sys.executable, "-c", TRAIN + COUNT], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1", "0"]  # loaded, not compiled


def test_models_without_an_importable_scalar_use_the_closures():
    saved = dict(models._REGISTRY)
    try:
        def voltage(current, r):
            return r * current

        model = register_model("ohmic_cache_test", voltage,
                               [models.Parameter("r", 1e3, "ohm", "", low=0.0, low_open=True)])
        assert kernel_cache.module_source(model) is None
        assert kernel_cache.generated_kernels(model) is None
    finally:
        models._REGISTRY.clear()
        models._REGISTRY.update(saved)


def test_an_unusable_cache_folder_falls_back_to_the_closures(tmp_path, monkeypatch):
    currents = np.linspace(-3e-4, 3e-4, 7)
    generated = get_model("stt_compact").iv(currents)  # through the generated module of the session's cache
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SPINGPU_CACHE_DIR", str(blocker / "cache"))
    for name in [n for n in sys.modules if n.startswith("spingpu_kernels_")]:  # as in a fresh process
        monkeypatch.delitem(sys.modules, name)
    fresh = dataclasses.replace(get_model("stt_compact"), _compiled={})
    assert kernel_cache.generated_kernels(fresh) is None
    np.testing.assert_array_equal(fresh.iv(currents), generated)  # the closures give the same numbers
    assert "iv_kernel" in fresh._compiled


def test_threads_asking_at_once_build_the_kernels_once(tmp_path, monkeypatch):
    """A Dask worker runs tasks in threads: the first tasks of a fresh worker ask for the same
    model's kernels together. They must get one module, built once (two builds at a time crashed
    in CPython's ast.parse: "AST constructor recursion depth mismatch")."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("SPINGPU_CACHE_DIR", str(tmp_path))
    builds, source = [], kernel_cache.module_source

    def slow_source(model):  # widen the window in which a second thread could start a build
        builds.append(threading.get_ident())
        time.sleep(0.3)
        return source(model)

    monkeypatch.setattr(kernel_cache, "module_source", slow_source)
    fresh = dataclasses.replace(get_model("stt_compact"), _compiled={})
    start = threading.Barrier(4)

    def ask(_):
        start.wait()
        return kernel_cache.generated_kernels(fresh.with_nominal(r_p=900.0))  # copies share the kernels

    with ThreadPoolExecutor(4) as pool:
        modules = list(pool.map(ask, range(4)))
    assert len(builds) == 1
    assert modules[0] is not None and all(m is modules[0] for m in modules)


def test_generated_module_text_names_every_kernel():
    source = kernel_cache.module_source(get_model("stt_compact"))
    for name in ("point", "point_row", "pair_neuron", "fill_noise", "forward", "accuracy", "train_one",
                 "train_networks", "pair_layer"):
        assert f"\ndef {name}(" in source
    assert source.count("cache=True") == source.count("@numba.njit")
    compile(source, "generated", "exec")


def test_models_of_one_kind_share_the_generated_module():
    """Two measured curves are two objects of the tabulated model: one generated module (the
    curve is an argument at run time), imported once in the process."""
    current = np.linspace(-1e-4, 1e-4, 6)
    a = get_model("tabulated", iv_table=(current, 900.0 * current))
    b = get_model("tabulated", iv_table=(current, 1100.0 * current + 1e6 * current**3))
    assert a._compiled is not b._compiled
    assert kernel_cache.generated_kernels(a) is not None
    assert kernel_cache.generated_kernels(a) is kernel_cache.generated_kernels(b)


def test_numba_caches_in_the_temporary_folder_where_no_other_folder_is_writable(tmp_path, monkeypatch):
    """A read-only install run by a user without a writable home: Numba's locators (beside the
    sources, ~/.cache/numba) find no folder and cache=True would raise at import; spingpu then
    points Numba at a folder of the temporary directory, and a user's NUMBA_CACHE_DIR wins."""
    import importlib
    import tempfile

    import numba
    from numba.core import caching

    from spingpu import kernels

    for locator in (caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        monkeypatch.setattr(locator, "from_function", classmethod(lambda cls, py_func, path: None))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "")  # restored after the test (the fallback sets it)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = tmp_path / "cached_module.py"
    source.write_text("import numba\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="no locator available"):
        importlib.import_module("cached_module")
    kernels._cache_where_writable()
    folder = tmp_path / f"spingpu-numba-cache-{os.getuid()}"
    assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"] == str(folder)
    assert folder.stat().st_mode & 0o777 == 0o700  # private: Numba's index files are pickles
    sys.modules.pop("cached_module", None)
    assert importlib.import_module("cached_module").twice(21) == 42
    assert any(p.suffix == ".nbi" for p in (tmp_path / f"spingpu-numba-cache-{os.getuid()}").rglob("*"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "mine"))
    kernels._cache_where_writable()
    assert numba.config.CACHE_DIR == str(tmp_path / "mine")
    # a folder of that name that others may write to is not used: a fresh private one is
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    folder.chmod(0o777)
    kernels._cache_where_writable()
    fresh = Path(numba.config.CACHE_DIR)
    assert fresh != folder and fresh.parent == tmp_path and fresh.name.startswith("spingpu-numba-cache-")
    assert fresh.stat().st_mode & 0o777 == 0o700
