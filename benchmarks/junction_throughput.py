"""Nanoseconds per stt_compact junction evaluation (V and dV/dI) on this CPU: spingpu's kernel
against the arithmetic that a float32 engine vectorised across networks would do, side by side.

Data for issue 3's open decision (the fused CPU engine's goal of 20x a batched PyTorch model on
Iris needs about 4 ns per junction evaluation on 2 cores; benchmarks/README.md):

  spingpu f64     kernels/stt_compact.stt_compact, the scalar float64 device function of
                  DeviceModel.iv (Newton to float64 rounding), in a numba.prange loop over junctions
  spingpu f64 prepared  stt_compact_prepared on rows holding 1 / r_p, 1 / v_h^2, 1 / i_c, what every
                  training engine calls (STT_COMPACT.bind): the same bits, three divisions fewer
  spingpu f32 prepared  stt_compact_f32_prepared on the same rows: the stt_compact_f32 model's
                  kernel function (the same equations in float32, Newton stopped at 1e-4 relative);
                  Numba vectorises tanh/cos/sin only with Intel SVML, which it says whether it has
  torch f32 x6    benchmarks/torch_mtj.stt_compact_iv (the PyTorch peer's V(I), vectorised by torch
                  with its own SIMD transcendental functions), if torch is installed

All three evaluate the same junctions (nominal stt_compact with 10 % lognormal spreads) at the same
currents (+-600 uA), N = 2^22 by default; the largest differences from the float64 kernel are
printed with the times (best of 5, after a warm-up). Run from a source checkout:

    python benchmarks/junction_throughput.py [--n 4194304] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spingpu import get_model  # noqa: E402
from spingpu.kernels.stt_compact import stt_compact, stt_compact_f32_prepared, stt_compact_prepared  # noqa: E402


@numba.njit(parallel=True)
def spingpu_f64(current, params, v, d):
    for i in numba.prange(current.size):
        p = params[i]
        v[i], d[i] = stt_compact(current[i], p[0], p[1], p[2], p[3], p[4], p[5])


def prepared_rows_kernel(junction):
    @numba.njit(parallel=True)
    def kernel(current, rows, v, d):
        for i in numba.prange(current.size):
            p = rows[i]
            v[i], d[i] = junction(current[i], p[0], p[1], p[2], p[3], p[4], p[5])

    return kernel


spingpu_f64_prepared = prepared_rows_kernel(stt_compact_prepared)
spingpu_f32_prepared = prepared_rows_kernel(stt_compact_f32_prepared)


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 22, help="junctions (default 2^22)")
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS,
                        help="Numba and torch threads (default: all cores)")
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = get_model("stt_compact")
    params = model.nominal * np.exp(rng.normal(0.0, 0.1, (args.n, len(model.nominal))))
    params[:, 3] = model.nominal[3] + 0.1 * rng.normal(size=args.n)  # theta0 is a normal parameter
    current = rng.uniform(-600e-6, 600e-6, args.n)
    v64, d64 = np.empty(args.n), np.empty(args.n)
    rows = [("spingpu f64", best_of(lambda: spingpu_f64(current, params, v64, d64)), 0.0, 0.0)]
    prepared, vp, dp = model.prepared(params), np.empty(args.n), np.empty(args.n)
    seconds = best_of(lambda: spingpu_f64_prepared(current, prepared, vp, dp))
    rows.append(("spingpu f64 prepared", seconds, np.abs(vp - v64).max(), np.abs(dp / d64 - 1).max()))

    v32, d32 = np.empty(args.n), np.empty(args.n)
    seconds = best_of(lambda: spingpu_f32_prepared(current, prepared, v32, d32))
    rows.append(("spingpu f32 prepared" + ("" if numba.config.USING_SVML else " (no SVML)"), seconds,
                 np.abs(v32 - v64).max(), np.abs(d32 / d64 - 1).max()))
    cur32 = np.ascontiguousarray(current, dtype=np.float32)
    try:
        import torch

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from torch_mtj import Junctions, stt_compact_iv

        torch.set_num_threads(args.threads)
        junctions = Junctions(params[None])  # (1, N, P): one "network" of N units
        cur_t = torch.as_tensor(cur32)[None, None]
        with torch.no_grad():
            seconds = best_of(lambda: stt_compact_iv(cur_t, junctions))
            vt, dt = (x.numpy().ravel() for x in stt_compact_iv(cur_t, junctions))
        rows.append((f"torch f32 x6 ({torch.__version__})", seconds, np.abs(vt - v64).max(), np.abs(dt / d64 - 1).max()))
    except ImportError:
        rows.append(("torch f32 x6", None, None, None))

    print(f"{args.n:,d} junctions, {args.threads} threads, numba {numba.__version__}, SVML "
          f"{'on' if numba.config.USING_SVML else 'off'}")
    print("| evaluation | ns per junction | vs spingpu f64 | max abs dV (V) | max rel d(dV/dI) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = rows[0][1]
    for name, seconds, dv, dd in rows:
        if seconds is None:
            print(f"| {name} | not installed | | | |")
            continue
        print(f"| {name} | {1e9 * seconds / args.n:.1f} | {base / seconds:.1f}x | {dv:.1e} | {dd:.1e} |")


if __name__ == "__main__":
    main()
