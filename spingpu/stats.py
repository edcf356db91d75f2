"""How sure a Monte Carlo summary over networks (chips) is: 95 % confidence intervals.

- **Yield** (k of n chips at or above an accuracy threshold): the Clopper-Pearson interval
  (C. J. Clopper, E. S. Pearson, Biometrika 26, 404 (1934)), the yields p for which k is not in
  either 2.5 % binomial tail: low = B(0.025; k, n - k + 1), high = B(0.975; k + 1, n - k) with B
  the beta quantile. Its coverage is at least 95 % at every n and every true yield. The Wilson
  score interval, shorter, falls to ~84 % coverage at yields within ~0.2 / n of 0 or 1 (L. D.
  Brown, T. T. Cai, A. DasGupta, Stat. Sci. 16, 101 (2001)), where "how many chips train" studies
  land; the price of the guarantee is an interval somewhat wider than 95 % needs at mid yields.
  Computed by ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``.
- **Median test accuracy**: the distribution-free interval between two order statistics,
  [x_(j), x_(n+1-j)], with j the largest rank for which Binomial(n, 1/2) puts at least the
  confidence level on j .. n - j (``scipy.stats.quantile_test``). It assumes nothing of the
  accuracies' distribution; with ties (accuracies are multiples of 1 / test samples) it is
  conservative. Fewer than 6 networks cannot give 95 % between any two order statistics: NaN.

A yield pooled over cells that share their chips (a figure showing fewer axes than the study
has) is not one of k out of n independent trials: every cell trains networks 0 .. N-1 with the
same junction draws, and cells that differ only in settings that act in neither are copies. Its
interval (:func:`pooled_yield_interval`) is Clopper-Pearson with the N chips as the trials and
N times the pooled yield as the hits (beta quantiles at a non-integer count): a chip's fraction of
passing cells lies in [0, 1], so it varies at most as a pass/fail does, and the pooled yield at
most as a binomial proportion of N. The interval is the cell's where the cells are copies, and
wider than needed where they are nearly independent.

The intervals are over the chips of one cell, i.e. they say how well N simulated chips pin down
the yield or the median of the population of chips the study's variability describes, on the study's
one data split: every chip is tested on the same test samples, so the intervals hold no test-set
sampling error (with 30 test samples, one chip's accuracy of 0.95 is itself uncertain by about
+-0.08). The report takes the median over the chips that did not diverge, i.e. it is the median of
the population of chips that train at all (conditional on the number that did, those are an
independent sample of that population, so the interval holds for it); the yield counts a diverged
chip as failed.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, check_range

CONFIDENCE = 0.95


def yield_hits(accuracy, threshold, where=True, axis=None):
    """Chips with ``accuracy`` >= ``threshold`` (among those ``where`` is True, along ``axis``); a
    diverged chip (accuracy NaN) counts as one that failed, whatever the threshold (0 too)."""
    accuracy = np.asarray(accuracy, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.sum(np.isfinite(accuracy) & (accuracy >= threshold) & where, axis=axis)


def percent_text(fraction, decimals=1):
    """``fraction`` in per cent with ``decimals`` decimals, and more where rounding would write 0
    or 100 for a value that is neither (2499 of 2500 chips: ``99.96``, not ``100.0``; 1 of 2500:
    ``0.04``); ``n/a`` for NaN. No ``%`` sign."""
    if fraction is None or not np.isfinite(fraction):
        return "n/a"
    value = 100.0 * float(fraction)
    places = decimals
    while places < 12:
        text = f"{value:.{places}f}"
        if (float(text) != 100.0 or value == 100.0) and (float(text) != 0.0 or value == 0.0):
            return text
        places += 1
    return f"{value:.{places}g}"


def number_text(value, spec):
    """``value`` formatted with ``spec``, ``n/a`` where it is not finite (a cell with nothing finished)."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def results_threshold(ds, threshold=None):
    """The yield's threshold for the results ``ds``: ``threshold`` (:func:`check_threshold`), or by
    default the one the run that wrote them used (attribute ``yield_threshold``), else 0.9; a
    recorded one that is not a fraction (an edited store) is a ConfigError naming ``threshold``."""
    if threshold is not None:
        return check_threshold(threshold)
    recorded = ds.attrs.get("yield_threshold", 0.9)
    try:
        return check_threshold(recorded)
    except ConfigError:
        raise ConfigError("threshold", f"the store's recorded yield_threshold, {recorded!r}, is not a fraction "
                                       "from 0 to 1 (edited by hand?); give one with --threshold") from None


def check_threshold(threshold):
    """``threshold`` (a test accuracy counted as a trained chip) as a float in [0, 1]; a ConfigError
    naming ``threshold`` otherwise, which reads a value in (1, 100] as a percentage given for the
    fraction (90 for 0.9)."""
    try:
        return check_range("threshold", threshold, 0.0, 1.0)
    except ConfigError as err:
        if isinstance(threshold, (int, float)) and 1 < threshold <= 100:
            raise ConfigError("threshold", f"{err.problem} (a fraction: {threshold / 100:g} for {threshold:g} %)") \
                from None
        raise


def threshold_text(threshold):
    """An accuracy threshold (a fraction) as the per cent it is, unrounded: 0.9 -> ``90``, 0.934 ->
    ``93.4``."""
    return f"{100.0 * float(threshold):.10g}"


def yield_interval(hits, n, confidence=CONFIDENCE):
    """(low, high) Clopper-Pearson interval of a yield of ``hits`` out of ``n`` chips, as fractions
    (module doc); (NaN, NaN) for n = 0."""
    from scipy.stats import binomtest

    n = check_range("n", n, 0, None, integer=True)
    hits = check_range("hits", hits, 0, n, integer=True)
    confidence = check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def pooled_yield_interval(hits, results, chips, confidence=CONFIDENCE):
    """(low, high) interval of a yield of ``hits`` passing among ``results`` pass/fail results
    that ``chips`` distinct chips gave in several cells (module doc): Clopper-Pearson at n =
    ``chips`` and k = ``chips`` hits / results, as fractions; (NaN, NaN) where there are no results.
    With one result per chip it is :func:`yield_interval`."""
    from scipy.stats import beta

    results = check_range("results", results, 0, None, integer=True)
    hits = check_range("hits", hits, 0, results, integer=True)
    chips = check_range("chips", chips, 0 if results == 0 else 1, results, integer=True)
    confidence = check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    if results == 0:
        return math.nan, math.nan
    k = chips * hits / results
    tail = (1.0 - confidence) / 2.0
    low = float(beta.ppf(tail, k, chips - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1.0 - tail, k + 1, chips - k)) if k < chips else 1.0
    return low, high


def median_interval(values, confidence=CONFIDENCE):
    """(low, high) distribution-free confidence interval of the median of the finite ``values``;
    (NaN, NaN) when there are too few for the confidence level (fewer than 6 at 95 %)."""
    from scipy.stats import quantile_test

    confidence = check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    ci = quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence_level=confidence)
    return float(ci.low), float(ci.high)
