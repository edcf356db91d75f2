"""Tests from a mutation round over the physics kernels (kernels/*.py): they pin behaviours that
hand-made mutants changed while the other tests of those kernels passed (the loss's log-sum-exp, the
macrospin's Slonczewski efficiency, thermal-field counters and zero-bias conductance), and check one
pair neuron directly against its documented equations (the engines' tests compare the fused kernels
with the NumPy engine, and count readings beyond a table only through a whole training run). Every
expected number is computed here, from the documented equations (plain Python or SciPy), not by the
code under test."""

import math

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator
from scipy.special import log_softmax, rel_entr, softmax

from spingpu import get_model

# --- softmax cross-entropy (kernels/loss.py) ----------------------------------------------------------


def reference_loss(s, label, t, temperature, alpha):
    """(1 - alpha) CE + alpha T^2 KL(softmax(t / T) || softmax(s / T)) and its gradient in s, SciPy."""
    ce = -log_softmax(s)[label]
    grad = softmax(s) - np.eye(s.size)[label]
    if t is None:
        return ce, grad
    q = softmax(t / temperature)
    # KL in log space: softmax(s / T) itself underflows to 0 for logits this far apart
    kl = np.sum(rel_entr(q, 1.0) - q * log_softmax(s / temperature))
    return ((1 - alpha) * ce + alpha * temperature**2 * kl,
            (1 - alpha) * grad + alpha * temperature * (softmax(s / temperature) - q))


@pytest.mark.parametrize("distilled", [False, True])
def test_the_loss_of_logits_far_beyond_exps_range_is_finite_and_scipys(distilled):
    """Logits of a network deep in saturation (|s| ~ 1e3, exp overflows beyond 709): the loss and its
    gradient stay finite and equal SciPy's (the log-sum-exp subtracts the largest logit first)."""
    from spingpu.kernels.loss import softmax_xent

    rng = np.random.default_rng()
    n_out = 5
    for _ in range(20):
        s = rng.normal(0, 1, n_out)
        s[rng.integers(n_out)] += rng.choice([-1.0, 1.0]) * rng.uniform(800.0, 1500.0)
        s += rng.uniform(-1000.0, 1000.0)  # all of them far from 0 as well
        teacher = rng.normal(0, 3, n_out)
        temperature, alpha = rng.uniform(0.5, 3.0), rng.uniform(0.1, 0.9)
        for label in range(n_out):
            dl = np.full(n_out, np.nan)
            loss = softmax_xent(s, label, teacher[None], 0, distilled, temperature, alpha, dl)
            want, want_dl = reference_loss(s, label, teacher if distilled else None, temperature, alpha)
            assert np.isfinite(loss) and np.all(np.isfinite(dl))
            assert loss == pytest.approx(want, rel=1e-12, abs=1e-9)
            np.testing.assert_allclose(dl, want_dl, rtol=1e-9, atol=1e-12)


# --- one pair neuron (kernels/pair_neuron.py) against the documented equations ----------------------

KNOTS = np.linspace(-1e-4, 1e-4, 21)
CURVE = 800.0 * KNOTS + 0.3 * np.tanh(KNOTS / 2.5e-5)
FD_FORWARD, FD_SINGLE, FD_SYMMETRIC, MODEL, ORACLE = range(5)


