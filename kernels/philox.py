"""Counter-based random numbers: Philox4x32-10, one source for the CPU and CUDA.

Reference: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers: as easy as
1, 2, 3", SC'11 (the Random123 library). A Philox draw is a pure function of a 128-bit counter and a
64-bit key: no state is stored, so any junction's parameters or any noise sample can be recomputed
anywhere, in any order, on any backend.

Conventions used throughout spingpu
-----------------------------------
key     = (seed & 0xffffffff, seed >> 32)                      the study's 64-bit seed
counter = (network, stream, unit, index)                       four uint32 words

``network`` is the global index of a network (a chip), ``unit`` the neuron within its layer and
``stream`` packs what the numbers are for (:func:`stream_id`). One Philox call gives four uint32
words, turned into two float64 uniforms (53 bits each) and, by Box-Muller, two standard normals.

Every function here is ``numba.njit``: the CPU engine calls it compiled for the CPU and the CUDA
kernels call the very same function, which numba-cuda compiles as a device function.
"""

import math

import numba
import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0  # 2**-53

# Purposes of a stream (the low byte of the stream word).
PURPOSE_CHIP = 1  # chip-level variability draw, shared by every junction of a network
PURPOSE_NEURON = 2  # neuron-level (device-to-device) draw, shared by a pair's two members
PURPOSE_MEMBER = 3  # member-level (pair mismatch) draw, one per junction


@numba.njit(inline="always", cache=True)
def _round(c0, c1, c2, c3, k0, k1):
    p0 = _M0 * c0
    p1 = _M1 * c2
    hi0 = p0 >> _SHIFT32
    lo0 = p0 & _MASK32
    hi1 = p1 >> _SHIFT32
    lo1 = p1 & _MASK32
    return (hi1 ^ c1 ^ k0) & _MASK32, lo1, (hi0 ^ c3 ^ k1) & _MASK32, lo0


@numba.njit(cache=True)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds. Arguments and results are uint32 values held in uint64."""
    c0 = np.uint64(c0) & _MASK32
    c1 = np.uint64(c1) & _MASK32
    c2 = np.uint64(c2) & _MASK32
    c3 = np.uint64(c3) & _MASK32
    k0 = np.uint64(k0) & _MASK32
    k1 = np.uint64(k1) & _MASK32
    for _ in range(9):
        c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return _round(c0, c1, c2, c3, k0, k1)


@numba.njit(cache=True)
def split_seed(seed):
    """The Philox key (k0, k1) of a non-negative 64-bit seed."""
    s = np.uint64(seed)
    return s & _MASK32, s >> _SHIFT32


@numba.njit(cache=True)
def stream_id(purpose, layer, member, parameter):
    """Pack (purpose, layer, member, parameter), each 0..255, into one uint32 counter word."""
    return (
        (np.uint64(purpose) & np.uint64(0xFF))
        | ((np.uint64(layer) & np.uint64(0xFF)) << np.uint64(8))
        | ((np.uint64(member) & np.uint64(0xFF)) << np.uint64(16))
        | ((np.uint64(parameter) & np.uint64(0xFF)) << np.uint64(24))
    )


@numba.njit(cache=True)
def uniform_pair(c0, c1, c2, c3, k0, k1):
    """Two independent uniforms in (0, 1], 53 random bits each."""
    r0, r1, r2, r3 = philox4x32(c0, c1, c2, c3, k0, k1)
    a = (r0 << np.uint64(21)) ^ (r1 >> np.uint64(11))
    b = (r2 << np.uint64(21)) ^ (r3 >> np.uint64(11))
    a = a & np.uint64(0x1FFFFFFFFFFFFF)
    b = b & np.uint64(0x1FFFFFFFFFFFFF)
    return (np.float64(a) + 1.0) * _INV_2_53, (np.float64(b) + 1.0) * _INV_2_53


@numba.njit(cache=True)
def normal_pair(c0, c1, c2, c3, k0, k1):
    """Two independent standard normals (Box-Muller on :func:`uniform_pair`), float64."""
    u1, u2 = uniform_pair(c0, c1, c2, c3, k0, k1)
    r = math.sqrt(-2.0 * math.log(u1))
    t = _TWO_PI * u2
    return r * math.cos(t), r * math.sin(t)
