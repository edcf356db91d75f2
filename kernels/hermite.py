"""Cubic Hermite interpolation of a tabulated curve and its derivative.

On [x_k, x_{k+1}] with h = x_{k+1} - x_k and t = (x - x_k) / h,

    y(x) = h00(t) y_k + h h10(t) d_k + h01(t) y_{k+1} + h h11(t) d_{k+1}
    h00 = 2t^3 - 3t^2 + 1,  h10 = t^3 - 2t^2 + t,  h01 = -2t^3 + 3t^2,  h11 = t^3 - t^2

with knot slopes d_k chosen by the caller (PCHIP slopes keep the curve monotone where the data
are: the conditions of Fritsch & Carlson, SIAM J. Numer. Anal. 17, 238 (1980), met by the
weighted harmonic mean of the neighbouring secants of Fritsch & Butland, SIAM J. Sci. Stat.
Comput. 5, 300 (1984), as SciPy's PchipInterpolator computes them). Outside the table the curve
continues as the straight line of the end value and end slope. The table is a (3, K) array whose
rows are x (strictly increasing), y and dy/dx.
"""

import numba


@numba.njit(cache=True)
def knot_interval(x, xs):
    """(lo, lo + 1) with xs[lo] <= x < xs[lo + 1], for xs[0] < x < xs[-1] (strictly increasing
    knots). The interval is read off the knots' spacing as if it were uniform (it is for a macrospin
    junction's table and a resampled curve: one division, two loads), checked, and found by
    bisection where the check fails (measured knots; a NaN x): the same unique interval either way,
    without bisection's chain of dependent loads and branches (~8 for 257 knots). On the CPU
    (benchmarks/table_lookup.py) an evaluation at random currents takes 20 ns on even knots where
    bisection took 41-54 (49-257 knots), and up to 10 % longer than bisection on uneven ones (the
    failed check first); no change measured in Iris training, whose currents cluster so that the
    branches are predicted; on a GPU, untimed."""
    n = xs.shape[0]
    guess = (n - 1) * ((x - xs[0]) / (xs[n - 1] - xs[0]))
    lo = min(int(guess), n - 2) if guess >= 0.0 else 0  # a NaN x fails the check below
    if xs[lo] <= x and x < xs[lo + 1]:
        return lo, lo + 1
    lo = 0
    hi = n - 1
    while hi - lo > 1:  # bisection: xs[lo] <= x < xs[hi]
        mid = (lo + hi) // 2
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo, hi


@numba.njit(cache=True)
def hermite_eval(x, table):
    """Value and derivative at x of the cubic Hermite curve through ``table`` = (x, y, dy/dx)."""
    xs = table[0]
    ys = table[1]
    ds = table[2]
    n = xs.shape[0]
    if x <= xs[0]:
        return ys[0] + ds[0] * (x - xs[0]), ds[0]
    if x >= xs[n - 1]:
        return ys[n - 1] + ds[n - 1] * (x - xs[n - 1]), ds[n - 1]
    lo, hi = knot_interval(x, xs)
    return hermite_segment(x, table, lo, hi)


@numba.njit(cache=True)
def hermite_segment(x, table, lo, hi):
    """Value and derivative at x of the cubic on the knot interval [xs[lo], xs[hi]] (module doc)."""
    xs = table[0]
    ys = table[1]
    ds = table[2]
    h = xs[hi] - xs[lo]
    t = (x - xs[lo]) / h
    t2 = t * t
    t3 = t2 * t
    y = ((2.0 * t3 - 3.0 * t2 + 1.0) * ys[lo] + (t3 - 2.0 * t2 + t) * h * ds[lo]
         + (-2.0 * t3 + 3.0 * t2) * ys[hi] + (t3 - t2) * h * ds[hi])
    dy = ((6.0 * t2 - 6.0 * t) * (ys[lo] - ys[hi]) / h + (3.0 * t2 - 4.0 * t + 1.0) * ds[lo]
          + (3.0 * t2 - 2.0 * t) * ds[hi])
    return y, dy
