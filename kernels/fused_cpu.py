"""Fused CPU trainer: one compiled call trains many small networks, threads share them out.

Each network's whole training loop (every epoch, batch, forward and backward pass, optimiser step
and evaluation) runs inside one compiled call with its weights in local arrays; the data are read
from one shared copy. The call releases the GIL: threads train disjoint ranges of networks. The arithmetic is that of the NumPy reference engine
(:mod:`spingpu.training.numpy_engine`), per element, in float64; random numbers come from the same
Philox streams (:mod:`spingpu.kernels.streams`), so both engines give the same numbers.

Flat weight layout per network: for weight layer l, W_l (fan_in x fan_out, row-major) at
``w_off[l]`` and b_l at ``b_off[l]``. ``sizes`` = (features, hidden..., classes); hidden layer l
owns junction units ``u_off[l]`` .. ``u_off[l] + sizes[l + 1]`` of the (units, 2, P) array.
Hyper-parameters: ``hyper`` = (momentum, beta1, beta2, eps, weight_decay, distill_t, distill_alpha).
"""

import math

import numba
import numpy as np

from .loss import softmax_xent as loss_and_dlogits
from .pair_neuron import NOISE_NONE, TANH
from .philox import normal_pair, split_seed, stream_id
from .streams import PURPOSE_EVAL_NOISE, PURPOSE_NOISE

SGD, MOMENTUM, ADAM = 0, 1, 2


