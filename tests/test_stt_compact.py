"""stt_compact against an independent solver, finite differences and DESIGN.md 3.1's numbers."""

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
