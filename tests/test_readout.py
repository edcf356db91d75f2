"""Readout chain (DESIGN.md 4): read noise, ADC on the voltage, DAC on the current.

References are computed here independently: the noise formula with scipy.constants in mpmath, the
converters by searching for the nearest of the 2**bits levels.
"""

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import constants

from spingpu import ConfigError, Readout

Z = 5.0  # statistical bounds in standard errors; fixed seeds make every test deterministic


def std_bound(sigma, n):
    """Z standard errors of the sample std of n normal draws of std sigma."""
    return Z * sigma / math.sqrt(2 * (n - 1))


def nearest_level(x, lo, hi, bits):
    """The nearest of the levels lo + c (hi - lo) / (2**bits - 1), c = 0 .. 2**bits - 1 (by search)."""
    levels = np.linspace(lo, hi, 2**bits)
    right = np.clip(np.searchsorted(levels, x), 0, levels.size - 1)
    left = np.clip(right - 1, 0, levels.size - 1)
    take_left = np.abs(x - levels[left]) <= np.abs(x - levels[right])
    return np.where(take_left, levels[left], levels[right])


# --- read noise --------------------------------------------------------------------------------

def test_gaussian_noise_is_added_with_the_given_std():
    rng = np.random.default_rng(1)
    n = 200_000
    v = rng.uniform(-0.5, 0.5, n)
    i = rng.uniform(-1e-3, 1e-3, n)
    normals = rng.standard_normal(n)
    r = Readout(read_noise=0.02)
    out = r.read(v, i, rng.uniform(500, 2000, n), normals)
    np.testing.assert_allclose(out, v + 0.02 * normals, rtol=0, atol=1e-16)
    e = out - v
    assert abs(e.mean()) < Z * 0.02 / math.sqrt(n)
    assert abs(e.std(ddof=1) - 0.02) < std_bound(0.02, n)
    # The std does not depend on the operating point.
    assert np.all(r.noise_std(i, 1e3) == 0.02)
    assert r.noise_std(i[:5, None], np.full(3, 1e3)).shape == (5, 3)


def test_no_noise_and_no_converters_is_ideal():
    rng = np.random.default_rng(2)
    v = rng.uniform(-3, 3, 1000)  # also beyond the (unused) ADC range
    r = Readout()
    assert r.is_ideal
    assert np.array_equal(r.read(v, rng.uniform(-1e-3, 1e-3, 1000), 1e3, rng.standard_normal(1000)), v)
    assert not Readout(read_noise=1e-3).is_ideal
    assert not Readout(adc_bits=8).is_ideal and not Readout(dac_bits=8).is_ideal
    assert not Readout(noise_model="johnson_shot").is_ideal


def johnson_shot_reference(i, r_d, temperature, bandwidth, r_bridge=0.0, v=None):
    """sigma_V = sqrt(B (r_d^2 2 q |I| coth(q V_b / 2 kB T) + 4 kB T r_bridge)), V_b = |I r_d| (or
    the junction's |V| when ``v`` is given), in 40-digit arithmetic with scipy's constants; coth as
    cosh / sinh, the zero-bias limit 4 kB T / r_d taken analytically."""
    mp.mp.dps = 40
    k, q = mp.mpf(constants.k), mp.mpf(constants.e)
    bias = np.abs(np.asarray(i) * np.asarray(r_d)) if v is None else np.abs(v)
    out = []
    for ii, rr, vb in zip(*np.broadcast_arrays(i, r_d, bias)):
        ii, rr, vb = abs(mp.mpf(float(ii))), abs(mp.mpf(float(rr))), mp.mpf(float(vb))
        if temperature == 0:
            s_i = 2 * q * ii
        elif vb == 0:
            s_i = 4 * k * temperature / rr
        else:
            x = q * vb / (2 * k * temperature)
            s_i = 2 * q * ii * mp.cosh(x) / mp.sinh(x)
        out.append(float(mp.sqrt(bandwidth * (rr**2 * s_i + 4 * k * temperature * r_bridge))))
    return np.array(out)


