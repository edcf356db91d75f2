"""The strided batched GEMM call of the batched CUDA engine (spingpu.training.gemm): its arguments,
done by the NumPy emulation that reads memory only as cuBLAS would, against NumPy's matmul; and the
emulation's own faithfulness (a wrong argument gives wrong numbers or an error, never the right
numbers by reading the arrays' own strides)."""

import dataclasses

import numpy as np
import pytest

from spingpu.training.gemm import emulate, gemm_call


def layouts(rng, g, m, k, n):
    """(name, a, b): every operand layout the engine hands over, and two it must copy."""
    normal = lambda *shape: rng.normal(size=shape)  # noqa: E731
    return [
        ("plain", normal(g, m, k), normal(g, k, n)),
        ("shared a (first layer)", normal(m, k), normal(g, k, n)),
        ("a^T (weight gradient)", normal(g, k, m).swapaxes(1, 2), normal(g, k, n)),
        ("shared a^T (first weight gradient)", normal(k, m).T, normal(g, k, n)),
        ("b^T (delta through the weights)", normal(g, m, k), normal(g, n, k).swapaxes(1, 2)),
        ("both transposed", normal(g, k, m).swapaxes(1, 2), normal(g, n, k).swapaxes(1, 2)),
        ("rows of a wider array", normal(g, m + 3, k)[:, 2:m + 2], normal(2 * g, k, n)[1::2]),
        ("every other column (copied)", normal(g, m, 2 * k)[:, :, ::2], normal(g, k, n)),
        ("one matrix broadcast (stride 0)", normal(1, m, k), normal(g, k, n)),
    ]


@pytest.mark.parametrize("shape", [(4, 5, 7, 3), (3, 1, 6, 2), (2, 6, 1, 5), (5, 4, 3, 1), (1, 8, 8, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_call_of_every_layout_gives_the_product(shape, dtype):
    rng = np.random.default_rng()
    g, m, k, n = shape
    for name, a, b in layouts(rng, g, m, k, n):
        a, b = a.astype(dtype), b.astype(dtype)
        out = np.full((g, m, n), np.nan, dtype=dtype)
        call = gemm_call(np, a, b, out)
        emulate(call)
        expect = np.matmul(a.astype(np.float64), b.astype(np.float64))
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(out, expect, rtol=tol, atol=tol, err_msg=name)
        assert (call.m, call.n, call.k, call.batch) == (n, m, k, g)
        if "copied" not in name:  # read in place: cuBLAS gets the caller's own memory
            assert np.shares_memory(call.second.array, a) and np.shares_memory(call.first.array, b), name
        if "shared" in name or "broadcast" in name:
            assert call.second.stride == 0


def test_transposed_views_are_read_transposed_and_contiguous_ones_not():
    rng = np.random.default_rng()
    w = rng.normal(size=(3, 6, 4))
    call = gemm_call(np, rng.normal(size=(3, 5, 4)), w.swapaxes(1, 2), np.empty((3, 5, 6)))
    assert (call.first.transposed, call.first.ld, call.first.stride) == (True, 4, 24)
    assert (call.second.transposed, call.second.ld, call.second.stride) == (False, 4, 20)
    assert (call.ldc, call.stride_c) == (6, 30)


def test_the_emulation_reads_through_the_call_alone():
    """A call with one argument changed reads other memory: wrong numbers, or an error where it
    would read beyond the operand. The emulation does not fall back on the arrays' strides."""
    rng = np.random.default_rng()
    a, b = rng.normal(size=(4, 5, 7)), rng.normal(size=(4, 7, 5))
    out = np.empty((4, 5, 5))
    right = gemm_call(np, a, b, out)
    emulate(right)
    expect = out.copy()
    for wrong in [dataclasses.replace(right, first=dataclasses.replace(right.first, transposed=True)),
                  dataclasses.replace(right, second=dataclasses.replace(right.second, ld=5)),
                  dataclasses.replace(right, second=dataclasses.replace(right.second, stride=0))]:
        out[...] = np.nan
        emulate(wrong)
        assert not np.allclose(out, expect)
    too_far = dataclasses.replace(right, first=dataclasses.replace(right.first, stride=40))
    with pytest.raises(ValueError, match="reads element"):
        emulate(too_far)


@pytest.mark.parametrize("a_shape, b_shape, out_shape, message", [
    ((3, 5, 7), (3, 6, 2), (3, 5, 2), "do not match"),
    ((3, 5, 7), (3, 7, 2), (3, 4, 2), "do not match"),
    ((2, 5, 7), (3, 7, 2), (3, 5, 2), "holds 2 matrices for 3 products"),
])
def test_mismatched_operands_are_refused(a_shape, b_shape, out_shape, message):
    with pytest.raises(ValueError, match=message):
        gemm_call(np, np.ones(a_shape), np.ones(b_shape), np.empty(out_shape))


def test_the_product_must_be_c_contiguous():
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm_call(np, np.ones((3, 5, 7)), np.ones((3, 7, 2)), np.empty((3, 2, 5)).swapaxes(1, 2))
