"""An independent plain-NumPy float64 trainer of the documented training mathematics (README
"Training networks of junction pairs", "Variability and readout", TrainConfig's docstring), written
from the documentation, not from spingpu's engines, for tests/test_reference_trainer.py.

Taken from spingpu are only the random numbers it documents as its own, so that runs compare: the
initial weights (``numpy_engine.initial_weights``), the junction parameters (``spingpu.sample_layer``),
the batch order (``streams.epoch_order``) and the read-noise normals (``streams.normals`` of the
training and evaluation purposes). The stt_compact I-V solve, readout, ADC/DAC, gradient modes,
backpropagation, loss and distillation, optimisers, schedules and metrics are written here.
"""
import math
import numpy as np


# ---------- stt_compact from README formulas -------------------------------------------------
def stt_iv(I, p):
    """V and dV/dI of stt_compact, p (..., 6) = r_p, tmr0, v_h, theta0, dtheta, i_c; broadcast."""
    I = np.asarray(I, dtype=np.float64)
    r_p, tmr0, v_h, th0, dth, i_c = (p[..., k] for k in range(6))
    theta = th0 - dth * np.tanh(I / i_c)
    c, s = np.cos(theta), np.sin(theta)

    def G_and_dGdV(V):
        x = (V / v_h) ** 2
        tmr = tmr0 / (1 + x)
        dtmr = -tmr0 * 2 * V / v_h ** 2 / (1 + x) ** 2
        G = (1 / r_p) * ((1 + c) / 2 + (1 - c) / (2 * (1 + tmr)))
        dG = (1 / r_p) * (1 - c) / 2 * (-dtmr) / (1 + tmr) ** 2
        return G, dG, tmr

    # start from the small-signal guess
    G0, _, _ = G_and_dGdV(np.zeros_like(I))
    V = I / G0
    for _ in range(100):
        G, dG, _ = G_and_dGdV(V)
        F = V * G - I
        Vn = V - F / (G + V * dG)
        if np.all(np.abs(Vn - V) <= 1e-17 + 1e-16 * np.abs(V)):
            V = Vn
            break
        V = Vn
    G, dG, tmr = G_and_dGdV(V)
    dG_dth = (1 / r_p) * (-s / 2 + s / (2 * (1 + tmr)))
    dth_dI = -dth / i_c / np.cosh(I / i_c) ** 2
    dvdi = (1 - V * dG_dth * dth_dI) / (G + V * dG)
    return V, dvdi


def quantize(x, lo, hi, bits):
    """2^bits levels incl. both ends; nearest (tie up), clipped; NaN stays."""
    if bits <= 0:
        return x
    n = 2 ** bits - 1
    lsb = (hi - lo) / n
    t = (x - lo) / lsb
    code = np.clip(np.floor(t + 0.5), 0, n)
    return lo + code * lsb


