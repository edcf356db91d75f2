"""A batched PyTorch implementation of spingpu's MTJ-pair MLP, the peer the benchmarks compare with.

It trains N networks at once, each with its own weights and its own junctions, in the
``fd_forward`` gradient mode (DESIGN.md 5) with Gaussian read noise, a direct readout (no bridge,
no ADC, no DAC), softmax cross-entropy and Adam, all in float32:

    z = a W + b                       weights (N, fan_in, fan_out), torch.baddbmm over networks
    I_A = i_bias + i_gain z,  I_B = I_A + dI
    R_X = V_X(I_X) + read_noise * xi_X        xi from torch.randn, independent for A and B
    h = v_scale R_A                   activation
    dh/dz = v_scale i_gain (R_B - R_A) / dI   used by backprop (custom autograd.Function)

V(I) and the exact dV/dI are those of ``kernels/stt_compact.py`` (the same cubic in V and the same
implicit derivative), vectorised in torch: Newton's method in V from the zero-bias conductance, but
with a *fixed* number of iterations (6 by default) instead of the kernel's convergence test. Against
the converged float64 kernel over +-600 uA with 20 % device spreads (``check_iv``), 6 steps leave at
most 4e-6 V (0.4 % of the 1 mV read noise) and 4e-7 relative in dV/dI; 8 steps reach float32
rounding (3e-7 V).

The junction parameters come from ``spingpu.sample_layer`` (the same draws spingpu uses), the
weights from torch's own generator (init_gain / sqrt(fan_in) * N(0, 1), biases 0), so weights and
noise samples differ from spingpu's while their distributions agree.

Not computed here (spingpu's engines do): the per-epoch cosine of the weight gradient with the
oracle gradient (a second backward pass) and the ADC/DAC/bridge options. Computed here as there:
the exact dV/dI of junction A, the per-epoch median relative derivative error, training loss and
accuracy, and the validation accuracy after every epoch (a noisy forward pass).
"""

from __future__ import annotations

import numpy as np
import torch

import spingpu

PARAMS = ("r_p", "tmr0", "v_h", "theta0", "dtheta", "i_c")


class Junctions:
    """Per-junction constants of one hidden layer's A or B junctions, each (N, 1, U) float32."""

    def __init__(self, params):
        """``params``: (N, U, P) float64 in the order of ``PARAMS``."""
        t = torch.as_tensor(params, dtype=torch.float32)[:, None]  # (N, 1, U, P)
        self.inv_rp = (1.0 / t[..., 0]).contiguous()
        self.tmr0 = t[..., 1].contiguous()
        self.inv_vh2 = (1.0 / (t[..., 2] * t[..., 2])).contiguous()
        self.theta0 = t[..., 3].contiguous()
        self.dtheta = t[..., 4].contiguous()
        self.inv_ic = (1.0 / t[..., 5]).contiguous()


def stt_compact_iv(current, j: Junctions, iters=6, want_dvdi=True):
    """V (V) and dV/dI (ohm) of the compact STT junction, elementwise, with ``iters`` Newton steps.

    As in kernels/stt_compact.py: with a = (1 + cos theta) / (2 r_p), b = (1 - cos theta) / (2 r_p),
    V G(V) = I is the cubic p(V) = c3 V^3 + c2 V^2 + c1 V + c0 with c3 = (a + b) / v_h^2,
    c2 = -I / v_h^2, c1 = a (1 + tmr0) + b, c0 = -I (1 + tmr0); Newton from V0 = I / G(theta, 0).
    """
    th = torch.tanh(current * j.inv_ic)
    theta = j.theta0 - j.dtheta * th
    c = torch.cos(theta)
    a = (1.0 + c) * (0.5 * j.inv_rp)
    b = (1.0 - c) * (0.5 * j.inv_rp)
    c3 = (a + b) * j.inv_vh2
    c2 = -current * j.inv_vh2
    c1 = a * (1.0 + j.tmr0) + b
    c0 = -current * (1.0 + j.tmr0)
    v = -c0 / c1  # I / G(theta, 0)
    c3x3, c2x2 = 3.0 * c3, 2.0 * c2
    for _ in range(iters):
        p = ((c3 * v + c2) * v + c1) * v + c0
        dp = (c3x3 * v + c2x2) * v + c1
        v = v - p / dp
    if not want_dvdi:
        return v, None
    x2 = v * v * j.inv_vh2
    den = 1.0 + j.tmr0 + x2
    ap = (1.0 + x2) / den  # 1 / (1 + TMR(V))
    g = a + b * ap
    dg_dv = b * (2.0 * j.tmr0) * v * j.inv_vh2 / (den * den)
    dg_dtheta = -torch.sin(theta) * (0.5 * j.inv_rp) * (1.0 - ap)
    dtheta_di = -j.dtheta * (1.0 - th * th) * j.inv_ic
    dvdi = (1.0 - v * dg_dtheta * dtheta_di) / (g + v * dg_dv)
    return v, dvdi


