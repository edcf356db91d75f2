"""stt_compact against an independent solver, finite differences and DESIGN.md 3.1's numbers."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from spingpu import get_model

MODEL = get_model("stt_compact")


def reference_voltage(current, r_p, tmr0, v_h, theta0, dtheta, i_c):
    """V(I) of DESIGN.md 3.1 by bracketing root search (scipy's brentq), float64."""
    cos_t = math.cos(theta0 - dtheta * math.tanh(current / i_c))

    def residual(v):
        tmr = tmr0 / (1 + (v / v_h) ** 2)
        g = ((1 + cos_t) / 2 + (1 - cos_t) / (2 * (1 + tmr))) / r_p
        return v * g - current

    if current == 0:
        return 0.0
    bound = abs(current) * r_p * (1 + tmr0) * 2
    return brentq(residual, -bound, bound, xtol=1e-16, rtol=1e-15, maxiter=500)


def random_params(rng, n):
    nominal = MODEL.nominal
    p = np.tile(nominal, (n, 1))
    p[:, [0, 1, 2, 5]] *= np.exp(rng.normal(0, 0.3, (n, 4)))
    p[:, 3] += rng.normal(0, 0.3, n)
    p[:, 4] *= np.exp(rng.normal(0, 0.2, n))
    return p


def test_voltage_matches_independent_root_finder():
    rng = np.random.default_rng(11)
    params = random_params(rng, 200)
    current = rng.uniform(-2e-3, 2e-3, 200)
    v, _ = MODEL.iv(current, params)
    ref = np.array([reference_voltage(i, *p) for i, p in zip(current, params)])
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-15)


def test_derivative_matches_float64_central_difference():
    rng = np.random.default_rng(12)
    params = random_params(rng, 300)
    current = rng.uniform(-1e-3, 1e-3, 300)
    h = 1e-9  # A; truncation ~ h^2 V''' / 6 and rounding ~ eps V / h are both well below 1e-7 relative
    _, d = MODEL.iv(current, params)
    vp, _ = MODEL.iv(current + h, params)
    vm, _ = MODEL.iv(current - h, params)
    fd = (vp - vm) / (2 * h)
    rel = np.abs(d - fd) / np.abs(fd)
    assert rel.max() < 1e-6, rel.max()


def test_zero_current_gives_zero_voltage_and_small_signal_resistance():
    rng = np.random.default_rng(13)
    params = random_params(rng, 50)
    v, d = MODEL.iv(0.0, params)
    assert np.all(v == 0.0)
    # At I = 0: dV/dI = 1 / G(theta0, 0) + 0 (the torque term carries a factor V = 0).
    r_p, tmr0, _, theta0, _, _ = params.T
    g0 = ((1 + np.cos(theta0)) / 2 + (1 - np.cos(theta0)) / (2 * (1 + tmr0))) / r_p
    np.testing.assert_allclose(d, 1 / g0, rtol=1e-12)


def test_nominal_slopes_quoted_in_design():
    current = np.array([-100e-6, 250e-6, 300e-6, 400e-6, 600e-6])
    _, d = MODEL.iv(current)
    assert d[0] == pytest.approx(2000, rel=0.03)  # "about 2.0 kOhm near -100 uA"
    assert np.all(np.abs(d[1:] - 1000) < 60)  # "1.0 kOhm above +200 uA"
    grid = np.linspace(-400e-6, 400e-6, 801)
    _, dg = MODEL.iv(grid)
    assert -130e-6 < grid[np.argmax(dg)] < -70e-6  # the peak of dV/dI sits near -100 uA


def test_large_currents_converge_and_are_monotone():
    current = np.linspace(-20e-3, 20e-3, 4001)
    v, d = MODEL.iv(current)
    assert np.all(np.isfinite(v)) and np.all(d > 0)
    assert np.all(np.diff(v) > 0)
    # Far from zero theta is saturated and TMR has collapsed: R -> r_p-ish, V ~ I * 1/G(theta_sat, inf).
    theta = np.pi / 2 - 1.2
    r_sat = 1e3 / ((1 + np.cos(theta)) / 2 + (1 - np.cos(theta)) / 2)
    assert v[-1] / current[-1] == pytest.approx(r_sat, rel=0.01)


def test_float32_currents_are_computed_in_float64():
    current = np.float32(123e-6)
    v32, d32 = MODEL.iv(current)
    v64, d64 = MODEL.iv(np.float64(current))
    assert v32 == v64 and d32 == d64


