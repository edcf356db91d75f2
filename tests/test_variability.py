"""Hierarchical variability (DESIGN.md 4) and the Philox generator under it (DESIGN.md 6).

Statistical checks use fixed seeds (deterministic) and 5-sigma bounds derived from the sample size:
the standard error of a mean of N iid draws of std s is s / sqrt(N), of a sample std about
s / sqrt(2 (N - 1)) for normal draws, and of Fisher's z = atanh(r) of a correlation 1 / sqrt(N - 3).
"""

import math

import numba
import numpy as np
import pytest
from scipy import stats

from spingpu import ConfigError, Variability, get_model, sample_layer
from spingpu.kernels import philox

MODEL = get_model("stt_compact")
NAMES = MODEL.parameter_names
LOG_PARAMS = [n for n, p in zip(NAMES, MODEL.parameters) if p.distribution == "lognormal"]
NORMAL_PARAMS = [n for n, p in zip(NAMES, MODEL.parameters) if p.distribution == "normal"]
K = {n: i for i, n in enumerate(NAMES)}

S_CHIP, S_D2D, S_PAIR = 0.3, 0.2, 0.1
S_TOT2 = S_CHIP**2 + S_D2D**2 + S_PAIR**2
N_NET = 100_000
Z = 5.0  # bounds in standard errors


def spread(name, params):
    """log(p / p_nominal) for lognormal parameters, (p - p_nominal) / scale for normal ones."""
    p = MODEL.parameter(name)
    x = params[..., K[name]]
    return np.log(x / p.nominal) if p.distribution == "lognormal" else (x - p.nominal) / p.scale


def assert_corr(x, y, rho, label=""):
    """Pearson correlation of iid pairs (x, y) equals rho within Z Fisher-z standard errors."""
    r = np.corrcoef(x, y)[0, 1]
    se = 1.0 / math.sqrt(x.size - 3)
    assert abs(math.atanh(r) - math.atanh(rho)) < Z * se, (label, r, rho)


@pytest.fixture(scope="module")
def hier():
    """Two layers of two units for N_NET networks (chips)."""
    var = Variability(S_CHIP, S_D2D, S_PAIR)
    l0 = sample_layer(MODEL, var, 20240611, np.arange(N_NET), 0, 2)
    l1 = sample_layer(MODEL, var, 20240611, np.arange(N_NET), 1, 2)
    return l0, l1


# --- marginal distributions --------------------------------------------------------------------

@pytest.mark.parametrize("name", LOG_PARAMS)
def test_lognormal_parameter_log_mean_and_std(hier, name):
    y = spread(name, hier[0][:, 0, 0])  # one junction per chip: iid across chips
    s = math.sqrt(S_TOT2)
    assert abs(y.mean()) < Z * s / math.sqrt(y.size)
    assert abs(y.std(ddof=1) - s) < Z * s / math.sqrt(2 * (y.size - 1))
    # The whole distribution is normal in log p (Kolmogorov-Smirnov, fixed seed).
    assert stats.kstest(y / s, "norm").pvalue > 1e-3
    assert np.all(hier[0][..., K[name]] > 0)


@pytest.mark.parametrize("name", NORMAL_PARAMS)
def test_normal_parameter_mean_nominal_and_std_sigma_times_nominal(hier, name):
    p = MODEL.parameter(name)
    x = hier[0][:, 1, 1, K[name]]
    s = math.sqrt(S_TOT2) * {"theta0": math.pi / 2, "dtheta": 1.2}[name]  # their spread_scale, in rad
    assert abs(x.mean() - p.nominal) < Z * s / math.sqrt(x.size)
    assert abs(x.std(ddof=1) - s) < Z * s / math.sqrt(2 * (x.size - 1))
    assert stats.kstest((x - p.nominal) / s, "norm").pvalue > 1e-3


# --- correlations between the levels -----------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_pair_members_correlate_by_chip_plus_d2d(hier, name):
    l0 = hier[0]
    rho = (S_CHIP**2 + S_D2D**2) / S_TOT2
    assert_corr(spread(name, l0[:, 0, 0]), spread(name, l0[:, 0, 1]), rho, "A-B unit 0")
    assert_corr(spread(name, l0[:, 1, 0]), spread(name, l0[:, 1, 1]), rho, "A-B unit 1")


