"""Fused CUDA trainer: one thread block trains one whole network, every epoch inside the kernel.

The block keeps its network's weights, junction parameters and the per-sample activations and
deltas of a sub-batch in shared memory; the Adam moments and gradient accumulators of the weights
a thread owns (weights tid, tid + T, ...) stay in its registers. Per step and sub-batch of T
samples (T = threads per block):

1. thread t runs sample t forward and backward (:mod:`spingpu.kernels.network`, the same device
   functions the CPU engine runs), writing its layer inputs and deltas to shared memory;
2. thread t then adds, for each weight it owns, that weight's gradient over the sub-batch's samples
   in sample order: the sums run in the CPU engine's order, so a GPU run matches a CPU run to
   rounding (FMA contraction and CUDA's libm are the only differences).

The dataset is one copy in global memory that every block reads (the same sample at the same time:
broadcast loads). Random numbers come from the same Philox streams as on the CPU. Divergence,
``grad_cosine`` and ``deriv_rel_err`` are computed as on the CPU: the last batch's relative errors
go to a global scratch row per block as the samples run, and their median is found by a radix
select on the values' bits (8 passes of a byte each, 4 block barriers a pass; for an even count
the lower middle value by one block maximum more), reading the values from shared memory (the
activation rows, free between the step's gradients and the next forward pass) where they fit,
else from the global row. It replaced a bitonic sort (55 stages for Iris's 720 values padded to
1,024, a barrier and ~11 compare-exchanges per thread each), which benchmarks/README.md counts as
most of an Iris epoch on an H200 when it ran in global memory; the select needs 32 or 33 barriers
and at most one shared atomic per value a pass (fewer past the first bytes: only the values that
share the bytes chosen so far count). Neither is measured on a GPU yet.

Shared memory per block, in float64 words: 3 W + 2 U P + 2 L T M + T + 2 + 147, with W weights,
U hidden units, P junction parameters, L weight layers, M the widest layer rounded up to an odd
number and 147 the select's 288 int32 counts and 3 int64 words: thread t's row of activations or
deltas starts M words after thread t - 1's, and with M
odd the 16 threads of a half-warp read 8-byte words in 16 different pairs of the 32 four-byte
banks (with M = 8, as for Iris, eight threads would share each pair). :func:`fused_cuda_layout`
picks T, a multiple of 32 (whole warps), as the batch rounded up to one, at most 128, and smaller
while the block does not fit the 48 KiB a kernel may use without opting in to more (or says that
the network does not fit): threads beyond the batch would idle through every forward and backward
pass while holding registers that another block's busy warps could use (Iris, batch 90: T = 96, three
warps all busy, where T = 128 leaves its fourth idle).
"""

from dataclasses import dataclass

import numba
import numpy as np
from numba import cuda

from . import cuda_setup
from .loss import softmax_xent
from .network import (adam_bias, argmax, cosine, mark_diverged, n_weights, optimizer_step, out_of_range,
                      relative_error, sample_deltas, weight_gradient)
from .philox import split_seed
from .streams import PURPOSE_EVAL_NOISE, PURPOSE_NOISE

cuda_setup.prepare()

SHARED_BYTES = 48 * 1024  # static shared memory a kernel may use on every CUDA GPU since sm_20
MAX_THREADS = 128  # the default T's upper bound; a larger batch runs in sub-batches of T samples
SELECT_BINS = 256  # the median's radix select: a byte of the key per pass
SELECT_CHUNKS = 32  # the bins summed in 32 chunks, by a warp
CHUNK_BINS = SELECT_BINS // SELECT_CHUNKS
SELECT_WORDS = (SELECT_BINS + SELECT_CHUNKS) * 4 // 8 + 3  # their int32 counts and 3 int64 words, in float64 words


@dataclass(frozen=True)
class FusedLayout:
    """Compile-time shape of the fused CUDA trainer: the kernel is specialised to it."""

    sizes: tuple  # (features, hidden..., classes)
    n_params: int  # junction parameters P
    threads: int  # threads per block T
    errs_len: int  # batch x hidden units: the deriv_rel_err scratch row
    min_blocks: int | None = None  # launch bounds: compile so that this many blocks fit a multiprocessor
    shared_median: bool = True  # deriv_rel_err's values in shared memory where they fit (False: the global row)

    @property
    def launch_bounds(self):
        """numba-cuda's ``launch_bounds``: (max threads per block, min resident blocks per SM)."""
        return (self.threads,) if self.min_blocks is None else (self.threads, self.min_blocks)

    @property
    def n_weights(self):
        return n_weights(self.sizes)

    @property
    def hidden_units(self):
        return sum(self.sizes[1:-1])

    @property
    def shared_words(self):
        return shared_words(self.sizes, self.n_params, self.threads)

    @property
    def median_in_shared(self):
        """Whether deriv_rel_err's median reads its values from shared memory: the activation rows,
        (L, T, M) words, hold the scratch row."""
        return self.shared_median and self.errs_len <= (len(self.sizes) - 1) * self.threads * row_words(self.sizes)


