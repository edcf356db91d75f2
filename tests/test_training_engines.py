"""The fused CPU engine against the NumPy reference, chunking independence, divergence, results."""

import numpy as np
import pytest

from spingpu import Readout, Variability
from spingpu.training import PairNeuron, Schedule, TrainConfig, train

METRICS = ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err", "test_acc", "extrapolated_readings")


@pytest.fixture(scope="module")
def blobs(make_blobs):
    return make_blobs(41, 150, 5, 2)


def assert_same(a, b, rtol=1e-9, atol=1e-12):
    for name in METRICS:
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_array_equal(a.diverged.values, b.diverged.values)


CASES = {
    "fd_forward-noise-adam-full": dict(grad_mode="fd_forward", readout=Readout(read_noise=2e-3)),
    "fd_single-johnson-momentum-batch": dict(grad_mode="fd_single", optimizer="momentum", batch_size=32, lr=0.02,
                                             readout=Readout(noise_model="johnson_shot", temperature=300, bandwidth=1e9)),
    "fd_forward-johnson-bridge": dict(grad_mode="fd_forward", neuron=PairNeuron(readout="bridge", r_ref=900.0),
                                      readout=Readout(noise_model="johnson_shot", temperature=350, bandwidth=3e9)),
    "fd_symmetric-adc-dac-sgd-step": dict(grad_mode="fd_symmetric", optimizer="sgd", lr=0.2,
                                          lr_schedule=Schedule("step", every=2, gamma=0.5),
                                          readout=Readout(adc_bits=10, adc_range=(-1.5, 1.5), dac_bits=12,
                                                          dac_range=(-2e-3, 2e-3))),
    "model-bridge-cosine-decay": dict(grad_mode="model", lr_schedule=Schedule("cosine"), weight_decay=1e-3,
                                      neuron=PairNeuron(readout="bridge", r_ref=1200.0, i_bias=-30e-6)),
    "oracle-two-layers-exp": dict(grad_mode="oracle", hidden=(6, 5), lr_schedule=Schedule("exp", gamma=0.9),
                                  batch_size=50),
    "tanh": dict(grad_mode="tanh", hidden=(7, 4)),
    "relu": dict(grad_mode="relu", batch_size=40),
    "sigmoid": dict(grad_mode="sigmoid", optimizer="momentum"),
}


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # digital cases share MTJ settings
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_engine_equals_numpy_reference_in_float64(blobs, case):
    kw = dict(hidden=(6,), epochs=4, lr=0.05, seed=7, dtype="float64",
              variability=Variability(sigma_chip=0.03, sigma_d2d=0.1, sigma_pair=0.02))
    kw.update(CASES[case])
    cfg = TrainConfig(**kw)
    nets = np.array([0, 5, 9])
    ref = train(blobs, cfg, networks=nets, backend="numpy")
    fused = train(blobs, cfg, networks=nets, backend="cpu")
    assert_same(ref, fused)
    assert np.all(np.isfinite(fused.train_loss.values))


def test_float32_reference_is_close_to_fused(blobs):
    cfg = TrainConfig(hidden=(6,), epochs=5, lr=0.05, variability=Variability(sigma_d2d=0.1, sigma_pair=0.02),
                      readout=Readout(read_noise=1e-3))
    ref = train(blobs, cfg, n_networks=4, backend="numpy")  # float32 weights
    fused = train(blobs, cfg, n_networks=4, backend="cpu")
    # observed: 6e-8 (loss), 1e-8 (grad_cosine), 7e-7 (deriv_rel_err); accuracies equal
    for name in ("train_loss", "grad_cosine", "deriv_rel_err"):
        np.testing.assert_allclose(ref[name].values, fused[name].values, rtol=1e-5, err_msg=name)
    for name in ("train_acc", "val_acc", "test_acc"):
        np.testing.assert_array_equal(ref[name].values, fused[name].values, err_msg=name)