@pytest.mark.parametrize("name", NAMES)
def test_neurons_of_one_chip_correlate_by_chip_only(hier, name):
    l0, l1 = hier
    rho = S_CHIP**2 / S_TOT2
    assert_corr(spread(name, l0[:, 0, 0]), spread(name, l0[:, 1, 0]), rho, "units 0-1")
    assert_corr(spread(name, l0[:, 0, 0]), spread(name, l0[:, 1, 1]), rho, "unit 0 A - unit 1 B")
    # The chip draw is shared by every junction of the network, in every layer.
    assert_corr(spread(name, l0[:, 0, 0]), spread(name, l1[:, 0, 0]), rho, "layers 0-1")


@pytest.mark.parametrize("name", NAMES)
def test_different_networks_are_independent(hier, name):
    y = spread(name, hier[0][:, 0, 0])
    assert_corr(y[0::2], y[1::2], 0.0, "networks 2i, 2i+1")
    assert_corr(y[: N_NET // 2], y[N_NET // 2:], 0.0, "networks i, i + N/2")


def test_parameters_uncorrelated_without_correlation(hier):
    y = np.stack([spread(n, hier[0][:, 0, 0]) for n in NAMES])
    for i in range(len(NAMES)):
        for j in range(i + 1, len(NAMES)):
            assert_corr(y[i], y[j], 0.0, (NAMES[i], NAMES[j]))


def test_level_difference_has_pair_variance_only(hier):
    # log(pA / pB) = s_pair (x_A - x_B): chip and neuron draws cancel exactly.
    d = spread("r_p", hier[0][:, 0, 0]) - spread("r_p", hier[0][:, 0, 1])
    s = math.sqrt(2) * S_PAIR
    assert abs(d.std(ddof=1) - s) < Z * s / math.sqrt(2 * (d.size - 1))


# --- correlations between parameters ----------------------------------------------------------

def test_parameter_correlation_appears_in_sample():
    rho = -0.6
    var = Variability(S_CHIP, S_D2D, S_PAIR, correlation={("r_p", "tmr0"): rho})
    s = sample_layer(MODEL, var, 7, np.arange(60_000), 0, 1)
    rp_a, tmr_a, tmr_b = spread("r_p", s[:, 0, 0]), spread("tmr0", s[:, 0, 0]), spread("tmr0", s[:, 0, 1])
    assert_corr(rp_a, tmr_a, rho, "same junction")
    # It acts within every level: across the pair, only chip and d2d levels are shared.
    assert_corr(rp_a, tmr_b, rho * (S_CHIP**2 + S_D2D**2) / S_TOT2, "A r_p - B tmr0")
    assert_corr(rp_a, spread("v_h", s[:, 0, 0]), 0.0, "r_p, v_h")
    assert_corr(spread("r_p", s[:, 0, 0]), spread("r_p", s[:, 0, 1]), (S_CHIP**2 + S_D2D**2) / S_TOT2)
    # The order of a key does not matter.
    s_rev = sample_layer(MODEL, Variability(S_CHIP, S_D2D, S_PAIR, correlation={("tmr0", "r_p"): rho}),
                         7, np.arange(100), 0, 1)
    np.testing.assert_array_equal(s_rev, s[:100])


def test_correlation_matrix_of_three_parameters_with_per_level_spreads():
    corr = {("r_p", "tmr0"): -0.6, ("tmr0", "v_h"): 0.5, ("r_p", "i_c"): 0.3}
    spreads = {"r_p": (0.1, 0.2, 0.1), "tmr0": (0.3, 0.0, 0.1), "v_h": (0.2, 0.2, 0.2), "i_c": (0.0, 0.3, 0.0)}
    var = Variability(per_parameter=spreads, correlation=corr)
    s = sample_layer(MODEL, var, 99, np.arange(60_000), 0, 1)[:, 0, 0]
    # Expected: cov(a, b) = rho_ab * sum over levels of s_a s_b, var(a) = sum of s_a^2.
    names = list(spreads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = corr.get((a, b), corr.get((b, a), 0.0))
            sa, sb = np.array(spreads[a]), np.array(spreads[b])
            expected = rho * (sa @ sb) / math.sqrt((sa @ sa) * (sb @ sb))
            assert_corr(spread(a, s), spread(b, s), expected, (a, b))
    for a in names:
        sd = math.sqrt(np.sum(np.square(spreads[a])))
        y = spread(a, s)
        assert abs(y.std(ddof=1) - sd) < Z * sd / math.sqrt(2 * (y.size - 1)), a


def test_non_positive_definite_correlations_raise():
    corr = {("r_p", "tmr0"): 0.9, ("tmr0", "v_h"): 0.9, ("r_p", "v_h"): -0.9}
    m = np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]])
    assert np.linalg.eigvalsh(m).min() < 0  # the premise of the test
    var = Variability(0.1, 0.1, 0.1, correlation=corr)
    with pytest.raises(ConfigError) as err:
        sample_layer(MODEL, var, 1, np.arange(4), 0, 2)
    assert err.value.field == "correlation"
    assert "positive-definite" in str(err.value)
    with pytest.raises(ConfigError, match="correlation"):
        var.cholesky(MODEL)