def make_fused_trainer(pair_neuron):
    """The fused trainer for one device model's ``pair_neuron`` (kernels.pair_neuron)."""

    @numba.njit(inline="always")
    def fill_noise(xi, network, purpose, layer, slot, row, width, k0, k1):
        stream = stream_id(purpose, layer, slot, 0)
        for u in range(0, width, 2):
            a, b = normal_pair(network, stream, row, u // 2, k0, k1)
            xi[u] = a
            if u + 1 < width:
                xi[u + 1] = b

    @numba.njit(inline="always")
    def forward(w, xrow, b, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal, table, mode,
                neuron, readout, network, purpose, slot0, row, xi0, xi1, k0, k1, derivatives):
        n_hidden = sizes.shape[0] - 2
        for f in range(sizes[0]):
            act[0, b, f] = xrow[f]
        noisy = readout[0] != NOISE_NONE and mode < TANH
        for layer in range(n_hidden):
            fan_in = sizes[layer]
            fan_out = sizes[layer + 1]
            if noisy:
                fill_noise(xi0, network, purpose, layer, slot0, row, fan_out, k0, k1)
                fill_noise(xi1, network, purpose, layer, slot0 + 1, row, fan_out, k0, k1)
            for u in range(fan_out):
                z = 0.0
                for k in range(fan_in):
                    z += act[layer, b, k] * w[w_off[layer] + k * fan_out + u]
                z += w[b_off[layer] + u]
                j = u_off[layer] + u
                h, d_used, d_exact = pair_neuron(mode, z, junc[j, 0], junc[j, 1], nominal, table, neuron,
                                                 readout, xi0[u], xi1[u], derivatives)
                act[layer + 1, b, u] = h
                du[layer, b, u] = d_used
                de[layer, b, u] = d_exact
        fan_in = sizes[n_hidden]
        n_out = sizes[n_hidden + 1]
        for c in range(n_out):
            s = 0.0
            for k in range(fan_in):
                s += act[n_hidden, b, k] * w[w_off[n_hidden] + k * n_out + c]
            logits[c] = s + w[b_off[n_hidden] + c]

    @numba.njit
    def backward(w, g, act, dd, dl, b, sizes, w_off, b_off, delta, delta_prev, inv_batch):
        """Add sample b's weight gradient (derivatives ``dd``) into ``g``."""
        n_hidden = sizes.shape[0] - 2
        n_out = sizes[n_hidden + 1]
        for c in range(n_out):
            delta[c] = dl[b, c] * inv_batch
        width = n_out
        for layer in range(n_hidden, -1, -1):
            fan_in = sizes[layer]
            if layer < n_hidden:
                for u in range(width):
                    delta[u] *= dd[layer, b, u]
            for k in range(fan_in):
                a = act[layer, b, k]
                base = w_off[layer] + k * width
                for u in range(width):
                    g[base + u] += a * delta[u]
            for u in range(width):
                g[b_off[layer] + u] += delta[u]
            if layer > 0:
                for k in range(fan_in):
                    s = 0.0
                    base = w_off[layer] + k * width
                    for u in range(width):
                        s += w[base + u] * delta[u]
                    delta_prev[k] = s
                for k in range(fan_in):
                    delta[k] = delta_prev[k]
            width = fan_in

    @numba.njit
    def accuracy(w, x, y, purpose, slot0, row0, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal,
                 table, mode, neuron, readout, network, xi0, xi1, k0, k1):
        correct = 0
        for s in range(y.shape[0]):
            forward(w, x[s], 0, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal, table, mode,
                    neuron, readout, network, purpose, slot0, row0 + s, xi0, xi1, k0, k1, False)
            best = 0
            for c in range(1, logits.shape[0]):
                if logits[c] > logits[best]:
                    best = c
            if best == y[s]:
                correct += 1
        return correct / y.shape[0]

    @numba.njit
    def train_one(i, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes, w_off,
                  b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper, lr_epoch,
                  batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div):
        k0, k1 = split_seed(seed)
        network = networks[i]
        junc = junctions[i]
        n_w = w_init.shape[1]
        n_hidden = sizes.shape[0] - 2
        n_out = sizes[n_hidden + 1]
        max_w = 0
        for s in sizes:
            max_w = max(max_w, s)
        total_units = 0
        for layer in range(n_hidden):
            total_units += sizes[layer + 1]
        w = w_init[i].copy()
        g = np.zeros(n_w)
        ge = np.zeros(n_w)
        m1 = np.zeros(n_w)
        m2 = np.zeros(n_w)
        act = np.zeros((n_hidden + 1, batch, max_w))
        du = np.zeros((max(n_hidden, 1), batch, max_w))
        de = np.zeros((max(n_hidden, 1), batch, max_w))
        dl = np.zeros((batch, n_out))
        logits = np.zeros(n_out)
        delta = np.zeros(max_w)
        delta_prev = np.zeros(max_w)
        xi0 = np.zeros(max_w)
        xi1 = np.zeros(max_w)
        errs = np.zeros(batch * total_units)
        momentum, beta1, beta2, eps, wd, dist_t, dist_alpha = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4],
                                                                hyper[5], hyper[6])
        n_train = y_tr.shape[0]
        epochs = lr_epoch.shape[0]
        steps = (n_train + batch - 1) // batch
        sample_counter = 0
        t = 0
        for epoch in range(epochs):
            lr = lr_epoch[epoch]
            loss_sum = 0.0
            correct = 0
            for step in range(steps):
                start = step * batch
                bsz = min(batch, n_train - start)
                batch_loss = 0.0
                for b in range(bsz):
                    idx = orders[epoch, start + b]
                    forward(w, x_tr[idx], b, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal,
                            table, mode, neuron, readout, network, PURPOSE_NOISE, 0, sample_counter + b, xi0, xi1,
                            k0, k1, True)
                    batch_loss += loss_and_dlogits(logits, y_tr[idx], teacher[idx if use_teacher else 0],
                                                   use_teacher, dist_t, dist_alpha, dl[b])
                    best = 0
                    for c in range(1, n_out):
                        if logits[c] > logits[best]:
                            best = c
                    if best == y_tr[idx]:
                        correct += 1
                sample_counter += bsz
                g[:] = 0.0
                for b in range(bsz):
                    backward(w, g, act, du, dl, b, sizes, w_off, b_off, delta, delta_prev, 1.0 / bsz)
                finite = math.isfinite(batch_loss)
                for k in range(n_w):
                    if not math.isfinite(g[k]):
                        finite = False
                if not finite:
                    out_div[i] = True
                    for e in range(epoch, epochs):
                        out_loss[i, e] = np.nan
                        out_acc[i, e] = np.nan
                        out_val[i, e] = np.nan
                        out_cos[i, e] = np.nan
                        out_derr[i, e] = np.nan
                    out_test[i] = np.nan
                    return
                if step == steps - 1:
                    ge[:] = 0.0
                    for b in range(bsz):
                        backward(w, ge, act, de, dl, b, sizes, w_off, b_off, delta, delta_prev, 1.0 / bsz)
                    dot = 0.0
                    na = 0.0
                    nb = 0.0
                    for k in range(n_w):
                        dot += g[k] * ge[k]
                        na += g[k] * g[k]
                        nb += ge[k] * ge[k]
                    out_cos[i, epoch] = dot / math.sqrt(na * nb) if na * nb > 0.0 else np.nan
                    n_err = 0
                    for layer in range(n_hidden):
                        for b in range(bsz):
                            for u in range(sizes[layer + 1]):
                                used = du[layer, b, u]
                                exact = de[layer, b, u]
                                errs[n_err] = 0.0 if used == exact else abs(used - exact) / abs(exact)
                                n_err += 1
                    out_derr[i, epoch] = np.median(errs[:n_err])
                loss_sum += batch_loss
                t += 1
                for k in range(n_w):
                    gk = g[k] + wd * w[k]
                    if opt_kind == SGD:
                        w[k] -= lr * gk
                    elif opt_kind == MOMENTUM:
                        m1[k] = momentum * m1[k] + gk
                        w[k] -= lr * m1[k]
                    else:
                        m1[k] = beta1 * m1[k] + (1.0 - beta1) * gk
                        m2[k] = beta2 * m2[k] + (1.0 - beta2) * gk * gk
                        mhat = m1[k] / (1.0 - beta1 ** t)
                        vhat = m2[k] / (1.0 - beta2 ** t)
                        w[k] -= lr * mhat / (math.sqrt(vhat) + eps)
            out_loss[i, epoch] = loss_sum / n_train
            out_acc[i, epoch] = correct / n_train
            out_val[i, epoch] = accuracy(w, x_va, y_va, PURPOSE_EVAL_NOISE, 0, epoch * y_va.shape[0], act, du, de,
                                         logits, sizes, w_off, b_off, u_off, junc, nominal, table, mode, neuron,
                                         readout, network, xi0, xi1, k0, k1)
        out_test[i] = accuracy(w, x_te, y_te, PURPOSE_EVAL_NOISE, 2, epochs * y_te.shape[0], act, du, de, logits,
                               sizes, w_off, b_off, u_off, junc, nominal, table, mode, neuron, readout, network,
                               xi0, xi1, k0, k1)

    @numba.njit(nogil=True)
    def train_networks(lo, hi, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes,
                       w_off, b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper,
                       lr_epoch, batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test,
                       out_div):
        """Train networks lo .. hi - 1 (indices into ``networks``); releases the GIL, so threads
        running disjoint ranges train in parallel."""
        for i in range(lo, hi):
            train_one(i, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes, w_off,
                      b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper, lr_epoch,
                      batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div)

    return train_networks
