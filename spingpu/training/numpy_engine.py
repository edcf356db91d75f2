"""The NumPy reference engine: N MLPs of MTJ-pair neurons, vectorised over networks.

Written to be read; the fused engines must give the same numbers. Shapes: activations (N, B, U),
weights (N, fan_in, fan_out), biases (N, fan_out). Hidden layer l of network n:

    z = a_{l-1} W_l + b_l,  I = DAC(i_bias + i_gain z),  I_A = I, I_B = I + dI  (fd_symmetric: I -+ dI/2)
    reading r of a junction at I:  R = ADC(V(I) - r_bridge I + sigma_read(V, I) * xi_r)
    h = v_scale R_A(I_A)                   (fd_symmetric: v_scale (R_A(I - dI/2) + R_B(I + dI/2)) / 2)
    dh/dz used in backprop, per mode:
        fd_forward    v_scale i_gain (R_B(I + dI) - R_A(I)) / dI     pair, the paper's method
        fd_single     v_scale i_gain (R'_A(I + dI) - R_A(I)) / dI    A read a second time
        fd_symmetric  v_scale i_gain (R_B(I + dI/2) - R_A(I - dI/2)) / dI
        model         v_scale i_gain (dV/dI_nominal(I) - r_bridge)   blind to variability
        oracle        v_scale i_gain (dV/dI_A(I) - r_bridge)         exact for junction A

The DAC sets the pair's current I; the step dI is added to it after the DAC (its own source), so
I_B - I_A is dI exactly and the finite differences divide by the step the junctions received.
The forward reading R_A(I) is the one the finite difference uses (a pair is read once per step);
the second reading (B, or A again) has its own noise. The "exact" derivative against which
``grad_cosine`` and ``deriv_rel_err`` are measured is the oracle's (for fd_symmetric, the mean of
both junctions' exact dV/dI, the derivative of its own activation).
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from ..devices.variability import sample_layer
from ..kernels import streams
from ..kernels.loss import softmax_xent_batch
from ..kernels.network import DIVERGED_ABOVE, adam_bias
from ..kernels.pair_layer import digital_layer
from ..kernels.pair_neuron import MODE_CODES, readings
from .config import TrainConfig


@dataclass(frozen=True)
class NoiseSource:
    """Where the read noise of one batch comes from: for hidden layer l and reading r, the
    normals of stream (purpose, l, slot0 + r), rows row0 .. row0 + B (samples), columns units."""

    seed: int
    networks: np.ndarray
    purpose: int
    slot0: int
    row0: int
    derivatives: bool = True  # False in evaluation: engines may skip the derivative readings

    def normals(self, layer, reading, shape):
        n, b, u = shape
        return streams.normals(self.seed, self.networks, self.purpose, layer, self.slot0 + reading, self.row0, b, u)


def initial_weights(config, networks, sizes):
    """[W_0, b_0, W_1, b_1, ...] float64: W_l = init_gain / sqrt(fan_in) * N(0, 1) from the
    network's own initialisation stream, b_l = 0."""
    out = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append(initial_layer_weights(config, networks, layer, fan_in, fan_out))
        out.append(np.zeros((len(networks), fan_out)))
    return out


def initial_layer_weights(config, networks, layer, fan_in, fan_out):
    """W_l of :func:`initial_weights`, (N, fan_in, fan_out)."""
    w = streams.normals(config.seed, networks, streams.PURPOSE_INIT, layer, 0, 0, fan_in, fan_out)
    w *= config.init_gain / np.sqrt(fan_in)
    return w


def junction_parameters(model, config, networks):
    """Per hidden layer, the (N, units, 2, P) parameters of its junction pairs."""
    return [sample_layer(model, config.variability, config.seed, networks, layer, width)
            for layer, width in enumerate(config.hidden)]


def kernel_junctions(model, config, networks, *, device=None, progress=False):
    """What every engine's kernels evaluate: (model, per hidden layer the junction rows), i.e.
    ``model.bind`` of :func:`junction_parameters` (per-junction tables for ``macrospin``,
    computed on ``device``, a GPU engine's, else on the CPU; a progress bar when ``progress``)."""
    return model.bind(junction_parameters(model, config, networks), config.seed, networks, device=device,
                      progress=progress)


