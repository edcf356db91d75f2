"""Named random streams for training: weight initialisation, read noise and batch order.

Every number is a pure function of (seed, network, stream, row, column):

    normal_at(seed, network, stream, row, col) = normal_pair(network, stream, row, col // 2)[col % 2]

with ``stream = stream_id(purpose, layer, slot, 0)`` (:mod:`spingpu.kernels.philox`). Rows and
columns are what the purpose says: for weights (input index, output index) of one layer; for read
noise (global sample index, unit) with ``slot`` the reading (0 = junction A at I, 1 = the second
reading); for the batch order (epoch, sample) of network 0, shared by every network.
"""

import numba
import numpy as np

from .philox import normal_pair, split_seed, stream_id

PURPOSE_INIT = 4  # weight initialisation, slot 0
PURPOSE_NOISE = 5  # read noise during training, slot = reading
PURPOSE_EVAL_NOISE = 6  # read noise during evaluation, slot = 2 * split + reading
PURPOSE_ORDER = 7  # batch order, slot 0
PURPOSE_THERMAL = 8  # macrospin thermal field, slot = junction member (the same at every grid point)


@numba.njit(cache=True)
def normal_at(k0, k1, network, stream, row, col):
    """One standard normal of the grid (network, stream, row, col)."""
    a, b = normal_pair(network, stream, row, col // 2, k0, k1)
    return a if col % 2 == 0 else b


@numba.njit(parallel=True, cache=True)
def normal_grid(seed, networks, purpose, layer, slot, row0, out):
    """``out[i, r, c] = normal_at(seed, networks[i], stream, row0 + r, c)`` for a (N, R, C) array."""
    k0, k1 = split_seed(seed)
    stream = stream_id(purpose, layer, slot, 0)
    n_rows = out.shape[1]
    n_cols = out.shape[2]
    for t in numba.prange(networks.shape[0] * n_rows):
        i = t // n_rows
        r = t % n_rows
        for c in range(0, n_cols, 2):
            a, b = normal_pair(networks[i], stream, row0 + r, c // 2, k0, k1)
            out[i, r, c] = a
            if c + 1 < n_cols:
                out[i, r, c + 1] = b


def normals(seed, networks, purpose, layer, slot, row0, n_rows, n_cols):
    """(len(networks), n_rows, n_cols) float64 grid of :func:`normal_at` values."""
    networks = np.ascontiguousarray(networks, dtype=np.int64)
    out = np.empty((networks.size, n_rows, n_cols))
    normal_grid(np.uint64(seed), networks, purpose, layer, slot, row0, out)
    return out


def epoch_order(seed, epoch, n_samples):
    """The order in which epoch ``epoch`` visits ``n_samples`` training samples (all networks)."""
    keys = normals(seed, [0], PURPOSE_ORDER, 0, 0, epoch, 1, n_samples)[0, 0]
    return np.argsort(keys, kind="stable")