# ---------- network --------------------------------------------------------------------------
class Ref:
    def __init__(self, cfg, weights, junctions, nominal):
        """cfg: dict of settings; weights [W0,b0,...] (N, fi, fo)/(N, fo) float64; junctions:
        per hidden layer (N, U, 2, 6); nominal (6,)."""
        self.c = cfg
        self.W = [w.astype(np.float64).copy() for w in weights]
        self.J = junctions
        self.nom = nominal
        self.m = [np.zeros_like(w) for w in self.W]
        self.v = [np.zeros_like(w) for w in self.W]
        self.t = 0
        self.noise = None

    def sigma(self, I, d, rb):
        """README: gaussian read_noise, or sqrt(B (r_d^2 S_I + 4 kB T r_ref)),
        S_I = 2 q I coth(q V_b / 2 kB T), V_b = I r_d, r_d = dV/dI."""
        c = self.c
        if c.get("noise_model", "gaussian") == "gaussian":
            return c.get("read_noise", 0.0)
        kB, q = 1.380649e-23, 1.602176634e-19
        T, Bw = c["temperature"], c["bandwidth"]
        rd = np.abs(d)
        x = q * np.abs(I) * rd / (2 * kB * T)
        with np.errstate(divide="ignore", invalid="ignore"):
            S = np.where(x < 1e-8, 4 * kB * T / rd, 2 * q * np.abs(I) / np.tanh(x))
        return np.sqrt(Bw * (rd ** 2 * S + 4 * kB * T * rb))

    def hidden(self, l, z):
        c = self.c
        mode = c["mode"]
        if mode == "tanh":
            h = np.tanh(z)
            d = 1 - h * h
            return h, d, d
        if mode == "relu":
            h = np.maximum(z, 0.0)
            d = (z > 0).astype(float)
            return h, d, d
        if mode == "sigmoid":
            h = 1 / (1 + np.exp(-z))
            d = h * (1 - h)
            return h, d, d
        gain = c["v_scale"] * c["i_gain"]
        rb = c["r_ref"] if c["readout"] == "bridge" else 0.0
        dI = c["delta_i"]
        I = quantize(c["i_bias"] + c["i_gain"] * z, *c["dac_range"], c["dac_bits"])
        pa = self.J[l][:, None, :, 0, :]  # (N,1,U,6)
        pb = self.J[l][:, None, :, 1, :]
        nz = self.noise  # None or callable (layer, reading, shape) -> standard normals

        def read(V, i, d, reading):
            y = V - rb * i
            if nz is not None:
                y = y + self.sigma(i, d, rb) * nz(l, reading, z.shape)
            return quantize(y, *c["adc_range"], c["adc_bits"])
        if mode == "fd_symmetric":
            Ia, Ib = I - dI / 2, I + dI / 2
        else:
            Ia, Ib = I, I + dI
        Va, da = stt_iv(Ia, pa)
        Ra = read(Va, Ia, da, 0)
        exact = gain * (da - rb)
        act = Ra
        if mode == "fd_forward":
            Vb, db = stt_iv(Ib, pb)
            used = gain * (read(Vb, Ib, db, 1) - Ra) / dI
        elif mode == "fd_symmetric":
            Vb, db = stt_iv(Ib, pb)
            Rb = read(Vb, Ib, db, 1)
            used = gain * (Rb - Ra) / dI
            exact = gain * (0.5 * (da + db) - rb)
            act = 0.5 * (Ra + Rb)
        elif mode == "fd_single":
            V2, d2 = stt_iv(Ib, pa)
            used = gain * (read(V2, Ib, d2, 1) - Ra) / dI
        elif mode == "model":
            _, dn = stt_iv(Ia, self.nom)
            used = gain * (dn - rb)
        elif mode == "oracle":
            used = exact
        return c["v_scale"] * act, used, exact

    def forward(self, x):
        a = np.broadcast_to(x, (self.W[0].shape[0],) + x.shape)
        cache = []
        L = len(self.W) // 2
        for l in range(L - 1):
            z = np.einsum("nbf,nfu->nbu", a, self.W[2 * l]) + self.W[2 * l + 1][:, None, :]
            h, used, exact = self.hidden(l, z)
            cache.append((a, used, exact))
            a = h
        logits = np.einsum("nbf,nfu->nbu", a, self.W[-2]) + self.W[-1][:, None, :]
        cache.append((a, None, None))
        return logits, cache

    def loss(self, s, y, teacher):
        """mean over batch of (1-alpha) CE + alpha T^2 KL(p_t^T || p_s^T); grad wrt logits."""
        def logsoftmax(u):
            mx = u.max(axis=-1, keepdims=True)
            return u - mx - np.log(np.exp(u - mx).sum(axis=-1, keepdims=True))
        B = s.shape[1]
        ls = logsoftmax(s)
        onehot = np.eye(s.shape[2])[y]
        ce = -(ls * onehot).sum(-1)
        g = np.exp(ls) - onehot
        dist = self.c.get("distill")
        if dist is not None and teacher is not None:
            T, al = dist
            lq = logsoftmax(teacher / T)[None]
            q = np.exp(lq)
            lp = logsoftmax(s / T)
            kl = (q * (lq - lp)).sum(-1)
            ce = (1 - al) * ce + al * T * T * kl
            # d/ds [T^2 KL] = T^2 * (p - q) / T = T (p - q)
            g = (1 - al) * g + al * T * (np.exp(lp) - q)
        return ce.mean(axis=1), g / B

    def backward(self, g, cache, which):
        grads = [None] * len(self.W)
        delta = g
        for l in range(len(cache) - 1, -1, -1):
            a, used, exact = cache[l]
            if l < len(cache) - 1:
                delta = delta * (used if which == "used" else exact)
            grads[2 * l] = np.einsum("nbf,nbu->nfu", a, delta)
            grads[2 * l + 1] = delta.sum(axis=1)
            if l > 0:
                delta = np.einsum("nbu,nfu->nbf", delta, self.W[2 * l])
        return grads

    def step(self, grads, lr):
        c = self.c
        self.t += 1
        for k, (w, g) in enumerate(zip(self.W, grads)):
            if c["wd"]:
                g = g + c["wd"] * w  # weights and biases alike
            if c["opt"] == "sgd":
                w -= lr * g
            elif c["opt"] == "momentum":
                self.m[k] = c["mu"] * self.m[k] + g
                w -= lr * self.m[k]
            else:
                b1, b2 = c["betas"]
                self.m[k] = b1 * self.m[k] + (1 - b1) * g
                self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
                mh = self.m[k] / (1 - b1 ** self.t)
                vh = self.v[k] / (1 - b2 ** self.t)
                w -= lr * mh / (np.sqrt(vh) + c["eps"])