class PairReference:
    """V(I) = s_v V_0(I / s_i) + v_0 (V_0: SciPy's PCHIP through the table, its end tangents beyond),
    read as V - r_bridge I + read_noise xi (no converters), and the pair neuron of DESIGN.md 5."""

    def __init__(self, i_bias, i_gain, r_bridge, v_scale, delta_i, read_noise):
        self.pchip = PchipInterpolator(KNOTS, CURVE)
        self.slope = self.pchip.derivative()
        self.i_bias, self.i_gain, self.r_bridge = i_bias, i_gain, r_bridge
        self.v_scale, self.delta_i, self.read_noise = v_scale, delta_i, read_noise

    def iv(self, current, row):
        s_i, s_v, v_0 = row
        x = current / s_i
        xc = min(max(x, KNOTS[0]), KNOTS[-1])
        v0, d0 = float(self.pchip(xc)) + float(self.slope(xc)) * (x - xc), float(self.slope(xc))
        return s_v * v0 + v_0, s_v / s_i * d0

    @staticmethod
    def beyond(current, row):
        x = current / row[0]
        return int(x < KNOTS[0] or x > KNOTS[-1])

    def read(self, current, row, xi):
        v, _ = self.iv(current, row)
        return v - self.r_bridge * current + self.read_noise * xi

    def __call__(self, mode, z, a, b, nominal, xi0, xi1, derivatives):
        gain = self.v_scale * self.i_gain
        i = self.i_bias + self.i_gain * z
        i_a, i_b = (i - 0.5 * self.delta_i, i + 0.5 * self.delta_i) if mode == FD_SYMMETRIC else (i, i + self.delta_i)
        r_a, d_a = self.read(i_a, a, xi0), self.iv(i_a, a)[1]
        beyond = self.beyond(i_a, a)
        exact = gain * (d_a - self.r_bridge)
        if mode == FD_SYMMETRIC:
            r_b, d_b = self.read(i_b, b, xi1), self.iv(i_b, b)[1]
            return (self.v_scale * 0.5 * (r_a + r_b), gain * (r_b - r_a) / self.delta_i,
                    gain * (0.5 * (d_a + d_b) - self.r_bridge), beyond + self.beyond(i_b, b))
        if not derivatives:
            return self.v_scale * r_a, 0.0, 0.0, beyond
        if mode == FD_FORWARD:
            return (self.v_scale * r_a, gain * (self.read(i_b, b, xi1) - r_a) / self.delta_i, exact,
                    beyond + self.beyond(i_b, b))
        if mode == FD_SINGLE:
            return (self.v_scale * r_a, gain * (self.read(i_b, a, xi1) - r_a) / self.delta_i, exact,
                    beyond + self.beyond(i_b, a))
        if mode == MODEL:
            return self.v_scale * r_a, gain * (self.iv(i_a, nominal)[1] - self.r_bridge), exact, beyond
        return self.v_scale * r_a, exact, exact, beyond


@pytest.mark.parametrize("mode", [FD_FORWARD, FD_SINGLE, FD_SYMMETRIC, MODEL, ORACLE],
                         ids=["fd_forward", "fd_single", "fd_symmetric", "model", "oracle"])
@pytest.mark.parametrize("derivatives", [True, False], ids=["train", "evaluate"])
def test_a_mismatched_pair_neuron_reads_and_counts_as_documented(mode, derivatives):
    """Junctions A and B with different current scales (so that one may be read beyond its table
    while the other is not), gaussian read noise with distinct normals per reading, a bridge: the
    activation, the derivative used, the exact one and the count of readings beyond the table, mode
    by mode, in training and in evaluation (fd_symmetric's activation is the mean of both readings in
    either)."""
    from spingpu.kernels.pair_neuron import NOISE_GAUSSIAN

    rng = np.random.default_rng()
    model = get_model("tabulated", iv_table=(KNOTS, CURVE))
    i_bias, i_gain, r_bridge, v_scale, delta_i, read_noise = -3e-6, 1e-4, 650.0, 2.5, 4e-6, 2e-3
    ref = PairReference(i_bias, i_gain, r_bridge, v_scale, delta_i, read_noise)
    neuron = np.array([i_bias, i_gain, r_bridge, v_scale, delta_i])
    readout = np.array([NOISE_GAUSSIAN, read_noise, 300.0, 1e6, 0, -1.0, 1.0, 0, -2e-3, 2e-3])
    pair = model.kernel_model.pair_neuron
    counts = np.zeros(3, dtype=int)
    for _ in range(300):
        a = np.array([rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1), rng.normal(0, 0.02)])
        b = np.array([rng.uniform(0.5, 0.8), rng.uniform(0.9, 1.1), rng.normal(0, 0.02)])
        nominal = np.array([rng.uniform(0.6, 1.4), rng.uniform(0.9, 1.1), rng.normal(0, 0.02)])
        params = np.stack([a, b])
        z = rng.uniform(-1.7, 1.7)
        xi0, xi1 = rng.standard_normal(2)
        got = pair(mode, z, params, 0, 1, nominal, model.table, neuron, readout, xi0, xi1, derivatives)
        want = ref(mode, z, a, b, nominal, xi0, xi1, derivatives)
        np.testing.assert_allclose(got[:3], want[:3], rtol=1e-7, atol=1e-10)
        assert got[3] == want[3], (z, a, b, got, want)
        counts[want[3]] += 1
    assert counts[0] > 30 and counts[1:].sum() > 30  # both inside and beyond the tables drawn



