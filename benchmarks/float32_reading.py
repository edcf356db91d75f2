"""A junction reading in float32 throughout, for benchmarks only: what a float32 engine would
evaluate in place of spingpu's float64 device functions (which every engine uses).

  stt_compact_f32  kernels/stt_compact.stt_compact_prepared's equations in float32, with a fixed 6
                   Newton steps from -c0 / c1 (no convergence test: a float32 step below the
                   float64 kernel's 1e-9 relative stop is not reachable)
  normal_pair_f32  kernels/philox.normal_pair's Philox4x32-10 draw (the same function), then 24-bit
                   uniforms in (0, 1] and a float32 Box-Muller

``junction_throughput.py`` times the first on the CPU, ``reading_sass.py`` counts both in SASS and
``gpu_check.py`` times a float32 reading against the float64 one on a GPU: the measurements that
decide whether float32 physics would pay (benchmarks/README.md).
"""

import math

import numba
import numpy as np
from numba import cuda

from spingpu.kernels.philox import normal_pair, philox4x32
from spingpu.kernels.stt_compact import stt_compact_prepared

_INV_2_24 = np.float32(1.0 / 16777216.0)  # 2**-24
_TWO_PI_F32 = np.float32(2.0 * math.pi)


@numba.njit
def stt_compact_f32(cur, inv_rp, tmr0, inv_vh2, theta0, dtheta, inv_ic):
    """(V, dV/dI) of kernels/stt_compact.stt_compact_prepared in float32 throughout (every argument
    a float32), with a fixed 6 Newton steps from -c0 / c1."""
    one, half = np.float32(1.0), np.float32(0.5)
    th = math.tanh(cur * inv_ic)
    theta = theta0 - dtheta * th
    c = math.cos(theta)
    a = (one + c) * (half * inv_rp)
    b = (one - c) * (half * inv_rp)
    c3 = (a + b) * inv_vh2
    c2 = -cur * inv_vh2
    c1 = a * (one + tmr0) + b
    c0 = -cur * (one + tmr0)
    v = -c0 / c1
    for _ in range(6):
        p = ((c3 * v + c2) * v + c1) * v + c0
        dp = (np.float32(3.0) * c3 * v + np.float32(2.0) * c2) * v + c1
        v = v - p / dp
    x2 = v * v * inv_vh2
    den = one + tmr0 + x2
    ap = (one + x2) / den
    g = a + b * ap
    dg_dv = b * (np.float32(2.0) * tmr0) * v * inv_vh2 / (den * den)
    dg_dtheta = -math.sin(theta) * (half * inv_rp) * (one - ap)
    dtheta_di = -dtheta * (one - th * th) * inv_ic
    return v, (one - v * dg_dtheta * dtheta_di) / (g + v * dg_dv)


@numba.njit
def normal_pair_f32(c0, c1, c2, c3, k0, k1):
    """Two standard normals, float32, from the Philox draw at counter (c0, c1, c2, c3), key (k0, k1)."""
    r0, r1, _, _ = philox4x32(c0, c1, c2, c3, k0, k1)
    u1 = np.float32((r0 >> np.uint64(8)) + np.uint64(1)) * _INV_2_24
    u2 = np.float32((r1 >> np.uint64(8)) + np.uint64(1)) * _INV_2_24
    r = math.sqrt(np.float32(-2.0) * math.log(u1))
    t = _TWO_PI_F32 * u2
    return r * math.cos(t), r * math.sin(t)


def reading_kernels():
    """(float64, float32) CUDA kernels ``read(currents, rows, noise, k0, k1, out)`` that each take
    2 junction readings per thread t (currents 2t and 2t + 1, as the engines read a pair):
    ``out = V + noise * xi`` with the two normals of Philox counter (t, 9, 0, 0). The first calls
    the engines' float64 device functions (stt_compact_prepared on kernel rows, normal_pair), the
    second the float32 ones above (rows, currents and ``noise`` in float32)."""

    def make(junction, normals):
        def read(currents, rows, noise, k0, k1, out):
            t = cuda.grid(1)
            if 2 * t + 1 < currents.size:
                xi = normals(t, 9, 0, 0, k0, k1)
                for m in range(2):
                    k = 2 * t + m
                    v, _ = junction(currents[k], rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3], rows[k, 4],
                                    rows[k, 5])
                    out[k] = v + noise * xi[m]

        return cuda.jit(read)

    return make(stt_compact_prepared, normal_pair), make(stt_compact_f32, normal_pair_f32)
