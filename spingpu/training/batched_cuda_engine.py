"""The batched CUDA engine for large layers (``--backend cuda`` when a network does not fit the
fused kernel's block): the NumPy engine's arithmetic with every array on the GPU.

* matrix products over networks as cuBLAS strided batched GEMMs (:mod:`spingpu.training.gemm`)
  of always ``GEMM_NETWORKS`` = G networks, network g in slot g % G of its call (:func:`grouped_matmul`,
  so that a network's numbers do not depend on which networks the engine holds), the transposed
  operands of backpropagation
  (a^T delta, delta W^T) read in place and the first layer's input (B, F), shared by all networks,
  with a batch stride of 0;
* each hidden layer's pair neurons, noise and ADC in one elementwise kernel, the loss in another,
  the bias gradients (each network's deltas summed in sample order, as NumPy sums them) in a third,
  and the optimiser as one kernel over a flat buffer that holds every weight of every network,
  each weight array of all networks as one contiguous (N, ...) block: the weight matrices are
  C-contiguous views into it, which cuBLAS reads without a copy (:mod:`spingpu.kernels.batched_cuda`).

Under ``NUMBA_ENABLE_CUDASIM=1`` the arrays are NumPy arrays and the kernels run in Numba's CUDA
simulator. The training loop (:func:`spingpu.training.trainer._train_batched`) keeps the data and
the running metrics on the device and reads them back once per epoch; kernels are launched on
CuPy's stream without a host synchronisation (:meth:`spingpu.training.cuda_engine.Device.launch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import batched_cuda as kern
from ..kernels.network import OPTIMIZER_CODES, adam_bias, n_weights
from ..kernels.pair_neuron import MODE_CODES
from ..kernels.philox import split_seed
from .fused_engine import neuron_vector, readout_vector
from .gemm import address
from .numpy_engine import NumpyEngine

GEMM_NETWORKS = 128  # networks in every batched GEMM call
GEMM_ALIGN_BYTES = 256  # cuBLAS chooses kernels by operand alignment (up to 256 B); CuPy allocates at 256 B


def _aligned(x):
    """``x``, or a fresh copy of it when its address is not a multiple of GEMM_ALIGN_BYTES: a call's
    operand starts at an offset that depends on the networks held (a full block after a partial one,
    and the weight blocks of the flat buffer), and must not change cuBLAS's choice of kernel. The copy keeps the order of
    the axes in memory, so that a transposed view stays one (the same op and leading dimension)."""
    return x if address(x) % GEMM_ALIGN_BYTES == 0 else x.copy(order="K")


@dataclass(frozen=True)
class GemmBlock:
    """One GEMM call of :func:`grouped_matmul`: the engine's ``rows`` (networks) it computes and the
    ``slots`` they take in the call (each a slice, or an index array where the rows are not
    consecutive); ``full`` when rows r0 .. r0 + group - 1 fill slots 0 .. group - 1 in order, so
    the operands are views of the engine's arrays."""

    rows: object
    slots: object
    full: bool


