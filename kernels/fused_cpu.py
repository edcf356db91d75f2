"""Fused CPU trainer: one compiled call trains many small networks, threads share them out.

Each network's whole training loop (every epoch, batch, forward and backward pass, optimiser step
and evaluation) runs inside one compiled call with its weights in local arrays; the data are read
from one shared copy. Samples go through the network one at a time (:mod:`spingpu.kernels.network`),
so the scratch is a few vectors per network. The call releases the GIL: threads train disjoint
ranges of networks. The arithmetic is that of the NumPy reference engine
(:mod:`spingpu.training.numpy_engine`), per element, in float64, gradients summed in sample order;
random numbers come from the same Philox streams (:mod:`spingpu.kernels.streams`), so both engines
give the same numbers.

Hyper-parameters: ``hyper`` = (momentum, beta1, beta2, eps, weight_decay, distill_t, distill_alpha).
"""


import numba
import numpy as np

from .loss import softmax_xent
from .network import (adam_bias, add_sample_gradient, argmax, cosine, make_forward, mark_diverged, optimizer_step,
                      out_of_range, relative_error, sample_deltas)
from .philox import split_seed
from .streams import PURPOSE_EVAL_NOISE, PURPOSE_NOISE


def make_fused_trainer(pair_neuron):
    """The fused trainer for one device model's ``pair_neuron`` (kernels.pair_neuron)."""
    forward = make_forward(pair_neuron)

    @numba.njit
    def accuracy(w, x, y, purpose, slot0, row0, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal,
                 table, mode, neuron, readout, network, xi0, xi1, k0, k1):
        correct = 0
        beyond = 0
        for s in range(y.shape[0]):
            beyond += forward(w, x, s, act, 0, du, de, 0, logits, sizes, w_off, b_off, u_off, junc, nominal, table,
                              mode, neuron, readout, network, purpose, slot0, row0 + s, xi0, xi1, k0, k1,
                              np.bool_(False))
            if argmax(logits) == y[s]:
                correct += 1
        return correct / y.shape[0], beyond

    @numba.njit
    def train_one(i, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes, w_off,
                  b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper, lr_epoch,
                  batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div, out_beyond):
        k0, k1 = split_seed(seed)
        network = networks[i]
        junc = junctions[i].reshape((junctions.shape[1] * 2, junctions.shape[3]))  # rows 2 j + m
        n_w = w_init.shape[1]
        n_layers = len(sizes) - 1
        n_hidden = n_layers - 1
        n_out = sizes[n_layers]
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
        act = np.zeros((n_layers, 1, max_w))
        du = np.zeros((max(n_hidden, 1), 1, max_w))
        de = np.zeros((max(n_hidden, 1), 1, max_w))
        D = np.zeros((n_layers, 1, max_w))
        dl = np.zeros(n_out)
        logits = np.zeros(n_out)
        delta = np.zeros(max_w)
        delta_prev = np.zeros(max_w)
        xi0 = np.zeros(max_w)
        xi1 = np.zeros(max_w)
        errs = np.zeros(batch * total_units)
        momentum, beta1, beta2, eps, wd, dist_t, dist_alpha = hyper  # a tuple (fused_engine.as_tuples)
        n_train = y_tr.shape[0]
        epochs = lr_epoch.shape[0]
        steps = (n_train + batch - 1) // batch
        sample_counter = 0
        t = 0
        beyond = 0  # junction readings beyond the device's table
        for epoch in range(epochs):
            lr = lr_epoch[epoch]
            loss_sum = 0.0
            correct = 0
            for step in range(steps):
                start = step * batch
                bsz = min(batch, n_train - start)
                last = step == steps - 1  # gradient fidelity on the epoch's last batch
                scale = 1.0 / bsz
                batch_loss = 0.0
                g[:] = 0.0
                ge[:] = 0.0
                n_err = 0
                for b in range(bsz):
                    idx = orders[epoch, start + b]
                    beyond += forward(w, x_tr, idx, act, 0, du, de, 0, logits, sizes, w_off, b_off, u_off, junc,
                                      nominal, table, mode, neuron, readout, network, np.int64(PURPOSE_NOISE),
                                      np.int64(0), sample_counter + b, xi0, xi1, k0, k1, np.bool_(True))
                    batch_loss += softmax_xent(logits, y_tr[idx], teacher, idx if use_teacher else 0, use_teacher,
                                               dist_t, dist_alpha, dl)
                    if argmax(logits) == y_tr[idx]:
                        correct += 1
                    sample_deltas(w, du, 0, dl, scale, sizes, w_off, D, 0, delta, delta_prev)
                    add_sample_gradient(g, act, 0, D, 0, sizes, w_off, b_off)
                    if last:
                        sample_deltas(w, de, 0, dl, scale, sizes, w_off, D, 0, delta, delta_prev)
                        add_sample_gradient(ge, act, 0, D, 0, sizes, w_off, b_off)
                        for layer in range(n_hidden):
                            for u in range(sizes[layer + 1]):
                                errs[n_err] = relative_error(du[layer, 0, u], de[layer, 0, u])
                                n_err += 1
                sample_counter += bsz
                finite = not out_of_range(batch_loss)
                for k in range(n_w):
                    if out_of_range(g[k]):
                        finite = False
                if not finite:
                    mark_diverged(i, epoch, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div)
                    return
                if last:
                    out_cos[i, epoch] = cosine(g, ge, w_off[n_hidden])  # hidden layers' weights
                    out_derr[i, epoch] = np.median(errs[:n_err])
                loss_sum += batch_loss
                t += 1
                bias1, bias2 = adam_bias(beta1, t), adam_bias(beta2, t)
                for k in range(n_w):
                    w[k], m1[k], m2[k] = optimizer_step(w[k], g[k], m1[k], m2[k], opt_kind, lr, bias1, bias2,
                                                        momentum, beta1, beta2, eps, wd)
            out_loss[i, epoch] = loss_sum / n_train
            out_acc[i, epoch] = correct / n_train
            out_val[i, epoch], n_beyond = accuracy(w, x_va, y_va, np.int64(PURPOSE_EVAL_NOISE), np.int64(0),
                                                   epoch * y_va.shape[0], act, du, de, logits, sizes, w_off, b_off,
                                                   u_off, junc, nominal, table, mode, neuron, readout, network, xi0,
                                                   xi1, k0, k1)
            beyond += n_beyond
        out_test[i], n_beyond = accuracy(w, x_te, y_te, np.int64(PURPOSE_EVAL_NOISE), np.int64(2),
                                         epochs * y_te.shape[0], act, du, de, logits, sizes, w_off, b_off, u_off,
                                         junc, nominal, table, mode, neuron, readout, network, xi0, xi1, k0, k1)
        out_beyond[i] = beyond + n_beyond

    @numba.njit(nogil=True)
    def train_networks(lo, hi, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes,
                       w_off, b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper,
                       lr_epoch, batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test,
                       out_div, out_beyond):
        """Train networks lo .. hi - 1 (indices into ``networks``); releases the GIL, so threads
        running disjoint ranges train in parallel."""
        for i in range(lo, hi):
            train_one(i, x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes, w_off,
                      b_off, u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper, lr_epoch,
                      batch, orders, w_init, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div,
                      out_beyond)

    return train_networks
