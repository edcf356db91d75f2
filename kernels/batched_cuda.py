"""CUDA kernels of the batched engine for large layers (``--backend cuda`` above the fused
kernel's sizes): the elementwise passes between cuBLAS matrix products, one thread per element.

* ``pair_layer``: read noise of both readings (Philox), then :mod:`spingpu.kernels.pair_neuron`:
  activation, derivative used, exact derivative and readings beyond the device's table of a hidden
  layer's z (N, B, U) in one pass;
  one thread per (network, sample, pair of units), since one Philox call gives the normals of two
  units (the CPU kernel :mod:`spingpu.kernels.pair_layer` draws the same numbers).
* ``digital_layer``: tanh / relu / sigmoid and their derivatives.
* ``sample_sum``: a bias gradient, each network's deltas summed over the batch in sample order.
* ``softmax_xent``: :func:`spingpu.kernels.loss.softmax_xent` per (network, sample), dL/dlogits
  divided by the batch size; ``network_mean`` then sums each network's losses in sample order.
* ``flag_diverged``: the divergence test of every network over the flat gradient buffer, one launch.
* ``dot_partials``, ``network_cosine``: ``grad_cosine``, each network's dot products summed in
  chunks of ``DOT_CHUNK`` weights and then chunk by chunk, in an order set by its own row alone.
* ``optimizer_update``: :func:`spingpu.kernels.network.optimizer_step` over one flat parameter
  buffer that holds each weight array of every network as one contiguous (N, ...) block, networks
  flagged dead left as they are.
"""

import math

import numba
from numba import cuda

from . import cuda_setup
from .loss import softmax_xent
from .network import optimizer_step, out_of_range
from .pair_neuron import NOISE_NONE, digital
from .philox import normal_pair, stream_id

cuda_setup.prepare()

THREADS = 128  # threads per block of every kernel here


