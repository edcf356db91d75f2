"""Confidence intervals of yields and medians against closed forms and their coverage by simulation."""

import math

import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from spingpu import stats
from spingpu.errors import ConfigError
from spingpu.stats import median_interval, yield_interval


def wilson(k, n, confidence=0.95):
    """Wilson's score interval written out (Brown, Cai & DasGupta 2001, eq. 4)."""
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def coverage(interval, n, yields):
    """Exact coverage at each true yield: the binomial probability of the k whose interval holds it."""
    ends = np.array([interval(k, n) for k in range(n + 1)])
    k = np.arange(n + 1)
    return np.array([binom.pmf(k, n, p)[(ends[:, 0] <= p) & (p <= ends[:, 1])].sum() for p in np.atleast_1d(yields)])


@pytest.mark.parametrize("k, n", [(0, 5), (5, 5), (1, 7), (30, 40), (811, 1000), (999, 1000), (1000, 1000)])
def test_yield_interval_is_clopper_pearsons(k, n):
    """Its ends are the yields at which k (or more, or fewer) chips has binomial probability 2.5 %
    (the definition), and the beta quantiles of the closed form."""
    lo, hi = yield_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    if k == 0:
        assert lo == 0.0
    else:
        assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)  # P(X >= k | lo)
        assert lo == pytest.approx(beta.ppf(0.025, k, n - k + 1), rel=1e-9)
    if k == n:
        assert hi == 1.0
    else:
        assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)  # P(X <= k | hi)
        assert hi == pytest.approx(beta.ppf(0.975, k + 1, n - k), rel=1e-9)


def test_yield_interval_of_no_chips_is_nan():
    assert all(math.isnan(v) for v in yield_interval(0, 0))


@pytest.mark.parametrize("n", [10, 30, 100, 250])
def test_yield_interval_covers_at_least_95_percent_at_every_yield(n):
    """Exact coverage over yields from 0.0005 to 0.9995, with those within 1 / n of 0 and 1,
    where Wilson's interval (checked alongside) falls well below 95 %."""
    edge = np.array([0.05, 0.1, 0.17, 0.3, 0.5, 1.0]) / n  # 0.17 / n: just below Wilson's low end at k = 1
    yields = np.concatenate([[0.0005, 0.005, 0.02, 0.1, 0.3, 0.5, 0.7, 0.83, 0.9, 0.98], edge, 1 - edge])
    assert coverage(yield_interval, n, yields).min() >= 0.95 - 1e-12
    assert coverage(wilson, n, edge).min() < 0.85  # what the exact interval is chosen against


def test_yield_interval_covers_the_true_yield_in_simulated_studies():
    """Simulated studies of n chips with a true yield p: the fraction of intervals holding p is
    the exact coverage (>= 0.95); with 4000 studies its own binomial spread is ~0.003."""
    rng = np.random.default_rng()
    p, n, studies = 0.83, 120, 4000
    hits = rng.binomial(n, p, studies)
    ends = np.array([yield_interval(k, n) for k in range(n + 1)])  # the interval of each count, once
    covered = np.mean((ends[hits, 0] <= p) & (p <= ends[hits, 1]))
    exact = coverage(yield_interval, n, p)[0]
    assert 0.95 <= exact < 0.99
    assert abs(covered - exact) < 4 * math.sqrt(exact * (1 - exact) / studies)


def test_median_interval_is_a_pair_of_order_statistics_with_at_least_95_percent():
    rng = np.random.default_rng()
    for n in (6, 9, 30, 101, 1000):
        x = rng.normal(size=n)
        lo, hi = median_interval(x)
        s = np.sort(x)
        j = int(np.flatnonzero(s == lo)[0])  # 0-based rank of the lower end
        assert hi == s[n - 1 - j]  # symmetric ranks
        inside = binom.cdf(n - 1 - j, n, 0.5) - binom.cdf(j, n, 0.5)  # P(j < #below median <= n-1-j)
        assert inside >= 0.95
        # and the next narrower pair of ranks would not reach 95 %
        assert j + 1 > n - 2 - j or binom.cdf(n - 2 - j, n, 0.5) - binom.cdf(j + 1, n, 0.5) < 0.95