# --- per-parameter spreads ---------------------------------------------------------------------

def test_per_parameter_overrides():
    var = Variability(0.2, 0.2, 0.2, per_parameter={
        "r_p": (0.0, 0.0, 0.0), "theta0": (0.0, 0.0, 0.0), "v_h": (0.3, 0.0, 0.0), "tmr0": (0.0, 0.0, 0.2)})
    assert not var.is_zero
    s = sample_layer(MODEL, var, 5, np.arange(20_000), 2, 3)
    nominal = MODEL.nominal
    # Zero spread: exactly the nominal value (lognormal and normal parameters alike).
    assert np.all(s[..., K["r_p"]] == nominal[K["r_p"]])
    assert np.all(s[..., K["theta0"]] == nominal[K["theta0"]])
    # Chip-only spread: one value per network, shared by every unit and member.
    vh = s[..., K["v_h"]]
    assert np.all(vh == vh[:, :1, :1])
    assert np.unique(vh[:, 0, 0]).size == vh.shape[0]
    y = spread("v_h", s[:, 0, 0])
    assert abs(y.std(ddof=1) - 0.3) < Z * 0.3 / math.sqrt(2 * (y.size - 1))
    # Pair-only spread: the two members of a neuron are independent.
    assert_corr(spread("tmr0", s[:, 0, 0]), spread("tmr0", s[:, 0, 1]), 0.0, "tmr0 A-B")
    y = spread("tmr0", s[:, 1, 1])
    assert abs(y.std(ddof=1) - 0.2) < Z * 0.2 / math.sqrt(2 * (y.size - 1))
    # Parameters not overridden keep the global spreads.
    y = spread("i_c", s[:, 2, 0])
    sd = 0.2 * math.sqrt(3)
    assert abs(y.std(ddof=1) - sd) < Z * sd / math.sqrt(2 * (y.size - 1))


def test_zero_variability_gives_nominal_exactly():
    var = Variability()
    assert var.is_zero
    s = sample_layer(MODEL, var, 3, np.arange(17), 0, 4)
    assert s.shape == (17, 4, 2, len(NAMES)) and s.dtype == np.float64
    assert np.all(s == MODEL.nominal)


# --- reproducibility ---------------------------------------------------------------------------

SEED = 2**40 + 12345  # uses both key words


@pytest.fixture(scope="module")
def full():
    var = Variability(0.1, 0.15, 0.05, correlation={("r_p", "i_c"): 0.4})
    return var, sample_layer(MODEL, var, SEED, np.arange(1000), 3, 7)


def test_same_parameters_under_any_chunking(full):
    var, ref = full
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=12, replace=False))
    parts = [sample_layer(MODEL, var, SEED, chunk, 3, 7) for chunk in np.split(np.arange(1000), cuts)]
    assert np.array_equal(np.concatenate(parts), ref)
    perm = rng.permutation(1000)[:400]  # non-contiguous, unordered
    assert np.array_equal(sample_layer(MODEL, var, SEED, perm, 3, 7), ref[perm])
    assert np.array_equal(sample_layer(MODEL, var, SEED, [999], 3, 7), ref[999:])
    # The number of units sampled does not change the first units either.
    assert np.array_equal(sample_layer(MODEL, var, SEED, np.arange(1000), 3, 3), ref[:, :3])


