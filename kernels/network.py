"""One network, one sample at a time: the arithmetic the fused CPU and CUDA trainers share.

Flat weight layout per network: for weight layer l, W_l (fan_in x fan_out, row-major) at
``w_off[l]`` and b_l at ``b_off[l]``, each layer's weights then its biases, layers in order.
``sizes`` = (features, hidden..., classes); hidden layer l owns junction units ``u_off[l]`` ..
``u_off[l] + sizes[l + 1]`` of the network's (units, 2, P) junction array.

Per-sample scratch is indexed [layer, slot, unit] so that a CUDA block can keep one slot per
thread in shared memory and the CPU a single slot:

    act[l, a, :]  input of weight layer l (act[0] the features) of the sample in slot a
    du, de        derivative used / exact derivative of hidden layer l's neurons
    D[l, d, :]    dL/dz of weight layer l's outputs (the backpropagated delta)

so that dL/dW_l[k, u] = sum over samples of act[l, ., k] D[l, ., u] and dL/db_l[u] = sum of
D[l, ., u], summed in sample order. Every function is ``numba.njit``; numba-cuda compiles the same
functions as device functions for :mod:`spingpu.kernels.fused_cuda`.
"""

import math

import numba

from .pair_neuron import NOISE_NONE, TANH
from .philox import normal_pair, stream_id

SGD, MOMENTUM, ADAM = 0, 1, 2
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}