@pytest.mark.parametrize("temperature, bandwidth", [(300.0, 1e6), (4.2, 1e9), (77.0, 1e3), (0.0, 1e7)])
def test_johnson_shot_std_matches_formula(temperature, bandwidth):
    rng = np.random.default_rng(int(temperature * 10) + int(math.log10(bandwidth)))
    n = 400
    # biases from deep in the thermal regime (|q I r_d| << kB T) to deep in the shot regime
    i = rng.choice([-1, 1], n) * 10 ** rng.uniform(-12, -2.5, n)
    r_d = rng.uniform(200, 4000, n) * rng.choice([1, -1], n, p=[0.9, 0.1])  # also negative dV/dI
    r_bridge = rng.uniform(0, 3000)
    r = Readout(noise_model="johnson_shot", temperature=temperature, bandwidth=bandwidth)
    np.testing.assert_allclose(r.noise_std(i, r_d), johnson_shot_reference(i, r_d, temperature, bandwidth),
                               rtol=1e-13)
    np.testing.assert_allclose(r.noise_std(i, r_d, r_bridge),
                               johnson_shot_reference(i, r_d, temperature, bandwidth, r_bridge), rtol=1e-13)
    # Between its two limits: max(2 q |I|, 4 kB T / r_d) <= S_I <= 2 q |I| + 4 kB T / r_d.
    s_i = r.noise_std(i, r_d) ** 2 / (bandwidth * r_d**2)
    shot, thermal = 2 * constants.e * np.abs(i), 4 * constants.k * temperature / np.abs(r_d)
    assert np.all(s_i >= np.maximum(shot, thermal) * (1 - 1e-12))
    assert np.all(s_i <= (shot + thermal) * (1 + 1e-12))


def test_johnson_shot_limits():
    kb, q = constants.k, constants.e
    r = Readout(noise_model="johnson_shot", temperature=300.0, bandwidth=1e6)
    # Zero bias: the Johnson-Nyquist noise sqrt(4 kB T R B) of R = dV/dI = 1 kOhm, 4.07 uV; also
    # at exactly I = 0, and continuous into it from both sides.
    thermal = math.sqrt(4 * kb * 300 * 1e3 * 1e6)
    assert thermal == pytest.approx(4.0704e-6, rel=1e-4)
    assert r.noise_std(0.0, 1e3) == pytest.approx(thermal, rel=1e-15)
    assert r.noise_std(1e-12, 1e3) == pytest.approx(thermal, rel=1e-8)
    assert r.noise_std(-1e-12, -1e3) == pytest.approx(thermal, rel=1e-8)
    # At q I r_d = 2 kB T the current noise is 2 q I coth(1).
    i = 2 * kb * 300 / q / 1e3
    assert r.noise_std(i, 1e3) == pytest.approx(1e3 * math.sqrt(2 * q * i * (math.cosh(1) / math.sinh(1)) * 1e6),
                                                rel=1e-13)
    # High bias, and T = 0: full shot noise sqrt(2 q |I| B) times r_d (not V / I).
    assert r.noise_std(1e-3, 2e3) == pytest.approx(2e3 * math.sqrt(2 * q * 1e-3 * 1e6), rel=1e-14)  # q V_b = 77 kB T
    r0 = Readout(noise_model="johnson_shot", temperature=0.0, bandwidth=1e6)
    assert r0.noise_std(-1e-4, 1.5e3) == pytest.approx(math.sqrt(2 * q * 1e-4 * 1e6) * 1.5e3, rel=1e-15)
    assert r0.noise_std(0.0, 1e3) == 0.0
    # A bridge resistor adds its Johnson noise in quadrature; none at T = 0.
    assert r.noise_std(0.0, 1e3, 3e3) == pytest.approx(math.sqrt(4 * kb * 300 * 4e3 * 1e6), rel=1e-14)
    assert r0.noise_std(0.0, 1e3, 3e3) == 0.0


@pytest.mark.parametrize("temperature, bound", [(300.0, 0.028), (77.0, 0.007)])
def test_johnson_shot_bias_from_dvdi_is_close_to_the_junctions_voltage(temperature, bound):
    """The stt_compact junction's own (V, I): taking the barrier bias as I dV/dI instead of V changes
    sigma_V by less than ``bound`` anywhere (V / I and dV/dI differ by the TMR's bias dependence)."""
    from spingpu import get_model

    i = np.concatenate([-np.logspace(-9, -3.2, 60), np.logspace(-9, -3.2, 60)])
    v, r_d = get_model("stt_compact").iv(i)
    r = Readout(noise_model="johnson_shot", temperature=temperature, bandwidth=1e6)
    ratio = r.noise_std(i, r_d) / johnson_shot_reference(i, r_d, temperature, 1e6, v=v)
    assert np.max(np.abs(ratio - 1)) < bound
    assert np.max(np.abs(ratio - 1)) > bound / 10  # the two do differ in the crossover


