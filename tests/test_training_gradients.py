"""Gradient correctness of the reference engine: oracle = float64 finite differences of the loss;
finite-difference derivative estimates converge at the predicted orders; noise makes them worse."""

from types import SimpleNamespace

import numpy as np
import pytest

from spingpu import Readout, Variability, get_model
from spingpu.training import PairNeuron, TrainConfig
from spingpu.training.numpy_engine import NumpyEngine

MODEL = get_model("stt_compact")
NO_NOISE = SimpleNamespace(normals=lambda layer, reading, shape: np.zeros(shape), derivatives=True)


def engine(mode, hidden=(5, 4), n=3, neuron=PairNeuron(), variability=Variability(sigma_d2d=0.15, sigma_pair=0.05,
           sigma_chip=0.05), readout=Readout(), seed=3, n_features=4, n_classes=3):
    cfg = TrainConfig(hidden=hidden, grad_mode=mode, neuron=neuron, variability=variability, readout=readout,
                      seed=seed, dtype="float64")
    return NumpyEngine(MODEL, cfg, np.arange(10, 10 + n), n_features, n_classes)


def loss_of(eng, x, y):
    logits, _ = eng.forward(x, NO_NOISE)
    return eng.loss_and_dlogits(logits, y)[0]


@pytest.mark.parametrize("neuron", [PairNeuron(), PairNeuron(i_bias=-50e-6, i_gain=150e-6, readout="bridge",
                                                              r_ref=1200.0, v_scale=3.0)], ids=["direct", "bridge"])
def test_oracle_gradient_equals_float64_finite_difference_of_the_loss(neuron):
    rng = np.random.default_rng(31)
    eng = engine("oracle", neuron=neuron)
    for w in eng.weights:  # fresh random weights and biases, not the initial ones alone
        w += rng.normal(0, 0.3, w.shape)
    x = rng.normal(0, 1, (7, 4))
    y = rng.integers(0, 3, 7)
    logits, cache = eng.forward(x, NO_NOISE)
    _, dlogits = eng.loss_and_dlogits(logits, y)
    grads = eng.backward(dlogits, cache)
    h = 1e-6
    for k, w in enumerate(eng.weights):
        flat = w.reshape(w.shape[0], -1)
        for j in rng.choice(flat.shape[1], size=min(6, flat.shape[1]), replace=False):
            saved = flat[:, j].copy()
            flat[:, j] = saved + h
            lp = loss_of(eng, x, y)
            flat[:, j] = saved - h
            lm = loss_of(eng, x, y)
            flat[:, j] = saved
            fd = (lp - lm) / (2 * h)
            g = grads[k].reshape(w.shape[0], -1)[:, j]
            scale = np.maximum(np.abs(fd), 1e-3 * np.abs(grads[k]).max())
            assert np.all(np.abs(g - fd) / scale < 1e-5), (k, j, g, fd)


def derivative_errors(mode, delta_i, readout=Readout(), sigma_pair=0.0, n=4):
    rng = np.random.default_rng(32)
    eng = engine(mode, hidden=(64,), n=n, neuron=PairNeuron(delta_i=delta_i), readout=readout,
                 variability=Variability(sigma_d2d=0.1, sigma_pair=sigma_pair))
    z = rng.normal(0, 1, (n, 50, 64))
    noise = SimpleNamespace(normals=lambda layer, reading, shape: np.random.default_rng(100 + reading).normal(size=shape),
                            derivatives=True)
    _, used, exact = eng.hidden(0, z, noise)
    _, _, oracle = engine("oracle", hidden=(64,), n=n, variability=Variability(sigma_d2d=0.1,
                          sigma_pair=sigma_pair)).hidden(0, z, NO_NOISE)
    return used, exact, oracle


def test_fd_forward_error_is_first_order_and_fd_symmetric_second_order():
    steps = np.array([40e-6, 20e-6, 10e-6, 5e-6])
    err_fwd = [np.sqrt(np.mean((u - o) ** 2)) for u, _, o in (derivative_errors("fd_forward", s) for s in steps)]
    err_sym = [np.sqrt(np.mean((u - o) ** 2)) for u, _, o in (derivative_errors("fd_symmetric", s) for s in steps)]
    order_fwd = np.polyfit(np.log(steps), np.log(err_fwd), 1)[0]
    order_sym = np.polyfit(np.log(steps), np.log(err_sym), 1)[0]
    assert 0.9 < order_fwd < 1.1, order_fwd
    assert 1.85 < order_sym < 2.15, order_sym
    assert err_sym[-1] < 0.05 * err_fwd[-1]


