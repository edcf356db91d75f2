"""The stt_compact_f32 model: stt_compact's equations in float32, against the float64 model."""

import math
import warnings

import numpy as np
import pytest

from spingpu import PairNeuron, SpingpuWarning, TrainConfig, get_model, load_dataset, train
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


def log_uniform(rng, low, high, n):
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def full_range_draws(rng, n):
    """Parameter rows and currents spread over the parameters' whole allowed ranges (log-uniform for
    the lognormal ones, from 1e-9 where the range starts at 0), |I| log-uniform from 1 nA to 1 A."""
    params = np.column_stack([log_uniform(rng, p.low or 1e-9, p.high, n) if p.distribution == "lognormal"
                              else rng.uniform(p.low, p.high, n) for p in F64.parameters])
    return params, log_uniform(rng, 1e-9, 1.0, n) * rng.choice([-1.0, 1.0], n)


def relative_errors(v, d, v64, d64, current):
    """|V - V64| / |V64| and |dV/dI - dV/dI64| / max(|dV/dI64|, |V64 / I|) (the chord resistance:
    the scale where dV/dI passes near 0)."""
    return np.abs(v - v64) / np.abs(v64), np.abs(d - d64) / np.maximum(np.abs(d64), np.abs(v64 / current))


@pytest.mark.parametrize("draws", ["10 % spreads, |I| <= 600 uA", "30 % spreads, |I| <= 2 mA", "whole ranges"])
def test_float32_junction_adds_a_few_times_the_error_of_rounding_its_inputs(draws):
    """A float32 evaluation cannot beat the float64 function evaluated at its inputs rounded to
    float32 (7 numbers rounded, then amplified by V's condition number, which grows with tmr0 near
    theta = +-pi). stt_compact_f32 rounds ~30 intermediate results too: its largest error may be a
    few times that floor's, not more: V within 8x (measured up to 3.9x over 40 draws of 20,000),
    dV/dI within 16x (up to 7.5x: its numerator 1 - V dG/dtheta dtheta/dI and denominator round a
    dozen more products, whose errors the inputs' rounding does not show). Near nominal that is
    ~3e-7 relative (the model's description). And it is not
    float64 in disguise: the largest difference is above 0.5 u and every value is a float32 (a
    partial promotion to float64 is caught by test_gpu_check's count of float64 instructions in
    the PTX of the same function)."""
    rng = np.random.default_rng()
    n = 20_000
    if draws == "whole ranges":
        params, current = full_range_draws(rng, n)
    else:
        sigma, i_max = (0.1, 6e-4) if draws.startswith("10") else (0.3, 2e-3)
        params, current = spread_params(rng, n, sigma), rng.uniform(-i_max, i_max, n)
    kernel, rows = F64.kernel_model, F64.prepared(params)
    v64, d64 = kernel.iv(current, rows)
    as_f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    floor_v, floor_d = relative_errors(*kernel.iv(as_f32(current), as_f32(rows)), v64, d64, current)
    err_v, err_d = relative_errors(*F32.iv(current, params), v64, d64, current)
    assert err_v.max() <= 8 * max(floor_v.max(), U32) and err_d.max() <= 16 * max(floor_d.max(), U32), \
        (err_v.max(), floor_v.max(), err_d.max(), floor_d.max())
    if draws != "whole ranges":
        assert err_v.max() < 1e-6 and err_d.max() < 2e-6, (err_v.max(), err_d.max())  # the README's ~3e-7 and 4e-7
    assert err_v.max() > 0.5 * U32 and err_d.max() > 0.5 * U32, (err_v.max(), err_d.max())
    v32, d32 = F32.iv(current, params)
    assert np.array_equal(v32, as_f32(v32)) and np.array_equal(d32, as_f32(d32))


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


def test_a_model_of_another_precision_is_refused_in_one_line():
    """``precision`` is what training's float32 warning reads: a word outside the two is an error,
    not a float64 model by default."""
    import dataclasses

    from spingpu import ConfigError

    for bad, said in (("float16", "'float16'"), ("Float32", "'Float32'"), (32, "32")):
        with pytest.raises(ConfigError) as err:
            dataclasses.replace(F64, precision=bad)
        assert str(err.value).startswith(f"precision: {said}") and str(err.value).endswith(
            "allowed: float64, float32") and "\n" not in str(err.value)
    assert dataclasses.replace(F64, precision="float32").precision == "float32"


def test_a_step_too_small_for_float32_junctions_is_said_in_one_line():
    """Below dI = 1 nA a float32 V's rounding over dI passes ~1 % of dV/dI (~1.2e-11 A / dI at
    ~200 uA): training says so, for finite-difference modes of a float32 model only."""
    data = load_dataset("iris")

    def said(model, delta_i, grad_mode="fd_forward"):
        cfg = TrainConfig(hidden=(3,), epochs=1, grad_mode=grad_mode, neuron=PairNeuron(delta_i=delta_i))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(data, cfg, n_networks=2, model=model, backend="numpy")
        return [str(w.message) for w in caught if issubclass(w.category, SpingpuWarning)
                and "float32" in str(w.message)]

    assert said("stt_compact_f32", 1e-10) == [
        "neuron.delta_i: 1e-10 A with the float32 junctions of 'stt_compact_f32': V's float32 rounding over dI "
        "is ~12% of dV/dI at ~200 uA; a step of at least 1 nA, or a float64 model, avoids it"]
    assert said("stt_compact_f32", 1e-9) == said("stt_compact", 1e-10) == said("stt_compact_f32", 1e-10, "model") == []
