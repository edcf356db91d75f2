"""The stt_compact_f32 model: stt_compact's equations in float32, against the float64 model."""

import math

import numpy as np
import pytest

from spingpu import get_model
from spingpu.kernels.stt_compact import stt_compact_f32_prepared

F64, F32 = get_model("stt_compact"), get_model("stt_compact_f32")
U32 = 2.0 ** -24  # float32's unit roundoff


def spread_params(rng, n, sigma):
    """Parameter rows with every parameter spread by ``sigma`` (lognormal ones by e^(sigma z))."""
    p = np.tile(F64.nominal, (n, 1))
    for k, parameter in enumerate(F64.parameters):
        z = rng.normal(0.0, sigma, n)
        p[:, k] = p[:, k] * np.exp(z) if parameter.distribution == "lognormal" else p[:, k] + parameter.scale * z
    return p


@pytest.mark.parametrize("sigma, i_max", [(0.1, 6e-4), (0.3, 2e-3)])
def test_float32_junction_is_stt_compact_to_a_few_float32_roundings(sigma, i_max):
    """V and dV/dI within 1e-6 relative (~17 u; measured: 3.3e-7 and 3.9e-7 over 200,000 draws),
    dV/dI relative to the larger of itself and the chord resistance V / I; and not float64 in
    disguise: the largest difference is above 0.5 u."""
    rng = np.random.default_rng()
    params = spread_params(rng, 20_000, sigma)
    current = rng.uniform(-i_max, i_max, 20_000)
    v64, d64 = F64.iv(current, params)
    v32, d32 = F32.iv(current, params)
    rel_v = np.abs(v32 - v64) / np.abs(v64)
    rel_d = np.abs(d32 - d64) / np.maximum(np.abs(d64), np.abs(v64 / current))
    assert rel_v.max() < 1e-6 and rel_d.max() < 1e-6, (rel_v.max(), rel_d.max())
    assert rel_v.max() > 0.5 * U32 and rel_d.max() > 0.5 * U32, (rel_v.max(), rel_d.max())
    assert np.array_equal(v32, v32.astype(np.float32)) and np.array_equal(d32, d32.astype(np.float32))


def test_float32_kernel_rows_give_the_models_numbers_bit_for_bit():
    rng = np.random.default_rng()
    params = spread_params(rng, 500, 0.2)
    current = rng.uniform(-1e-3, 1e-3, 500)
    kernel_model, (rows,) = F32.bind([params[:, None, None, :]])
    assert kernel_model.name == "stt_compact_f32_prepared" and kernel_model.scalar is stt_compact_f32_prepared
    got = kernel_model.iv(current, rows[:, 0, 0])
    want = F32.iv(current, params)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(kernel_model.iv(current)[0], F32.iv(current)[0])  # the nominal junction


def test_float32_junction_is_finite_and_solved_at_every_corner_of_its_ranges():
    """At the ends of the allowed ranges (where sampling clips lognormal draws) V solves
    V G(theta(I), V) = I to float32 rounding: a Newton solve stopped by its cap, or a float32
    overflow or underflow, would not."""
    current = np.array([-1.0, -4e-4, 0.0, 1e-9, 4e-4, 1.0])
    ends = {p.name: (p.low + 1e-9 if p.low_open else p.low, p.high) for p in F64.parameters}
    for r_p in ends["r_p"]:
        for tmr0 in ends["tmr0"]:
            for v_h in ends["v_h"] + (math.inf,):
                for i_c in ends["i_c"]:
                    for theta0, dtheta in ((0.1, 3.0), (math.pi / 2, 1.2), (3.0, -3.0)):
                        row = np.array([r_p, tmr0, v_h, theta0, dtheta, i_c])
                        v, d = F32.iv(current, row)
                        assert np.isfinite(v).all() and np.isfinite(d).all(), (row, v, d)
                        cos_t = np.cos(theta0 - dtheta * np.tanh(current / i_c))
                        tmr = tmr0 / (1 + (v / v_h) ** 2)
                        g = ((1 + cos_t) / 2 + (1 - cos_t) / (2 * (1 + tmr))) / r_p
                        with np.errstate(invalid="ignore", divide="ignore"):
                            residual = np.where(current == 0, np.abs(v), np.abs(v * g - current) / np.abs(current))
                        assert residual.max() < 1e-5, (row, residual)


def test_float32_model_is_listed_with_stt_compacts_parameters_and_ranges():
    assert F32.parameters == F64.parameters and "float32" in F32.description
    assert get_model("stt_compact_f32", r_p=1500.0).nominal[0] == 1500.0
