"""Softmax cross-entropy, optionally distilled, per sample: one source for every engine.

    L = (1 - alpha) CE(y, softmax(s)) + alpha T^2 KL(softmax(t / T) || softmax(s / T))

(alpha = 0 without a teacher), and dL/ds = (1 - alpha) (softmax(s) - onehot(y))
+ alpha T (softmax(s / T) - softmax(t / T)). Scalar loops over the classes with libm's exp and log,
so a sample's numbers do not depend on where it sits in an array (vectorised exp may round
differently in an array's body and tail).
"""

import math

import numba

@numba.njit(inline="always", cache=True)
def softmax_xent(logits, label, teacher, t_row, use_teacher, dist_t, dist_alpha, dl):
    """Cross-entropy (optionally distilled) of one sample; dL/dlogits into ``dl``; the teacher's
    logits are ``teacher[t_row]``."""
    n_out = logits.shape[0]
    mx = logits[0]
    for c in range(1, n_out):
        mx = max(mx, logits[c])
    ssum = 0.0
    for c in range(n_out):
        ssum += math.exp(logits[c] - mx)
    lse = mx + math.log(ssum)
    loss = lse - logits[label]
    for c in range(n_out):
        dl[c] = math.exp(logits[c] - lse)
    dl[label] -= 1.0
    if use_teacher:
        tmx = teacher[t_row, 0] / dist_t
        smx = logits[0] / dist_t
        for c in range(1, n_out):
            tmx = max(tmx, teacher[t_row, c] / dist_t)
            smx = max(smx, logits[c] / dist_t)
        tsum = 0.0
        ssum = 0.0
        for c in range(n_out):
            tsum += math.exp(teacher[t_row, c] / dist_t - tmx)
            ssum += math.exp(logits[c] / dist_t - smx)
        kl = 0.0
        for c in range(n_out):
            q = math.exp(teacher[t_row, c] / dist_t - tmx) / tsum
            logp = logits[c] / dist_t - smx - math.log(ssum)
            if q > 0.0:
                kl += q * (math.log(q) - logp)
            dl[c] = (1.0 - dist_alpha) * dl[c] + dist_alpha * dist_t * (math.exp(logp) - q)
        loss = (1.0 - dist_alpha) * loss + dist_alpha * dist_t * dist_t * kl
    return loss



@numba.njit(parallel=True, cache=True)
def softmax_xent_batch(logits, labels, teacher, use_teacher, dist_t, dist_alpha, dl, loss):
    """Mean loss over the batch per network into ``loss`` (N,) and dL/dlogits / B into ``dl``
    (N, B, C) for ``logits`` (N, B, C); ``teacher`` (B, C) logits when ``use_teacher``."""
    n_net, n_b, _ = logits.shape
    for n in numba.prange(n_net):
        total = 0.0
        for b in range(n_b):
            total += softmax_xent(logits[n, b], labels[b], teacher, b if use_teacher else 0, use_teacher, dist_t,
                                  dist_alpha, dl[n, b])
        loss[n] = total / n_b
        for b in range(n_b):
            for c in range(dl.shape[2]):
                dl[n, b, c] /= n_b