def _matmul(a, w):
    """a (B, F) shared, or (N, B, F), times w (N, F, U), one GEMM per network: a network's numbers
    then do not depend on how many networks share the call."""
    if a.ndim == 3:
        return a @ w
    out = np.empty((w.shape[0], a.shape[0], w.shape[2]), dtype=np.result_type(a, w))
    for n in range(w.shape[0]):
        np.matmul(a, w[n], out=out[n])
    return out


def _matmul_t(a, delta):
    """a^T delta per network: a (B, F) shared or (N, B, F), delta (N, B, U) -> (N, F, U)."""
    if a.ndim == 3:
        return np.swapaxes(a, 1, 2) @ delta
    out = np.empty((delta.shape[0], a.shape[1], delta.shape[2]), dtype=np.result_type(a, delta))
    for n in range(delta.shape[0]):
        np.matmul(a.T, delta[n], out=out[n])
    return out


class NumpyEngine:
    """State and arithmetic of N networks (global indices ``networks``) of one architecture.

    Arrays live in ``xp`` (NumPy here, CuPy in the GPU engine): ``put`` moves a host array there
    and ``to_host`` back; the training loop keeps the data, the batch order and the per-network
    metrics in ``xp`` so that a GPU engine reads results back once per epoch, not once per step.
    """

    xp = np
    eval_rows = 4096  # samples per evaluation forward pass

    def put(self, array):
        """``array`` where this engine computes (a no-op here)."""
        return array

    def to_host(self, array):
        """``array`` as a NumPy array."""
        return np.asarray(array)

    def compile_kernels(self, x, y):
        """Compile what a training step runs (Numba compiles a kernel at its first call, or reads it
        from its cache) before the step is timed: a forward pass, the loss and the exact backward
        pass of the first sample ``x[:1]``, ``y[:1]``. No state changes (the noise is
        counter-based; the exact gradient is written nowhere the optimiser reads). The trainer runs
        it with Ctrl-C and SIGTERM held back (:func:`spingpu.signals.deferred_interrupts`)."""
        noise = NoiseSource(self.config.seed, self.networks, streams.PURPOSE_NOISE, 0, 0)
        logits, cache = self.forward(x[:1], noise)
        teacher = self._no_teacher if self.config.distillation is not None else None
        _, dlogits = self.loss_and_dlogits(logits, y[:1], teacher)
        self.backward(dlogits, cache, "exact")  # "used" would write into the gradient buffers

    def __init__(self, model, config: TrainConfig, networks, n_features, n_classes, *, progress=False,
                 table_device=None):
        """``progress``: a progress bar while per-junction tables are computed; ``table_device``:
        the GPU that computes them (:func:`kernel_junctions`)."""
        self.model = model
        self.config = config
        self.networks = np.ascontiguousarray(networks, dtype=np.int64)
        self.dtype = np.dtype(config.dtype)
        self.sizes = (n_features, *config.hidden, n_classes)
        n = self.networks.size
        self.model, self.junctions = (kernel_junctions(model, config, self.networks, device=table_device,
                                                       progress=progress) if config.is_mtj else (model, []))
        self.weights = [w.astype(self.dtype) for w in initial_weights(config, self.networks, self.sizes)]
        n_moments = 2 if config.optimizer == "adam" else 1
        self.state = [np.zeros_like(p) for _ in range(n_moments) for p in self.weights]
        self.t = 0
        self.alive = np.ones(n, dtype=bool)
        self.readings_beyond = np.zeros(n, dtype=np.int64)  # junction readings beyond the device's table
        self._no_teacher = np.zeros((1, n_classes))  # teacher logits of compile_kernels' sample, when distilling

    # --- one hidden layer ------------------------------------------------------------------------

    def _read(self, v, d, current, normals_of):
        """ADC output of the readings of junctions at voltages v, differential resistances d and
        currents (N, B, U): the voltage, less r_bridge I for a bridge, plus the read noise
        (``normals_of()``)."""
        ro, r_bridge = self.config.readout, self.config.neuron.r_bridge
        y = v - r_bridge * current
        if not ro.noise_std_is_zero:
            y = y + ro.noise_std(current, d, r_bridge) * normals_of()
        return ro.adc(y)

    def hidden(self, layer, z, noise):
        """Activation, derivative used and exact derivative of hidden layer ``layer`` at z (N, B, U).

        ``noise.normals(layer, reading, shape)`` gives the standard normals of one reading.
        """
        cfg, nc = self.config, self.config.neuron
        mode = cfg.grad_mode
        if not cfg.is_mtj:
            h, d = np.empty(z.shape), np.empty(z.shape)
            digital_layer(MODE_CODES[mode], np.ascontiguousarray(z, dtype=np.float64), h, d)
            return h.astype(self.dtype), d.astype(self.dtype), d.astype(self.dtype)
        z64 = z.astype(np.float64)
        params = self.junctions[layer][:, None]  # (N, 1, U, 2, P)
        gain = nc.v_scale * nc.i_gain
        i_req = nc.i_bias + nc.i_gain * z64
        i_dac = cfg.readout.drive(i_req)
        if mode == "fd_symmetric":
            i_a, i_b = i_dac - 0.5 * nc.delta_i, i_dac + 0.5 * nc.delta_i
        else:
            i_a, i_b = i_dac, i_dac + nc.delta_i
        v_a, d_a = self.model.iv(i_a, params[..., 0, :])
        r_a = self._read(v_a, d_a, i_a, lambda: noise.normals(layer, 0, z.shape))
        self._count_beyond(i_a, params[..., 0, :])
        if readings(MODE_CODES[mode], noise.derivatives) == 2:  # B, or A again at I + dI (fd_single)
            self._count_beyond(i_b, params[..., 0 if mode == "fd_single" else 1, :])
        exact = gain * (d_a - nc.r_bridge)
        if mode == "fd_forward" or mode == "fd_symmetric":
            v_b, d_b = self.model.iv(i_b, params[..., 1, :])
            r_b = self._read(v_b, d_b, i_b, lambda: noise.normals(layer, 1, z.shape))
            used = gain * (r_b - r_a) / nc.delta_i
            if mode == "fd_symmetric":
                exact = gain * (0.5 * (d_a + d_b) - nc.r_bridge)
                r_a = 0.5 * (r_a + r_b)
        elif mode == "fd_single":
            v_a2, d_a2 = self.model.iv(i_b, params[..., 0, :])
            r_a2 = self._read(v_a2, d_a2, i_b, lambda: noise.normals(layer, 1, z.shape))
            used = gain * (r_a2 - r_a) / nc.delta_i
        elif mode == "model":
            _, d_nom = self.model.iv(i_a)
            used = gain * (d_nom - nc.r_bridge)
        else:  # oracle
            used = exact
        dt = self.dtype
        return (nc.v_scale * r_a).astype(dt), used.astype(dt), exact.astype(dt)

    def _count_beyond(self, current, params):
        """Add each network's readings at ``current`` (N, B, U) beyond its junctions' tables."""
        if self.model.beyond is not None:
            self.readings_beyond += self.model.beyond_table(current, params).sum(axis=(1, 2))

    # --- whole network -----------------------------------------------------------------------------

    # matrix products, every one of them, and the bias gradients' sums (the batched CUDA engine
    # replaces these with cuBLAS calls and a kernel)
    def _input(self, x):
        return x.astype(self.dtype, copy=False)

    def _matmul(self, a, w):
        return _matmul(a, w)

    def _matmul_t(self, a, delta, out=None):
        product = _matmul_t(a, delta)
        if out is None:
            return product
        out[...] = product
        return out

    def _sum_samples(self, delta, out=None):
        """Per network the sum over samples of delta (N, B, U) -> (N, U), added in sample order
        (NumPy's order for this layout: the GPU engine's kernel repeats it bit for bit)."""
        return delta.sum(axis=1, out=out)

    def gradient_buffers(self):
        """Where :meth:`backward` writes the gradient it returns for the optimiser: per weight
        array an array to fill, or None to allocate (here: None; the GPU engine's optimiser reads
        its flat gradient buffer, so it has the gradients written straight into it)."""
        return [None] * len(self.weights)

    def forward(self, x, noise):
        """Logits (N, B, C) and per-layer (input, derivative used, exact derivative)."""
        a = self._input(x)  # (B, F), shared by every network
        cache = []
        n_hidden = len(self.config.hidden)
        for layer in range(n_hidden):
            w, b = self.weights[2 * layer], self.weights[2 * layer + 1]
            z = self._matmul(a, w) + b[:, None, :]
            h, used, exact = self.hidden(layer, z, noise)
            cache.append((a, used, exact))
            a = h
        logits = self._matmul(a, self.weights[-2]) + self.weights[-1][:, None, :]
        cache.append((a, None, None))
        return logits, cache

    def backward(self, dlogits, cache, which="used"):
        """Gradients of the loss with respect to every weight array, given dL/dlogits (N, B, C);
        with the derivatives used, into :meth:`gradient_buffers`."""
        grads = [None] * len(self.weights)
        out = self.gradient_buffers() if which == "used" else grads
        delta = dlogits
        for layer in range(len(cache) - 1, -1, -1):
            a, used, exact = cache[layer]
            if layer < len(cache) - 1:
                delta = delta * (used if which == "used" else exact)
            grads[2 * layer] = self._matmul_t(a, delta, out[2 * layer])
            grads[2 * layer + 1] = self._sum_samples(delta, out[2 * layer + 1])
            if layer > 0:
                delta = self._matmul(delta, self.weights[2 * layer].swapaxes(1, 2))
        return grads

    def grad_cosine(self, grads_a, grads_b):
        """Cosine similarity per network of two gradients (lists of per-network arrays, float64 sums).
        ``grad_cosine`` passes the hidden layers' weights and biases: the output layer's gradient is
        the same in every gradient mode (no junction derivative enters it). Each row is summed
        alone (NumPy's pairwise sum along a row), so a network's value does not depend on N."""
        n = grads_a[0].shape[0]
        a = np.concatenate([g.reshape(n, -1).astype(np.float64) for g in grads_a], axis=1)
        b = np.concatenate([g.reshape(n, -1).astype(np.float64) for g in grads_b], axis=1)
        denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=1) / denom

    def loss_and_dlogits(self, logits, y, teacher_logits=None):
        """Per-network mean loss (N,) and dL/dlogits; softmax cross-entropy, optionally distilled
        (:mod:`spingpu.kernels.loss`)."""
        dist = self.config.distillation
        use_teacher = dist is not None and teacher_logits is not None
        teacher = np.ascontiguousarray(teacher_logits if use_teacher else np.zeros((1, logits.shape[2])),
                                       dtype=np.float64)
        dl = np.empty(logits.shape)
        loss = np.empty(logits.shape[0])
        softmax_xent_batch(np.ascontiguousarray(logits, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64),
                           teacher, use_teacher, dist.temperature if dist else 1.0, dist.alpha if dist else 0.0,
                           dl, loss)
        return loss, dl.astype(self.dtype)

    def flag_diverged(self, loss, grads):
        """Clear ``alive`` for each network whose loss (N,) or any gradient (N, ...) is NaN or beyond
        +-:data:`~spingpu.kernels.network.DIVERGED_ABOVE` (the divergence test)."""
        xp, n = self.xp, self.networks.size
        finite = xp.abs(loss) <= DIVERGED_ABOVE  # NaN compares False
        for g in grads:
            finite &= (xp.abs(g.reshape(n, -1)) <= DIVERGED_ABOVE).all(axis=1)
        self.alive &= finite

    def apply(self, grads, lr):
        """One optimiser step on the networks still alive (frozen ones keep their weights)."""
        cfg = self.config
        self.t += 1
        keep = self.alive
        n_p = len(self.weights)
        for k, (w, g) in enumerate(zip(self.weights, grads)):
            g = g + cfg.weight_decay * w if cfg.weight_decay else g
            if cfg.optimizer == "sgd":
                step = lr * g
            elif cfg.optimizer == "momentum":
                m = self.state[k]
                m[keep] = cfg.momentum * m[keep] + g[keep]
                step = lr * m
            else:
                b1, b2 = cfg.adam_betas
                m, v = self.state[k], self.state[n_p + k]
                m[keep] = b1 * m[keep] + (1 - b1) * g[keep]
                v[keep] = b2 * v[keep] + (1 - b2) * g[keep] * g[keep]
                mhat = m / adam_bias(b1, self.t)
                vhat = v / adam_bias(b2, self.t)
                step = lr * mhat / (np.sqrt(vhat) + cfg.adam_eps)
            w[keep] -= step[keep].astype(self.dtype)
