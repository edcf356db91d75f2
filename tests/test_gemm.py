"""The strided batched GEMM call of the batched CUDA engine (spingpu.training.gemm): its arguments,
done by the NumPy emulation that reads memory only as cuBLAS would, against NumPy's matmul; and the
emulation's own faithfulness (a wrong argument gives wrong numbers or an error, never the right
numbers by reading the arrays' own strides)."""

import dataclasses

import numpy as np
import pytest

from spingpu.training.gemm import emulate, gemm_call


def layouts(rng, g, m, k, n, dtype):
    """(name, a, b): every operand layout the engine hands over, others it reads in place, and
    some it must copy."""
    normal = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    return [
        ("plain", normal(g, m, k), normal(g, k, n)),
        ("shared a (first layer)", normal(m, k), normal(g, k, n)),
        ("a^T (weight gradient)", normal(g, k, m).swapaxes(1, 2), normal(g, k, n)),
        ("shared a^T (first weight gradient)", normal(k, m).T, normal(g, k, n)),
        ("b^T (delta through the weights)", normal(g, m, k), normal(g, n, k).swapaxes(1, 2)),
        ("both transposed", normal(g, k, m).swapaxes(1, 2), normal(g, n, k).swapaxes(1, 2)),
        ("rows of a wider array", normal(g, m + 3, k)[:, 2:m + 2], normal(2 * g, k, n)[1::2]),
        ("padded rows (ld > rows stored)", normal(g, m, k + 3)[:, :, 1:k + 1], normal(g, k, n + 2)[:, :, :n]),
        ("padded transposed", normal(g, k, m + 2)[:, :, 2:].swapaxes(1, 2), normal(g, n, k + 3)[:, :, :k].swapaxes(1, 2)),
        ("padded and shared, a and b", normal(m, k + 3)[:, :k], normal(k, n + 2)[:, 1:n + 1]),
        ("reversed networks (copied)", normal(g, m, k)[::-1], normal(g, k, n)),
        ("every other column (copied)", normal(g, m, 2 * k)[:, :, ::2], normal(g, k, n)),
        ("one matrix broadcast (stride 0)", normal(1, m, k), normal(g, k, n)),
    ]


