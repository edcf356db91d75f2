"""The fused CUDA trainer's block-wide median (deriv_rel_err): a radix select on the bits of
non-negative float64 values, run in the simulator against NumPy's median, bit for bit."""

import numba
import numpy as np
import pytest
from numba import cuda

from spingpu.kernels.fused_cuda import SELECT_BINS, SELECT_CHUNKS, make_block_median

ROWS = (2, 96, 5)  # activation rows (L, T, M) of a block of 96 threads: 960 words


def median_kernel(threads, in_shared):
    median = make_block_median(threads, ROWS[2], in_shared)

    @cuda.jit
    def kernel(errs, n, out):
        act = cuda.shared.array((ROWS[0], threads, ROWS[2]), numba.float64)
        hist = cuda.shared.array(SELECT_BINS, numba.int32)
        chunk_sums = cuda.shared.array(SELECT_CHUNKS, numba.int32)
        slot = cuda.shared.array(3, numba.int64)
        tid = cuda.threadIdx.x
        value = median(errs, act, cuda.blockIdx.x, n, hist, chunk_sums, slot, tid)
        if tid == 0:
            out[cuda.blockIdx.x] = value

    return kernel


def relative_errors(rng, n):
    """Values like deriv_rel_err's: spread over decades, with exact zeros (used == exact), ties and
    +inf (exact == 0)."""
    values = np.abs(rng.normal(size=n)) * 10.0 ** rng.integers(-12, 3, size=n)
    kind = rng.integers(0, 10, size=n)
    values[kind == 0] = 0.0
    values[kind == 1] = np.inf
    values[kind == 2] = values[rng.integers(0, n)]  # a repeated value
    return values


@pytest.mark.parametrize("threads, in_shared", [(32, True), (96, True), (32, False)])
def test_block_median_equals_numpys_bit_for_bit(threads, in_shared):
    rng = np.random.default_rng()
    kernel = median_kernel(threads, in_shared)
    most = ROWS[0] * threads * ROWS[2] if in_shared else 600  # the layout keeps a shared row within act
    for n in (1, 2, 3, int(rng.integers(2, most // 2)) * 2, int(rng.integers(2, most // 2)) * 2 - 1, most):
        errs = np.vstack([relative_errors(rng, n), np.full(n, 0.0), np.full(n, 7.5), np.arange(n, 0, -1) * 1e-3])
        errs[:, :] = errs[:, rng.permutation(n)] if n > 1 else errs
        out = np.full(errs.shape[0], np.nan)
        kernel[errs.shape[0], threads](errs, n, out)
        want = np.median(errs, axis=1)
        assert np.array_equal(out, want), (n, out, want)


def test_block_median_with_every_value_distinct_but_sharing_their_top_bytes():
    """Values within a factor of 1 + 2^-40 of each other: the select must go down to the last byte."""
    rng = np.random.default_rng()
    n = 2 * int(rng.integers(20, 100))
    base = float(rng.uniform(1e-3, 1.0))
    errs = (base + base * 2.0 ** -45 * rng.permutation(n))[None, :]
    out = np.full(1, np.nan)
    median_kernel(32, True)[1, 32](errs, n, out)
    assert out[0] == np.median(errs[0]) and len(np.unique(errs)) == n