# --- macrospin at T > 0 (kernels/macrospin.py) against a plain re-implementation ----------------------

G0, MU0, HBAR, E_CHARGE, KB = 2.211e5, 4e-7 * math.pi, 1.054571817e-34, 1.602176634e-19, 1.380649e-23


def macrospin_reference(model, current, network, layer, unit, member, seed):
    """Mean resistance and final m of one junction at ``current``, from README "macrospin": the
    Landau-Lifshitz form with the Gilbert torque form, its eta_form, a thermal field of std
    sqrt(2 a kB T / (g0 mu0 Ms V dt)) per component, held over a stochastic Heun step, m renormalised;
    step s's field from Philox counters (network, stream, unit, 2 s) (x, y) and (.., 2 s + 1) (z); the
    resistance of each averaged step from V solving V = I R(V) (brentq)."""
    from scipy.optimize import brentq

    from spingpu.kernels.philox import normal_pair, split_seed, stream_id
    from spingpu.kernels.streams import PURPOSE_THERMAL

    p = dict(zip(model.parameter_names, model.nominal))
    st = model.settings
    u, ref, demag, h_ext = (np.array(v, dtype=float) for v in (st.easy_axis, st.reference, st.demag, st.h_ext))
    alpha, ms, volume = p["alpha"], p["ms"], p["t_free"] * p["area"]
    h_k = 2 * p["k_u"] / (MU0 * ms)
    a_j0 = HBAR * current / (2 * E_CHARGE * MU0 * ms * volume)
    pol, lam2 = p["spin_polarization"], p["stt_lambda"] ** 2
    sigma = math.sqrt(2 * alpha * KB * st.temperature / (G0 * MU0 * ms * volume * st.dt))

    def eta(mp):
        if st.eta_form == "slonczewski":
            return pol / (1 + pol**2 * mp)
        if st.eta_form == "lambda":
            return 2 * pol * lam2 / (lam2 + 1 + (lam2 - 1) * mp)
        return pol

    def dmdt(m, h_th):
        h = h_k * (m @ u) * u - ms * demag * m + h_ext + h_th
        a_j = a_j0 * eta(m @ ref)
        b_j = p["beta_fl"] * a_j
        c_dl, c_fl = a_j + alpha * b_j, b_j - alpha * a_j  # torque_form gilbert
        v = (np.cross(m, h) + alpha * np.cross(m, np.cross(m, h)) + c_dl * np.cross(m, np.cross(m, ref))
             + c_fl * np.cross(m, ref))
        return -G0 * v / (1 + alpha**2)

    def resistance(cos_t):
        tmr = lambda v: p["tmr0"] / (1 + (v / p["v_h"]) ** 2)  # noqa: E731
        def excess(v):  # V - I R(V), or V G(theta, V) - I
            if st.resistance_form == "resistance":
                return v - current * p["r_p"] * (1 + tmr(v) * (1 - cos_t) / 2)
            return v * ((1 + cos_t) / 2 + (1 - cos_t) / (2 * (1 + tmr(v)))) / p["r_p"] - current

        return brentq(excess, -20.0, 20.0, xtol=1e-16, rtol=1e-15) / current

    k0, k1 = split_seed(np.uint64(seed))
    stream = stream_id(PURPOSE_THERMAL, layer, member, 0)
    n_settle, n_average = st.steps
    m, acc = np.array(st.m0, dtype=float), 0.0
    for s in range(n_settle + n_average):
        g0, g1 = normal_pair(network, stream, unit, 2 * s, k0, k1)
        g2, _ = normal_pair(network, stream, unit, 2 * s + 1, k0, k1)
        h_th = sigma * np.array([g0, g1, g2])
        a = dmdt(m, h_th)
        b = dmdt(m + st.dt * a, h_th)
        m = m + 0.5 * st.dt * (a + b)
        m = m / np.linalg.norm(m)
        if s >= n_settle:
            acc += resistance(m @ ref)
    return acc / n_average, m