@pytest.mark.parametrize("shape", [(4, 5, 7, 3), (3, 1, 6, 2), (2, 6, 1, 5), (5, 4, 3, 1), (1, 8, 8, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_call_of_every_layout_gives_the_product(shape, dtype):
    rng = np.random.default_rng()
    g, m, k, n = shape
    for name, a, b in layouts(rng, g, m, k, n, dtype):
        out = np.full((g, m, n), np.nan, dtype=dtype)
        call = gemm_call(np, a, b, out)
        emulate(call)
        expect = np.broadcast_to(np.matmul(a.astype(np.float64), b.astype(np.float64)), out.shape)
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(out, expect, rtol=tol, atol=tol, err_msg=name)
        assert (call.m, call.n, call.k, call.batch) == (n, m, k, g)
        if "copied" not in name:  # read in place: cuBLAS gets the caller's own memory
            assert np.shares_memory(call.second.array, a) and np.shares_memory(call.first.array, b), name
        if "shared" in name or "broadcast" in name:  # a's matrix for every product
            assert call.second.stride == 0
        if "padded" in name and min(m, k, n) > 1:  # the leading dimension is the array's, not the rows'
            assert call.first.ld > (call.k if call.first.transposed else call.m), name
            assert call.second.ld > (call.n if call.second.transposed else call.k), name


def test_transposed_views_are_read_transposed_and_contiguous_ones_not():
    rng = np.random.default_rng()
    w = rng.normal(size=(3, 6, 4))
    call = gemm_call(np, rng.normal(size=(3, 5, 4)), w.swapaxes(1, 2), np.empty((3, 5, 6)))
    assert (call.first.transposed, call.first.ld, call.first.stride) == (True, 4, 24)
    assert (call.second.transposed, call.second.ld, call.second.stride) == (False, 4, 20)
    assert (call.ldc, call.stride_c) == (6, 30)


def test_the_emulation_reads_through_the_call_alone():
    """A call with one argument changed reads other memory: wrong numbers, or an error where
    cuBLAS would refuse it or read beyond the operand. The emulation does not fall back on the
    arrays' strides."""
    rng = np.random.default_rng()
    a, b = rng.normal(size=(4, 5, 7)), rng.normal(size=(4, 7, 5))
    out = np.empty((4, 5, 5))
    right = gemm_call(np, a, b, out)
    emulate(right)
    expect = out.copy()
    wrong_numbers = [dataclasses.replace(right, second=dataclasses.replace(right.second, stride=0)),
                     dataclasses.replace(right, first=dataclasses.replace(right.first, stride=10, ld=5)),
                     dataclasses.replace(right, second=dataclasses.replace(right.second, ld=8, stride=28))]
    for wrong in wrong_numbers:
        out[...] = np.nan
        emulate(wrong)
        assert not np.allclose(out, expect)
    refused = [(dataclasses.replace(right, first=dataclasses.replace(right.first, transposed=True)), "leading dimension 5 for 7"),
               (dataclasses.replace(right, second=dataclasses.replace(right.second, ld=5)), "leading dimension 5 for 7"),
               (dataclasses.replace(right, first=dataclasses.replace(right.first, stride=40)), "reads element 154 of an operand that ends at 139"),
               (dataclasses.replace(right, first=dataclasses.replace(right.first, array=b.astype(np.float32))), "an operand of float32 in a GEMM of float64"),
               (dataclasses.replace(right, out=a[:, :, :5]), "the product overlaps an operand"),
               (dataclasses.replace(right, k=0), "allowed: 1 to 2**31 - 1")]
    for wrong, message in refused:
        with pytest.raises((ValueError, TypeError), match=message.replace("*", r"\*")):
            emulate(wrong)


def test_a_product_written_into_an_operand_is_refused():
    x = np.random.default_rng().normal(size=(3, 4, 4))
    with pytest.raises(ValueError, match="the product overlaps an operand"):
        gemm_call(np, x, np.ones((3, 4, 4)), x)


def test_empty_products_are_zeros_without_a_call():
    from spingpu.training.cuda_engine import Device

    device, rng = Device(True), np.random.default_rng()
    out = np.full((3, 4, 2), np.nan)
    device.gemm(rng.normal(size=(3, 4, 0)), rng.normal(size=(3, 0, 2)), out)
    assert np.array_equal(out, np.zeros((3, 4, 2)))
    device.gemm(rng.normal(size=(0, 4, 5)), rng.normal(size=(0, 5, 2)), np.empty((0, 4, 2)))
    with pytest.raises(ValueError, match="an empty product, not a GEMM"):
        gemm_call(np, rng.normal(size=(3, 4, 0)), rng.normal(size=(3, 0, 2)), out)


@pytest.mark.parametrize("a_shape, b_shape, out_shape, message", [
    ((3, 5, 7), (3, 6, 2), (3, 5, 2), "do not match"),
    ((3, 5, 7), (3, 7, 2), (3, 4, 2), "do not match"),
    ((2, 5, 7), (3, 7, 2), (3, 5, 2), "holds 2 matrices for 3 products"),
    ((1, 3, 5, 7), (3, 7, 2), (3, 5, 2), "operands of 2 or 3 axes, a product of 3"),
])
def test_mismatched_operands_are_refused(a_shape, b_shape, out_shape, message):
    with pytest.raises(ValueError, match=message):
        gemm_call(np, np.ones(a_shape), np.ones(b_shape), np.empty(out_shape))


def test_the_product_must_be_c_contiguous():
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm_call(np, np.ones((3, 5, 7)), np.ones((3, 7, 2)), np.empty((3, 2, 5)).swapaxes(1, 2))