def schedule(kind, e, E, lr, every=1, gamma=1.0):
    if kind == "constant":
        return lr
    if kind == "exp":
        return lr * gamma ** e
    if kind == "step":
        return lr * gamma ** (e // every)
    if kind == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * e / E))
    raise ValueError(kind)


def cosine(ga, gb):
    n = ga[0].shape[0]
    a = np.concatenate([g.reshape(n, -1) for g in ga], 1)
    b = np.concatenate([g.reshape(n, -1) for g in gb], 1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def deriv_err(cache):
    n = cache[0][1].shape[0]
    used = np.concatenate([u.reshape(n, -1) for _, u, _ in cache[:-1]], 1)
    exact = np.concatenate([e.reshape(n, -1) for _, _, e in cache[:-1]], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(used - exact) / np.abs(exact)
    rel[used == exact] = 0.0
    return np.median(rel, axis=1)


def train(ref, data, cfg, epochs, order_fn=None, teacher=None, noise_fn=None):
    """noise_fn(kind, slot_base, row0) -> callable(layer, reading, shape) or None."""
    nf = noise_fn or (lambda *a: None)
    counter = 0
    xtr, ytr = data.x_train.astype(np.float64), data.y_train
    n_train = ytr.size
    B = cfg.get("batch") or n_train
    B = min(B, n_train)
    steps = math.ceil(n_train / B)
    N = ref.W[0].shape[0]
    out = {k: np.zeros((N, epochs)) for k in ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err")}
    for e in range(epochs):
        lr = schedule(cfg["sched"], e, epochs, cfg["lr"], cfg.get("every", 1), cfg.get("gamma", 1.0))
        order = np.arange(n_train) if B == n_train else order_fn(e, n_train)
        lsum = np.zeros(N)
        corr = np.zeros(N)
        for s in range(steps):
            idx = order[s * B:(s + 1) * B]
            ref.noise = nf("train", 0, counter)
            counter += idx.size
            logits, cache = ref.forward(xtr[idx])
            loss, g = ref.loss(logits, ytr[idx], None if teacher is None else teacher[idx])
            grads = ref.backward(g, cache, "used")
            if s == steps - 1:
                ex = ref.backward(g, cache, "exact")
                out["grad_cosine"][:, e] = cosine(grads[:-2], ex[:-2])
                out["deriv_rel_err"][:, e] = deriv_err(cache)
            ref.step(grads, lr)
            lsum += loss * idx.size
            corr += (logits.argmax(-1) == ytr[idx]).sum(1)
        out["train_loss"][:, e] = lsum / n_train
        out["train_acc"][:, e] = corr / n_train
        ref.noise = nf("eval", 0, e * data.y_val.size)
        lv, _ = ref.forward(data.x_val.astype(np.float64))
        out["val_acc"][:, e] = (lv.argmax(-1) == data.y_val).mean(1)
    ref.noise = nf("eval", 2, epochs * data.y_test.size)
    lt, _ = ref.forward(data.x_test.astype(np.float64))
    out["test_acc"] = (lt.argmax(-1) == data.y_test).mean(1)
    return out
