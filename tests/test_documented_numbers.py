"""Numbers that the documentation defines exactly, recomputed here from the documented formulas
with an independent Philox (tests/test_variability.philox_reference, plain Python integers) and
plain Python or SciPy arithmetic: the random streams' counter layouts (uniforms, Box-Muller,
initial weights, junction parameters), the derivative's relative error and the distilled loss.
Engines agreeing with each other (test_training_engines) cannot see a layout or a formula that is
wrong in the function they share; these tests can."""

import math

import numpy as np
import pytest
from scipy import special

from spingpu import TrainConfig, Variability, get_model, sample_layer
from spingpu.kernels import philox
from test_variability import KNOWN_ANSWERS, M32, philox_reference

PURPOSE_CHIP, PURPOSE_NEURON, PURPOSE_MEMBER, PURPOSE_INIT = 1, 2, 3, 4  # kernels/philox.py, kernels/streams.py


def stream_word(purpose, layer, member, parameter=0):
    """The documented packing of a stream word: one byte each, purpose in the lowest."""
    return purpose | layer << 8 | member << 16 | parameter << 24


def reference_uniforms(words):
    """Two uniforms in (0, 1], 53 bits each, from Philox's four words (kernels/philox.py doc)."""
    r0, r1, r2, r3 = words
    return tuple(((((hi << 21) ^ (lo >> 11)) & (2**53 - 1)) + 1) / 2**53 for hi, lo in ((r0, r1), (r2, r3)))


def reference_normals(counter, seed):
    u1, u2 = reference_uniforms(philox_reference(counter, (seed & M32, seed >> 32)))
    r = math.sqrt(-2.0 * math.log(u1))
    return r * math.cos(2.0 * math.pi * u2), r * math.sin(2.0 * math.pi * u2)


def test_uniforms_and_normals_are_the_documented_bits_and_box_muller():
    """Every one of the 53 bits of each uniform counts (a bit dropped passes every moment and
    Kolmogorov-Smirnov test); the normals are Box-Muller of exactly those uniforms."""
    rng = np.random.default_rng()
    cases = [(ctr, key) for ctr, key, _ in KNOWN_ANSWERS]
    cases += [(tuple(int(w) for w in rng.integers(0, 2**32, 4)), tuple(int(w) for w in rng.integers(0, 2**32, 2)))
              for _ in range(200)]
    for ctr, key in cases:
        assert tuple(philox.uniform_pair(*ctr, *key)) == reference_uniforms(philox_reference(ctr, key))
        seed = key[0] | key[1] << 32
        np.testing.assert_allclose(philox.normal_pair(*ctr, *key), reference_normals(ctr, seed), rtol=1e-15,
                                   atol=1e-15)