@pytest.mark.parametrize("eta_form, resistance_form", [("constant", "conductance"), ("slonczewski", "resistance"),
                                                       ("lambda", "conductance")])
def test_a_thermal_macrospin_run_is_the_documented_stochastic_heun_step_by_step(eta_form, resistance_form):
    """A few dozen steps at 300 K with a field-like torque, a tilted field and finite v_h: the mean
    resistance and the final m equal a NumPy re-implementation of the documented equations, thermal
    field counters and integrator (whose errors would show at the 1e-4 level, not 1e-9)."""
    rng = np.random.default_rng()
    dt = 1e-12
    model = get_model("macrospin", temperature=300.0, dt=dt, settle_time=40 * dt, average_time=25 * dt,
                      eta_form=eta_form, resistance_form=resistance_form, beta_fl=0.3, stt_lambda=1.7, v_h=0.45,
                      h_ext=(-2e3, 6e3, 1.5e3))
    currents = np.array([-3.5e-4, 2.5e-4])
    keys = np.array([[int(rng.integers(100)), int(rng.integers(4)), int(rng.integers(20)), int(rng.integers(2))]])
    seed = int(rng.integers(1 << 40))
    r, m = model.simulate(currents, model.nominal[None], keys, seed=seed)
    for k, current in enumerate(currents):
        r_ref, m_ref = macrospin_reference(model, current, *keys[0], seed)
        assert r[0, k] == pytest.approx(r_ref, rel=1e-9)
        np.testing.assert_allclose(m[0, k], m_ref, rtol=0, atol=1e-9)
    # the two currents reach different states: their final m differ by >= 0.26 over 40 seeds in each form
    # (their mean resistances, in the resistance form, by as little as 0.03 ohm: a thermal run's)
    assert np.abs(m[0, 0] - m[0, 1]).max() > 0.1


@pytest.mark.parametrize("resistance_form", ["conductance", "resistance"])
@pytest.mark.parametrize("v_h", [math.inf, 0.45])
def test_the_zero_bias_resistance_of_a_macrospin_state_is_the_documented_one(resistance_form, v_h):
    """Where V does not enter the TMR (v_h = inf, or I = 0): R = 1 / G(theta), G = (1 / r_p)
    [(1 + cos)/2 + (1 - cos) / (2 (1 + tmr0))] (conductance form), or r_p [1 + tmr0 (1 - cos) / 2]
    (resistance form), cos = m.p of the state the run ends in (a one-step averaging window)."""
    rng = np.random.default_rng()
    dt = 1e-12
    model = get_model("macrospin", v_h=v_h, resistance_form=resistance_form, dt=dt, settle_time=200 * dt,
                      average_time=dt, h_ext=(0.0, 8e3, 2e3), beta_fl=0.3)
    p = dict(zip(model.parameter_names, model.nominal))
    params = model.nominal * np.exp(rng.normal(0, 0.1, (4, len(model.parameters))))
    params[:, model.parameter_names.index("v_h")] = v_h
    currents = np.array([-4e-4, 0.0, 1.5e-4, 3e-4]) if math.isinf(v_h) else np.array([0.0])
    r, m = model.simulate(currents, params)
    for j, row in enumerate(params):
        q = dict(zip(model.parameter_names, row))
        cos_t = m[j] @ np.array(model.settings.reference)
        if resistance_form == "conductance":
            want = q["r_p"] / ((1 + cos_t) / 2 + (1 - cos_t) / (2 * (1 + q["tmr0"])))
        else:
            want = q["r_p"] * (1 + q["tmr0"] * (1 - cos_t) / 2)
        np.testing.assert_allclose(r[j], want, rtol=1e-13)
    assert np.ptp(m[..., 1]) > 1e-3 or currents.size == 1  # the currents reach different states
    assert p["tmr0"] > 0.5  # the two terms of G differ
