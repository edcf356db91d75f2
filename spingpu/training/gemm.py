"""Matrix products over networks as one strided batched GEMM that reads transposed and shared
operands in place (cuBLAS ``cublasGemmStridedBatchedEx``).

``C[g] = A[g] @ B[g]`` for g < G: C (G, M, N) C-order; A (G, M, K), or (M, K) shared by every g
(batch stride 0); B (G, K, N) or (K, N); either may be a transposed view (``W.swapaxes(1, 2)``
in backpropagation). cuBLAS is column-major, and a C-order (M, N) matrix is the column-major
(N, M) matrix of its transpose, so the call computes C^T = B^T A^T: cuBLAS's first operand is read
from B, its second from A. A C-order matrix X with row stride ld, read column-major, is X^T
(``CUBLAS_OP_N``, leading dimension ld); a transposed view (contiguous columns, column stride ld)
is X, used transposed (``CUBLAS_OP_T``). Neither is copied; only an operand that is neither (a
broadcast or strided view) is.

CuPy's ``matmul`` makes both operands contiguous (a copy of every transposed one) and reads a shared
2-D operand through pointer arrays (``gemmBatched`` and three small kernels to build them).

:func:`gemm_call` works out the call; :func:`run_cublas` makes it on the GPU and :func:`emulate`
does the same call in NumPy, reading the operands only through the call's pointers, leading
dimensions, strides and transposition flags: the simulator trains with it, so the call's
arguments are tested on any machine. Both refuse (:func:`validate`) a call that cuBLAS would
refuse or misread, or that would read beyond an operand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Operand:
    """One operand as cuBLAS reads it: its matrices start at ``array``'s first element,
    ``stride`` elements apart (0: one matrix shared by every batch entry), column-major with
    leading dimension ``ld``, used transposed when ``transposed``."""

    array: object
    transposed: bool
    ld: int
    stride: int


@dataclass(frozen=True)
class GemmCall:
    """The arguments of one ``cublasGemmStridedBatchedEx`` (alpha 1, beta 0): cuBLAS's (m, n, k)
    are (N, M, K) of the C-order product; ``first`` is read from B, ``second`` from A."""

    m: int
    n: int
    k: int
    batch: int
    first: Operand
    second: Operand
    out: object
    ldc: int
    stride_c: int


def _reading(x):
    """(transposed, ld) that make cuBLAS's column-major reading of the last two axes of ``x``,
    (r, c), equal X^T after its op; None if no leading dimension does."""
    item = x.itemsize
    if any(s % item for s in x.strides):
        return None
    *_, r, c = x.shape
    sr, sc = (s // item for s in x.strides[-2:])
    if (c == 1 or sc == 1) and (r == 1 or sr >= c):  # C-order rows: X^T column-major, as it is
        return False, sr if r > 1 else max(c, 1)
    if (r == 1 or sr == 1) and (c == 1 or sc >= r):  # contiguous columns: X column-major, transposed
        return True, sc if c > 1 else r
    return None


def _operand(xp, x, batch):
    reading = _reading(x)
    if reading is None or (x.ndim == 3 and x.shape[0] > 1 and x.strides[0] < 0):
        x = xp.ascontiguousarray(x)
        reading = _reading(x)
    stride = 0 if x.ndim == 2 or x.shape[0] == 1 else x.strides[0] // x.itemsize
    if x.ndim == 3 and x.shape[0] not in (1, batch):
        raise ValueError(f"an operand holds {x.shape[0]} matrices for {batch} products")
    return Operand(x, *reading, stride)


def gemm_call(xp, a, b, out):
    """The call that writes ``a @ b`` into ``out`` (C-order (G, M, N), every extent > 0),
    operands as in the module doc and of ``out``'s dtype (others are cast, layouts that cuBLAS
    cannot read are copied)."""
    if out.ndim != 3 or a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape}: operands of 2 or 3 axes, a product of 3")
    batch, m, n = out.shape
    if a.shape[-2:] != (m, a.shape[-1]) or b.shape[-2:] != (a.shape[-1], n):
        raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if not out.flags.c_contiguous:
        raise ValueError("the product must be a C-contiguous array")
    if min(out.shape) == 0 or a.shape[-1] == 0:
        raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape}: an empty product, not a GEMM")
    a, b = (xp.asarray(x, dtype=out.dtype) for x in (a, b))
    first, second = _operand(xp, b, batch), _operand(xp, a, batch)
    call = GemmCall(m=n, n=m, k=a.shape[-1], batch=batch, first=first, second=second, out=out, ldc=n,
                    stride_c=m * n)
    validate(call)
    return call


def address(x):
    """Address of the first element of a NumPy or CuPy array."""
    return (getattr(x, "__cuda_array_interface__", None) or x.__array_interface__)["data"][0]


def _readings(call):
    """(array, rows, cols, ld, stride) of cuBLAS's two operands and product, as stored."""
    f, s = call.first, call.second
    return [(f.array, *((call.k, call.m) if f.transposed else (call.m, call.k)), f.ld, f.stride),
            (s.array, *((call.n, call.k) if s.transposed else (call.k, call.n)), s.ld, s.stride),
            (call.out, call.m, call.n, call.ldc, call.stride_c)]