class PairNeuronFD(torch.autograd.Function):
    """Forward: activation h = v_scale R_A(I); backward: dh/dz = v_scale i_gain (R_B(I+dI) - R_A(I)) / dI.

    Returns (h, used, exact): used is the derivative above, exact = v_scale i_gain dV_A/dI (both
    not differentiable; kept for the derivative-error metric).
    """

    @staticmethod
    def forward(ctx, z, junc_a, junc_b, neuron, read_noise, iters, generator):
        i_bias, i_gain, v_scale, delta_i = neuron
        i_a = i_bias + i_gain * z
        i_b = i_a + delta_i
        v_a, d_a = stt_compact_iv(i_a, junc_a, iters)
        v_b, _ = stt_compact_iv(i_b, junc_b, iters, want_dvdi=False)
        if read_noise > 0.0:
            v_a = v_a + read_noise * torch.randn(z.shape, generator=generator, dtype=z.dtype)
            v_b = v_b + read_noise * torch.randn(z.shape, generator=generator, dtype=z.dtype)
        gain = v_scale * i_gain
        used = (v_b - v_a) * (gain / delta_i)
        exact = d_a * gain
        ctx.save_for_backward(used)
        ctx.mark_non_differentiable(used, exact)
        return v_a * v_scale, used, exact

    @staticmethod
    def backward(ctx, grad_h, grad_used, grad_exact):
        (used,) = ctx.saved_tensors
        return grad_h * used, None, None, None, None, None, None


def pair_forward_eval(z, junc_a, neuron, read_noise, iters, generator):
    """Activation only (no B reading, no derivative), for evaluation under no_grad."""
    i_bias, i_gain, v_scale, _ = neuron
    v_a, _ = stt_compact_iv(i_bias + i_gain * z, junc_a, iters, want_dvdi=False)
    if read_noise > 0.0:
        v_a = v_a + read_noise * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    return v_a * v_scale