def _run(index):
    """``index`` (an int array) as a slice when it counts up by one, else as it is."""
    if index.size and bool(np.all(np.diff(index) == 1)):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def gemm_blocks(networks, group=GEMM_NETWORKS):
    """The calls of :func:`grouped_matmul` for an engine holding global networks ``networks``
    (distinct; row i holds ``networks[i]``): network g is computed in slot g % group of the call
    of block g // group, whatever other networks the engine holds. cuBLAS on Hopper may split a
    product's reduction by the tile's place in the whole call (stream-K scheduling), which would
    make a network's bits depend on its slot: with the slot fixed by g, a network's numbers do not
    depend on the memory chunking or on a study's networks per task."""
    ids = np.asarray(networks, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    block = ids[order] // group
    blocks = []
    for rows in np.split(order, np.flatnonzero(np.diff(block)) + 1):
        rows = np.sort(rows)
        slots = ids[rows] % group
        full = rows.size == group and rows[-1] - rows[0] == group - 1 and bool(np.all(slots == np.arange(group)))
        blocks.append(GemmBlock(_run(rows), _run(slots), full))
    return blocks


def _slotted(xp, x, group, rows, slots):
    """A 3-axis operand's ``rows`` placed at ``slots`` of ``group`` networks, zeros elsewhere, with
    the memory order of its last two axes kept (a transposed view is placed as one), so that cuBLAS
    reads it as it reads a full call's operand: the same op, leading dimension and so kernel."""
    if x.ndim == 2:
        return x
    if x.shape[-2] > 1 and x.strides[-2] < x.strides[-1]:  # a transposed view: place its transpose
        full = xp.zeros((group, x.shape[2], x.shape[1]), x.dtype).swapaxes(1, 2)
    else:
        full = xp.zeros((group,) + x.shape[1:], x.dtype)
    full[slots] = x[rows]
    return full


def _device_index(xp, index):
    return index if isinstance(index, slice) else xp.asarray(index)


def grouped_matmul(device, a, b, blocks=None, group=GEMM_NETWORKS, out=None):
    """``a @ b`` over networks, in strided batched GEMM calls (:meth:`Device.gemm`) of exactly
    ``group`` networks each, network g in slot g % group (:func:`gemm_blocks`; ``blocks`` of the
    engine's networks, default: row i holds network i).

    ``b`` is (N, K, U); ``a`` is (N, M, K), or (M, K) shared by every network; either may be a
    transposed view, which the call reads in place. cuBLAS chooses its algorithm (tile shape,
    split-K) from the call's shape, batch count included, and another algorithm rounds differently:
    every call has the same shape. A full block's operands are views; a partial one's are placed in
    zeros at their slots. Operands and products at addresses that are not multiples of
    GEMM_ALIGN_BYTES go through aligned copies. ``out``: a C-contiguous (N, M, U) array the product
    is written into (else one is made).
    """
    xp = device.xp
    n = b.shape[0]
    shape = (a.shape[-2], b.shape[-1])
    if out is None:
        out = xp.empty((n,) + shape, dtype=xp.result_type(a, b))
    for blk in gemm_blocks(np.arange(n), group) if blocks is None else blocks:
        if blk.full:
            part = blk.rows
            left, right, target = _aligned(a if a.ndim == 2 else a[part]), _aligned(b[part]), out[part]
            if address(target) % GEMM_ALIGN_BYTES == 0:
                device.gemm(left, right, target)
                continue
            product = xp.empty(target.shape, dtype=target.dtype)
            device.gemm(left, right, product)
            target[...] = product
            continue
        rows, slots = _device_index(xp, blk.rows), _device_index(xp, blk.slots)
        product = xp.empty((group,) + shape, dtype=out.dtype)
        device.gemm(_aligned(_slotted(xp, a, group, rows, slots)), _slotted(xp, b, group, rows, slots), product)
        out[rows] = product[slots]
    return out


def pair_layer_cuda_kernel(model):
    """The pair-layer CUDA kernel of ``model``'s kernel form (the rows ``model.bind`` gives)."""
    model = model.kernel_model
    return model.compiled("pair_layer_cuda", lambda: kern.make_pair_layer_cuda(model.pair_neuron))


def bytes_per_network(config, sizes, batch, model):
    """GPU memory one network takes in the batched engine at its peak (an epoch's last step): the
    flat weights, gradient (which backward fills) and two moments; the exact gradient of the
    epoch's last step; grad_cosine's partial sums (3 x 8 bytes per DOT_CHUNK weights, counted as a
    byte per weight); the junctions (kernel row and per-junction table of ``model``); and 5 values
    and 24 bytes per unit of every layer and sample of ``batch``. The last is the median derivative
    error's peak (``trainer._deriv_rel_err``): each hidden unit's input activation and two
    derivatives in the step's cache, its relative error in one buffer, and CuPy's sort of that
    buffer in place, 8-byte keys and a merge-sort buffer of 8 bytes plus a value (5 values and 16
    bytes; the backward pass's deltas, 2 values per unit, come before it)."""
    n_w = n_weights(sizes)
    item = np.dtype(config.dtype).itemsize
    junction = 8 * model.kernel_width + model.table_bytes_per_junction
    params = (5 * item + 1) * n_w + 2 * sum(config.hidden) * junction
    per_sample = sum(sizes[1:]) * (5 * item + 3 * 8)
    return params + batch * per_sample


def gemm_scratch_bytes(config, sizes, batch):
    """GPU memory of the largest GEMM call of :func:`grouped_matmul` for a partial block (its
    networks placed in zeros at their slots): both operands and the product, for ``GEMM_NETWORKS``
    networks."""
    item = np.dtype(config.dtype).itemsize
    largest = max(batch * a + a * b + batch * b for a, b in zip(sizes[:-1], sizes[1:]))
    return GEMM_NETWORKS * largest * item


class BatchedCudaEngine(NumpyEngine):
    """:class:`NumpyEngine` with its arrays on the GPU and its elementwise work in CUDA kernels."""

    def __init__(self, model, config, networks, n_features, n_classes, device, eval_rows=None, progress=False):
        super().__init__(model, config, networks, n_features, n_classes, progress=progress, table_device=device)
        if eval_rows is not None:
            self.eval_rows = eval_rows  # the memory sizing of _train_cuda counts this many samples per pass
        xp = self.xp = device.xp
        self.device = device
        # one block per weight array (all networks): each weight matrix a view that cuBLAS reads in place
        offsets = np.cumsum([0] + [w.size for w in self.weights])
        self.flat = xp.asarray(np.concatenate([w.reshape(-1) for w in self.weights]))
        self.grad_flat = xp.zeros_like(self.flat)
        self.m1 = xp.zeros_like(self.flat)
        self.m2 = xp.zeros_like(self.flat)
        self.state = None  # NumpyEngine's host moments: m1 and m2 hold them here
        self._block_start = xp.asarray(offsets.astype(np.int64))
        self.weights = [self.flat[lo:hi].reshape(w.shape) for w, lo, hi in
                        zip(self.weights, offsets[:-1], offsets[1:])]
        self._grad_views = [self.grad_flat[lo:hi].reshape(w.shape) for w, lo, hi in
                            zip(self.weights, offsets[:-1], offsets[1:])]
        # the optimiser updates the flat buffers: the per-layer arrays must be contiguous views into them
        assert all(xp.may_share_memory(v, self.flat) and v.flags.c_contiguous for v in self.weights)
        assert all(xp.may_share_memory(v, self.grad_flat) for v in self._grad_views)
        # each layer's (N, U, 2, P) junctions as the (N U 2, P) rows the pair kernel reads
        self.junctions = [xp.asarray(np.ascontiguousarray(j).reshape(-1, j.shape[-1])) for j in self.junctions]
        self._networks = xp.asarray(self.networks)
        self._gemm_blocks = gemm_blocks(self.networks)  # each network's GEMM call and slot, by its global index
        self.alive = xp.asarray(self.alive)
        self.readings_beyond = xp.asarray(self.readings_beyond)
        self._kernel = pair_layer_cuda_kernel(self.model) if config.is_mtj else None
        self._mode = MODE_CODES[config.grad_mode]
        put = xp.asarray
        self._neuron, self._readout = put(neuron_vector(config.neuron)), put(readout_vector(config.readout))
        # the kernels' model: for a model tabulated per junction, the table model bound by NumpyEngine
        self._nominal, self._table = put(self.model.nominal), put(np.ascontiguousarray(self.model.aux_table))
        b1, b2 = config.adam_betas
        self._hyper = put(np.array([config.momentum, b1, b2, config.adam_eps, config.weight_decay]))
        self._no_teacher = put(np.zeros((1, n_classes)))

    def put(self, array):
        return self.device.put(array)

    def compile_kernels(self, x, y):
        """:meth:`NumpyEngine.compile_kernels` (Numba's and CuPy's kernels), and the optimiser with
        every network masked: no state changes."""
        super().compile_kernels(x, y)
        self._update(self.xp.zeros(self.networks.size, dtype=bool), 0.0, 1)
        self.device.synchronize()

    def to_host(self, array):
        return self.device.get(array)

    def hidden(self, layer, z, noise):
        xp = self.xp
        z = xp.ascontiguousarray(z)
        h, used, exact = xp.empty_like(z), xp.empty_like(z), xp.empty_like(z)
        launch = self.device.launch
        if self._kernel is None:
            launch(kern.digital_layer, kern.blocks(z.size), kern.THREADS, self._mode, z, h, used)
            return h, used, used.copy()
        k0, k1 = split_seed(np.uint64(noise.seed))
        n, b, u = z.shape
        beyond = xp.empty(z.shape, dtype=np.uint8)
        launch(self._kernel, kern.blocks(n * b * ((u + 1) // 2)), kern.THREADS,
               z, self.junctions[layer], self._nominal, self._table, self._mode, self._neuron, self._readout, k0, k1,
               self._networks, noise.purpose, layer, noise.slot0, noise.row0, noise.derivatives, h, used, exact,
               beyond)
        self.readings_beyond += beyond.sum(axis=(1, 2), dtype=np.int64)
        return h, used, exact

    def _input(self, x):
        """(B, F) rows shared by every network, host or device array."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=self.dtype))

    def _matmul(self, a, w):
        # (B, F) or (N, B, F) x (N, F, U), or x (N, U, F)^T in backward
        return grouped_matmul(self.device, a, w, self._gemm_blocks)

    def _matmul_t(self, a, delta, out=None):
        return grouped_matmul(self.device, a.swapaxes(-1, -2), delta, self._gemm_blocks, out=out)  # a^T in place

    def _sum_samples(self, delta, out=None):
        n, b, u = delta.shape
        if out is None:
            out = self.xp.empty((n, u), dtype=delta.dtype)
        self.device.launch(kern.sample_sum, kern.blocks(n * u), kern.THREADS, self.xp.ascontiguousarray(delta), out)
        return out

    def gradient_buffers(self):
        return self._grad_views  # the optimiser's flat gradient buffer: apply() copies nothing

    def loss_and_dlogits(self, logits, y, teacher_logits=None):
        xp = self.xp
        dist = self.config.distillation
        use_teacher = dist is not None and teacher_logits is not None
        n, b, c = logits.shape
        teacher = (xp.ascontiguousarray(xp.asarray(teacher_logits, dtype=np.float64)) if use_teacher
                   else self._no_teacher)
        labels = xp.ascontiguousarray(xp.asarray(y, dtype=np.int64))
        logits64 = xp.ascontiguousarray(logits, dtype=np.float64)
        dl = xp.empty((n, b, c))
        rows = xp.empty((n, b))
        loss = xp.empty(n)
        launch = self.device.launch
        launch(kern.softmax_xent_rows, kern.blocks(n * b), kern.THREADS, logits64, labels, teacher, use_teacher,
               dist.temperature if dist else 1.0, dist.alpha if dist else 0.0, dl, rows)
        launch(kern.network_mean, kern.blocks(n), kern.THREADS, rows, loss)
        return loss, dl.astype(self.dtype)

    def grad_cosine(self, grads_a, grads_b):
        """:meth:`NumpyEngine.grad_cosine` by :func:`~spingpu.kernels.batched_cuda.dot_partials` per
        weight array and :func:`~spingpu.kernels.batched_cuda.network_cosine`: CuPy's row sums and
        norms would add a network's weights in an order set by the whole (N, W) array (one network
        alone took another path than among others), so its value would depend on the networks
        trained beside it. No float64 copies of the gradients either."""
        xp, n = self.xp, grads_a[0].shape[0]
        rows = [(xp.ascontiguousarray(a).reshape(n, -1), xp.ascontiguousarray(b).reshape(n, -1))
                for a, b in zip(grads_a, grads_b)]
        chunks = [-(-a.shape[1] // kern.DOT_CHUNK) for a, _ in rows]
        partials = xp.empty((n, sum(chunks), 3))
        col = 0
        for (a, b), c in zip(rows, chunks):
            self.device.launch(kern.dot_partials, kern.blocks(n * c), kern.THREADS, a, b, partials, col)
            col += c
        out = xp.empty(n)
        self.device.launch(kern.network_cosine, kern.blocks(n), kern.THREADS, partials, out)
        return out

    def flag_diverged(self, loss, grads):
        """:meth:`NumpyEngine.flag_diverged` in one kernel over the flat gradient buffer (the generic
        test's ~4 CuPy operations per weight array, each ~10 us of host time, are a step's largest
        share of launches), where the gradients are that buffer's views, as backward() writes them.
        The simulator, where the kernel is one Python call per weight, runs the generic test (the
        kernel's own test compares the two)."""
        if self.device.simulator or any(g is not v for g, v in zip(grads, self._grad_views)):
            super().flag_diverged(loss, grads)
            return
        self.device.launch(kern.flag_diverged, kern.blocks(max(self.grad_flat.size, self.alive.size)), kern.THREADS,
                           self.grad_flat, self._block_start, self.xp.ascontiguousarray(loss), self.alive)

    def apply(self, grads, lr):
        self.t += 1
        for view, g in zip(self._grad_views, grads):
            if g is not view:  # backward() wrote the gradient used into its view already
                view[...] = g
        self._update(self.alive, float(lr), self.t)

    def _update(self, alive, lr, t):
        """The optimiser kernel over the flat buffers, for the networks flagged in ``alive``."""
        b1, b2 = self.config.adam_betas
        self.device.launch(kern.optimizer_update, kern.blocks(self.flat.size), kern.THREADS,
                           self.flat, self.grad_flat, self.m1, self.m2, alive, self._block_start,
                           OPTIMIZER_CODES[self.config.optimizer], lr, adam_bias(b1, t), adam_bias(b2, t), self._hyper)