def stt_cubic(current, r_p, tmr0, v_h, theta0, dtheta, i_c):
    """The coefficients and starting point of stt_compact's cubic, as the kernel forms them."""
    cos_t = math.cos(theta0 - dtheta * math.tanh(current / i_c))
    a, b = 0.5 * (1 + cos_t) / r_p, 0.5 * (1 - cos_t) / r_p
    c1 = a * (1 + tmr0) + b
    coefs = ((a + b) / v_h**2, -current / v_h**2, c1, -current * (1 + tmr0))
    return coefs, current * (1 + tmr0) / c1


def resistance_cubic(current, r_p, tmr0, v_h, cos_t):
    """The macrospin module's resistance form, V = I r_p (1 + tmr0 (1 - cos) / 2 / (1 + V^2 / v_h^2)),
    as a cubic (kernels.macrospin.resistance), and its starting point I R(0)."""
    b = 0.5 * (1 - cos_t)
    r0 = r_p * (1 + tmr0 * b)
    return (1 / (v_h**2 * r_p), -current / v_h**2, 1 / r_p, -current * (1 + tmr0 * b)), current * r0


@pytest.mark.parametrize("form", ["stt_compact", "resistance"])
def test_newton_stops_within_four_ulp_of_the_exact_root_of_its_cubic(form):
    """The early stop (a step below 1e-9 relative, module doc) returns the float64 root: the cubic,
    evaluated exactly in rationals, changes sign within four ulp of it (two at most over 20,000
    draws: the rounding of p near its root). A looser stop (1e-6) leaves ~1e-12 relative and fails."""
    from fractions import Fraction

    from spingpu.kernels.stt_compact import NEWTON_LAST_STEP, cubic_root

    rng = np.random.default_rng()
    params = random_params(rng, 300)
    current = rng.normal(0, 1e-3, 300)
    for i, p in zip(current, params):
        coefs, start = (stt_cubic(i, *p) if form == "stt_compact"
                        else resistance_cubic(i, p[0], p[1], p[2], rng.uniform(-1, 1)))
        v = cubic_root(*coefs, start, NEWTON_LAST_STEP)
        exact = [Fraction(c) for c in coefs]

        def sign(x):
            x = Fraction(x)
            return np.sign(((exact[0] * x + exact[1]) * x + exact[2]) * x + exact[3])

        lo, hi = v, v
        for _ in range(4):
            lo, hi = math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)
        assert sign(lo) * sign(hi) <= 0, (i, p, v)


def test_newton_error_constant_is_below_the_bound_of_the_module_doc():
    """K = V p''(V) / (2 p'(V)) at the root, over spreads and currents beyond any study, stays below
    the 3.5 the early stop relies on (an error of K s^2 after a step of relative size s)."""
    from spingpu.kernels.stt_compact import NEWTON_LAST_STEP, cubic_root

    rng = np.random.default_rng()
    params = random_params(rng, 20000)
    params[:, 1] *= np.exp(rng.normal(0, 1, 20000))  # tmr0 from ~0.2 to ~10
    current = rng.normal(0, 5e-3, 20000)
    largest = {}
    for form in ("stt_compact", "resistance"):
        k_abs = []
        for i, p in zip(current, params):
            (c3, c2, c1, c0), start = (stt_cubic(i, *p) if form == "stt_compact"
                                       else resistance_cubic(i, p[0], p[1], p[2], math.cos(p[3])))
            v = cubic_root(c3, c2, c1, c0, start, NEWTON_LAST_STEP)
            k_abs.append(abs(v * (6 * c3 * v + 2 * c2) / (2 * ((3 * c3 * v + 2 * c2) * v + c1))))
        largest[form] = max(k_abs)
    assert all(0.5 < k < 3.5 for k in largest.values()), largest