def test_initial_weights_are_init_gain_over_root_fan_in_times_the_init_stream():
    """W_l[n, i, j] = init_gain / sqrt(fan_in) x normal (network n, stream (init, l, 0), row i,
    column j // 2)[j % 2], b_l = 0 (DESIGN.md 5; kernels/streams.py)."""
    from spingpu.training.numpy_engine import initial_weights

    rng = np.random.default_rng()
    seed, gain = int(rng.integers(2**64, dtype=np.uint64)), float(rng.uniform(0.5, 2.0))
    networks = rng.integers(0, 2**32, 3)
    sizes = (7, 5, 3)
    weights = initial_weights(TrainConfig(hidden=(5,), init_gain=gain, seed=seed), networks, sizes)
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, b = weights[2 * layer], weights[2 * layer + 1]
        assert w.shape == (3, fan_in, fan_out) and b.shape == (3, fan_out) and not b.any()
        for k, n in enumerate(networks):
            expected = [[gain / math.sqrt(fan_in)
                         * reference_normals((int(n), stream_word(PURPOSE_INIT, layer, 0), i, j // 2), seed)[j % 2]
                         for j in range(fan_out)] for i in range(fan_in)]
            np.testing.assert_allclose(w[k], expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("level", ["chip", "d2d", "pair"])
def test_junction_parameters_are_their_levels_normals_at_the_documented_counters(level):
    """With one level's spread alone, y_k = sigma x_k, x = z (no correlation) with z_k from counter
    (n, stream(purpose, l, m), u, k // 2), l = u = m = 0 for a chip draw and m = 0 for a neuron
    draw (kernels/variability.py); p_k = nominal exp(y_k) for a lognormal parameter, nominal +
    scale y_k for a normal one (theta0: scale pi/2, dtheta: 1.2; README)."""
    rng = np.random.default_rng()
    model = get_model("stt_compact")
    sigma, seed, layer, units = 0.05, int(rng.integers(2**63)), int(rng.integers(4)), 3
    networks = rng.integers(0, 2**32, 2)
    var = Variability(**{f"sigma_{level}": sigma})
    params = sample_layer(model, var, seed, networks, layer, units)  # (N, U, 2, P)
    nominal = np.array([p.nominal for p in model.parameters])
    scale = {"theta0": math.pi / 2, "dtheta": 1.2}
    for i, n in enumerate(networks):
        for u in range(units):
            for m in range(2):
                purpose, lay, unit, member = {"chip": (PURPOSE_CHIP, 0, 0, 0), "d2d": (PURPOSE_NEURON, layer, u, 0),
                                              "pair": (PURPOSE_MEMBER, layer, u, m)}[level]
                for k, parameter in enumerate(model.parameters):
                    z = reference_normals((int(n), stream_word(purpose, lay, member), unit, k // 2), seed)[k % 2]
                    if parameter.name in scale:
                        expected = nominal[k] + scale[parameter.name] * sigma * z
                    else:
                        expected = nominal[k] * math.exp(sigma * z)
                    assert params[i, u, m, k] == pytest.approx(expected, rel=1e-14), (level, n, u, m, parameter.name)


def test_the_derivatives_relative_error_of_an_exact_zero_is_infinite():
    """|used - exact| / |exact|: 0 where they are equal (0 and 0 too), inf where only the exact
    derivative is 0 (the NumPy engine's division; a deriv_rel_err summand)."""
    from spingpu.kernels.network import relative_error

    rng = np.random.default_rng()
    exact, used = rng.normal(size=2)
    assert relative_error(used, exact) == pytest.approx(abs(used - exact) / abs(exact), rel=1e-15)
    assert relative_error(3.0, 2.0) == 0.5 and relative_error(0.0, 0.0) == 0.0 and relative_error(-2.0, -2.0) == 0.0
    assert relative_error(used, 0.0) == math.inf and relative_error(-used, 0.0) == math.inf


def reference_distilled(s, label, t, temperature, alpha):
    """(1 - alpha) CE(y, softmax s) + alpha T^2 KL(softmax(t / T) || softmax(s / T)) and its
    gradient in s, with SciPy's log_softmax and rel_entr (kernels/loss.py, Hinton et al.)."""
    ce = -special.log_softmax(s)[label]
    q = special.softmax(t / temperature)
    kl = special.rel_entr(q, np.exp(special.log_softmax(s / temperature))).sum()
    grad_ce = special.softmax(s) - np.eye(s.size)[label]
    grad_kl = (special.softmax(s / temperature) - q) / temperature
    return ((1 - alpha) * ce + alpha * temperature**2 * kl,
            (1 - alpha) * grad_ce + alpha * temperature**2 * grad_kl)


@pytest.mark.parametrize("teacher", [[800.0, 0.0, -800.0], [0.0, 800.0, -800.0], [-800.0, -800.0, 800.0], None])
def test_the_distilled_loss_is_the_documented_one_even_for_a_saturated_teacher(teacher):
    """A teacher so sure that softmax(t / T) underflows to 0 for some classes: those classes add
    nothing to the KL divergence (0 log 0 = 0), and nothing overflows. Random logits, temperature
    and alpha besides."""
    from spingpu.kernels.loss import softmax_xent

    rng = np.random.default_rng()
    s = rng.normal(0, 2, 3)
    t = np.array(teacher) if teacher is not None else rng.normal(0, 3, 3)
    temperature, alpha = (1.0, 0.5) if teacher is not None else (rng.uniform(0.5, 4), rng.uniform())
    for label in range(3):
        dl = np.full(3, np.nan)
        loss = softmax_xent(s, label, t[None], 0, True, temperature, alpha, dl)
        expected_loss, expected_dl = reference_distilled(s, label, t, temperature, alpha)
        assert np.isfinite(loss) and loss == pytest.approx(expected_loss, rel=1e-12)
        np.testing.assert_allclose(dl, expected_dl, rtol=1e-12, atol=1e-14)


def test_a_teacher_is_the_network_it_is_named_for():
    """teacher_logits(..., network=k) trains network k: its test accuracy is that of network k
    trained alone by spingpu.train, and two networks' logits differ."""
    from spingpu import load_dataset, train
    from spingpu.training.distill import teacher_logits

    data = load_dataset("iris", seed=3)
    config = TrainConfig(hidden=(5,), grad_mode="tanh", epochs=3, seed=11)
    first, second = (int(k) for k in np.random.default_rng().choice(50, 2, replace=False))
    logits = {}
    for k in (first, second):
        logits[k], accuracy = teacher_logits(data, config, network=k)
        assert accuracy == float(train(data, config, networks=[k], backend="numpy").test_acc[0])
    assert not np.array_equal(logits[first], logits[second])


@pytest.mark.parametrize("sigma, documented", [(0.1, 6.1), (0.3, 49)])
def test_the_fraction_of_junctions_whose_angle_leaves_zero_to_pi_is_the_documented_one(sigma, documented):
    """README: a sampled stt_compact junction's theta0 +- |dtheta| leaves [0, pi] for 6.1 % of
    junctions at sigma_d2d = 0.1 and 49 % at 0.3. theta0 ~ N(pi/2, (sigma pi/2)^2) and dtheta ~
    N(1.2, (1.2 sigma)^2), independent: P = integral of pdf(theta0) P(|dtheta| > min(theta0, pi -
    theta0)) (SciPy quadrature), against 200,000 independent junctions (member A of each pair; with
    a d2d spread alone B is the same junction) within 4.5 binomial standard errors."""
    from scipy import integrate, stats

    def leaving(theta0):
        margin = min(theta0, math.pi - theta0)
        inside = stats.norm.cdf(margin, 1.2, 1.2 * sigma) - stats.norm.cdf(-margin, 1.2, 1.2 * sigma)
        return stats.norm.pdf(theta0, math.pi / 2, sigma * math.pi / 2) * (1.0 - inside if margin > 0 else 1.0)

    exact = integrate.quad(leaving, -10, 10, points=[0.0, math.pi / 2, math.pi], limit=200)[0]
    assert round(100 * exact, 1 if documented < 10 else 0) == documented
    rng = np.random.default_rng()
    model = get_model("stt_compact")
    names = [p.name for p in model.parameters]
    params = sample_layer(model, Variability(sigma_d2d=sigma), int(rng.integers(2**63)),
                          rng.choice(2**32, 20_000, replace=False), int(rng.integers(4)), 10)[:, :, 0]
    theta0, dtheta = params[..., names.index("theta0")], np.abs(params[..., names.index("dtheta")])
    fraction = np.mean((theta0 - dtheta < 0) | (theta0 + dtheta > math.pi))
    assert abs(fraction - exact) < 4.5 * math.sqrt(exact * (1 - exact) / theta0.size), (fraction, exact)


@pytest.mark.parametrize("delta_i, median, largest", [(20e-6, 1.4, 5), (100e-6, 7, 21)])
def test_a_forward_differences_truncation_error_is_the_documented_one(delta_i, median, largest):
    """README: (V(I + dI) - V(I)) / dI of the nominal stt_compact junction against dV/dI at I, over
    |I| <= 400 uA, errs by 1.4 % (median) and 5 % (largest) at dI = 20 uA, 7 % and 21 % at 100 uA.
    V(I) and dV/dI from the documented equation, solved here with SciPy's brentq (V G(theta(I), V)
    = I) and differentiated implicitly."""
    from scipy.optimize import brentq

    r_p, tmr0, v_h, theta0, dtheta, i_c = 1000.0, 1.5, 0.5, math.pi / 2, 1.2, 200e-6

    def conductance(current, volts):
        theta = theta0 - dtheta * math.tanh(current / i_c)
        tmr = tmr0 / (1 + (volts / v_h) ** 2)
        return ((1 + math.cos(theta)) / 2 + (1 - math.cos(theta)) / (2 * (1 + tmr))) / r_p

    def volts(current):
        return brentq(lambda v: v * conductance(current, v) - current, -10.0, 10.0, xtol=1e-15, rtol=1e-15)

    def slope(current):  # dV/dI = (1 - V dG/dI|_V) / (G + V dG/dV|_I), the partials by central differences
        v, h_i, h_v = volts(current), 1e-9, 1e-7
        dg_di = (conductance(current + h_i, v) - conductance(current - h_i, v)) / (2 * h_i)
        dg_dv = (conductance(current, v + h_v) - conductance(current, v - h_v)) / (2 * h_v)
        return (1 - v * dg_di) / (conductance(current, v) + v * dg_dv)

    errors = np.array([abs((volts(i + delta_i) - volts(i)) / delta_i / slope(i) - 1)
                       for i in np.linspace(-400e-6, 400e-6, 401)])
    assert round(100 * float(np.median(errors)), 1 if median < 5 else 0) == median
    assert round(100 * float(errors.max())) == largest