def test_johnson_shot_read_has_that_std():
    rng = np.random.default_rng(4)
    n = 200_000
    i = rng.uniform(50e-6, 500e-6, n)
    v = i * rng.uniform(800, 2500, n)
    r_d = rng.uniform(500, 2500, n)
    normals = rng.standard_normal(n)
    r = Readout(noise_model="johnson_shot", temperature=350.0, bandwidth=1e8)
    np.testing.assert_allclose(r.noise_std(i[:50], r_d[:50]), johnson_shot_reference(i[:50], r_d[:50], 350.0, 1e8),
                               rtol=1e-13)
    sd = r.noise_std(i, r_d)
    out = r.read(v, i, r_d, normals)
    np.testing.assert_allclose(out - v, sd * normals, rtol=1e-9, atol=1e-3 * sd.min())
    w = (out - v) / sd
    assert abs(w.mean()) < Z / math.sqrt(n)
    assert abs(w.std(ddof=1) - 1.0) < std_bound(1.0, n)


# --- ADC and DAC -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (-0.3, 0.7), (0.1, 0.35)])
def test_adc_levels_rounding_and_clipping(bits, lo, hi):
    rng = np.random.default_rng(bits * 100 + int(hi * 100))
    span = hi - lo
    v = rng.uniform(lo - 0.5 * span, hi + 0.5 * span, 100_000)
    v = np.concatenate([v, [lo, hi]])
    r = Readout(adc_bits=bits, adc_range=(lo, hi))
    out = r.read(v, np.full(v.shape, 1e-4), 1e3, rng.standard_normal(v.size))  # read_noise = 0: normals unused
    lsb = span / (2**bits - 1)
    # Only the 2**bits levels occur, and all of them do.
    codes = (out - lo) / lsb
    assert np.allclose(codes, np.round(codes), rtol=0, atol=1e-9)
    assert np.unique(np.round(codes)).tolist() == list(range(2**bits))
    # Nearest level inside the range (error at most lsb / 2), clipped outside it.
    np.testing.assert_allclose(out, nearest_level(v, lo, hi, bits), rtol=0, atol=1e-12 * span)
    inside = (v >= lo) & (v <= hi)
    assert np.max(np.abs(out[inside] - v[inside])) <= lsb / 2 * (1 + 1e-9)
    assert np.all(out[v < lo] == lo)
    np.testing.assert_allclose(out[v > hi], hi, rtol=0, atol=1e-12 * span)
    assert out[-2] == lo and out[-1] == pytest.approx(hi, abs=1e-12 * span)


def test_adc_24_bits():
    rng = np.random.default_rng(24)
    v = rng.uniform(-1, 1, 50_000)
    out = Readout(adc_bits=24).read(v, v, 1e3, np.zeros_like(v))
    lsb = 2.0 / (2**24 - 1)
    assert np.max(np.abs(out - v)) <= lsb / 2 * (1 + 1e-6)
    codes = (out + 1) / lsb
    assert np.allclose(codes, np.round(codes), rtol=0, atol=1e-6)


def test_noise_is_added_before_the_adc():
    rng = np.random.default_rng(6)
    n = 20_000
    v = rng.uniform(-0.2, 0.2, n)
    normals = rng.standard_normal(n)
    r = Readout(read_noise=0.05, adc_bits=6, adc_range=(-0.25, 0.25))
    out = r.read(v, np.full(n, 2e-4), 1e3, normals)
    np.testing.assert_allclose(out, nearest_level(v + 0.05 * normals, -0.25, 0.25, 6), rtol=0, atol=1e-14)


@pytest.mark.parametrize("bits", [2, 5, 10])
def test_dac_levels_rounding_and_clipping(bits):
    rng = np.random.default_rng(bits)
    lo, hi = -4e-4, 6e-4
    i = rng.uniform(-1e-3, 1.2e-3, 100_000)
    r = Readout(dac_bits=bits, dac_range=(lo, hi))
    out = r.drive(i)
    lsb = (hi - lo) / (2**bits - 1)
    codes = (out - lo) / lsb
    assert np.allclose(codes, np.round(codes), rtol=0, atol=1e-9)
    assert np.unique(np.round(codes)).size == 2**bits
    np.testing.assert_allclose(out, nearest_level(i, lo, hi, bits), rtol=0, atol=1e-12 * (hi - lo))
    inside = (i >= lo) & (i <= hi)
    assert np.max(np.abs(out[inside] - i[inside])) <= lsb / 2 * (1 + 1e-9)
    assert np.all(out[i < lo] == lo)
    np.testing.assert_allclose(out[i > hi], hi, rtol=0, atol=1e-12 * (hi - lo))