def validate(call):
    """Refuse a call that cuBLAS would refuse (a leading dimension below the rows stored, a size
    beyond int32), misread (an operand of another dtype than the product's) or race on (a
    product that overlaps an operand), or that would read beyond an operand (element (g, i, j) of
    a column-major operand is at i + j ld + g stride past its first: on a GPU, other memory or a
    fault)."""
    dtype = call.out.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"a GEMM of {dtype}; float32 or float64 only")
    sizes = (call.m, call.n, call.k, call.batch)
    if min(sizes) < 1 or max(sizes) >= 2**31:
        raise ValueError(f"sizes (m, n, k, batch) = {sizes}; allowed: 1 to 2**31 - 1")
    ranges = []
    for x, rows, cols, ld, stride in _readings(call):
        if x.dtype != dtype:
            raise TypeError(f"an operand of {x.dtype} in a GEMM of {dtype}")
        if not rows <= ld < 2**31 or stride < 0:
            raise ValueError(f"leading dimension {ld} for {rows} rows stored, batch stride {stride}")
        last = (rows - 1) + (cols - 1) * ld + (call.batch - 1) * stride
        extent = sum((size - 1) * s for size, s in zip(x.shape, x.strides) if s > 0) // x.itemsize
        if last > extent:
            raise ValueError(f"the call reads element {last} of an operand that ends at {extent}")
        ranges.append((address(x), address(x) + (extent + 1) * x.itemsize))
    (a_lo, a_hi), (b_lo, b_hi), (c_lo, c_hi) = ranges
    if (c_lo < a_hi and a_lo < c_hi) or (c_lo < b_hi and b_lo < c_hi):
        raise ValueError("the product overlaps an operand")


def emulate(call):
    """``call`` done in NumPy, reading and writing memory only as cuBLAS does (for the simulator
    and the tests)."""
    validate(call)
    stored = []
    for x, rows, cols, ld, stride in _readings(call):
        item = x.itemsize
        stored.append(np.lib.stride_tricks.as_strided(x, shape=(call.batch, rows, cols), writeable=x is call.out,
                                                      strides=(stride * item, item, ld * item)))
    op_f, op_s, c = stored
    c[...] = np.matmul(op_f.swapaxes(1, 2) if call.first.transposed else op_f,
                       op_s.swapaxes(1, 2) if call.second.transposed else op_s)


def run_cublas(call):
    """``call`` on CuPy's current stream (float32 or float64, FP32/FP64 arithmetic: no TF32). The
    handle's stream, host pointer mode (alpha and beta are host scalars) and default math mode are
    set here rather than assumed from CuPy's binding and its other callers (CuPy's handle is
    shared: a math mode that allows TF32, set by another library, would round float32 products to
    TF32's 10-bit mantissa); the math mode is put back after the call is queued."""
    from cupy.cuda import device, stream
    from cupy_backends.cuda.api import runtime
    from cupy_backends.cuda.libs import cublas

    validate(call)
    dtype = np.dtype(call.out.dtype)
    data, compute = ((runtime.CUDA_R_32F, cublas.CUBLAS_COMPUTE_32F) if dtype == np.float32
                     else (runtime.CUDA_R_64F, cublas.CUBLAS_COMPUTE_64F))
    one, zero = np.ones((), dtype), np.zeros((), dtype)  # host scalars, read when the call is queued
    op = {False: cublas.CUBLAS_OP_N, True: cublas.CUBLAS_OP_T}
    f, s = call.first, call.second
    handle = device.get_cublas_handle()
    cublas.setStream(handle, stream.get_current_stream().ptr)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    math_mode = cublas.getMathMode(handle)
    cublas.setMathMode(handle, getattr(cublas, "CUBLAS_DEFAULT_MATH", 0))
    try:
        cublas.gemmStridedBatchedEx(
            handle, op[f.transposed], op[s.transposed], call.m, call.n, call.k, one.ctypes.data,
            f.array.data.ptr, data, f.ld, f.stride, s.array.data.ptr, data, s.ld, s.stride, zero.ctypes.data,
            call.out.data.ptr, data, call.ldc, call.stride_c, call.batch, compute, cublas.CUBLAS_GEMM_DEFAULT)
    finally:
        cublas.setMathMode(handle, math_mode)