def test_each_junction_is_sample_junction_of_its_address(full):
    """The layer kernel draws a network's chip vector and a unit's neuron vector once for the
    junctions that share them; each junction's parameters are still, bit for bit, those of
    ``sample_junction`` (the module's definition, a junction's draws from its address alone) at
    its own address."""
    from spingpu.devices.variability import kernel_arguments
    from spingpu.kernels.variability import sample_junction

    var, ref = full
    nominal, is_log, scale, bounds, sigmas, chol = kernel_arguments(MODEL, var)
    k0, k1 = philox.split_seed(np.uint64(SEED))
    rng = np.random.default_rng()
    z, x, row = np.empty(len(NAMES)), np.empty(len(NAMES)), np.empty(len(NAMES))
    for i, u, m in zip(rng.integers(0, 1000, 40), rng.integers(0, 7, 40), rng.integers(0, 2, 40)):
        sample_junction(k0, k1, i, 3, u, m, nominal, is_log, scale, bounds, sigmas, chol, z, x, row)
        assert np.array_equal(row.view(np.uint64), ref[i, u, m].view(np.uint64)), (i, u, m)


def test_same_seed_twice_identical_and_seed_layer_change_everything(full):
    var, ref = full
    assert np.array_equal(sample_layer(MODEL, var, SEED, np.arange(1000), 3, 7), ref)
    for seed, layer in [(SEED + 1, 3), (SEED - 2**32, 3), (SEED, 4), (SEED, 0)]:
        other = sample_layer(MODEL, var, seed, np.arange(1000), layer, 7)
        assert np.all(other != ref), (seed, layer)
    other_net = sample_layer(MODEL, var, SEED, np.arange(1000, 2000), 3, 7)
    assert np.all(other_net != ref)


def test_extreme_seeds_and_networks_accepted():
    var = Variability(0.1, 0.1, 0.1)
    a = sample_layer(MODEL, var, 2**64 - 1, [0, 2**32 - 1], 255, 1)
    b = sample_layer(MODEL, var, 0, [0, 2**32 - 1], 255, 1)
    assert np.all(np.isfinite(a)) and np.all(a != b)


# --- Philox4x32-10 -----------------------------------------------------------------------------

M32 = 0xFFFFFFFF