def test_median_interval_covers_the_population_median_at_least_95_percent_of_the_time():
    rng = np.random.default_rng()
    studies, n = 3000, 40
    samples = rng.exponential(size=(studies, n))  # skewed: the median is log 2, not the mean
    covered = np.mean([lo <= math.log(2) <= hi for lo, hi in map(median_interval, samples)])
    assert covered > 0.95 - 4 * math.sqrt(0.95 * 0.05 / studies)


def test_median_interval_ignores_nan_and_needs_six_values():
    assert all(math.isnan(v) for v in median_interval([0.9, 0.8, np.nan, 0.7, 0.95]))
    assert all(math.isnan(v) for v in median_interval([]))
    lo, hi = median_interval([0.9, np.nan, 0.8, 0.7, 0.95, 0.85, 0.75])
    assert (lo, hi) == (0.7, 0.95)  # n = 6: only the extremes reach 95 % (1 - 2 / 64)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 1.0])
def test_a_diverged_chip_fails_at_every_threshold(threshold):
    """NaN accuracy (diverged) is never a hit, at a threshold of 0 too (nan_to_num's 0 >= 0 was)."""
    rng = np.random.default_rng(11)
    acc = rng.integers(0, 31, (4, 50)) / 30
    acc[rng.random(acc.shape) < 0.3] = np.nan
    where = rng.random(acc.shape) < 0.8
    expected = [sum(1 for a, w in zip(row, wrow) if w and a == a and a >= threshold) for row, wrow in zip(acc, where)]
    np.testing.assert_array_equal(stats.yield_hits(acc, threshold, where, axis=1), expected)
    assert stats.yield_hits(np.full(7, np.nan), 0.0) == 0


@pytest.mark.parametrize("fraction, decimals, text", [
    (2499 / 2500, 1, "99.96"), (1 / 2500, 1, "0.04"), (1.0, 1, "100.0"), (0.0, 1, "0.0"), (0.5, 1, "50.0"),
    (0.99963, 1, "99.96"), (0.999999, 1, "99.9999"), (1e-9, 1, "0.0000001"), (0.9996, 0, "99.96"),
    (0.995, 0, "99.5"), (0.9, 0, "90"), (0.123456, 2, "12.35"), (np.nan, 1, "n/a"), (None, 1, "n/a")])
def test_percent_text_never_rounds_to_0_or_100_what_is_neither(fraction, decimals, text):
    assert stats.percent_text(fraction, decimals) == text


def test_threshold_text_is_unrounded():
    assert [stats.threshold_text(t) for t in (0.9, 0.934, 0.1 + 0.2, 1.0, 0.0)] == ["90", "93.4", "30", "100", "0"]


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.99])
def test_intervals_at_other_confidences_are_the_textbook_ones(confidence):
    """``confidence`` other than 0.95: Clopper-Pearson's beta quantiles for a yield, and for a median
    the narrowest pair of symmetric order statistics holding at least ``confidence``."""
    rng = np.random.default_rng()
    n = int(rng.integers(20, 400))
    k = int(rng.integers(1, n))
    lo, hi = yield_interval(k, n, confidence)
    tail = (1 - confidence) / 2
    assert lo == pytest.approx(beta.ppf(tail, k, n - k + 1), abs=1e-9)
    assert hi == pytest.approx(beta.ppf(1 - tail, k + 1, n - k), abs=1e-9)
    s = np.sort(rng.normal(size=n))
    lo, hi = median_interval(s[rng.permutation(n)], confidence)
    j = int(np.flatnonzero(s == lo)[0])
    assert hi == s[n - 1 - j]
    assert binom.cdf(n - 1 - j, n, 0.5) - binom.cdf(j, n, 0.5) >= confidence
    assert binom.cdf(n - 2 - j, n, 0.5) - binom.cdf(j + 1, n, 0.5) < confidence