def test_the_kernels_prepared_rows_give_the_same_bits_as_the_parameters():
    """The training kernels evaluate stt_compact_prepared on rows holding 1 / r_p, 1 / v_h^2 and
    1 / i_c (PreparedModel.bind); every reading must equal the physical form's bit for bit, the
    nominal junction of mode ``model`` too, for any nominal (v_h = inf: 1 / v_h^2 = 0)."""
    from spingpu.kernels.stt_compact import stt_compact, stt_compact_prepared

    rng = np.random.default_rng()
    for model in (MODEL, MODEL.with_nominal(r_p=rng.uniform(100, 1e4), v_h=math.inf)):
        params = random_params(rng, 400)
        params[::5, 2] = math.inf
        layer = params.reshape(20, 10, 2, 6)  # (N, U, 2, P)
        current = rng.uniform(-3e-3, 3e-3, layer.shape[:-1])
        kernel_model, (rows,) = model.bind([layer])
        assert rows.shape == layer.shape and type(kernel_model) is type(MODEL.kernel_form)
        assert kernel_model.parameter_names == ("g_p", "tmr0", "inv_vh2", "theta0", "dtheta", "inv_ic")
        for got, want in zip(kernel_model.iv(current, rows), model.iv(current, layer)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(kernel_model.nominal, model.prepared(model.nominal))
        i = float(current.flat[0])
        assert stt_compact_prepared(i, *kernel_model.nominal) == stt_compact(i, *model.nominal)
        assert kernel_model.nominal[2] == (0.0 if model.nominal[2] == math.inf else 1 / model.nominal[2] ** 2)
        # a with_nominal copy shares the kernel form's compiled kernels (compiled once)
        assert kernel_model._compiled is MODEL.kernel_form._compiled


def test_the_pair_form_gives_two_readings_bit_for_bit():
    """stt_compact_prepared_pair (a pair neuron's two readings side by side, for GPU threads) equals
    stt_compact_prepared of each junction bit for bit: junctions of 30 % spreads and far-off ones
    (whose Newton solves take different numbers of steps), one junction at two currents, and the
    point_row_pair the training kernels call (its generic form, two scalar calls, for a model
    without a pair form)."""
    import numba

    from spingpu.kernels.stt_compact import stt_compact_prepared, stt_compact_prepared_pair

    rng = np.random.default_rng()
    n = 20_000
    rows = MODEL.prepared(random_params(rng, 2 * n))
    rows[::7, 0] *= np.exp(rng.uniform(-4, 4, rows[::7].shape[0]))  # r_p far from the nominal
    rows[::11, 2] = 0.0  # v_h = inf
    current = rng.normal(0, 1e-3, 2 * n) * np.exp(rng.uniform(-5, 3, 2 * n))
    current[::13] = 0.0

    @numba.njit
    def both(current, rows, single, pair):
        for k in range(current.size):
            single[k] = stt_compact_prepared(current[k], *(rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3], rows[k, 4],
                                                          rows[k, 5]))
        half = current.size // 2
        for k in range(half):
            j = k + half
            pair[k, 0], pair[k, 1], pair[j, 0], pair[j, 1] = stt_compact_prepared_pair(
                current[k], rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3], rows[k, 4], rows[k, 5],
                current[j], rows[j, 0], rows[j, 1], rows[j, 2], rows[j, 3], rows[j, 4], rows[j, 5])

    single, pair = np.empty((2 * n, 2)), np.empty((2 * n, 2))
    both(current, rows, single, pair)
    np.testing.assert_array_equal(pair, single)
    same = rows.copy()
    same[n:] = rows[:n]  # one junction at two currents (fd_single)
    both(current, same, single, pair)
    np.testing.assert_array_equal(pair, single)
    # inputs whose solve reaches the 100-step cap (subnormal currents; NaN: a diverged network's),
    # beside ones that converge: each side keeps its own cap
    special = np.array([-1.5e-323, 1.497e-321, 5e-324, -5e-324, np.nan, np.inf, -np.inf, 0.0])
    odd = current.copy()
    odd[:special.size], odd[n:n + special.size] = special, special[::-1]
    odd[2 * special.size:3 * special.size] = special
    both(odd, rows, single, pair)
    np.testing.assert_array_equal(pair, single)
    # subnormal currents whose solves reach the cap (found by a review), beside a junction at 0 A
    # that converges at once: the pair form gave -6.1e-322 for -6.13e-322 while it restarted the cap
    nominal = MODEL.kernel_form.nominal
    for i, row in ((-1.5e-323, (0.0331669533, 68.315034751, 0.00187455933, 1.0979977401, -0.3418552283, 78.434761012)),
                   (1.497e-321, (0.0545026012, 56.696121366, 44.855863093, 1.3601205564, -1.7401019570, 110196.73622))):
        for other in (0.0, -1e-3):
            assert stt_compact_prepared_pair(i, *row, other, *nominal)[:2] == stt_compact_prepared(i, *row)
            assert stt_compact_prepared_pair(other, *nominal, i, *row)[2:] == stt_compact_prepared(i, *row)

    kernel = MODEL.kernel_form
    generic = dataclasses.replace(kernel, scalar_pair=None, _compiled={})

    @numba.njit
    def through(point_row_pair, current, rows, out):
        for k in range(current.size // 2):
            out[k] = point_row_pair(current[k], rows, k, current[k + 1], k + 1, np.zeros((3, 1)))

    for model in (kernel, generic):
        out = np.empty((n, 4))
        through(model.point_row_pair, current, rows, out)
        v, d = kernel.iv(current, rows)
        np.testing.assert_array_equal(out, np.column_stack([v[:n], d[:n], v[1:n + 1], d[1:n + 1]]))