def n_weights(sizes):
    """Weights and biases of one network of layer ``sizes`` (inputs, hidden..., outputs): the
    length of its flat weight row above."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


@numba.njit(inline="always", cache=True)
def adam_bias(beta, t):
    """1 - beta^t, Adam's bias correction after ``t`` steps, as ``pow`` of a float exponent: the
    same C library ``pow`` in the NumPy engine, the compiled CPU engines and the CUDA simulator
    (Numba's float ** int multiplies by squaring instead, which differs in the last bits), and
    libdevice's on a GPU. The batched engines compute it once per step on the host."""
    return 1.0 - beta ** float(t)


@numba.njit(inline="always", cache=True)
def optimizer_step(w, g, m1, m2, opt_kind, lr, bias1, bias2, momentum, beta1, beta2, eps, weight_decay):
    """One weight's update; returns (w, m1, m2). ``g`` is dL/dw; ``bias1``, ``bias2`` Adam's bias
    corrections 1 - beta1^t and 1 - beta2^t at step t (from 1; :func:`adam_bias`).

    SGD: w -= lr (g + wd w). Momentum: m1 = mu m1 + g'; w -= lr m1. Adam (Kingma & Ba 2015):
    m1 = b1 m1 + (1 - b1) g', m2 = b2 m2 + (1 - b2) g'^2, w -= lr m1_hat / (sqrt(m2_hat) + eps),
    m1_hat = m1 / (1 - b1^t), m2_hat = m2 / (1 - b2^t).
    """
    gk = g + weight_decay * w
    if opt_kind == SGD:
        w -= lr * gk
    elif opt_kind == MOMENTUM:
        m1 = momentum * m1 + gk
        w -= lr * m1
    else:
        m1 = beta1 * m1 + (1.0 - beta1) * gk
        m2 = beta2 * m2 + (1.0 - beta2) * gk * gk
        mhat = m1 / bias1
        vhat = m2 / bias2
        w -= lr * mhat / (math.sqrt(vhat) + eps)
    return w, m1, m2


@numba.njit(inline="always", cache=True)
def argmax(values):
    best = 0
    for c in range(1, values.shape[0]):
        if values[c] > values[best]:
            best = c
    return best


@numba.njit(inline="always", cache=True)
def relative_error(used, exact):
    """|used - exact| / |exact|, 0 where they are equal, inf where only ``exact`` is 0 (as the
    NumPy engine's division gives; the ``deriv_rel_err`` summand)."""
    if used == exact:
        return 0.0
    return abs(used - exact) / abs(exact) if exact != 0.0 else math.inf


@numba.njit(inline="always", cache=True)
def cosine(g, ge, n):
    """Cosine similarity of ``g[:n]`` and ``ge[:n]`` summed in index order; NaN if either is 0.
    Divided by the product of the two norms, as the other engines do: the norms' squares multiplied
    first underflow to 0 for gradients below ~1e-77 (a network far into its softmax's saturation)."""
    dot = 0.0
    na = 0.0
    nb = 0.0
    for k in range(n):
        dot += g[k] * ge[k]
        na += g[k] * g[k]
        nb += ge[k] * ge[k]
    return dot / (math.sqrt(na) * math.sqrt(nb)) if na > 0.0 and nb > 0.0 else math.nan


# A network has diverged when its batch loss or a weight gradient is NaN or beyond float32's range
# (3.4e38): the same test in every engine, whatever precision it trains in (a float32 engine's
# gradient overflows there, a float64 engine's would go on to 1e300).
DIVERGED_ABOVE = 3.4028234663852886e38


@numba.njit(inline="always", cache=True)
def out_of_range(x):
    """True where ``x`` is NaN or beyond +-:data:`DIVERGED_ABOVE` (the divergence test)."""
    return not abs(x) <= DIVERGED_ABOVE


@numba.njit(inline="always", cache=True)
def mark_diverged(i, epoch, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div):
    """Network i diverged in ``epoch``: its metrics from there on are NaN, its flag is set."""
    out_div[i] = True
    for e in range(epoch, out_loss.shape[1]):
        out_loss[i, e] = math.nan
        out_acc[i, e] = math.nan
        out_val[i, e] = math.nan
        out_cos[i, e] = math.nan
        out_derr[i, e] = math.nan
    out_test[i] = math.nan


@numba.njit(inline="always", cache=True)
def sample_deltas(w, dd, bd, dl, scale, sizes, w_off, D, db, delta, delta_prev):
    """Backpropagate one sample: ``D[l, db, :]`` for every weight layer, from dL/dlogits ``dl``
    times ``scale`` (1 / batch size) and the hidden derivatives ``dd[l, bd, :]`` (used or exact)."""
    n_hidden = len(sizes) - 2
    width = sizes[n_hidden + 1]
    for c in range(width):
        delta[c] = dl[c] * scale
    for layer in range(n_hidden, -1, -1):
        if layer < n_hidden:
            for u in range(width):
                delta[u] *= dd[layer, bd, u]
        for u in range(width):
            D[layer, db, u] = delta[u]
        if layer > 0:
            fan_in = sizes[layer]
            for k in range(fan_in):
                s = 0.0
                base = w_off[layer] + k * width
                for u in range(width):
                    s += w[base + u] * delta[u]
                delta_prev[k] = s
            for k in range(fan_in):
                delta[k] = delta_prev[k]
            width = fan_in


@numba.njit(inline="always", cache=True)
def add_sample_gradient(g, act, ab, D, db, sizes, w_off, b_off):
    """``g += dL/dw`` of the sample in act slot ``ab`` and delta slot ``db`` (CPU order)."""
    for layer in range(len(sizes) - 2, -1, -1):
        fan_in = sizes[layer]
        width = sizes[layer + 1]
        for k in range(fan_in):
            a = act[layer, ab, k]
            base = w_off[layer] + k * width
            for u in range(width):
                g[base + u] += a * D[layer, db, u]
        for u in range(width):
            g[b_off[layer] + u] += D[layer, db, u]


@numba.njit(inline="always", cache=True)
def weight_gradient(k, acc, act, D, n_slots, sizes, w_off, b_off):
    """``acc`` plus weight k's dL/dw over slots 0 .. n_slots - 1, added in slot order (the CUDA
    trainer: one thread per weight, the samples of a sub-batch in the slots)."""
    layer = 0
    while k >= b_off[layer] + sizes[layer + 1]:
        layer += 1
    width = sizes[layer + 1]
    if k >= b_off[layer]:
        u = k - b_off[layer]
        for r in range(n_slots):
            acc += D[layer, r, u]
    else:
        kk = k - w_off[layer]
        f = kk // width
        u = kk - f * width
        for r in range(n_slots):
            acc += act[layer, r, f] * D[layer, r, u]
    return acc


def make_forward(pair_neuron):
    """``forward(...)``: one sample through a network of ``pair_neuron`` hidden layers.

    Its callers pass the read noise's stream (``purpose``, ``slot0``) and ``derivatives`` as
    run-time values (``np.int64(0)``, ``np.bool_(True)``), not literals: Numba compiles a function
    once per combination of the literal constants it is called with (``f(x, 0)`` and ``f(x, 2)``
    compile ``f`` twice), and forward, the trainers' largest part, was compiled three times per
    trainer (a third of its compilation)."""

    @numba.njit(inline="always")
    def fill_noise(xi, network, purpose, layer, slot, row, width, k0, k1):
        stream = stream_id(purpose, layer, slot, 0)
        for u in range(0, width, 2):
            a, b = normal_pair(network, stream, row, u // 2, k0, k1)
            xi[u] = a
            if u + 1 < width:
                xi[u + 1] = b

    # A plain call, not inlined into the trainers at Numba's level: measured 10-17 % faster, as
    # Numba then does not incref and decref each array argument at every call site.
    @numba.njit
    def forward(w, x, sample, act, ab, du, de, bd, logits, sizes, w_off, b_off, u_off, junc, nominal, table, mode,
                neuron, readout, network, purpose, slot0, row, xi0, xi1, k0, k1, derivatives):
        """Logits of sample ``x[sample]`` into ``logits``; layer inputs into act slot ``ab``,
        derivatives into du/de slot ``bd``. ``junc`` (units x 2, P): junction m of hidden unit j is
        row 2 j + m. Read noise: global sample index ``row`` of stream (purpose, layer, slot0 +
        reading) (:mod:`spingpu.kernels.streams`). Returns the number of junction readings beyond
        the device's table."""
        n_hidden = len(sizes) - 2
        for f in range(sizes[0]):
            act[0, ab, f] = x[sample, f]
        noisy = readout[0] != NOISE_NONE and mode < TANH
        beyond = 0
        for layer in range(n_hidden):
            fan_in = sizes[layer]
            fan_out = sizes[layer + 1]
            if noisy:
                fill_noise(xi0, network, purpose, layer, slot0, row, fan_out, k0, k1)
                fill_noise(xi1, network, purpose, layer, slot0 + 1, row, fan_out, k0, k1)
            for u in range(fan_out):
                z = 0.0
                for k in range(fan_in):
                    z += act[layer, ab, k] * w[w_off[layer] + k * fan_out + u]
                z += w[b_off[layer] + u]
                j = u_off[layer] + u
                h, d_used, d_exact, n_beyond = pair_neuron(mode, z, junc, 2 * j, 2 * j + 1, nominal, table, neuron,
                                                           readout, xi0[u], xi1[u], derivatives)
                beyond += n_beyond
                act[layer + 1, ab, u] = h
                du[layer, bd, u] = d_used
                de[layer, bd, u] = d_exact
        fan_in = sizes[n_hidden]
        n_out = sizes[n_hidden + 1]
        for c in range(n_out):
            s = 0.0
            for k in range(fan_in):
                s += act[n_hidden, ab, k] * w[w_off[n_hidden] + k * n_out + c]
            logits[c] = s + w[b_off[n_hidden] + c]
        return beyond

    return forward