@pytest.mark.parametrize("bits", [1, 8, 24])
def test_converters_clip_huge_and_infinite_inputs_and_keep_nan(bits):
    """Beyond the range a value goes to the nearer end, however large (an integer conversion of
    (value - lo) / lsb would overflow for 1e30 or inf); NaN stays NaN, so divergence stays visible."""
    r = Readout(adc_bits=bits, adc_range=(-0.7, 1.3), dac_bits=bits, dac_range=(-2e-3, 1e-3))
    x = np.array([1e17, 1e30, np.inf, -1e17, -1e30, -np.inf, np.nan])
    out = r.adc(x)
    np.testing.assert_allclose(out[:3], 1.3, rtol=1e-12)
    assert np.all(out[3:6] == -0.7) and np.isnan(out[6])
    out = r.drive(x * 1e-3)
    np.testing.assert_allclose(out[:3], 1e-3, rtol=1e-12)
    assert np.all(out[3:6] == -2e-3) and np.isnan(out[6])


def test_a_symmetric_range_has_no_level_at_zero():
    """Levels lo + c (hi - lo) / (2**bits - 1) include both ends; about 0 the converter is mid-rise
    and 0 goes up to +lsb / 2 (the tie rounds up)."""
    lsb = 2e-3 / 255
    assert Readout(dac_bits=8).drive(np.array([0.0]))[0] == pytest.approx(lsb / 2, rel=1e-9)
    assert Readout(adc_bits=8).adc(np.array([-1e-9]))[0] == pytest.approx(-1 / 255, rel=1e-9)
    assert Readout(adc_bits=1).adc(np.array([0.0, -1e-12]))[:].tolist() == [1.0, -1.0]


def test_zero_bits_pass_through():
    rng = np.random.default_rng(9)
    x = rng.uniform(-5, 5, 10_000)  # far outside both ranges
    r = Readout(adc_bits=0, dac_bits=0)
    assert np.array_equal(r.read(x, x * 1e-3, 1e3, np.zeros_like(x)), x)
    assert np.array_equal(r.drive(x * 1e-3), x * 1e-3)
    # An ADC alone leaves the drive ideal and vice versa.
    assert np.array_equal(Readout(adc_bits=4).drive(x * 1e-3), x * 1e-3)
    assert np.array_equal(Readout(dac_bits=4).read(x, x, 1e3, np.zeros_like(x)), x)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field, problem", [
    (dict(adc_bits=-1), "adc_bits", "0 <= value <= 24"),
    (dict(adc_bits=25), "adc_bits", "0 <= value <= 24"),
    (dict(adc_bits=3.5), "adc_bits", "expected an integer"),
    (dict(adc_bits=True), "adc_bits", "expected an integer"),
    (dict(dac_bits=-1), "dac_bits", "0 <= value <= 24"),
    (dict(dac_bits=25), "dac_bits", "0 <= value <= 24"),
    (dict(adc_range=(1.0, -1.0)), "adc_range", "lower end 1.0 must be below upper end -1.0"),
    (dict(adc_range=(0.5, 0.5)), "adc_range", "must be below"),
    (dict(adc_range=1.0), "adc_range", "expected two numbers"),
    (dict(adc_range=(0.0, 1.0, 2.0)), "adc_range", "expected two numbers"),
    (dict(adc_range=(float("nan"), 1.0)), "adc_range", "expected finite numbers, got nan; allowed: -1000 <= low < "
                                                       "high <= 1000 (V)"),
    (dict(dac_range=(0.0, float("inf"))), "dac_range", "got inf; allowed: -1 <= low < high <= 1 (A)"),
    (dict(adc_range=("a", 1.0)), "adc_range[0]", "expected a number, got 'a'"),
    (dict(dac_range=(1e-3, -1e-3)), "dac_range", "must be below"),
    (dict(adc_range=(-1e308, 1e308)), "adc_range", "(-1e+308, 1e+308) is out of range; allowed: -1000 <= low < "
                                                   "high <= 1000 (V)"),
    (dict(adc_range=(-0.5, 1000.5)), "adc_range", "(-0.5, 1000.5) is out of range"),
    (dict(dac_range=(-1e9, 1e9)), "dac_range", "(-1e+09, 1e+09) is out of range; allowed: -1 <= low < high <= 1 (A)"),
    (dict(dac_range=(-1.5, 0.0)), "dac_range", "(-1.5, 0) is out of range"),
    (dict(noise_model="pink"), "noise_model", "allowed: gaussian, johnson_shot"),
    (dict(read_noise=-1e-3), "read_noise", "0 <= value <= 1"),
    (dict(temperature=-1.0), "temperature", "0 <= value"),
    (dict(bandwidth=0.0), "bandwidth", "0 < value"),
])
def test_bad_readout_raises(kwargs, field, problem):
    with pytest.raises(ConfigError) as err:
        Readout(**kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")
    assert problem in str(err.value)