@pytest.mark.parametrize("backend, width", [("cpu", 5), ("numpy", 5), ("cpu", 70)], ids=["fused", "numpy", "batched"])
def test_network_alone_equals_network_among_1000(blobs, backend, width):
    cfg = TrainConfig(hidden=(width,), epochs=2, lr=0.05, batch_size=64, seed=11,
                      variability=Variability(sigma_chip=0.05, sigma_d2d=0.1, sigma_pair=0.02),
                      readout=Readout(read_noise=1e-3))
    many = train(blobs, cfg, n_networks=1000, backend=backend)
    for k in (0, 637, 999):
        alone = train(blobs, cfg, networks=[k], backend=backend)
        for name in METRICS:
            a, b = alone[name].values[0], many[name].sel(network=k).values
            np.testing.assert_array_equal(a, b, err_msg=name)  # bit for bit
    # and the networks really differ from each other
    assert np.unique(many.train_loss.values[:, -1]).size > 900


def test_results_of_networks_beyond_2_to_the_31_round_trip_through_netcdf(blobs, tmp_path):
    """Network indices reach 2**32 - 1; ``to_netcdf`` with the default engine (netCDF4, a
    dependency: netCDF3 has no 64-bit integers) keeps them and every number."""
    import xarray as xr

    k = int(np.random.default_rng().integers(2**31, 2**32))
    cfg = TrainConfig(hidden=(3,), epochs=2, seed=int(np.random.default_rng().integers(2**63)))
    results = train(blobs, cfg, networks=[k, 5], backend="cpu")
    results.to_netcdf(tmp_path / "r.nc")
    with xr.open_dataset(tmp_path / "r.nc") as back:
        assert back.network.values.tolist() == [k, 5]
        for name in METRICS:
            np.testing.assert_array_equal(back[name].values, results[name].values, err_msg=name)
    alone = train(blobs, cfg, networks=[k], backend="cpu")  # and network k is itself among others
    np.testing.assert_array_equal(alone.train_loss.values[0], results.train_loss.sel(network=k).values)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_divergence_is_isolated(blobs, fragile_model, backend):
    var = Variability(per_parameter={"r": (0.0, 0.3, 0.0), "r_max": (0.0, 0.0, 0.0)})
    cfg = TrainConfig(hidden=(8,), grad_mode="oracle", epochs=3, lr=0.05, variability=var,
                      neuron=PairNeuron(v_scale=5.0))
    fragile = train(blobs, cfg, n_networks=40, model=fragile_model, backend=backend)
    robust = train(blobs, cfg, n_networks=40, model=fragile_model.with_nominal(r_max=1e9), backend=backend)
    div = fragile.diverged.values
    assert 5 <= div.sum() <= 35  # some, not all: ~2 % of junctions exceed r_max, 16 per network
    assert not robust.diverged.values.any()
    for name in METRICS:
        a, b = fragile[name].values, robust[name].values
        assert np.all(np.isnan(a[div]))
        np.testing.assert_array_equal(a[~div], b[~div], err_msg=name)


def test_a_gradient_beyond_float32_flags_a_network_whose_loss_is_finite(blobs):
    """A junction whose V(I) is finite but whose dV/dI is 1e300 (oracle mode uses it): the loss
    stays finite and the gradient does not. Every engine flags the network at that step, from the
    gradient alone, in its first epoch; the others train on as they would without it."""
    from spingpu import Parameter, register_model
    from spingpu.devices import models

    saved = dict(models._REGISTRY)
    try:
        steep = register_model("steep_ohmic", lambda current, r, r_max: r * current,
                               [Parameter("r", 1000.0, "ohm", "", low=0.0, low_open=True),
                                Parameter("r_max", 1800.0, "ohm", "", low=0.0, low_open=True)],
                               dvdi=lambda current, r, r_max: r if r < r_max else 1e300, check_derivative=False)
        var = Variability(per_parameter={"r": (0.0, 0.3, 0.0), "r_max": (0.0, 0.0, 0.0)})
        cfg = TrainConfig(hidden=(8,), grad_mode="oracle", epochs=3, lr=0.05, variability=var,
                          neuron=PairNeuron(v_scale=5.0))
        runs, robust = {}, {}
        for backend in ("numpy", "cpu"):
            runs[backend] = train(blobs, cfg, n_networks=40, model=steep, backend=backend)
            robust[backend] = train(blobs, cfg, n_networks=40, model=steep.with_nominal(r_max=1e9), backend=backend)
    finally:
        models._REGISTRY.clear()
        models._REGISTRY.update(saved)
    div = runs["numpy"].diverged.values
    assert 5 <= div.sum() <= 35
    for backend, run in runs.items():
        assert not robust[backend].diverged.values.any()
        np.testing.assert_array_equal(run.diverged.values, div, err_msg=backend)
        assert np.isnan(run.train_loss.values[div]).all(), backend  # from epoch 1: flagged at its first step
        np.testing.assert_array_equal(run.train_loss.values[~div], robust[backend].train_loss.values[~div],
                                      err_msg=backend)


