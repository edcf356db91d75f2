"""Fused elementwise kernel of a hidden layer of pair neurons, for batched (large-layer) training.

For every network n, sample b and unit u: draws the read noise of both readings from the Philox
streams (:mod:`spingpu.kernels.streams`), then evaluates :mod:`spingpu.kernels.pair_neuron` once:
activation, derivative used, exact derivative and the readings beyond the device's table in one
pass over z (N, B, U). Parallel over (network, sample).
"""

import numba

from .pair_neuron import NOISE_NONE, digital
from .philox import normal_pair, split_seed, stream_id


def make_pair_layer(pair_neuron):
    """``pair_layer(z, junc, nominal, table, mode, neuron, readout, seed, networks, purpose, layer,
    slot0, row0, derivatives, h, used, exact, beyond)`` for one model's ``pair_neuron``; ``junc``
    holds the layer's (N, U, 2, P) junction parameters as (N U 2, P) rows."""

    @numba.njit(parallel=True)
    def pair_layer(z, junc, nominal, table, mode, neuron, readout, seed, networks, purpose, layer, slot0, row0,
                   derivatives, h, used, exact, beyond):
        k0, k1 = split_seed(seed)
        n_net, n_b, n_u = z.shape
        noisy = readout[0] != NOISE_NONE
        s0 = stream_id(purpose, layer, slot0, 0)
        s1 = stream_id(purpose, layer, slot0 + 1, 0)
        for t in numba.prange(n_net * n_b):
            n = t // n_b
            b = t % n_b
            net = networks[n]
            xa0 = 0.0
            xa1 = 0.0
            xb0 = 0.0
            xb1 = 0.0
            for u in range(n_u):
                if noisy and u % 2 == 0:
                    xa0, xa1 = normal_pair(net, s0, row0 + b, u // 2, k0, k1)
                    xb0, xb1 = normal_pair(net, s1, row0 + b, u // 2, k0, k1)
                xi0 = xa0 if u % 2 == 0 else xa1
                xi1 = xb0 if u % 2 == 0 else xb1
                r = 2 * (n * n_u + u)  # junction m of (network n, unit u) is row r + m of junc
                hh, du, de, nb = pair_neuron(mode, numba.float64(z[n, b, u]), junc, r, r + 1, nominal,
                                             table, neuron, readout, xi0, xi1, derivatives)
                h[n, b, u] = hh
                used[n, b, u] = du
                exact[n, b, u] = de
                beyond[n, b, u] = nb

    return pair_layer


@numba.njit(parallel=True, cache=True)
def digital_layer(mode, z, h, d):
    """Digital baseline activation ``h`` and derivative ``d`` of z (N, B, U), elementwise."""
    n_net, n_b, n_u = z.shape
    for t in numba.prange(n_net * n_b):
        n = t // n_b
        b = t % n_b
        for u in range(n_u):
            h[n, b, u], d[n, b, u] = digital(mode, z[n, b, u])