def test_fd_single_equals_fd_forward_without_pair_mismatch_or_noise():
    u_single, _, _ = derivative_errors("fd_single", 10e-6)
    u_fwd, _, _ = derivative_errors("fd_forward", 10e-6)
    np.testing.assert_allclose(u_single, u_fwd, rtol=1e-12)


def test_read_noise_error_grows_as_one_over_delta_i_with_the_predicted_size():
    sigma = 2e-3  # V
    nc = PairNeuron()
    for delta_i in (0.5e-6, 1e-6, 2e-6):
        used, _, oracle = derivative_errors("fd_forward", delta_i, readout=Readout(read_noise=sigma))
        rms = np.sqrt(np.mean((used - oracle) ** 2))
        predicted = nc.v_scale * nc.i_gain * np.sqrt(2) * sigma / delta_i  # two independent readings
        # 12800 samples: the rms of Gaussian noise is known to ~1 %; truncation adds < 1 % here.
        assert rms == pytest.approx(predicted, rel=0.04), (delta_i, rms, predicted)


def test_pair_mismatch_error_grows_as_one_over_delta_i():
    errs = []
    steps = np.array([2e-6, 1e-6, 0.5e-6])
    for delta_i in steps:
        used, _, oracle = derivative_errors("fd_forward", delta_i, sigma_pair=0.02)
        errs.append(np.sqrt(np.mean((used - oracle) ** 2)))
    order = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert -1.05 < order < -0.95, order


def test_model_gradient_differs_under_variability_and_equals_oracle_without():
    rng = np.random.default_rng(33)
    z = rng.normal(0, 1, (3, 20, 16))
    for var, equal in ((Variability(), True), (Variability(sigma_d2d=0.1), False)):
        _, used_model, _ = engine("model", hidden=(16,), variability=var).hidden(0, z, NO_NOISE)
        _, used_oracle, _ = engine("oracle", hidden=(16,), variability=var).hidden(0, z, NO_NOISE)
        if equal:
            np.testing.assert_allclose(used_model, used_oracle, rtol=1e-13)
        else:
            rel = np.abs(used_model - used_oracle) / np.abs(used_oracle)
            assert np.median(rel) > 0.02  # a 10 % spread moves dV/dI by several per cent