def row_words(sizes):
    """Words from one thread's row of activations or deltas to the next: the widest layer, rounded
    up to an odd number (no shared-memory bank conflicts, see the module docstring)."""
    return max(sizes) | 1


def shared_words(sizes, n_params, threads):
    """float64 words of shared memory a block uses (see the module docstring)."""
    n_w = n_weights(sizes)
    n_layers = len(sizes) - 1
    units = max(sum(sizes[1:-1]), 1)
    return 3 * n_w + 2 * units * n_params + (2 * n_layers) * threads * row_words(sizes) + threads + 2 + SELECT_WORDS


def fused_cuda_layout(sizes, n_params, batch, threads=None, min_blocks=None):
    """The layout for this architecture, or None if one network's block does not fit in shared
    memory (the batched engine then trains it). ``threads`` forces T (tests use small blocks);
    ``min_blocks`` asks the compiler to fit that many blocks on a multiprocessor (fewer registers
    per thread, perhaps spilled; default: the compiler's choice)."""
    sizes = tuple(int(s) for s in sizes)
    errs_len = batch * max(sum(sizes[1:-1]), 1)
    choices = (threads,) if threads else range(min(MAX_THREADS, -(-batch // 32) * 32), 0, -32)
    for t in choices:
        if 8 * shared_words(sizes, n_params, t) <= SHARED_BYTES:
            return FusedLayout(sizes, int(n_params), int(t), errs_len, min_blocks)
    return None


SM_MAX_THREADS = 2048  # resident threads per multiprocessor, the most of any CUDA GPU (sm_80, sm_90, sm_100)
SM_MAX_SHARED_BYTES = 228 * 1024  # shared memory per multiprocessor, the most of any (sm_90, sm_100)
SM_RESERVED_SHARED_BYTES = 1024  # the shared memory the driver reserves per resident block (sm_80 on)


def max_resident_blocks(layout):
    """The most blocks of ``layout`` one multiprocessor of any GPU can hold, by threads and shared
    memory: a larger launch bound (``min_blocks``) cannot be met, and ptxas ignores it silently."""
    return min(SM_MAX_THREADS // layout.threads,
               SM_MAX_SHARED_BYTES // (8 * layout.shared_words + SM_RESERVED_SHARED_BYTES))


def make_block_median(T, row_words, in_shared):
    """``median(errs, act, i, n, hist, chunk_sums, slot, tid)``: the median of ``errs[i, :n]``
    computed by a block of ``T`` threads, every thread calling it (it has block barriers); the
    values are read from the shared array ``act`` (L, T, ``row_words``), copied there word by word
    in C order, if ``in_shared``, else from the global row. ``hist`` (SELECT_BINS) and
    ``chunk_sums`` (SELECT_CHUNKS) are shared int32 scratch, ``slot`` shared int64 scratch of 3
    words."""
    ROW = row_words

    @cuda.jit(device=True)
    def _copy_to_shared(errs, act, i, n, tid):
        for q in range(tid, n, T):
            act[q // (T * ROW), (q // ROW) % T, q % ROW] = errs[i, q]
        cuda.syncthreads()

    @cuda.jit(device=True)
    def _key_in_shared(errs, act, i, q):  # the bits of value q, as an int64
        return act.view(np.int64)[q // (T * ROW), (q // ROW) % T, q % ROW]

    @cuda.jit(device=True)
    def _leave_in_row(errs, act, i, n, tid):
        pass

    @cuda.jit(device=True)
    def _key_in_row(errs, act, i, q):
        return errs.view(np.int64)[i, q]

    load, key_at = (_copy_to_shared, _key_in_shared) if in_shared else (_leave_in_row, _key_in_row)

    @cuda.jit(device=True)
    def _as_float(key):
        """The float64 whose bits are the int64 ``key``."""
        bits = cuda.local.array(1, numba.int64)
        bits[0] = key
        return bits.view(np.float64)[0]

    @cuda.jit(device=True)
    def _select(errs, act, i, n, rank, hist, chunk_sums, slot, tid):
        """The key of rank ``rank`` (0: the smallest) among the n values' keys, block-wide: a radix select
        from the top byte down, one pass per byte. Pass p counts, in 256 bins, the next byte of the
        keys whose bytes above it equal those chosen so far; the bin where the running count passes
        the rank is the key's byte. Returns (key, its rank among the keys equal to it). The keys are
        the bits of non-negative float64 values (relative errors, +inf included), which order as
        the values do."""
        if tid == 0:
            slot[2] = -1  # for the caller's block maximum; read three barriers on
        prefix = 0  # the key's bytes chosen so far
        high = 0  # the mask of those bytes
        for shift in range(56, -8, -8):
            for b in range(tid, SELECT_BINS, T):
                hist[b] = 0
            cuda.syncthreads()
            for q in range(tid, n, T):
                key = key_at(errs, act, i, q)
                if key & high == prefix:
                    cuda.atomic.add(hist, (key >> shift) & (SELECT_BINS - 1), 1)
            cuda.syncthreads()
            if tid < SELECT_CHUNKS:  # T >= 32: a warp sums the bins in chunks, one thread scans the chunks
                total = 0
                for b in range(tid * CHUNK_BINS, (tid + 1) * CHUNK_BINS):
                    total += hist[b]
                chunk_sums[tid] = total
            cuda.syncthreads()
            if tid == 0:
                c = 0
                while rank >= chunk_sums[c]:
                    rank -= chunk_sums[c]
                    c += 1
                b = c * CHUNK_BINS
                while rank >= hist[b]:
                    rank -= hist[b]
                    b += 1
                slot[0] = b
                slot[1] = rank
            cuda.syncthreads()  # slot is next written three barriers on: every thread has read it by then
            prefix |= slot[0] << shift
            rank = slot[1]
            high = -(1 << shift)  # the bits from this byte up
        return prefix, rank

    @cuda.jit(device=True)
    def _deriv_median(errs, act, i, n, hist, chunk_sums, slot, tid):
        """Median of errs[i, :n] (block-wide): the middle order statistic, or the mean of the two
        middle ones, by :func:`_select` on the values' bits, read from the activation rows (copied
        there, where they fit) or from the global row. For an even n the lower middle one is the
        upper's key again if that key repeats below it, else the largest key below it (a block
        maximum), not a second select."""
        load(errs, act, i, n, tid)
        upper, rank_among_equal = _select(errs, act, i, n, n // 2, hist, chunk_sums, slot, tid)
        if n % 2 == 1:
            return _as_float(upper)
        lower = upper
        if rank_among_equal == 0:  # the same in every thread: the barrier below is reached by all
            below = -1
            for q in range(tid, n, T):
                key = key_at(errs, act, i, q)
                if below < key < upper:
                    below = key
            cuda.atomic.max(slot, 2, below)
            cuda.syncthreads()
            lower = slot[2]
        return (_as_float(lower) + _as_float(upper)) / 2.0

    return _deriv_median


def make_fused_cuda(forward, layout: FusedLayout):
    """The CUDA kernel ``train_block[n_networks, T](...)`` for one model and layout; ``forward``:
    the model's :func:`spingpu.kernels.network.make_forward` (``DeviceModel.forward``).

    Arguments are those of :func:`spingpu.kernels.fused_cpu.make_fused_trainer`'s
    ``train_networks`` without (lo, hi), plus ``errs`` (n_networks, errs_len) scratch; block b
    trains network b of the arrays given.
    """
    sizes_t = layout.sizes
    T = layout.threads
    N_W = layout.n_weights
    N_HIDDEN_W = n_weights(sizes_t[:-1])  # weights before the output layer
    N_LAYERS = len(sizes_t) - 1
    N_HIDDEN = max(N_LAYERS - 1, 1)
    MAX_W = max(sizes_t)
    ROW = row_words(sizes_t)
    N_OUT = sizes_t[-1]
    HIDDEN_UNITS = layout.hidden_units
    UNITS = max(HIDDEN_UNITS, 1)
    JUNC_ROWS = 2 * UNITS
    P = layout.n_params
    KPT = (N_W + T - 1) // T  # weights per thread
    F64 = numba.float64

    @cuda.jit(device=True)
    def _block_sum(count, value, tid):
        """Sum of an integer over the block (integer atomics: exact, so deterministic)."""
        if tid == 0:
            count[0] = 0
        cuda.syncthreads()
        cuda.atomic.add(count, 0, value)
        cuda.syncthreads()
        total = count[0]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def _accuracy(w, x, y, purpose, slot0, row0, act, du, de, logits, sizes, w_off, b_off, u_off, junc, nominal,
                  table, mode, neuron, readout, network, xi0, xi1, k0, k1, count, tid):
        """(correct samples of the block, junction readings beyond the table of this thread's samples)"""
        correct = 0
        beyond = 0
        for s in range(tid, y.shape[0], T):
            beyond += forward(w, x, s, act, tid, du, de, 0, logits, sizes, w_off, b_off, u_off, junc, nominal, table,
                              mode, neuron, readout, network, purpose, slot0, row0 + s, xi0, xi1, k0, k1,
                              np.bool_(False))
            if argmax(logits) == y[s]:
                correct += 1
        return _block_sum(count, correct, tid), beyond

    _deriv_median = make_block_median(T, ROW, layout.median_in_shared)

    # launch bounds are a hint to the compiler, which Numba's CUDA simulator does not take
    @cuda.jit(**({} if numba.config.ENABLE_CUDASIM else {"launch_bounds": layout.launch_bounds}))
    def train_block(x_tr, y_tr, x_va, y_va, x_te, y_te, teacher, use_teacher, networks, seed, sizes, w_off, b_off,
                    u_off, junctions, nominal, table, mode, neuron, readout, opt_kind, hyper, lr_epoch, batch,
                    orders, w_init, errs, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div,
                    out_beyond):
        i = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        if i >= networks.shape[0]:
            return
        w = cuda.shared.array(N_W, F64)
        gs = cuda.shared.array(N_W, F64)
        ges = cuda.shared.array(N_W, F64)
        junc = cuda.shared.array((JUNC_ROWS, P), F64)  # junction m of hidden unit j: row 2 j + m
        act = cuda.shared.array((N_LAYERS, T, ROW), F64)
        D = cuda.shared.array((N_LAYERS, T, ROW), F64)
        lossb = cuda.shared.array(T, F64)
        count = cuda.shared.array(2, numba.int64)
        hist = cuda.shared.array(SELECT_BINS, numba.int32)  # the median's radix select
        chunk_sums = cuda.shared.array(SELECT_CHUNKS, numba.int32)
        select_slot = cuda.shared.array(3, numba.int64)

        du = cuda.local.array((N_HIDDEN, 1, MAX_W), F64)
        de = cuda.local.array((N_HIDDEN, 1, MAX_W), F64)
        logits = cuda.local.array(N_OUT, F64)
        dl = cuda.local.array(N_OUT, F64)
        delta = cuda.local.array(MAX_W, F64)
        delta_prev = cuda.local.array(MAX_W, F64)
        xi0 = cuda.local.array(MAX_W, F64)
        xi1 = cuda.local.array(MAX_W, F64)
        gl = cuda.local.array(KPT, F64)
        gel = cuda.local.array(KPT, F64)
        m1 = cuda.local.array(KPT, F64)
        m2 = cuda.local.array(KPT, F64)

        k0, k1 = split_seed(seed)
        network = networks[i]
        for k in range(tid, N_W, T):
            w[k] = w_init[i, k]
        for q in range(tid, UNITS * 2 * P, T):
            junc[q // P, q % P] = junctions[i, q // (2 * P), (q // P) % 2, q % P]
        for j in range(KPT):
            m1[j] = 0.0
            m2[j] = 0.0
        momentum, beta1, beta2, eps, wd, dist_t, dist_alpha = hyper  # a tuple (fused_engine.as_tuples)
        n_train = y_tr.shape[0]
        epochs = lr_epoch.shape[0]
        steps = (n_train + batch - 1) // batch
        sample_counter = 0
        t = 0
        beyond = 0  # junction readings beyond the device's table, of this thread's samples
        cuda.syncthreads()
        for epoch in range(epochs):
            lr = lr_epoch[epoch]
            loss_sum = 0.0
            correct = 0
            for step in range(steps):
                start = step * batch
                bsz = min(batch, n_train - start)
                last = step == steps - 1
                scale = 1.0 / bsz
                batch_loss = 0.0
                bad = 0
                for j in range(KPT):
                    gl[j] = 0.0
                    gel[j] = 0.0
                for sub in range(0, bsz, T):
                    n_sub = min(T, bsz - sub)
                    b = sub + tid
                    if tid < n_sub:
                        idx = orders[epoch, start + b]
                        beyond += forward(w, x_tr, idx, act, tid, du, de, 0, logits, sizes, w_off, b_off, u_off,
                                          junc, nominal, table, mode, neuron, readout, network,
                                          np.int64(PURPOSE_NOISE), np.int64(0), sample_counter + b, xi0,
                                          xi1, k0, k1, np.bool_(True))
                        lossb[tid] = softmax_xent(logits, y_tr[idx], teacher, idx if use_teacher else 0,
                                                  use_teacher, dist_t, dist_alpha, dl)
                        if argmax(logits) == y_tr[idx]:
                            correct += 1
                        sample_deltas(w, du, 0, dl, scale, sizes, w_off, D, tid, delta, delta_prev)
                        if last:
                            for layer in range(N_LAYERS - 1):
                                for u in range(sizes[layer + 1]):
                                    e = relative_error(du[layer, 0, u], de[layer, 0, u])
                                    if e != e:
                                        bad = 2
                                    errs[i, b * UNITS + u_off[layer] + u] = e
                    cuda.syncthreads()
                    if tid == 0:
                        for r in range(n_sub):
                            batch_loss += lossb[r]
                    for j in range(KPT):
                        k = tid + j * T
                        if k < N_W:
                            gl[j] = weight_gradient(k, gl[j], act, D, n_sub, sizes, w_off, b_off)
                    cuda.syncthreads()
                    if last:
                        if tid < n_sub:
                            sample_deltas(w, de, 0, dl, scale, sizes, w_off, D, tid, delta, delta_prev)
                        cuda.syncthreads()
                        for j in range(KPT):
                            k = tid + j * T
                            if k < N_W:
                                gel[j] = weight_gradient(k, gel[j], act, D, n_sub, sizes, w_off, b_off)
                        cuda.syncthreads()
                sample_counter += bsz
                nonfinite = 0
                if tid == 0 and out_of_range(batch_loss):
                    nonfinite = 1
                for j in range(KPT):
                    k = tid + j * T
                    if k < N_W and out_of_range(gl[j]):
                        nonfinite = 1
                if cuda.syncthreads_or(nonfinite):
                    if tid == 0:
                        mark_diverged(i, epoch, out_loss, out_acc, out_val, out_cos, out_derr, out_test, out_div)
                    return
                if last:
                    for j in range(KPT):
                        k = tid + j * T
                        if k < N_W:
                            gs[k] = gl[j]
                            ges[k] = gel[j]
                    n_err = bsz * HIDDEN_UNITS
                    has_nan = cuda.syncthreads_or(bad)
                    median = _deriv_median(errs, act, i, n_err, hist, chunk_sums, select_slot, tid) if n_err > 0 else 0.0
                    if tid == 0:
                        out_cos[i, epoch] = cosine(gs, ges, N_HIDDEN_W)  # hidden layers' weights
                        out_derr[i, epoch] = np.nan if has_nan or n_err == 0 else median
                loss_sum += batch_loss
                t += 1
                bias1, bias2 = adam_bias(beta1, t), adam_bias(beta2, t)
                for j in range(KPT):
                    k = tid + j * T
                    if k < N_W:
                        w[k], m1[j], m2[j] = optimizer_step(w[k], gl[j], m1[j], m2[j], opt_kind, lr, bias1, bias2,
                                                            momentum, beta1, beta2, eps, wd)
                cuda.syncthreads()
            n_correct = _block_sum(count, correct, tid)
            if tid == 0:
                out_loss[i, epoch] = loss_sum / n_train
                out_acc[i, epoch] = n_correct / n_train
            n_val, n_beyond = _accuracy(w, x_va, y_va, np.int64(PURPOSE_EVAL_NOISE), np.int64(0),
                                        epoch * y_va.shape[0], act, du, de, logits, sizes, w_off, b_off, u_off, junc,
                                        nominal, table, mode, neuron, readout, network, xi0, xi1, k0, k1, count, tid)
            beyond += n_beyond
            if tid == 0:
                out_val[i, epoch] = n_val / y_va.shape[0]
        n_test, n_beyond = _accuracy(w, x_te, y_te, np.int64(PURPOSE_EVAL_NOISE), np.int64(2),
                                     epochs * y_te.shape[0], act, du, de, logits, sizes, w_off, b_off, u_off, junc,
                                     nominal, table, mode, neuron, readout, network, xi0, xi1, k0, k1, count, tid)
        total_beyond = _block_sum(count, beyond + n_beyond, tid)
        if tid == 0:
            out_test[i] = n_test / y_te.shape[0]
            out_beyond[i] = total_beyond

    return train_block
