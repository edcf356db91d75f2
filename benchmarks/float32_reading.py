"""A junction reading in float32 throughout, for benchmarks only: the ``stt_compact_f32`` model's
junction with read noise drawn in float32 too, against the engines' float64 reading.

  stt_compact_f32_prepared  the ``stt_compact_f32`` model's kernel function (spingpu.kernels.stt_compact):
                            stt_compact_prepared's equations in float32, Newton stopped at 1e-4 relative
  normal_pair_f32           kernels/philox.normal_pair's Philox4x32-10 draw (the same function), then
                            24-bit uniforms in (0, 1] and a float32 Box-Muller: not spingpu's noise
                            (its engines draw the read noise in float64), what float32 noise would cost

``junction_throughput.py`` times the junction on the CPU, ``reading_sass.py`` counts both in SASS
and ``gpu_check.py`` times a float32 reading against the float64 one on a GPU (benchmarks/README.md).
"""

import math

import numba
import numpy as np
from numba import cuda

from spingpu.kernels.philox import normal_pair, philox4x32
from spingpu.kernels.stt_compact import stt_compact_f32_prepared, stt_compact_prepared

_INV_2_24 = np.float32(1.0 / 16777216.0)  # 2**-24
_TWO_PI_F32 = np.float32(2.0 * math.pi)


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
    2 junction readings per thread t (currents 2t and 2t + 1, as the engines read a pair) of
    float64 currents and kernel rows: ``out = V + noise * xi`` with the two normals of Philox
    counter (t, 9, 0, 0). The first calls the engines' float64 device functions
    (stt_compact_prepared, normal_pair), the second the float32 ones (``noise`` and ``out`` in
    float32)."""

    def make(junction, normals, real):
        def read(currents, rows, noise, k0, k1, out):
            t = cuda.grid(1)
            if 2 * t + 1 < currents.size:
                xi = normals(t, 9, 0, 0, k0, k1)
                for m in range(2):
                    k = 2 * t + m
                    v, _ = junction(currents[k], rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3], rows[k, 4],
                                    rows[k, 5])
                    out[k] = real(v) + noise * xi[m]

        return cuda.jit(read)

    return (make(stt_compact_prepared, normal_pair, np.float64),
            make(stt_compact_f32_prepared, normal_pair_f32, np.float32))