@pytest.mark.parametrize("mode, fn, deriv", [
    ("tanh", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    ("relu", lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
])
def test_digital_baselines(mode, fn, deriv):
    z = np.random.default_rng(34).normal(0, 2, (2, 10, 6))
    h, used, exact = engine(mode, hidden=(6,)).hidden(0, z, NO_NOISE)
    np.testing.assert_allclose(h, fn(z), rtol=1e-12)
    np.testing.assert_allclose(used, deriv(z), rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(used, exact)


def test_activation_is_the_read_voltage_of_junction_a():
    rng = np.random.default_rng(35)
    nc = PairNeuron(i_bias=20e-6, readout="bridge", r_ref=900.0, v_scale=4.0)
    eng = engine("fd_forward", hidden=(5,), neuron=nc)
    z = rng.normal(0, 1, (3, 8, 5))
    h, _, _ = eng.hidden(0, z, NO_NOISE)
    current = nc.i_bias + nc.i_gain * z
    v, _ = eng.model.iv(current, eng.junctions[0][:, None, :, 0, :])
    np.testing.assert_allclose(h, nc.v_scale * (v - 900.0 * current), rtol=1e-12)


def test_adc_quantises_activations_to_its_levels():
    ro = Readout(adc_bits=6, adc_range=(-0.8, 0.8))
    eng = engine("fd_forward", hidden=(7,), readout=ro)
    z = np.random.default_rng(36).normal(0, 1, (3, 30, 7))
    h, used, _ = eng.hidden(0, z, NO_NOISE)
    lsb = 1.6 / 63
    codes = (h / eng.config.neuron.v_scale + 0.8) / lsb
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-9)
    # A finite difference of two quantised readings is a multiple of lsb / dI.
    steps = used / (eng.config.neuron.v_scale * eng.config.neuron.i_gain) * eng.config.neuron.delta_i / lsb
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


@pytest.mark.parametrize("mode", ["fd_forward", "fd_symmetric", "fd_single"])
def test_dac_sets_the_current_and_the_step_is_added_after_it(mode):
    """With an 8-bit DAC over +-1 mA (lsb 7.8 uA) and dI = 2 uA, below one lsb: the junctions are
    read at I = DAC(i_bias + i_gain z) and I + dI (fd_symmetric I -+ dI/2), and the finite
    difference divides by that dI, so its error is the O(dI) of an ideal drive, not a step of 0 or
    of one lsb divided by 2 uA."""
    rng = np.random.default_rng(41)
    ro, nc = Readout(dac_bits=8), PairNeuron(delta_i=2e-6)
    eng = engine(mode, hidden=(9,), neuron=nc, readout=ro, variability=Variability(sigma_d2d=0.1))  # A = B
    z = rng.normal(0, 1, (3, 40, 9))
    h, used, exact = eng.hidden(0, z, NO_NOISE)
    i_dac = ro.drive(nc.i_bias + nc.i_gain * z)
    assert np.unique(i_dac).size < 256 < z.size  # the DAC's levels only
    lo, hi = (i_dac - 0.5 * nc.delta_i, i_dac + 0.5 * nc.delta_i) if mode == "fd_symmetric" else (i_dac, i_dac + nc.delta_i)
    junc = eng.junctions[0][:, None]
    v_lo, d_lo = eng.model.iv(lo, junc[..., 0, :])
    v_hi, d_hi = eng.model.iv(hi, junc[..., 0 if mode == "fd_single" else 1, :])
    gain = nc.v_scale * nc.i_gain
    np.testing.assert_allclose(used, gain * (v_hi - v_lo) / nc.delta_i, rtol=1e-9)
    np.testing.assert_allclose(h, nc.v_scale * (0.5 * (v_lo + v_hi) if mode == "fd_symmetric" else v_lo), rtol=1e-12)
    _, d_dac = eng.model.iv(i_dac, junc[..., 0, :])
    rel = np.abs(used / (gain * d_dac) - 1)
    assert rel.max() < (2e-4 if mode == "fd_symmetric" else 1e-2), rel.max()
    np.testing.assert_allclose(exact, gain * (0.5 * (d_lo + d_hi) if mode == "fd_symmetric" else d_lo), rtol=1e-12)


def test_distillation_loss_gradient_matches_finite_difference():
    from spingpu.training import Distillation

    rng = np.random.default_rng(37)
    cfg = TrainConfig(hidden=(5,), grad_mode="tanh", distillation=Distillation(temperature=3.0, alpha=0.6),
                      dtype="float64")
    eng = NumpyEngine(MODEL, cfg, np.arange(2), 4, 3)
    logits = rng.normal(0, 2, (2, 6, 3))
    y = rng.integers(0, 3, 6)
    teacher = rng.normal(0, 3, (6, 3))
    loss, dlogits = eng.loss_and_dlogits(logits, y, teacher)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 3, 2), (0, 5, 1)]:
        lp, lm = logits.copy(), logits.copy()
        lp[idx] += h
        lm[idx] -= h
        fd = (eng.loss_and_dlogits(lp, y, teacher)[0] - eng.loss_and_dlogits(lm, y, teacher)[0])[idx[0]] / (2 * h)
        assert dlogits[idx] == pytest.approx(fd, rel=1e-6, abs=1e-10)


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # digital cases share MTJ settings
def test_training_reduces_loss_in_every_mode():
    from spingpu.training import train

    rng = np.random.default_rng(38)
    centres = rng.normal(0, 2, (3, 4))
    y = rng.integers(0, 3, 90)
    x = (centres[y] + rng.normal(0, 0.7, (90, 4))).astype(np.float32)
    ds = SimpleNamespace(name="blobs", x_train=x[:60], y_train=y[:60], x_val=x[60:75], y_val=y[60:75],
                         x_test=x[75:], y_test=y[75:], n_features=4, n_classes=3)
    for mode in ("fd_forward", "fd_single", "fd_symmetric", "model", "oracle", "tanh", "relu", "sigmoid"):
        cfg = TrainConfig(hidden=(6,), grad_mode=mode, epochs=15, lr=0.05, variability=Variability(sigma_d2d=0.1))
        r = train(ds, cfg, n_networks=4)
        loss = r.train_loss.values
        assert np.all(loss[:, -1] < 0.7 * loss[:, 0]), (mode, loss[:, [0, -1]])
        assert not r.diverged.any()
        cosine = r.grad_cosine.values  # the mode that ran: the exact gradient's, or another
        if mode in ("oracle", "tanh", "relu", "sigmoid"):
            np.testing.assert_allclose(cosine, 1.0, rtol=1e-12)
        else:
            assert np.all(cosine < 1 - 1e-9), (mode, cosine.max())