@pytest.mark.parametrize("width", [8, 70], ids=["fused", "batched"])
def test_a_runaway_network_is_flagged_alike_by_float64_and_float32_engines(blobs, width):
    """Plain SGD at lr 50 with spread junctions: the loss runs away. The fused engine (float64)
    would go on to 1e300 where the float32 engines overflow, so every engine flags a network once
    its loss or a gradient leaves float32's range; none of it reaches stderr as a warning."""
    import warnings

    cfg = TrainConfig(hidden=(width,), epochs=12, grad_mode="model", optimizer="sgd", lr=50.0, seed=4,
                      variability=Variability(sigma_d2d=2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = train(blobs, cfg, n_networks=5, backend="cpu")
        ref = train(blobs, cfg, n_networks=5, backend="numpy")
    assert fast.attrs["engine"] == ("fused" if width == 8 else "batched") and ref.attrs["engine"] == "numpy"
    assert fast.attrs["weights_dtype"] == ("float64" if width == 8 else "float32")
    assert ref.diverged.values.sum() >= 3
    np.testing.assert_array_equal(fast.diverged.values, ref.diverged.values)


def test_results_schema(blobs):
    cfg = TrainConfig(hidden=(4,), epochs=3)
    r = train(blobs, cfg, n_networks=3, backend="cpu")
    assert set(r.data_vars) == {"train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err", "test_acc",
                                "diverged", "extrapolated_readings"}
    np.testing.assert_array_equal(r.extrapolated_readings.values, 0.0)  # stt_compact: a closed form
    assert r.train_loss.dims == ("network", "epoch") and r.test_acc.dims == ("network",)
    for v in r.data_vars.values():
        assert "units" in v.attrs and "long_name" in v.attrs
    for key in ("network_epochs_per_second", "train_seconds", "compile_seconds", "backend", "config",
                "spingpu_version"):
        assert key in r.attrs
    assert list(r.epoch.values) == [1, 2, 3]


def test_bad_config_names_the_field():
    from spingpu import ConfigError

    for kw, field in ((dict(grad_mode="fd_backward"), "grad_mode"), (dict(hidden=()), "hidden"),
                      (dict(epochs=0), "epochs"), (dict(optimizer="lbfgs"), "optimizer"), (dict(lr=-1), "lr"),
                      (dict(batch_size=0), "batch_size")):
        with pytest.raises(ConfigError) as err:
            TrainConfig(**kw)
        assert err.value.field == field
    with pytest.raises(ConfigError, match=r"^lr_schedule: 'linear'; allowed: constant, step:EVERY:GAMMA, "
                                          r"exp:GAMMA, cosine$"):
        Schedule.parse("linear")
    with pytest.raises(ConfigError, match=r"^delta_i: 0 is out of range; allowed: 0 < value <= 1 \(A\)$"):
        PairNeuron(delta_i=0)


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # digital cases share MTJ settings
@pytest.mark.parametrize("case", ["fd_forward-noise-adam-full", "fd_single-johnson-momentum-batch",
                                  "fd_symmetric-adc-dac-sgd-step", "model-bridge-cosine-decay", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_cpu_engine_for_wide_layers_equals_numpy_reference(blobs, case, dtype):
    kw = dict(hidden=(70,), epochs=3, lr=0.05, seed=8, dtype=dtype,
              variability=Variability(sigma_chip=0.03, sigma_d2d=0.1, sigma_pair=0.02))
    kw.update({k: v for k, v in CASES[case].items() if k != "hidden"})
    cfg = TrainConfig(**kw)
    ref = train(blobs, cfg, n_networks=3, backend="numpy")
    batched = train(blobs, cfg, n_networks=3, backend="cpu")  # 70 > FUSED_MAX_WIDTH: the batched engine
    assert_same(ref, batched, rtol=2e-5 if dtype == "float32" else 1e-12)  # optimiser: float32 rounding (batched_cpu)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_batched_optimiser_step_is_the_textbook_step_on_live_networks_only(optimizer, dtype):
    """kernels/batched_cpu.optimizer_update against SGD, momentum and Adam (Kingma & Ba 2015) with
    weight decay written here in float64, at step t = 3 on fresh random weights, gradients and
    moments; the networks flagged dead are left bit for bit as they were."""
    from spingpu.kernels.batched_cpu import optimizer_update
    from spingpu.kernels.network import OPTIMIZER_CODES

    rng = np.random.default_rng()
    n, k = 6, 37
    w, g = rng.normal(size=(n, k)).astype(dtype), rng.normal(size=(n, k)).astype(dtype)
    m1, m2 = rng.normal(size=(n, k)).astype(dtype), rng.random((n, k)).astype(dtype)
    alive = rng.random(n) < 0.5
    alive[:2] = True, False
    lr, t, mu, b1, b2, eps, wd = 0.03, 3, 0.8, 0.85, 0.99, 1e-7, 2e-3
    before = [a.copy() for a in (w, m1, m2)]
    optimizer_update(w, g, m1, m2, alive, OPTIMIZER_CODES[optimizer], lr, 1 - b1 ** t, 1 - b2 ** t, mu, b1, b2, eps, wd)

    w0, g0, m10, m20 = (a.astype(np.float64) for a in (before[0], g, before[1], before[2]))
    gk = g0 + wd * w0
    if optimizer == "sgd":
        want_w, want_m1, want_m2 = w0 - lr * gk, m10, m20
    elif optimizer == "momentum":
        want_m1, want_m2 = mu * m10 + gk, m20
        want_w = w0 - lr * want_m1
    else:
        want_m1, want_m2 = b1 * m10 + (1 - b1) * gk, b2 * m20 + (1 - b2) * gk ** 2
        want_w = w0 - lr * (want_m1 / (1 - b1 ** t)) / (np.sqrt(want_m2 / (1 - b2 ** t)) + eps)
    # float32: the result's rounding; float64: a few ulps of the O(1) operands, which w - step may
    # cancel down to a smaller result (measured: 2.2e-16 absolute on 0.0199, 1.1e-14 relative)
    rtol, atol = (1e-6, 1e-9) if dtype == np.float32 else (1e-12, 1e-14)
    for got, want, old in zip((w, m1, m2), (want_w, want_m1, want_m2), before):
        np.testing.assert_allclose(got[alive], want[alive], rtol=rtol, atol=atol)
        np.testing.assert_array_equal(got[~alive], old[~alive])
    assert optimizer == "sgd" or not np.array_equal(w[alive], before[0][alive])


def test_adam_bias_correction_is_one_definition_in_every_engine():
    """1 - beta^t as the NumPy engine computes it on the host (C pow of a float exponent), compiled
    alone and inlined into a compiled caller, for every step of long runs: bit for bit. Numba's
    float ** int would multiply by squaring and differ in the last bits at thousands of steps."""
    import numba

    from spingpu.kernels.network import adam_bias

    @numba.njit
    def inlined(beta, steps):
        out = np.empty(steps)
        for t in range(1, steps + 1):
            out[t - 1] = adam_bias(beta, t)
        return out

    rng = np.random.default_rng()
    for beta in (0.9, 0.999, rng.uniform(0.5, 0.9999)):
        host = np.array([1 - beta ** t for t in range(1, 20_001)])
        np.testing.assert_array_equal(inlined(beta, 20_000), host)
        assert adam_bias(beta, 7_777) == host[7_776]


def test_grad_cosine_is_over_the_hidden_layers_weights(blobs):
    """``grad_cosine`` compares the hidden layers' gradients only: the output layer's is the same in
    every mode. Expected value from the NumPy engine's own forward and backward passes."""
    from spingpu.devices import get_model
    from spingpu.kernels import streams
    from spingpu.training.numpy_engine import NoiseSource, NumpyEngine

    cfg = TrainConfig(hidden=(6,), epochs=1, seed=int(np.random.default_rng().integers(1 << 30)), dtype="float64",
                      grad_mode="model", variability=Variability(sigma_d2d=0.8))  # full batch: one step
    nets = np.array([1, 2, 6])
    engine = NumpyEngine(get_model("stt_compact"), cfg, nets, blobs.n_features, blobs.n_classes)
    logits, cache = engine.forward(blobs.x_train, NoiseSource(cfg.seed, nets, streams.PURPOSE_NOISE, 0, 0))
    _, dlogits = engine.loss_and_dlogits(logits, blobs.y_train)
    used, exact = engine.backward(dlogits, cache), engine.backward(dlogits, cache, "exact")

    def cosine(a, b):
        a = np.concatenate([g.reshape(nets.size, -1) for g in a], axis=1)
        b = np.concatenate([g.reshape(nets.size, -1) for g in b], axis=1)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))

    hidden = cosine(used[:2], exact[:2])  # W0 (F, 6) and b0
    # the cosine over every layer differs from it (by 1.6e-5 to 0.1 for random seeds), far beyond
    # the rtol 1e-10 below, so the comparison tells the two apart
    assert np.all(hidden < 0.999) and np.all(np.abs(cosine(used, exact) - hidden) > 1e-8)
    for backend in ("numpy", "cpu"):
        r = train(blobs, cfg, networks=nets, backend=backend)
        np.testing.assert_allclose(r.grad_cosine.values[:, 0], hidden, rtol=1e-10, err_msg=backend)


def test_fused_chunks_last_about_a_second_and_ctrl_c_cancels_the_queued_ones(blobs, monkeypatch):
    """Chunk sizes from the cost model (5 ns x n_train x (weights + 100 hidden units) per network-epoch
    on one thread); Ctrl-C while waiting starts no further chunk (before, every queued chunk ran)."""
    import contextlib
    import threading
    import time

    from spingpu import progress
    from spingpu.training import fused_engine

    per_network_epoch = 5e-9 * 90 * (4 * 8 + 8 + 8 * 3 + 3 + 100 * 8)  # Iris 4-8-3, 90 training rows
    assert fused_engine.networks_per_chunk(4096, 100, 2, (4, 8, 3), 90) == int(1.0 / (100 * per_network_epoch)) == 25
    assert fused_engine.networks_per_chunk(50, 5000, 2, (4, 8, 3), 90) == 1  # 2 s per network: one at a time
    assert fused_engine.networks_per_chunk(40, 10, 2, (4, 8, 3), 90) == 5  # a quarter of each thread's share
    assert fused_engine.networks_per_chunk(10**6, 1, 2, (4, 8, 3), 90) == 64

    calls, lock = [], threading.Lock()
    real = fused_engine.fused_trainer

    def slow_trainer(model):
        kernel = real(model)

        def run(lo, hi, *args):
            with lock:
                calls.append((lo, hi))
            time.sleep(0.05)
            return kernel(lo, hi, *args)
        return run

    class InterruptingBar:
        def update(self, count):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(fused_engine, "fused_trainer", slow_trainer)
    monkeypatch.setattr(progress, "progress_bar", lambda enabled, total, unit: contextlib.nullcontext(InterruptingBar()))
    monkeypatch.setattr(fused_engine, "CHUNK_SECONDS", 1e-9)  # one network per chunk: 64 chunks
    cfg = TrainConfig(hidden=(3,), epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train(blobs, cfg, n_networks=64, backend="cpu", progress=True)
    chunks = [c for c in calls if c[1] - c[0] == 1]
    assert 1 <= len(chunks) - 1 <= 2 * fused_engine.numba.get_num_threads()  # the probe, and those running


def test_config_units_name_real_fields_and_every_physical_field_has_one(blobs):
    """The results' config_units attribute: each key is a field of the config attribute, and each
    field of the neuron and readout (the physical ones) has a unit or is a word or a count."""
    import json

    r = train(blobs, TrainConfig(hidden=(3,), epochs=1), n_networks=1, backend="numpy")
    config, units = json.loads(r.attrs["config"]), json.loads(r.attrs["config_units"])
    assert units["neuron.delta_i"] == "A" and units["readout.read_noise"] == "V" and units["neuron.r_ref"] == "ohm"
    for key in units:
        section, name = key.split(".")
        assert name in config[section], key
    words_and_counts = {"neuron.readout", "readout.noise_model", "readout.adc_bits", "readout.dac_bits"}
    for section in ("neuron", "readout"):
        for name in config[section]:
            assert f"{section}.{name}" in units or f"{section}.{name}" in words_and_counts, name


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")
@pytest.mark.parametrize("backend, width, grad, counts", [
    ("cpu", 8, "fd_forward", (100, 300)), ("cpu", 8, "tanh", (100, 300)), ("cpu", 70, "fd_forward", (6, 18)),
    ("numpy", 8, "fd_forward", (6, 18))], ids=["fused", "fused-tanh", "batched", "numpy"])
def test_host_memory_estimate_bounds_the_traced_peak_per_network(backend, width, grad, counts):
    """The memory check's bytes per network (trainer.host_bytes_per_network) against the peak of
    NumPy's allocations, per network, of runs of two sizes (the first run compiles)."""
    import tracemalloc

    from spingpu.datasets import load_dataset
    from spingpu.devices import get_model
    from spingpu.training.trainer import host_bytes_per_network

    iris = load_dataset("iris", seed=4)
    cfg = TrainConfig(hidden=(width,), epochs=3, grad_mode=grad, optimizer="adam", seed=2,
                      variability=Variability(sigma_d2d=0.1), readout=Readout(read_noise=1e-3))
    train(iris, cfg, n_networks=2, backend=backend)
    peaks = []
    for n in counts:
        tracemalloc.start()
        train(iris, cfg, networks=np.arange(1000, 1000 + n), backend=backend)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    per_network = (peaks[1] - peaks[0]) / (counts[1] - counts[0])
    estimate = host_bytes_per_network(iris, cfg, get_model("stt_compact"), backend)
    # an upper bound, not far above (ROW_BYTES_NUMPY_DIGITAL bounds the NumPy engine's digital
    # networks by what digits networks took; a digital Iris network takes a few kB in all, which
    # runs of a few networks do not measure reliably)
    assert estimate / 8 < per_network <= estimate, (per_network, estimate)


def test_the_fused_engines_pack_the_numpy_engines_initial_weights(blobs):
    from spingpu.devices import get_model
    from spingpu.training.fused_engine import pack
    from spingpu.training.numpy_engine import initial_weights

    cfg = TrainConfig(hidden=(5, 3), epochs=1, seed=11, init_gain=1.3)
    networks = np.array([3, 0, 2**32 - 1])
    sizes = (blobs.n_features, 5, 3, blobs.n_classes)
    packed = pack(cfg, get_model("stt_compact"), networks, sizes)
    expected = np.concatenate([w.reshape(3, -1) for w in initial_weights(cfg, networks, sizes)], axis=1)
    np.testing.assert_array_equal(packed["w_init"], expected)
    assert np.count_nonzero(expected) == 3 * (blobs.n_features * 5 + 5 * 3 + 3 * blobs.n_classes)  # biases 0


@pytest.mark.parametrize("backend, width", [("cpu", 5), ("numpy", 5), ("cpu", 70)], ids=["fused", "numpy", "batched"])
def test_a_setting_up_line_shows_while_kernels_compile_and_only_with_progress(blobs, capsys, backend, width):
    from spingpu.progress import SETUP

    cfg = TrainConfig(hidden=(width,), epochs=1, seed=1)
    train(blobs, cfg, n_networks=2, backend=backend)
    assert SETUP not in capsys.readouterr().err
    train(blobs, cfg, n_networks=2, backend=backend, progress=True)
    err = capsys.readouterr().err
    assert SETUP in err and err.index(SETUP) < err.index("network-epochs")  # before the training's bar


@pytest.mark.parametrize("mode", ["fd_forward", "fd_symmetric", "model"])
def test_deriv_rel_err_is_the_median_relative_error_of_the_derivative_used(blobs, mode):
    """``deriv_rel_err``: the median over the batch's hidden neurons, samples and layers of
    |used - exact| / |exact|, computed here from the NumPy engine's own forward pass; a mean, a
    division by the used derivative or the first layer alone are told apart."""
    from spingpu.devices import get_model
    from spingpu.kernels import streams
    from spingpu.training.numpy_engine import NoiseSource, NumpyEngine

    cfg = TrainConfig(hidden=(6, 4), epochs=1, seed=int(np.random.default_rng().integers(1 << 30)), dtype="float64",
                      grad_mode=mode, variability=Variability(sigma_d2d=0.1, sigma_pair=0.02),
                      readout=Readout(read_noise=1e-3))  # full batch: one step
    nets = np.array([1, 2, 6])
    engine = NumpyEngine(get_model("stt_compact"), cfg, nets, blobs.n_features, blobs.n_classes)
    _, cache = engine.forward(blobs.x_train, NoiseSource(cfg.seed, nets, streams.PURPOSE_NOISE, 0, 0))

    def errors(layers, by_used=False):
        return np.concatenate([(np.abs(u - e) / np.abs(u if by_used else e)).reshape(nets.size, -1)
                               for _, u, e in layers], axis=1)

    want = np.median(errors(cache[:-1]), axis=1)
    for other in (errors(cache[:-1]).mean(axis=1), np.median(errors(cache[:-1], by_used=True), axis=1),
                  np.median(errors(cache[:1]), axis=1)):
        # told apart in some network: in one network the two middle values of the first layer's
        # errors can be those of all layers' errors
        assert np.any(np.abs(other / want - 1) > 1e-6), cfg.seed
    for backend in ("numpy", "cpu"):
        r = train(blobs, cfg, networks=nets, backend=backend)
        np.testing.assert_allclose(r.deriv_rel_err.values[:, 0], want, rtol=1e-10, err_msg=f"{backend} seed {cfg.seed}")


def test_grad_cosine_of_tiny_gradients_is_a_number_in_every_engine():
    """A network far into its softmax's saturation (init_gain 100) has hidden-layer gradients below
    1e-77 at the epoch's last sample: the product of the two squared norms underflowed, so the fused
    engine's cosine was NaN where the numpy engine's was 1.0 (network 9 of these data, found by a
    differential fuzzer). Both engines agree on every network, NaN (a gradient exactly 0) included."""
    from spingpu import from_arrays

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 0.3, 20), rng.normal(3, 0.3, 20)])[:, None]
    data = from_arrays(x, np.repeat([0, 1], 20))
    config = TrainConfig(hidden=(1,), grad_mode="sigmoid", epochs=1, batch_size=1, init_gain=100.0, optimizer="sgd",
                         lr=1e-3, dtype="float64")
    networks = np.concatenate([[9], np.random.default_rng().choice(np.arange(10, 1000), 7, replace=False)])
    results = {backend: train(data, config, networks=networks, backend=backend) for backend in ("numpy", "cpu")}
    assert results["cpu"].attrs["engine"] == "fused"
    numpy_cos, fused_cos = (r.grad_cosine.values.ravel() for r in results.values())
    assert numpy_cos[0] == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(fused_cos, numpy_cos, rtol=1e-12)  # NaN where NaN