def blocks(n_elements):
    """Blocks of :data:`THREADS` threads covering ``n_elements``."""
    return max(1, (n_elements + THREADS - 1) // THREADS)


def make_pair_layer_cuda(pair_neuron):
    """``pair_layer[blocks(N * B * ceil(U / 2)), THREADS](z, junc, nominal, table, mode, neuron,
    readout, k0, k1, networks, purpose, layer, slot0, row0, derivatives, h, used, exact, beyond)`` with
    ``junc`` the layer's (N, U, 2, P) junction parameters as (N U 2, P) rows."""

    @cuda.jit
    def pair_layer(z, junc, nominal, table, mode, neuron, readout, k0, k1, networks, purpose, layer, slot0, row0,
                   derivatives, h, used, exact, beyond):
        t = cuda.grid(1)
        n_net, n_b, n_u = z.shape
        n_pairs = (n_u + 1) // 2
        if t >= n_net * n_b * n_pairs:
            return
        n = t // (n_b * n_pairs)
        b = (t // n_pairs) % n_b
        q = t % n_pairs
        xa0 = 0.0
        xa1 = 0.0
        xb0 = 0.0
        xb1 = 0.0
        if readout[0] != NOISE_NONE:
            xa0, xa1 = normal_pair(networks[n], stream_id(purpose, layer, slot0, 0), row0 + b, q, k0, k1)
            xb0, xb1 = normal_pair(networks[n], stream_id(purpose, layer, slot0 + 1, 0), row0 + b, q, k0, k1)
        u = 2 * q
        r = 2 * (n * n_u + u)  # junction m of (network n, unit u) is row r + m of junc
        hh, du, de, nb = pair_neuron(mode, numba.float64(z[n, b, u]), junc, r, r + 1, nominal, table, neuron,
                                     readout, xa0, xb0, derivatives)
        h[n, b, u] = hh
        used[n, b, u] = du
        exact[n, b, u] = de
        beyond[n, b, u] = nb
        if u + 1 < n_u:
            hh, du, de, nb = pair_neuron(mode, numba.float64(z[n, b, u + 1]), junc, r + 2, r + 3, nominal, table,
                                         neuron, readout, xa1, xb1, derivatives)
            h[n, b, u + 1] = hh
            used[n, b, u + 1] = du
            exact[n, b, u + 1] = de
            beyond[n, b, u + 1] = nb

    return pair_layer


@cuda.jit
def digital_layer(mode, z, h, d):
    """``digital_layer[blocks(z.size), THREADS](mode, z, h, d)`` on (N, B, U) arrays."""
    t = cuda.grid(1)
    n_net, n_b, n_u = z.shape
    if t < n_net * n_b * n_u:
        n = t // (n_b * n_u)
        b = (t // n_u) % n_b
        u = t % n_u
        h[n, b, u], d[n, b, u] = digital(mode, numba.float64(z[n, b, u]))


@cuda.jit
def softmax_xent_rows(logits, labels, teacher, use_teacher, dist_t, dist_alpha, dl, loss_rows):
    """``[blocks(N * B), THREADS]``: per (network, sample) loss into ``loss_rows`` (N, B) and
    dL/dlogits / B into ``dl`` (N, B, C); float64 ``logits``."""
    t = cuda.grid(1)
    n_net, n_b, n_c = logits.shape
    if t < n_net * n_b:
        n = t // n_b
        b = t % n_b
        loss_rows[n, b] = softmax_xent(logits[n, b], labels[b], teacher, b if use_teacher else 0, use_teacher,
                                       dist_t, dist_alpha, dl[n, b])
        for c in range(n_c):
            dl[n, b, c] /= n_b


@cuda.jit
def sample_sum(delta, out):
    """``[blocks(N * U), THREADS]``: ``out[n, u]`` = sum over b of ``delta[n, b, u]``, added in
    sample order (NumPy's order for a C-order (N, B, U) array), so that a network's bias gradient
    does not depend on how many networks the call holds."""
    t = cuda.grid(1)
    n_net, n_b, n_u = delta.shape
    if t < n_net * n_u:
        n = t // n_u
        u = t % n_u
        s = delta[n, 0, u]
        for b in range(1, n_b):
            s += delta[n, b, u]
        out[n, u] = s


DOT_CHUNK = 256  # weights per partial sum of dot_partials


@cuda.jit
def dot_partials(a, b, out, col0):
    """``[blocks(N * C), THREADS]``, C = ceil(W / DOT_CHUNK) for rows a, b (N, W): ``out[n, col0 + c]``
    = (sum a b, sum a a, sum b b) in float64 over weights c DOT_CHUNK to (c + 1) DOT_CHUNK - 1 of
    network n, added in weight order, so that a network's sums do not depend on the networks beside
    it (CuPy's axis reductions choose their summation tree by the size of the whole array)."""
    t = cuda.grid(1)
    n_net, width = a.shape
    chunks = (width + DOT_CHUNK - 1) // DOT_CHUNK
    if t < n_net * chunks:
        n = t // chunks
        c = t % chunks
        ab, aa, bb = 0.0, 0.0, 0.0
        for j in range(c * DOT_CHUNK, min(width, (c + 1) * DOT_CHUNK)):
            x = numba.float64(a[n, j])
            y = numba.float64(b[n, j])
            ab += x * y
            aa += x * x
            bb += y * y
        out[n, col0 + c, 0] = ab
        out[n, col0 + c, 1] = aa
        out[n, col0 + c, 2] = bb


@cuda.jit
def network_cosine(partials, out):
    """``[blocks(N), THREADS]``: ``out[n]`` = a.b / (|a| |b|) of :func:`dot_partials`' (N, C, 3)
    sums, added chunk by chunk in order (0 / 0 is NaN, as NumPy's)."""
    n = cuda.grid(1)
    if n < partials.shape[0]:
        ab, aa, bb = 0.0, 0.0, 0.0
        for c in range(partials.shape[1]):
            ab += partials[n, c, 0]
            aa += partials[n, c, 1]
            bb += partials[n, c, 2]
        out[n] = ab / (math.sqrt(aa) * math.sqrt(bb))


@cuda.jit
def network_mean(rows, out):
    """``[blocks(N), THREADS]``: ``out[n]`` = mean of ``rows[n, :]``, summed in order."""
    n = cuda.grid(1)
    if n < rows.shape[0]:
        s = 0.0
        for b in range(rows.shape[1]):
            s += rows[n, b]
        out[n] = s / rows.shape[1]


@cuda.jit(device=True)
def flat_network(e, block_start, n_networks):
    """The network of element ``e`` of a flat parameter buffer whose block k, elements
    ``block_start[k]`` .. ``block_start[k + 1]`` - 1, is one weight array of all ``n_networks``
    networks, network after network."""
    k = 0
    while e >= block_start[k + 1]:
        k += 1
    return (e - block_start[k]) // ((block_start[k + 1] - block_start[k]) // n_networks)


@cuda.jit
def flag_diverged(g, block_start, loss, alive):
    """``[blocks(max(g.size, N)), THREADS]``: ``alive[n] = False`` where network n's loss or an
    element of its gradient in the flat buffer ``g`` (the layout of :func:`flat_network`) is NaN or
    beyond +-DIVERGED_ABOVE. Threads of one network may all write False: no race on the result."""
    e = cuda.grid(1)
    if e < alive.size and out_of_range(loss[e]):
        alive[e] = False
    if e < g.size and out_of_range(g[e]):
        alive[flat_network(e, block_start, alive.size)] = False


@cuda.jit
def optimizer_update(w, g, m1, m2, alive, block_start, opt_kind, lr, bias1, bias2, hyper):
    """``[blocks(w.size), THREADS]``: one optimiser step of every parameter of the flat buffer ``w``
    with gradient ``g``. Block k, elements ``block_start[k]`` .. ``block_start[k + 1]`` - 1, is one
    weight array of all N = ``alive.size`` networks, network after network; ``hyper`` = (momentum,
    beta1, beta2, eps, weight_decay); ``bias1``, ``bias2`` Adam's bias corrections of the step,
    computed once on the host (:func:`~spingpu.kernels.network.adam_bias`), not a pow per element."""
    e = cuda.grid(1)
    if e < w.size:
        n = flat_network(e, block_start, alive.size)
        if alive[n]:
            w[e], m1[e], m2[e] = optimizer_step(w[e], g[e], m1[e], m2[e], opt_kind, lr, bias1, bias2,
                                                hyper[0], hyper[1], hyper[2], hyper[3], hyper[4])