def test_median_interval_covers_the_median_of_tied_discrete_accuracies():
    """Accuracies are k / 30 on a 30-row test split, with many ties: the interval still covers the
    population median at least 95 % of the time (4 standard errors of the simulated coverage)."""
    rng = np.random.default_rng()
    studies, n, rows, p = 3000, 40, 30, rng.uniform(0.6, 0.9)
    true_median = binom.median(rows, p) / rows
    samples = rng.binomial(rows, p, (studies, n)) / rows
    covered = np.mean([lo <= true_median <= hi for lo, hi in map(median_interval, samples)])
    assert covered > 0.95 - 4 * math.sqrt(0.95 * 0.05 / studies)


@pytest.mark.parametrize("args, message", [
    ((5, 3), "hits: 5 is out of range; allowed: 0 <= value <= 3"),
    ((-1, 3), "hits: -1 is out of range; allowed: 0 <= value <= 3"),
    ((2.7, 3), "hits: expected an integer, got 2.7"),
    ((1, -2), "n: -2 is out of range"),
    ((1, 3, 1.0), "confidence: 1.0 is out of range; allowed: 0 < value < 1"),
])
def test_yield_interval_refuses_what_is_not_a_count_in_one_line(args, message):
    from spingpu.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        yield_interval(*args)
    assert str(err.value).startswith(message)


def test_pooled_yield_interval_is_clopper_pearson_of_the_chips():
    """One result per chip: the Clopper-Pearson interval (scipy's binomtest, to its 1e-9); m
    copies of each chip's result: the same interval as one; fresh counts: k = chips hits / results
    in the beta quantiles, monotonic in the hits and never narrower than the results' own."""
    from spingpu.stats import pooled_yield_interval

    rng = np.random.default_rng()
    for n in rng.integers(1, 400, 6):
        for k in {0, 1, int(rng.integers(0, n + 1)), n - 1, n} - {-1}:
            np.testing.assert_allclose(pooled_yield_interval(k, n, n), yield_interval(k, n), rtol=1e-8, atol=1e-15)
            m = int(rng.integers(2, 6))
            np.testing.assert_allclose(pooled_yield_interval(m * k, m * n, n), yield_interval(k, n), rtol=1e-8,
                                       atol=1e-15)
    chips, results = 30, 90
    hits = np.sort(rng.choice(results + 1, 5, replace=False))
    intervals = np.array([pooled_yield_interval(int(h), results, chips) for h in hits])
    assert np.all(np.diff(intervals, axis=0) > 0)
    h = int(hits[2])
    k = chips * h / results
    assert intervals[2] == pytest.approx((beta.ppf(0.025, k, chips - k + 1) if k else 0.0,
                                          beta.ppf(0.975, k + 1, chips - k) if k < chips else 1.0), rel=1e-12)
    assert np.all(intervals[:, 1] - intervals[:, 0] >= [np.subtract(*yield_interval(int(h), results)[::-1])
                                                          for h in hits])


@pytest.mark.parametrize("args, message", [
    ((3, 2, 2), "hits: 3 is out of range; allowed: 0 <= value <= 2"),
    ((1, 4, 5), "chips: 5 is out of range; allowed: 1 <= value <= 4"),
    ((1, 4, 0), "chips: 0 is out of range; allowed: 1 <= value <= 4"),
    ((1.5, 4, 2), "hits: expected an integer, got 1.5")])
def test_pooled_yield_interval_refuses_impossible_counts(args, message):
    from spingpu.stats import pooled_yield_interval

    with pytest.raises(ConfigError) as err:
        pooled_yield_interval(*args)
    assert str(err.value) == message