@pytest.mark.parametrize("distilled", [False, True])
def test_loss_value_and_gradient_equal_scipy(distilled):
    """The loss itself, not only its gradient against a finite difference of it: softmax cross-entropy
    (1 - alpha) CE + alpha T^2 KL(softmax(t / T) || softmax(s / T)), averaged over the batch, and its
    gradient, from scipy's log_softmax and rel_entr."""
    from scipy.special import log_softmax, rel_entr, softmax

    from spingpu.training import Distillation

    rng = np.random.default_rng()
    temperature, alpha = rng.uniform(1.5, 4.0), rng.uniform(0.2, 0.8)
    dist = Distillation(temperature=temperature, alpha=alpha) if distilled else None
    eng = NumpyEngine(MODEL, TrainConfig(hidden=(5,), grad_mode="tanh", distillation=dist, dtype="float64"),
                      np.arange(3), 4, 4)
    logits, y, teacher = rng.normal(0, 3, (3, 9, 4)), rng.integers(0, 4, 9), rng.normal(0, 3, (9, 4))
    loss, dlogits = eng.loss_and_dlogits(logits, y, teacher if distilled else None)
    want = -np.take_along_axis(log_softmax(logits, axis=-1), y[None, :, None], axis=-1)[..., 0]
    grad = softmax(logits, axis=-1) - np.eye(4)[y]
    if distilled:
        q = softmax(teacher / temperature, axis=-1)
        kl = rel_entr(q, softmax(logits / temperature, axis=-1)).sum(-1)
        want = (1 - alpha) * want + alpha * temperature**2 * kl
        grad = (1 - alpha) * grad + alpha * temperature * (softmax(logits / temperature, axis=-1) - q)
    np.testing.assert_allclose(loss, want.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(dlogits, grad / 9, rtol=1e-10, atol=1e-15)


def test_read_noise_as_training_draws_it_is_independent_standard_normal_per_reading():
    """The noise the engines draw (NoiseSource -> Philox streams), recovered from a noisy and a clean
    evaluation of the same junctions: each reading's normals have mean 0 and variance 1, readings A
    and B, layers and batches are uncorrelated, and the derivative's error has the predicted rms
    sqrt(2) gain sigma / dI. Bounds are 5 standard errors (a fresh seed each run)."""
    import math

    from spingpu.kernels import streams
    from spingpu.training.numpy_engine import NoiseSource

    sigma, delta_i = 2e-3, 1e-6
    nc, nets = PairNeuron(delta_i=delta_i), np.arange(10, 14)
    rng = np.random.default_rng()
    seed = int(rng.integers(2**62))

    def engine_reading(readout):
        cfg = TrainConfig(hidden=(64, 64), grad_mode="fd_forward", neuron=nc, readout=readout,
                          variability=Variability(sigma_d2d=0.1), seed=seed, dtype="float64")
        return NumpyEngine(MODEL, cfg, nets, 4, 3)

    noisy, clean = engine_reading(Readout(read_noise=sigma)), engine_reading(Readout())
    gain = nc.v_scale * nc.i_gain
    z = rng.normal(0, 1, (4, 50, 64))
    drawn = {}
    for row0 in (0, 50):  # two batches of one epoch
        source = NoiseSource(seed, nets, streams.PURPOSE_NOISE, 0, row0)
        for layer in (0, 1):
            h, used, _ = noisy.hidden(layer, z, source)
            h0, used0, _ = clean.hidden(layer, z, NO_NOISE)
            xa = (h - h0) / (nc.v_scale * sigma)  # reading A's normals
            xb = xa + (used - used0) * delta_i / (gain * sigma)  # reading B's
            n = xa.size
            for x in (xa, xb):
                assert abs(x.mean()) < 5 / math.sqrt(n)
                assert abs(x.std(ddof=1) - 1) < 5 / math.sqrt(2 * (n - 1)), x.std()
            assert abs(math.atanh(np.corrcoef(xa.ravel(), xb.ravel())[0, 1])) < 5 / math.sqrt(n - 3)
            rms = np.sqrt(np.mean((used - used0) ** 2))
            assert abs(rms / (math.sqrt(2) * gain * sigma / delta_i) - 1) < 5 / math.sqrt(2 * n), rms
            drawn[row0, layer] = xa.ravel()
    for other in ((0, 1), (50, 0)):  # another layer, another batch
        assert abs(math.atanh(np.corrcoef(drawn[0, 0], drawn[other])[0, 1])) < 5 / math.sqrt(drawn[other].size - 3)


@pytest.mark.parametrize("mode", ["fd_forward", "fd_symmetric", "fd_single"])
def test_each_mode_reads_its_own_junctions_of_a_mismatched_pair(mode):
    """With pair mismatch A != B: fd_forward and fd_symmetric read A then B, fd_single A twice; the
    derivative used is the bridge-corrected difference of those readings, and fd_single's error is
    O(dI) where the others' is the pair's mismatch over dI."""
    rng = np.random.default_rng()
    ro = Readout(dac_bits=8)
    nc = PairNeuron(delta_i=2e-6, i_bias=-30e-6, readout="bridge", r_ref=900.0)
    eng = engine(mode, hidden=(9,), neuron=nc, readout=ro, seed=int(rng.integers(1 << 30)),
                 variability=Variability(sigma_d2d=0.1, sigma_pair=0.05))
    z = rng.normal(0, 1, (3, 40, 9))
    _, used, exact = eng.hidden(0, z, NO_NOISE)
    i_dac = ro.drive(nc.i_bias + nc.i_gain * z)
    lo, hi = (i_dac - 0.5 * nc.delta_i, i_dac + 0.5 * nc.delta_i) if mode == "fd_symmetric" else (i_dac,
                                                                                                   i_dac + nc.delta_i)
    junc = eng.junctions[0][:, None]
    assert np.all(junc[..., 0, :] != junc[..., 1, :])
    v_lo, d_lo = eng.model.iv(lo, junc[..., 0, :])
    v_hi, _ = eng.model.iv(hi, junc[..., 0 if mode == "fd_single" else 1, :])
    gain, r = nc.v_scale * nc.i_gain, nc.r_bridge
    np.testing.assert_allclose(used, gain * ((v_hi - r * hi) - (v_lo - r * lo)) / nc.delta_i, rtol=1e-9)
    rel = np.abs(used - exact) / (gain * d_lo)
    if mode == "fd_single":
        assert rel.max() < 1e-2
    else:
        assert np.median(rel) > 1.0


def test_model_gradient_is_the_nominal_junctions_for_every_network():
    """grad_mode "model": v_scale i_gain (dV/dI of the nominal junction at the DAC current - r_bridge),
    the same for every network whatever its junctions (the exact derivative is not)."""
    rng = np.random.default_rng()
    nc = PairNeuron(i_bias=-40e-6, i_gain=150e-6, readout="bridge", r_ref=1100.0, v_scale=3.0)
    ro = Readout(dac_bits=10)
    eng = engine("model", hidden=(7,), n=4, neuron=nc, readout=ro, seed=int(rng.integers(1 << 30)),
                 variability=Variability(sigma_chip=0.1, sigma_d2d=0.2, sigma_pair=0.05))
    z = np.broadcast_to(rng.normal(0, 1, (1, 30, 7)), (4, 30, 7)).copy()  # the same z for every network
    _, used, exact = eng.hidden(0, z, NO_NOISE)
    _, d_nominal = MODEL.iv(ro.drive(nc.i_bias + nc.i_gain * z))
    np.testing.assert_allclose(used, nc.v_scale * nc.i_gain * (d_nominal - nc.r_bridge), rtol=1e-12)
    assert np.all(used == used[:1]) and not np.allclose(exact, exact[:1])


def test_pair_mismatch_error_is_the_pairs_voltage_difference_over_delta_i():
    """fd_forward with mismatch and no noise: used - exact -> gain (V_B(I) - V_A(I)) / dI as dI -> 0,
    from the sampled junctions themselves (the slope test above checks only its order in dI)."""
    rng = np.random.default_rng()
    z = rng.normal(0, 1, (4, 50, 64))
    seed = int(rng.integers(1 << 30))
    for delta_i in (1e-6, 0.25e-6):
        nc = PairNeuron(delta_i=delta_i)
        eng = engine("fd_forward", hidden=(64,), n=4, neuron=nc, seed=seed,
                     variability=Variability(sigma_d2d=0.1, sigma_pair=0.02))
        _, used, exact = eng.hidden(0, z, NO_NOISE)
        current = nc.i_bias + nc.i_gain * z
        junc = eng.junctions[0][:, None]
        predicted = nc.v_scale * nc.i_gain * (eng.model.iv(current, junc[..., 1, :])[0] -
                                              eng.model.iv(current, junc[..., 0, :])[0]) / delta_i
        rel = np.sqrt(np.mean((used - exact - predicted) ** 2) / np.mean(predicted**2))
        assert rel < 0.05, (delta_i, rel)