class TorchMTJNets:
    """N MLPs (sizes = (features, hidden..., classes)) of MTJ-pair neurons, trained with Adam."""

    def __init__(self, sizes, n_networks, *, seed=0, sigma_d2d=0.1, sigma_pair=0.02, read_noise=1e-3, lr=0.01,
                 init_gain=1.0, neuron=None, newton_iters=6, foreach=None):
        neuron = spingpu.PairNeuron() if neuron is None else neuron
        if neuron.readout != "direct":
            raise ValueError("only the direct readout is implemented")
        self.neuron = (neuron.i_bias, neuron.i_gain, neuron.v_scale, neuron.delta_i)
        self.sizes = tuple(sizes)
        self.n = n_networks
        self.read_noise = float(read_noise)
        self.iters = newton_iters
        self.gen = torch.Generator().manual_seed(seed)
        model = spingpu.get_model("stt_compact")
        assert tuple(p.name for p in model.parameters) == PARAMS
        var = spingpu.Variability(sigma_d2d=sigma_d2d, sigma_pair=sigma_pair)
        nets = np.arange(n_networks)
        self.junctions = []
        for layer, width in enumerate(self.sizes[1:-1]):
            p = spingpu.sample_layer(model, var, seed=seed, networks=nets, layer=layer, n_units=width)
            self.junctions.append((Junctions(p[:, :, 0]), Junctions(p[:, :, 1])))
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            w = torch.randn(n_networks, fan_in, fan_out, generator=self.gen) * (init_gain / fan_in ** 0.5)
            self.weights.append(w.requires_grad_())
            self.biases.append(torch.zeros(n_networks, 1, fan_out, requires_grad=True))
        self.opt = torch.optim.Adam(self.weights + self.biases, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                    foreach=foreach)

    def forward(self, x, train=True):
        """Logits (N, B, C) and the per-layer (used, exact) derivatives (train only)."""
        a = x.expand(self.n, *x.shape)
        derivs = []
        n_hidden = len(self.sizes) - 2
        for layer in range(n_hidden):
            z = torch.baddbmm(self.biases[layer], a, self.weights[layer])
            ja, jb = self.junctions[layer]
            if train:
                a, used, exact = PairNeuronFD.apply(z, ja, jb, self.neuron, self.read_noise, self.iters, self.gen)
                derivs.append((used, exact))
            else:
                a = pair_forward_eval(z, ja, self.neuron, self.read_noise, self.iters, self.gen)
        logits = torch.baddbmm(self.biases[-1], a, self.weights[-1])
        return logits, derivs

    def step(self, x, y, metrics=False):
        """One optimiser step on batch (x (B, F) float32, y (B,) int64); returns per-network (loss,
        correct, median relative derivative error or None)."""
        logits, derivs = self.forward(x)
        n, b, c = logits.shape
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(2, y.expand(n, b)[..., None])[..., 0]  # (N, B)
        loss = nll.mean(dim=1)  # per network
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # networks are independent: d(sum)/dW_n = dloss_n/dW_n
        self.opt.step()
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == y).sum(dim=1)
            derr = None
            if metrics:
                derr = torch.cat([((u - e).abs() / e.abs()).reshape(n, -1) for u, e in derivs], dim=1)
                derr = derr.median(dim=1).values
        return loss.detach(), correct, derr

    @torch.no_grad()
    def accuracy(self, x, y):
        logits, _ = self.forward(x, train=False)
        return (logits.argmax(dim=-1) == y).float().mean(dim=1)

    def train_epoch(self, x, y, batch, x_val=None, y_val=None):
        """One epoch in fixed order; returns a dict of per-network metrics: train_loss, train_acc,
        deriv_rel_err (last batch), val_acc (when x_val is given)."""
        n_train = y.shape[0]
        loss_sum = torch.zeros(self.n)
        correct = torch.zeros(self.n)
        for start in range(0, n_train, batch):
            last = start + batch >= n_train
            loss, corr, derr = self.step(x[start:start + batch], y[start:start + batch], metrics=last)
            loss_sum += loss * min(batch, n_train - start)
            correct += corr
        out = dict(train_loss=loss_sum / n_train, train_acc=correct / n_train, deriv_rel_err=derr)
        if x_val is not None:
            out["val_acc"] = self.accuracy(x_val, y_val)
        return out


def check_iv(iters=6):
    """Largest |V_torch - V_spingpu| (V) and relative dV/dI error over +-600 uA, 1000 varied junctions."""
    model = spingpu.get_model("stt_compact")
    var = spingpu.Variability(sigma_d2d=0.2, sigma_pair=0.05)
    p = spingpu.sample_layer(model, var, seed=3, networks=np.arange(1000), layer=0, n_units=1)[:, 0, 0]  # (1000, P)
    currents = np.linspace(-6e-4, 6e-4, 241)
    v_ref, d_ref = model.iv(currents[None, :], p[:, None, :])
    i_t = torch.as_tensor(currents, dtype=torch.float32).expand(1000, 1, 241)
    j = Junctions(np.repeat(p[:, None, :], 241, axis=1))  # constants (1000, 1, 241)
    v, d = stt_compact_iv(i_t, j, iters)
    v = v[:, 0].double().numpy()
    d = d[:, 0].double().numpy()
    return float(np.abs(v - v_ref).max()), float(np.abs(d / d_ref - 1).max())
