"""The batched CPU engine for large layers (``--backend cpu`` when a layer is wider than
``trainer.FUSED_MAX_WIDTH``): the NumPy engine's batched matrix products over networks (BLAS) with each
hidden layer's pair neurons, noise and ADC in one fused Numba pass
(:mod:`spingpu.kernels.pair_layer`), and the optimiser's step in one parallel pass per weight array
(:mod:`spingpu.kernels.batched_cpu`, the batched CUDA engine's step). Same numbers as the NumPy
reference: equal in float64, to float32 rounding in float32 (the NumPy engine's optimiser
computes in the weights' dtype, this one in float64)."""

from __future__ import annotations

import numpy as np

from ..kernels.batched_cpu import optimizer_update
from ..kernels.network import adam_bias
from ..kernels.network import OPTIMIZER_CODES
from ..kernels.pair_layer import make_pair_layer
from ..kernels.pair_neuron import MODE_CODES
from .fused_engine import neuron_vector, readout_vector
from .numpy_engine import NumpyEngine


def pair_layer_kernel(model):
    """The pair-layer kernel of ``model``'s kernel form (the rows ``model.bind`` gives; from the on-disk
    kernel cache for built-in models)."""
    from ..kernel_cache import cached_kernel

    kernel_model = model.kernel_model
    return cached_kernel(kernel_model, "pair_layer", lambda: make_pair_layer(kernel_model.pair_neuron))


class BatchedCpuEngine(NumpyEngine):
    """NumpyEngine whose MTJ hidden layers run the fused elementwise kernel."""

    def __init__(self, model, config, networks, n_features, n_classes, **kwargs):
        super().__init__(model, config, networks, n_features, n_classes, **kwargs)
        self._kernel = pair_layer_kernel(model) if config.is_mtj else None
        self._mode = MODE_CODES[config.grad_mode]
        self._neuron = neuron_vector(config.neuron)
        self._readout = readout_vector(config.readout)
        self._junctions = [np.ascontiguousarray(j).reshape(-1, j.shape[-1]) for j in self.junctions]  # rows

    def hidden(self, layer, z, noise):
        if self._kernel is None:
            return super().hidden(layer, z, noise)
        z = np.ascontiguousarray(z)
        h, used, exact = np.empty_like(z), np.empty_like(z), np.empty_like(z)
        beyond = np.empty(z.shape, dtype=np.uint8)
        self._kernel(z, self._junctions[layer], self.model.nominal, self.model.aux_table, self._mode, self._neuron,
                     self._readout, np.uint64(noise.seed), self.networks, noise.purpose, layer, noise.slot0,
                     noise.row0, noise.derivatives, h, used, exact, beyond)
        self.readings_beyond += beyond.sum(axis=(1, 2), dtype=np.int64)
        return h, used, exact

    def compile_kernels(self, x, y):
        """:meth:`NumpyEngine.compile_kernels`, and the optimiser's kernel with every network
        masked: no state changes."""
        super().compile_kernels(x, y)
        self._update(self.weights, np.zeros(self.networks.size, dtype=bool), 0.0, 1)  # no network: nothing read

    def apply(self, grads, lr):
        """One optimiser step of the networks still alive, in place (NumpyEngine.apply's step, by
        :func:`spingpu.kernels.network.optimizer_step`)."""
        self.t += 1
        self._update(grads, self.alive, float(lr), self.t)

    def _update(self, grads, alive, lr, t):
        """The optimiser kernel over each weight array (N, ...) as rows (N, K), in place: the
        weights and moments are C-contiguous (NumpyEngine makes them so), so their rows are views."""
        cfg = self.config
        n_p, n = len(self.weights), self.networks.size
        b1, b2 = cfg.adam_betas
        bias1, bias2 = adam_bias(b1, t), adam_bias(b2, t)  # once per step, for every weight array
        for k, (w, g) in enumerate(zip(self.weights, grads)):
            m1 = self.state[k]
            m2 = self.state[n_p + k] if len(self.state) > n_p else m1  # read only, where not Adam
            assert w.flags.c_contiguous and m1.flags.c_contiguous and m2.flags.c_contiguous
            optimizer_update(w.reshape(n, -1), np.ascontiguousarray(g, dtype=w.dtype).reshape(n, -1),
                             m1.reshape(n, -1), m2.reshape(n, -1), alive, OPTIMIZER_CODES[cfg.optimizer], lr,
                             bias1, bias2, float(cfg.momentum), float(b1), float(b2),
                             float(cfg.adam_eps), float(cfg.weight_decay))
