"""How sure a Monte Carlo summary over networks (chips) is: 95 % confidence intervals.

- **Yield** (k of n chips at or above an accuracy threshold): the Wilson score interval
  (E. B. Wilson, J. Am. Stat. Assoc. 22, 209 (1927)), whose coverage stays near the nominal level
  for small n and for yields near 0 or 1, where the textbook p +- z sqrt(p (1 - p) / n) fails
  (L. D. Brown, T. T. Cai, A. DasGupta, Stat. Sci. 16, 101 (2001)); computed by
  ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.
- **Median test accuracy**: the distribution-free interval between two order statistics,
  [x_(j), x_(n+1-j)], with j the largest rank for which Binomial(n, 1/2) puts at least the
  confidence level on j .. n - j (``scipy.stats.quantile_test``). It assumes nothing of the
  accuracies' distribution; with ties (accuracies are multiples of 1 / test samples) it is
  conservative. Fewer than 6 networks cannot give 95 % between any two order statistics: NaN.

The intervals are over the chips of one cell, i.e. they say how well N simulated chips pin down
the yield or the median of the population of chips the study's variability describes.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95


def yield_hits(accuracy, threshold, where=True, axis=None):
    """Chips with ``accuracy`` >= ``threshold`` (among those ``where`` is True, along ``axis``); a
    diverged chip (accuracy NaN) counts as one that failed."""
    return np.sum((np.nan_to_num(accuracy, nan=0.0) >= threshold) & where, axis=axis)


def yield_interval(hits, n, confidence=CONFIDENCE):
    """(low, high) Wilson score interval of a yield of ``hits`` out of ``n`` chips, as fractions;
    (NaN, NaN) for n = 0."""
    from scipy.stats import binomtest

    hits, n = int(hits), int(n)
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def median_interval(values, confidence=CONFIDENCE):
    """(low, high) distribution-free confidence interval of the median of the finite ``values``;
    (NaN, NaN) when there are too few for the confidence level (fewer than 6 at 95 %)."""
    from scipy.stats import quantile_test

    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    ci = quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence_level=confidence)
    return float(ci.low), float(ci.high)