def philox_reference(ctr, key):
    """Philox4x32-10 in plain Python integers (Salmon et al., SC'11; Random123)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
    return c0, c1, c2, c3


KNOWN_ANSWERS = [  # Random123 kat_vectors, philox4x32_10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, expected", KNOWN_ANSWERS)
def test_philox_known_answers(ctr, key, expected):
    assert tuple(int(w) for w in philox.philox4x32(*ctr, *key)) == expected
    assert philox_reference(ctr, key) == expected


def test_philox_matches_reference_on_random_inputs():
    rng = np.random.default_rng(8)
    words = rng.integers(0, 2**32, size=(200, 6), dtype=np.uint64)
    for w in words:
        w = [int(x) for x in w]
        got = tuple(int(x) for x in philox.philox4x32(*w))
        assert got == philox_reference(w[:4], w[4:])


def test_split_seed():
    seed = 0x0123456789ABCDEF
    assert tuple(int(k) for k in philox.split_seed(seed)) == (0x89ABCDEF, 0x01234567)


@numba.njit
def _draw(n, k0, k1):
    normals = np.empty((n, 2))
    uniforms = np.empty((n, 2))
    stream = philox.stream_id(philox.PURPOSE_MEMBER, 4, 1, 0)
    for i in range(n):
        a, b = philox.normal_pair(i, stream, 17, 3, k0, k1)
        normals[i, 0] = a
        normals[i, 1] = b
        u, v = philox.uniform_pair(i, stream, 17, 3, k0, k1)
        uniforms[i, 0] = u
        uniforms[i, 1] = v
    return normals, uniforms


def test_normal_pair_statistics():
    n = 200_000
    k0, k1 = philox.split_seed(np.uint64(987654321987))
    z, u = _draw(n, k0, k1)
    flat = z.ravel()
    assert abs(flat.mean()) < Z / math.sqrt(flat.size)
    assert abs(flat.var(ddof=1) - 1.0) < Z * math.sqrt(2.0 / (flat.size - 1))
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert stats.kstest(z[:, 0], "norm").pvalue > 1e-3
    assert stats.kstest(z[:, 1], "norm").pvalue > 1e-3
    assert_corr(z[:, 0], z[:, 1], 0.0, "the two normals of a pair")
    assert_corr(z[:-1, 0], z[1:, 0], 0.0, "successive counters")
    # Uniforms: in (0, 1], on the 2**-53 grid, uniformly distributed.
    assert u.min() > 0.0 and u.max() <= 1.0
    grid = u * 2.0**53
    assert np.all(grid == np.round(grid))
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field, allowed", [
    (dict(sigma_chip=-0.1), "sigma_chip", "0 <= value <= 2"),
    (dict(sigma_d2d=2.5), "sigma_d2d", "0 <= value <= 2"),
    (dict(sigma_pair=float("nan")), "sigma_pair", "NaN"),
    (dict(sigma_pair="big"), "sigma_pair", "expected a number"),
    (dict(per_parameter={"r_p": (0.1, -0.1, 0.0)}), "per_parameter.r_p.d2d", "0 <= value <= 2"),
    (dict(per_parameter={"r_p": (0.1, 0.1)}), "per_parameter.r_p", "three spreads"),
    (dict(correlation={("r_p", "tmr0"): 1.0}), "correlation.r_p.tmr0", "-1 < value < 1"),
    (dict(correlation={("r_p", "tmr0"): -1.0}), "correlation.r_p.tmr0", "-1 < value < 1"),
    (dict(correlation={("r_p", "r_p"): 0.5}), "correlation", "two different parameters"),
    (dict(correlation={("r_p", "tmr0"): 0.5, ("tmr0", "r_p"): -0.5}), "correlation.tmr0.r_p",
     "given twice, also as ('r_p', 'tmr0'); give the pair once"),
])
def test_bad_variability_raises(kwargs, field, allowed):
    with pytest.raises(ConfigError) as err:
        Variability(**kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")
    assert allowed in str(err.value)


@pytest.mark.parametrize("var, field", [
    (Variability(0.1, per_parameter={"r_q": (0.1, 0.1, 0.1)}), "per_parameter"),
    (Variability(0.1, correlation={("r_p", "tmr1"): 0.2}), "correlation"),
])
def test_unknown_parameter_name_raises(var, field):
    with pytest.raises(ConfigError) as err:
        sample_layer(MODEL, var, 1, np.arange(3), 0, 1)
    assert err.value.field == field
    msg = str(err.value)
    assert "unknown parameter" in msg and "stt_compact" in msg
    assert "allowed: " + ", ".join(NAMES) in msg


@pytest.mark.parametrize("args, field, allowed", [
    ((-1, np.arange(3), 0, 1), "seed", "0 <= value <= 18446744073709551615"),
    ((2**64, np.arange(3), 0, 1), "seed", "0 <= value <= 18446744073709551615"),
    ((1.5, np.arange(3), 0, 1), "seed", "expected an integer"),
    ((1, np.arange(3), 256, 1), "layer", "0 <= value <= 255"),
    ((1, np.arange(3), -1, 1), "layer", "0 <= value <= 255"),
    ((1, np.arange(3), 0, 0), "n_units", "1 <= value"),
    ((1, np.array([0, -1]), 0, 1), "networks", "index -1 is out of range; allowed: 0 <= index <= 4294967295"),
    ((1, np.array([2**32]), 0, 1), "networks", "index 4294967296 is out of range; allowed: 0 <= index <= 4294967295"),
])
def test_bad_sampling_arguments_raise(args, field, allowed):
    with pytest.raises(ConfigError) as err:
        sample_layer(MODEL, Variability(0.1), *args)
    assert err.value.field == field
    assert allowed in str(err.value)


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field, words", [
    (dict(per_parameter=None), "per_parameter", "expected a mapping of parameter name to (chip, d2d, pair)"),
    (dict(per_parameter={"r_p": 0.1}), "per_parameter.r_p", "expected three spreads (chip, d2d, pair), got 0.1"),
    (dict(per_parameter={"r_p": "abc"}), "per_parameter.r_p", "expected three spreads"),
    (dict(per_parameter={"r_p": np.array(0.1)}), "per_parameter.r_p", "expected three spreads"),
    (dict(per_parameter={"r_p": (0.1, "0.1", 0.0)}), "per_parameter.r_p.d2d", "expected a number, got '0.1'"),
    (dict(correlation=None), "correlation", "expected a mapping"),
    (dict(correlation={"ab": 0.5}), "correlation", "must be a pair (name, name)"),
    (dict(correlation={("r_p", "tmr0"): math.inf}), "correlation.r_p.tmr0", "expected a finite number"),
    (dict(sigma_d2d="0.1"), "sigma_d2d", "expected a number, got '0.1'"),
    (dict(sigma_chip=True), "sigma_chip", "expected a number, got True"),
    (dict(sigma_pair=math.inf), "sigma_pair", "expected a finite number"),
])
def test_badly_typed_variability_raises(kwargs, field, words):
    with pytest.raises(ConfigError) as err:
        Variability(**kwargs)
    assert err.value.field == field and words in str(err.value)


def test_variability_stores_converted_values():
    var = Variability(sigma_d2d=np.float32(0.5), per_parameter={"r_p": [0, 0.1, 0]}, correlation={("r_p", "v_h"): 0})
    assert type(var.sigma_d2d) is float and var.per_parameter == {"r_p": (0.0, 0.1, 0.0)}
    assert var.correlation == {("r_p", "v_h"): 0.0}


@pytest.mark.parametrize("model, variability, field", [(MODEL, None, "variability"), (3, Variability(), "model"),
                                                         ("stt_compactt", Variability(), "model")])
def test_sample_layer_checks_its_arguments(model, variability, field):
    with pytest.raises(ConfigError) as err:
        sample_layer(model, variability, 0, np.arange(2), 0, 1)
    assert err.value.field == field


def test_a_frozen_variabilitys_mappings_cannot_be_changed_and_it_pickles_and_hashes():
    """A Variability is frozen: its mappings too, so that no value skips the checks made when it was
    built (a negative spread put into per_parameter afterwards made every network diverge)."""
    import dataclasses
    import pickle

    var = Variability(sigma_d2d=0.1, per_parameter={"r_p": (0, 0.1, 0.01)}, correlation={("r_p", "tmr0"): 0.3})
    for change in (lambda: var.per_parameter.__setitem__("r_p", (50.0, -3.0, math.nan)),
                   lambda: var.correlation.update({("r_p", "tmr0"): 2.0}), lambda: var.per_parameter.pop("r_p"),
                   lambda: var.correlation.clear()):
        with pytest.raises(TypeError, match="cannot be changed"):
            change()
    assert var.per_parameter == {"r_p": (0.0, 0.1, 0.01)} and var.correlation == {("r_p", "tmr0"): 0.3}
    copy = pickle.loads(pickle.dumps(var))
    assert copy == var and hash(copy) == hash(var) and type(copy.per_parameter) is type(var.per_parameter)
    assert dataclasses.asdict(var)["per_parameter"] == {"r_p": (0.0, 0.1, 0.01)}
    assert np.array_equal(sample_layer("stt_compact", var, 5, np.arange(3), 0, 2),
                          sample_layer(MODEL, var, 5, np.arange(3), 0, 2))  # a model by name too


# --- spreads that do not follow a swept nominal; bounded positive parameters ------------------

def test_an_angles_spread_does_not_follow_its_swept_nominal():
    """theta0's spread is sigma * pi/2 rad whatever its nominal: sweeping the bias angle must not
    sweep the device spread with it."""
    var, n = Variability(sigma_d2d=0.1), 20_000
    for theta0 in (0.3, math.pi / 2, 2.8):
        x = sample_layer(MODEL.with_nominal(theta0=theta0), var, 5, np.arange(n), 0, 1)[:, 0, 0, K["theta0"]]
        s = 0.1 * math.pi / 2
        assert abs(x.mean() - theta0) < Z * s / math.sqrt(n)
        assert abs(x.std(ddof=1) - s) < Z * s / math.sqrt(2 * (n - 1)), theta0


def test_a_declared_parameters_spread_scale_is_fixed_at_declaration():
    from dataclasses import replace

    from spingpu import Parameter

    p = Parameter("offset", -0.25, "V", "an offset", low=-1.0, high=1.0, distribution="normal")
    assert p.scale == 0.25 and replace(p, nominal=0.8).scale == 0.25
    assert Parameter("phase", 0.0, "rad", "a phase", distribution="normal").scale == 1.0


def test_lognormal_samples_are_clipped_to_the_parameters_range():
    """spin_polarization (nominal 0.6, at most 0.99) at sigma_d2d = 0.3: P(lognormal > 0.99) =
    1 - Phi(ln(0.99 / 0.6) / 0.3) of the junctions sit at exactly 0.99, none above; below it the draws are
    untouched (their log-spread matches the unclipped distribution's quantiles)."""
    model = get_model("macrospin")
    k = model.parameter_names.index("spin_polarization")
    n = 40_000
    p = sample_layer(model, Variability(sigma_d2d=0.3), 8, np.arange(n), 0, 1)[:, 0, 0, k]
    assert p.max() == 0.99
    expected = stats.norm.sf(math.log(0.99 / 0.6) / 0.3)
    frac = np.mean(p == 0.99)
    assert abs(frac - expected) < Z * math.sqrt(expected * (1 - expected) / n), (frac, expected)
    below = np.log(p[p < 0.99] / 0.6) / 0.3
    assert stats.kstest(below, stats.truncnorm(-np.inf, math.log(0.99 / 0.6) / 0.3).cdf).pvalue > 1e-3


def test_an_infinite_nominal_stays_infinite_under_spread():
    """v_h = inf (no TMR bias dependence) is a limit, not a value to clip to v_h's finite bound."""
    model = MODEL.with_nominal(v_h=math.inf)
    v_h = sample_layer(model, Variability(sigma_d2d=0.3, sigma_pair=0.1), 2, np.arange(50), 0, 3)[..., K["v_h"]]
    assert np.all(v_h == math.inf)


def test_sampling_more_than_the_memory_holds_is_a_clear_error(monkeypatch):
    from spingpu.training import trainer

    p = len(MODEL.parameters)
    monkeypatch.setattr(trainer, "available_memory", lambda: 3 * 5 * 2 * p * 8)  # 3 networks x 5 units
    assert sample_layer(MODEL, Variability(), 1, np.arange(3), 0, 5).shape == (3, 5, 2, p)
    with pytest.raises(ConfigError) as err:
        sample_layer(MODEL, Variability(), 1, np.arange(4), 0, 5)
    assert str(err.value) == (f"units: 4 networks x 5 units of junction pairs need {4 * 5 * 2 * p * 8} bytes of "
                              f"memory and {3 * 5 * 2 * p * 8} bytes is available; sample fewer at a time")


def test_junction_curves_checks_its_arguments_and_takes_a_model_by_name():
    from spingpu import junction_curves

    model = get_model("stt_compact")
    params = sample_layer(model, Variability(sigma_d2d=0.1), 5, np.arange(4), 0, 3)  # (4, 3, 2, P)
    current = np.random.default_rng().normal(0, 2e-4, 7)
    v, d = junction_curves("stt_compact", params[:, 1], seed=5)(current)
    v_ref, d_ref = junction_curves(model, params[:, 1], seed=5)(current)
    np.testing.assert_array_equal(v, v_ref)
    np.testing.assert_array_equal(d, d_ref)
    p = len(model.parameters)
    nan = params[:, 0].copy()
    nan[2, 1, 0] = np.nan
    for args, message in [
        ((model, params[:, 0, 0], 5), f"params: expected (samples >= 1, 2, {p}) float parameters of stt_compact "
                                      f"pairs (one unit of sample_layer's (N, U, 2, P)), got (4, {p})"),
        ((model, params, 5), "params: expected (samples >= 1, 2, "),
        ((model, np.concatenate([params[:, 0], params[:, 0, :1]], axis=1), 5), "params: expected (samples >= 1"),
        ((model, params[:0, 0], 5), "params: expected (samples >= 1, 2, "),
        ((model, params[:, 0].tolist(), 5), "params: expected (samples >= 1, 2, "),
        ((model, nan, 5), "params: expected finite values, found nan"),
        ((model, params[:, 0], -1), "seed: -1 is out of range"),
        ((3, params[:, 0], 5), "model: expected a device model or its name"),
        (("no_such_model", params[:, 0], 5), "model: unknown device model 'no_such_model'; allowed: macrospin, "),
    ]:
        with pytest.raises(ConfigError) as err:
            junction_curves(*args)
        assert str(err.value).startswith(message), (message, str(err.value))
    curves = junction_curves(model, params[:, 0], seed=5)
    for shape in [(2, 3), (4, 2, 1)]:  # a 2-D grid would broadcast against the (samples, 2) pairs: refused
        for method in (curves, curves.beyond_table):
            with pytest.raises(ConfigError, match=rf"^current: expected a number or a 1-D array of currents \(A\), "
                                                  rf"got shape \({shape[0]}, {shape[1]}"):
                method(np.zeros(shape))
    assert curves(1e-4)[0].shape == (4, 2, 1) and curves(current)[0].shape == (4, 2, 7)
    no_bias = params[:, 0].copy()
    no_bias[..., model.parameter_names.index("v_h")] = np.inf  # allowed: no bias dependence
    assert np.isfinite(junction_curves(model, no_bias, seed=5)(current)[0]).all()
