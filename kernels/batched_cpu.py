"""The batched CPU engine's optimiser update: the CPU twin of ``optimizer_update`` in
:mod:`spingpu.kernels.batched_cuda`, one parallel pass over a weight array of every network.

Each weight is updated by :func:`spingpu.kernels.network.optimizer_step`, the function the fused
engines and the batched CUDA engine call, so the batched CPU and CUDA engines take the same step
(computed in float64, stored in the weights' dtype; on a GPU the compiler may fuse a multiply
and an add, a difference of float64 rounding). The NumPy engine's step, written with array
operations in the weights' dtype, agrees to that dtype's rounding.
"""

import numba

from .network import ADAM, SGD, optimizer_step


@numba.njit(parallel=True, cache=True)
def optimizer_update(w, g, m1, m2, alive, opt_kind, lr, bias1, bias2, momentum, beta1, beta2, eps, weight_decay):
    """One optimiser step of ``w`` (N, K), one weight array of N networks flattened per network,
    with gradient ``g`` (N, K); networks not ``alive`` (N,) are left as they are. ``m1`` is read
    and written by momentum and Adam, ``m2`` by Adam only (another optimiser may pass ``m1``);
    ``bias1``, ``bias2`` are Adam's bias corrections of the step (:func:`~spingpu.kernels.network.adam_bias`)."""
    n_net, n_w = w.shape
    for n in numba.prange(n_net):
        if not alive[n]:
            continue
        for e in range(n_w):
            w_new, m1_new, m2_new = optimizer_step(w[n, e], g[n, e], m1[n, e], m2[n, e], opt_kind, lr, bias1,
                                                   bias2, momentum, beta1, beta2, eps, weight_decay)
            w[n, e] = w_new
            if opt_kind != SGD:
                m1[n, e] = m1_new
            if opt_kind == ADAM:
                m2[n, e] = m2_new
