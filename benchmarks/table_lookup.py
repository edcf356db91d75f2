"""Nanoseconds per table evaluation (``kernels/hermite.hermite_eval``: the tabulated model, every
macrospin junction's own table) against the bisection it replaced, side by side on this CPU.

  knot_interval   the interval read off the knots' spacing, checked, bisected where the check fails
  bisection       the knot interval by bisection alone (the code before 2026-12-01)

Both evaluate the same cubic Hermite curve of tanh(I / 0.4 mA) at uniformly random currents within
the table (2e6 by default, one thread), on evenly spaced knots (as macrospin tables) and on
uneven ones (a measured curve, where the check fails and it bisects anyway); the results must be
equal bit for bit. Run from a source checkout:

    python benchmarks/table_lookup.py [--n 2000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from junction_throughput import best_of  # noqa: E402  (puts the source checkout first on the path)

from spingpu.kernels.hermite import hermite_eval, hermite_segment  # noqa: E402


@numba.njit
def bisection_eval(x, table):
    """hermite_eval with the knot interval found by bisection alone."""
    xs = table[0]
    n = xs.shape[0]
    if x <= xs[0] or x >= xs[n - 1]:
        return hermite_eval(x, table)  # the end tangents, no interval
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    return hermite_segment(x, table, lo, hi)


@numba.njit
def evaluate_all(evaluate, currents, table, v, d):
    for i in range(currents.size):
        v[i], d[i] = evaluate(currents[i], table)


def table_of(currents):
    scale = 4e-4
    return np.ascontiguousarray(np.stack([currents, np.tanh(currents / scale),
                                          1.0 / (scale * np.cosh(currents / scale) ** 2)]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="currents (default 2e6)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"numba {numba.__version__}, {args.n:,d} random currents, one thread; ns per evaluation")
    print("| knots | spacing | bisection | knot_interval | ratio | equal bits |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for knots in (49, 64, 257):
        even = np.linspace(-1e-3, 1e-3, knots)
        uneven = np.unique(np.concatenate([[-1e-3, 1e-3], rng.uniform(-1e-3, 1e-3, knots - 2)]))
        for spacing, xs in (("even", even), ("uneven", uneven)):
            table = table_of(xs)
            currents = rng.uniform(xs[0], xs[-1], args.n)
            out = [np.empty(args.n) for _ in range(4)]
            t_old = best_of(lambda: evaluate_all(bisection_eval, currents, table, out[0], out[1]))
            t_new = best_of(lambda: evaluate_all(hermite_eval, currents, table, out[2], out[3]))
            equal = np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[3])
            print(f"| {knots} | {spacing} | {1e9 * t_old / args.n:.1f} | {1e9 * t_new / args.n:.1f} | "
                  f"{t_old / t_new:.1f}x | {'yes' if equal else 'NO'} |")


if __name__ == "__main__":
    main()
