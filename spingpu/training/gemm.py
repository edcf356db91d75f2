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
arguments are tested on any machine. Both refuse a call that would read beyond an operand.
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
        return False, sr if r > 1 else c
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
    """The call that writes ``a @ b`` into ``out`` (C-order (G, M, N)), operands as in the module
    doc and of ``out``'s dtype (others are cast, layouts that cuBLAS cannot read are copied)."""
    batch, m, n = out.shape
    if a.shape[-2:] != (m, a.shape[-1]) or b.shape[-2:] != (a.shape[-1], n):
        raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if not out.flags.c_contiguous:
        raise ValueError("the product must be a C-contiguous array")
    a, b = (xp.asarray(x, dtype=out.dtype) for x in (a, b))
    first, second = _operand(xp, b, batch), _operand(xp, a, batch)
    return GemmCall(m=n, n=m, k=a.shape[-1], batch=batch, first=first, second=second, out=out,
                    ldc=max(n, 1), stride_c=m * n)


def _check_reach(x, rows, cols, ld, stride, batch):
    """Refuse a reading of (batch, rows, cols) column-major matrices at ``x``'s first element
    (element (g, i, j) at i + j ld + g stride) that goes beyond ``x``'s own elements: on a GPU it
    would read other memory, or fault."""
    last = (rows - 1) + (cols - 1) * ld + (batch - 1) * stride  # elements past the first
    extent = sum((size - 1) * s for size, s in zip(x.shape, x.strides) if s > 0) // x.itemsize
    if min(rows, cols, batch) > 0 and (last > extent or min(ld, stride) < 0):
        raise ValueError(f"the call reads element {last} of an operand that ends at {extent}")


def _readings(call):
    """(array, rows, cols, ld, stride) of cuBLAS's two operands and product, as stored."""
    f, s = call.first, call.second
    return [(f.array, *((call.k, call.m) if f.transposed else (call.m, call.k)), f.ld, f.stride),
            (s.array, *((call.n, call.k) if s.transposed else (call.k, call.n)), s.ld, s.stride),
            (call.out, call.m, call.n, call.ldc, call.stride_c)]


def emulate(call):
    """``call`` done in NumPy, reading and writing memory only as cuBLAS does (for the simulator
    and the tests)."""
    stored = []
    for x, rows, cols, ld, stride in _readings(call):
        _check_reach(x, rows, cols, ld, stride, call.batch)
        item = x.itemsize
        stored.append(np.lib.stride_tricks.as_strided(x, shape=(call.batch, rows, cols), writeable=x is call.out,
                                                      strides=(stride * item, item, ld * item)))
    op_f, op_s, c = stored
    c[...] = np.matmul(op_f.swapaxes(1, 2) if call.first.transposed else op_f,
                       op_s.swapaxes(1, 2) if call.second.transposed else op_s)


def run_cublas(call):
    """``call`` on CuPy's current stream (float32 or float64, FP32/FP64 arithmetic: no TF32, as
    CuPy's default)."""
    from cupy.cuda import device
    from cupy_backends.cuda.api import runtime
    from cupy_backends.cuda.libs import cublas

    dtype = np.dtype(call.out.dtype)
    if dtype == np.float32:
        data, compute = runtime.CUDA_R_32F, cublas.CUBLAS_COMPUTE_32F
    elif dtype == np.float64:
        data, compute = runtime.CUDA_R_64F, cublas.CUBLAS_COMPUTE_64F
    else:
        raise TypeError(f"a GEMM of {dtype}; float32 or float64 only")
    for x, rows, cols, ld, stride in _readings(call):
        _check_reach(x, rows, cols, ld, stride, call.batch)
    one, zero = np.ones((), dtype), np.zeros((), dtype)  # host scalars, read when the call is queued
    op = {False: cublas.CUBLAS_OP_N, True: cublas.CUBLAS_OP_T}
    f, s = call.first, call.second
    cublas.gemmStridedBatchedEx(
        device.get_cublas_handle(), op[f.transposed], op[s.transposed], call.m, call.n, call.k, one.ctypes.data,
        f.array.data.ptr, data, f.ld, f.stride, s.array.data.ptr, data, s.ld, s.stride, zero.ctypes.data,
        call.out.data.ptr, data, call.ldc, call.stride_c, call.batch, compute, cublas.CUBLAS_GEMM_DEFAULT)
