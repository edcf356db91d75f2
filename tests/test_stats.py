"""Confidence intervals of yields and medians against closed forms and their coverage by simulation."""

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from spingpu.stats import median_interval, yield_interval


def wilson(k, n, confidence=0.95):
    """Wilson's score interval written out (Brown, Cai & DasGupta 2001, eq. 4)."""
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 5), (5, 5), (1, 7), (30, 40), (811, 1000), (999, 1000)])
def test_yield_interval_is_wilsons(k, n):
    lo, hi = yield_interval(k, n)
    ref_lo, ref_hi = wilson(k, n)
    assert lo == pytest.approx(max(ref_lo, 0.0), abs=1e-12) and hi == pytest.approx(min(ref_hi, 1.0), abs=1e-12)
    assert lo <= k / n <= hi


def test_yield_interval_of_no_chips_is_nan():
    assert all(math.isnan(v) for v in yield_interval(0, 0))


def test_yield_interval_covers_the_true_yield_about_95_percent_of_the_time():
    """Simulated studies of n chips with a true yield p: the fraction of intervals holding p is
    Wilson's coverage (near 0.95); with 4000 studies its own binomial spread is ~0.0035."""
    rng = np.random.default_rng()
    p, n, studies = 0.83, 120, 4000
    hits = rng.binomial(n, p, studies)
    covered = np.mean([lo <= p <= hi for lo, hi in (yield_interval(k, n) for k in hits)])
    # the exact coverage for this (n, p): the probability of the k whose interval holds p
    exact = sum(binom.pmf(k, n, p) for k in range(n + 1) if wilson(k, n)[0] <= p <= wilson(k, n)[1])
    assert 0.92 < exact < 0.98
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
