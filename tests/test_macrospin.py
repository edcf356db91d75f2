"""The ``macrospin`` model (DESIGN.md 3.2): against cmtj, analytic limits, statistics, kernels, engines.

cmtj runs the same junction in its own code (its constants set to ours); every expected number here
is computed in the test, from cmtj or from a formula.
"""

import json
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from spingpu import ConfigError, Variability, get_model, sample_layer
from spingpu.backends import Backend
from spingpu.devices.macrospin import MACROSPIN, MacrospinSettings, coefficients, set_cmtj_constants
from spingpu.kernels import cuda_devices
from spingpu.kernels import macrospin as k
from spingpu.kernels.philox import split_seed
from spingpu.training import TrainConfig, train

MU0_MS = k.MU0 * 1e6  # mu0 Ms of the default Ms = 1e6 A/m, in T


@pytest.fixture(scope="module")
def cmtj():
    """cmtj with its physical constants set to spingpu's (restored afterwards)."""
    cm = set_cmtj_constants(pytest.importorskip("cmtj"))
    yield cm
    cm.constants.PhysicalConstants.resetToDefaults()


def cmtj_run(cm, model, current, total_time):
    """cmtj's mean resistance after ``settle_time`` and final m for ``model`` (landau_lifshitz torque,
    resistance form, v_h = inf, T = 0) at ``current``; cmtj's beta is -beta_fl (module doc)."""
    p = dict(zip(model.parameter_names, model.nominal))
    st = model.settings
    vec = lambda v: cm.CVector(*v)  # noqa: E731
    demag = [cm.CVector(st.demag[0], 0, 0), cm.CVector(0, st.demag[1], 0), cm.CVector(0, 0, st.demag[2])]
    layer = cm.Layer.createSTTLayer("free", vec(st.m0), vec(st.easy_axis), k.MU0 * p["ms"], p["t_free"], p["area"],
                                    demag, damping=p["alpha"], SlonczewskiSpacerLayerParameter=p["stt_lambda"],
                                    beta=-p["beta_fl"], spinPolarisation=p["spin_polarization"])
    layer.setReferenceLayer(vec(st.reference))
    junction = cm.Junction([layer], p["r_p"], p["r_p"] * (1 + p["tmr0"]))
    junction.setLayerAnisotropyDriver("free", cm.constantDriver(p["k_u"]))
    junction.setLayerCurrentDriver("free", cm.constantDriver(current / p["area"]))
    junction.setLayerExternalFieldDriver("free", cm.AxialDriver(*st.h_ext))
    junction.runSimulation(total_time, st.dt, st.dt)
    log = junction.getLog()
    t, r = np.array(log["time"]), np.array(log["R"])
    window = r[t > st.settle_time + 0.5 * st.dt]
    m = np.array([log["free_mx"][-1], log["free_my"][-1], log["free_mz"][-1]])
    return window.mean(), window.std(), m


def in_plane(**extra):
    """An in-plane junction, easy axis and reference along x, the cmtj-comparable forms."""
    values = dict(alpha=0.05, k_u=2e4, v_h=math.inf, demag=(0.02, 0.05, 0.9), reference=(1, 0, 0), m0=(1, 0, 0),
                  eta_form="lambda", torque_form="landau_lifshitz", resistance_form="resistance",
                  dt=2e-12, settle_time=6e-9, average_time=1e-9)
    values.update(extra)
    return get_model("macrospin", **values)


def anisotropy_field(model):
    p = dict(zip(model.parameter_names, model.nominal))
    return 2 * p["k_u"] / (k.MU0 * p["ms"])


# --- the default forms (Gilbert torque, conductance form) against an independent solver -----------

def gilbert_reference(model, current, t_end):
    """m(t_end) of DESIGN.md 3.2 written in Gilbert's implicit form, dm/dt = T + alpha m x dm/dt with
    T = -g0 m x (H + b_J p) - g0 a_J m x (m x p), i.e. (1 - alpha [m]x) dm/dt = T, solved by scipy's
    DOP853 (constant eta: a_J = hbar P I / (2 e mu0 Ms t_free area), b_J = beta_fl a_J)."""
    p = dict(zip(model.parameter_names, model.nominal))
    st = model.settings
    u, ref, demag, h_ext = (np.array(v, dtype=float) for v in (st.easy_axis, st.reference, st.demag, st.h_ext))
    h_k = 2 * p["k_u"] / (k.MU0 * p["ms"])
    a_j = k.HBAR * p["spin_polarization"] * current / (2 * k.E_CHARGE * k.MU0 * p["ms"] * p["t_free"] * p["area"])

    def rhs(_, m):
        m = m / np.linalg.norm(m)
        h = h_k * (m @ u) * u - p["ms"] * demag * m + h_ext
        torque = -k.G0 * np.cross(m, h + p["beta_fl"] * a_j * ref) - k.G0 * a_j * np.cross(m, np.cross(m, ref))
        cross = np.array([[0, -m[2], m[1]], [m[2], 0, -m[0]], [-m[1], m[0], 0]])
        return np.linalg.solve(np.eye(3) - p["alpha"] * cross, torque)

    sol = integrate.solve_ivp(rhs, (0, t_end), np.array(st.m0, dtype=float), method="DOP853", rtol=1e-11, atol=1e-13)
    m = sol.y[:, -1]
    return m / np.linalg.norm(m)


def test_default_forms_equal_an_independent_gilbert_solve_and_conductance_resistance():
    """cmtj covers the Landau-Lifshitz torque and resistance forms; the defaults (Gilbert torque,
    conductance form with the TMR's bias dependence) are checked against scipy and brentq."""
    model = get_model("macrospin", beta_fl=0.3, h_ext=(0.0, 1e4, 2e3), dt=2e-13, settle_time=2e-9,
                      average_time=2e-13)
    p = dict(zip(model.parameter_names, model.nominal))
    currents = np.array([-4e-4, 3e-4, 8e-4])
    r, m = model.simulate(currents)
    for j, current in enumerate(currents):
        m_ref = gilbert_reference(model, current, model.settings.settle_time + model.settings.average_time)
        np.testing.assert_allclose(m[0, j], m_ref, atol=1e-8)
        cos_t = m_ref @ np.array(model.settings.reference)

        def excess(v):  # V G(theta, V) - I, G of DESIGN.md 3.1 (conductance form)
            tmr = p["tmr0"] / (1 + (v / p["v_h"]) ** 2)
            return v * ((1 + cos_t) / 2 + (1 - cos_t) / (2 * (1 + tmr))) / p["r_p"] - current

        v = optimize.brentq(excess, -2.0, 2.0, xtol=1e-15, rtol=1e-14)
        assert r[0, j] == pytest.approx(v / current, rel=1e-7)
    assert np.ptp(r) > 100  # the three currents reach different states


# --- cmtj -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("torque", [dict(stt_lambda=1.0, beta_fl=0.0), dict(stt_lambda=2.0, beta_fl=0.3)])
def test_resistance_equals_cmtj_static_tilt_and_antiparallel_past_switching(cmtj, torque):
    model = in_plane(**torque)
    model = model.with_nominal(h_ext=(0.0, 0.6 * anisotropy_field(model), 0.0))  # static tilt of 37 deg
    currents = np.linspace(-1.2e-3, 1.2e-3, 13)
    ours, m_ours = model.simulate(currents)
    steady = 0
    for i, current in enumerate(currents):
        ref, wobble, m_ref = cmtj_run(cmtj, model, current, model.settings.settle_time + model.settings.average_time)
        if wobble < 0.01:  # ohm: a steady state (static) over the averaging window
            steady += 1
            assert abs(ours[0, i] - ref) < 1.0, (current, ours[0, i], ref)
            np.testing.assert_allclose(m_ours[0, i], m_ref, atol=1e-6)
    assert steady >= 10
    r_p, tmr0 = model.nominal[model.parameter_names.index("r_p")], model.nominal[model.parameter_names.index("tmr0")]
    span = r_p * tmr0  # R_AP - R_P
    assert ours[0, 0] > r_p + 0.8 * span  # antiparallel past the switching current
    assert ours[0, 6] < r_p + 0.2 * span  # tilted parallel state at I = 0
    assert ours.max() - ours.min() > 0.6 * span


def perpendicular(**extra):
    """A perpendicular free layer (easy axis and reference z) starting 2 degrees off the axis."""
    tilt = math.radians(2.0)
    values = dict(alpha=0.2, k_u=8e5, v_h=math.inf, demag=(0.0, 0.0, 1.0), easy_axis=(0, 0, 1), reference=(0, 0, 1),
                  m0=(math.sin(tilt), 0, math.cos(tilt)), h_ext=(0, 0, 2e4), eta_form="constant",
                  torque_form="landau_lifshitz", resistance_form="resistance", dt=1e-12, settle_time=12e-9,
                  average_time=0.5e-9)
    values.update(extra)
    return get_model("macrospin", **values)


def analytic_critical_current(model):
    """I_c = -(2 e alpha mu0 Ms V / (hbar eta)) (H_k + H_ext.u + Ms (N_1 + N_2 - 2 N_u) / 2) of the
    parallel state m = u = p (N_u along u, N_1, N_2 across; linear stability of the LLGS equation,
    exact in alpha for both torque forms); negative: a current I < I_c switches P to AP."""
    p = dict(zip(model.parameter_names, model.nominal))
    st = model.settings
    n_u = float(np.dot(st.demag, np.abs(st.easy_axis)))
    h_stiff = anisotropy_field(model) + float(np.dot(st.h_ext, st.easy_axis)) + p["ms"] * (sum(st.demag) - 3 * n_u) / 2
    volume = p["t_free"] * p["area"]
    return -2 * k.E_CHARGE * p["alpha"] * k.MU0 * p["ms"] * volume / (k.HBAR * p["spin_polarization"]) * h_stiff


def test_switching_current_matches_analytic_and_cmtj(cmtj):
    model = perpendicular()
    i_c = analytic_critical_current(model)
    factors = np.array([0.9, 0.95, 0.98, 1.02, 1.05, 1.1])
    r, m = model.simulate(factors * i_c)
    switched = m[0, :, 2] < 0
    np.testing.assert_array_equal(switched, factors > 1)  # the analytic I_c within 2 %
    for f, ours in zip(factors, switched):
        _, _, m_ref = cmtj_run(cmtj, model, f * i_c, model.settings.settle_time + model.settings.average_time)
        assert (m_ref[2] < 0) == ours, f


def test_stoner_wohlfarth_angle_at_zero_current():
    psi = math.radians(130.0)  # field direction from the easy axis, in the plane
    model = in_plane(alpha=0.2, settle_time=20e-9, average_time=2e-12)
    hk_plane = anisotropy_field(model) + 1e6 * (model.settings.demag[1] - model.settings.demag[0])
    h = 0.35 * hk_plane
    model = model.with_nominal(h_ext=(h * math.cos(psi), h * math.sin(psi), 0.0))
    _, m = model.simulate([0.0])
    phi = math.atan2(m[0, 0, 1], m[0, 0, 0])
    # E / (mu0 Ms V) = -(H_k'/2) cos^2 phi - H cos(phi - psi), the branch reached from phi = 0
    energy = lambda x: -0.5 * hk_plane * math.cos(x[0]) ** 2 - h * math.cos(x[0] - psi)  # noqa: E731
    expected = optimize.minimize(energy, [0.0], tol=1e-14).x[0]
    assert 0.2 < expected < 1.2
    assert abs(phi - expected) < 1e-5
    assert abs(m[0, 0, 2]) < 1e-6



@pytest.mark.parametrize("beta_fl", [0.0, 0.3])
def test_default_junction_tilts_out_of_plane_and_a_field_like_torque_turns_it_in_plane(beta_fl):
    """The default geometry (m0 = u = x, p = y, N = (0, 0, Nz)) at T = 0: the Gilbert form's torque
    balance to first order in (m_y, m_z) is
        -(H_k + Ms Nz) m_z - a H_k m_y + c_DL = 0,    H_k m_y - a (H_k + Ms Nz) m_z - c_FL = 0,
    c_DL = a_J + a b_J, c_FL = b_J - a a_J, a_J = hbar P I / (2 e mu0 Ms t_free area), b_J = beta_fl a_J.
    Without a field-like torque m.p = m_y vanishes to first order (c_FL = -a a_J cancels the damping
    term): V(I) then barely depends on the magnetic parameters (README), which the second half checks
    against r_p's effect."""
    model = get_model("macrospin", beta_fl=beta_fl)
    p = dict(zip(model.parameter_names, model.nominal))
    hk, hd, a = anisotropy_field(model), p["ms"] * model.settings.demag[2], p["alpha"]
    currents = np.array([-250e-6, 250e-6])
    _, m = model.simulate(currents)
    for current, m_end in zip(currents, m[0]):
        a_j = k.HBAR * p["spin_polarization"] * current / (2 * k.E_CHARGE * k.MU0 * p["ms"] * p["t_free"] * p["area"])
        c_dl, c_fl = a_j * (1 + a * beta_fl), a_j * (beta_fl - a)
        m_y, m_z = np.linalg.solve([[-a * hk, -(hk + hd)], [hk, -a * (hk + hd)]], [-c_dl, c_fl])
        assert abs(m_z) > 5e-3 and (abs(m_y) < 1e-12 if beta_fl == 0 else abs(m_y) > 0.04)
        np.testing.assert_allclose(m_end[1:], [m_y, m_z], rtol=0.02, atol=2e-4)  # second order: ~m_z^2
    i = np.array([-500e-6, -250e-6, 250e-6, 500e-6])
    d0 = model.iv(i)[1]

    def change(name, factor):  # largest relative change of dV/dI when one parameter is scaled
        q = model.nominal.copy()
        q[model.parameter_names.index(name)] *= factor
        return np.max(np.abs(model.iv(i, q)[1] / d0 - 1))

    assert change("r_p", 1.1) > 0.05
    magnetic = {name: change(name, factor) for name, factor in
                (("ms", 0.5), ("k_u", 0.5), ("t_free", 0.5), ("area", 0.5), ("spin_polarization", 1.5))}
    if beta_fl == 0:
        assert max(magnetic.values()) < 2e-5, magnetic  # inert: 1e-5 at most (ms)
        np.testing.assert_allclose(d0[::-1], d0, rtol=1e-6)  # odd V(I) (to the tilt's 1e-7): even dV/dI
    else:
        assert min(magnetic[n] for n in ("k_u", "t_free", "area")) > 0.02 and magnetic["spin_polarization"] > 0.01
        assert d0[0] - d0[-1] > 50.0  # ohm: no longer odd (1079 against 1017)

# --- dynamics and statistics --------------------------------------------------------------------------


def trajectory(model, current, steps, heun=False):
    c = coefficients(model.nominal[None], model.settings)[0]
    m = np.array(model.settings.m0)
    aj = c[k.C_AJ] * current
    out = [m]
    for _ in range(steps):
        if heun:
            m = np.array(k.heun_step(*m, 0.0, 0.0, 0.0, aj, c, model.settings.dt))
        else:
            m = np.array(k.rk4_step(*m, aj, c, model.settings.dt))
        out.append(m)
    return np.array(out), c


@pytest.mark.parametrize("heun", [False, True])
def test_energy_decreases_monotonically_and_norm_is_one_without_current_or_temperature(heun):
    model = get_model("macrospin", alpha=0.05, h_ext=(-5e3, 3e4, 2e4), m0=(0.6, -0.8, 0.0), demag=(0.1, 0.2, 0.7),
                      easy_axis=(1, 1, 0.2), dt=1e-12)
    path, c = trajectory(model, 0.0, 3000, heun)
    energy = np.array([k.reduced_energy(*m, c) for m in path])
    assert np.all(np.diff(energy) <= 1e-9 * np.abs(energy).max())
    assert energy[0] - energy[-1] > 0.1 * np.abs(energy).max()  # it did relax
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-14)


def test_thermal_equilibrium_follows_boltzmann():
    """Uniaxial free layer, no demag or field: p(cos) ~ exp(Delta cos^2), Delta = K_u V / (kB T)."""
    temperature, delta = 300.0, 2.0
    volume = 1.5e-9 * 4e-15
    k_u = delta * k.KB * temperature / volume
    model = get_model("macrospin", k_u=k_u, alpha=1.0, demag=(0, 0, 0), temperature=temperature, dt=1e-11,
                      settle_time=40e-9, average_time=1e-11, v_h=math.inf, m0=(0, 1, 0))  # both wells alike
    n_runs = 4096  # junctions, each its own thermal field (a junction's currents share one)
    _, m = model.simulate([0.0], np.repeat(model.nominal[None], n_runs, axis=0),
                          keys=np.array([[j, 0, 0, 0] for j in range(n_runs)]), seed=3)
    c = m[..., 0].ravel()  # 4096 independent runs
    def moment(n, d=delta):
        weight = lambda x: math.exp(d * x * x)  # noqa: E731
        return integrate.quad(lambda x: x**n * weight(x), -1, 1)[0] / integrate.quad(weight, -1, 1)[0]

    m2, m4 = moment(2), moment(4)
    norm = integrate.quad(lambda x: math.exp(delta * x * x), -1, 1)[0]
    se = math.sqrt((m4 - m2 * m2) / c.size)
    assert abs(np.mean(c * c) - m2) < 4 * se, (np.mean(c * c), m2, se)
    cdf = np.vectorize(lambda x: integrate.quad(lambda y: math.exp(delta * y * y), -1, x)[0] / norm)
    assert stats.kstest(c, cdf).pvalue > 1e-3
    # a thermal field off by sqrt(2) in std (temperature doubled, Delta halved) is far outside the bound
    assert abs(m2 - moment(2, delta / 2)) > 8 * se


def test_results_are_a_pure_function_of_seed_junction_and_current():
    """At T > 0 a junction's run at a current is the same whichever other currents, junctions and
    grid position go with it: every current of a junction sees the junction's one thermal field."""
    model = get_model("macrospin", temperature=300.0, settle_time=0.2e-9, average_time=0.1e-9)
    keys = np.array([[5, 1, 2, 0], [5, 1, 2, 1], [7, 0, 0, 0]])
    params = np.repeat(model.nominal[None], 3, axis=0)
    r, m = model.simulate([1e-4, 2e-4], params, keys, seed=9)
    for point, current in enumerate([1e-4, 2e-4]):
        r1, m1 = model.simulate([current], params[1:2], keys[1:2], seed=9)  # alone, one current
        np.testing.assert_array_equal(r1[0, 0], r[1, point])
        np.testing.assert_array_equal(m1[0, 0], m[1, point])
    assert len({r[0, 0], r[1, 0], r[2, 0]}) == 3  # each junction its own noise
    r2, _ = model.simulate([1e-4, 2e-4], params, keys, seed=10)
    assert not np.array_equal(r, r2)


def test_vectorised_lane_blocks_equal_runs_one_at_a_time():
    """The CPU kernel's blocks of ``k.LANES`` deterministic runs (and its padded last block, and a
    block holding a thermal run, which goes task by task) give each run's numbers to the bit."""
    model = get_model("macrospin", settle_time=12e-12, average_time=5e-12, v_h=0.4, h_ext=(0, 5e3, 1e3))
    rng = np.random.default_rng()
    n_junctions, currents = 2 * k.LANES + 3, rng.uniform(-4e-4, 4e-4, 2)  # 2 + 1 full blocks and a short one
    params = model.nominal * np.exp(rng.normal(0, 0.1, (n_junctions, len(model.parameters))))
    keys = rng.integers(0, 50, (n_junctions, 4))
    seed = np.uint64(rng.integers(1 << 40))
    coefs = coefficients(params, model.settings)
    hot = k.LANES // 2 + 1  # a thermal run: its block goes task by task
    coefs[hot] = coefficients(params[hot:hot + 1], model.with_nominal(temperature=300.0).settings)[0]
    r, m = np.full((n_junctions, 2), np.nan), np.full((n_junctions, 2, 3), np.nan)
    k.mean_resistance(currents, coefs, keys, seed, r, m)
    k0, k1 = split_seed(seed)
    r_one, m_one = np.full(r.shape, np.nan), np.full(m.shape, np.nan)
    for t in range(r.size):
        k.run_grid_point(t, currents, coefs, keys, k0, k1, r_one, m_one)
    np.testing.assert_array_equal(r, r_one)
    np.testing.assert_array_equal(m, m_one)
    assert np.unique(r).size == r.size


def test_cuda_kernel_in_simulator_equals_cpu():
    for temperature in (0.0, 300.0):
        model = get_model("macrospin", temperature=temperature, settle_time=10e-12, average_time=6e-12,
                          v_h=0.4, h_ext=(0, 5e3, 1e3))
        params = model.nominal * np.exp(np.random.default_rng(4).normal(0, 0.1, (3, len(model.parameters))))
        keys = np.array([[0, 0, 0, 0], [1, 0, 3, 1], [2, 1, 0, 0]])
        currents = np.array([-3e-4, 0.0, 2e-4])
        r_ref, m_ref = model.simulate(currents, params, keys, seed=11)
        coefs = coefficients(params, model.settings)
        r = np.full(r_ref.shape, np.nan)
        m = np.full(m_ref.shape, np.nan)
        k0, k1 = split_seed(np.uint64(11))
        cuda_devices.macrospin_mean_resistance[1, 9](currents, coefs, keys, k0, k1, r, m)
        np.testing.assert_array_equal(r, r_ref)
        np.testing.assert_array_equal(m, m_ref)


# --- the model in training ----------------------------------------------------------------------------


def quick(**extra):
    return get_model("macrospin", table_points=9, settle_time=0.4e-9, average_time=0.2e-9, **extra)


def test_iv_interpolates_the_tables_and_bind_gives_each_junction_its_own():
    model = quick()
    tables = model.tables()
    v, d = model.iv(tables[0, 0])
    np.testing.assert_allclose(v, tables[0, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d, tables[0, 2], rtol=1e-12)
    currents = model.settings.table_currents
    r, _ = model.simulate(currents)
    np.testing.assert_allclose(tables[0, 1], currents * r[0])
    params = np.stack([model.nominal, model.nominal])  # two distinct junctions
    params[1, model.parameter_names.index("r_p")] *= 1.2
    layer = params[None, None]  # (1 network, 1 unit, 2 members, P)
    table_model, (rows,) = model.bind([layer], seed=0, networks=np.array([4]))
    probe = np.linspace(-7e-4, 7e-4, 15)
    for member in range(2):
        v_bound, _ = table_model.iv(probe, rows[0, 0, member])
        v_direct, _ = model.iv(probe, params[member])
        np.testing.assert_allclose(v_bound, v_direct, rtol=1e-12)
    v_nom, _ = table_model.iv(probe)
    np.testing.assert_allclose(v_nom, model.iv(probe)[0], rtol=1e-12)


@pytest.fixture(scope="module")
def blobs(make_blobs):
    return make_blobs(41, 60, 4, 2)


def tiny_runs(n, seed):
    """A model of short runs at T = 300 K, ``n`` junction rows spread 10 %, their stream keys."""
    model = get_model("macrospin", temperature=300.0, table_points=5, settle_time=10e-12, average_time=6e-12)
    rng = np.random.default_rng(seed)
    params = model.nominal * np.exp(rng.normal(0, 0.1, (n, len(model.parameters))))
    keys = np.stack([np.arange(n), np.zeros(n, int), np.arange(n) % 3, np.arange(n) % 2], axis=1)
    return model, params, keys


def test_tables_in_chunks_with_progress_equal_one_call(monkeypatch, capsys):
    """The runs go in calls of CPU_RUNS_PER_THREAD per thread (a progress bar of junctions between
    them): any split gives the numbers of one call, bit for bit (each run has its own stream)."""
    from spingpu.devices import macrospin

    seed = int(np.random.default_rng().integers(2**63))
    model, params, keys = tiny_runs(23, seed % 1000)
    currents = model.settings.table_currents
    r_one, m_one = np.full((23, 5), np.nan), np.full((23, 5, 3), np.nan)
    k.mean_resistance(currents, coefficients(params, model.settings), keys, np.uint64(seed), r_one, m_one)
    calls = []
    real = k.mean_resistance
    monkeypatch.setattr(macrospin._k, "mean_resistance", lambda *a: calls.append(a[1].shape[0]) or real(*a))
    monkeypatch.setattr(macrospin, "CPU_RUNS_PER_THREAD", 3)  # 3 x threads / 5 currents: a few junctions a call
    r, m = model.simulate(currents, params, keys, seed, progress=True)
    per_call = max(1, 3 * macrospin.numba.get_num_threads() // 5)
    assert calls == [min(per_call, 23 - lo) for lo in range(0, 23, per_call)] and len(calls) > 1
    np.testing.assert_array_equal(r, r_one)
    np.testing.assert_array_equal(m, m_one)
    assert "junction tables" in capsys.readouterr().err  # the bar, cleared at the end


def test_tables_on_a_gpu_device_run_the_cuda_kernel_with_the_cpu_numbers(monkeypatch):
    """On a GPU engine's device the runs go to the CUDA kernel (one thread per run), here in Numba's
    simulator at a tiny size, which equals the CPU kernel bit for bit; a simulator device itself
    keeps the CPU kernel (the simulator would take hours for real tables)."""
    from spingpu.devices import macrospin
    from spingpu.training.cuda_engine import Device

    seed = int(np.random.default_rng().integers(2**63))
    model, params, keys = tiny_runs(3, seed % 1000)
    currents = np.array([-3e-4, 1e-4])
    r_ref, m_ref = model.simulate(currents, params, keys, seed)
    r, m = np.full(r_ref.shape, np.nan), np.full(m_ref.shape, np.nan)
    macrospin.simulate_on_gpu(Device(simulator=True), currents, coefficients(params, model.settings), keys, seed, r, m)
    np.testing.assert_array_equal(r, r_ref)
    np.testing.assert_array_equal(m, m_ref)

    class Gpu:  # what simulate asks of a GPU engine's device
        simulator = False

    launched = []

    def on_gpu(device, current, coefs, keys_part, seed_, out_r, out_m):
        launched.append((device, coefs.shape[0]))
        k.mean_resistance(current, coefs, keys_part, np.uint64(seed_), out_r, out_m)

    monkeypatch.setattr(macrospin, "simulate_on_gpu", on_gpu)
    monkeypatch.setattr(macrospin, "GPU_RUNS_PER_LAUNCH", 4)  # two junctions of 2 currents a launch
    gpu = Gpu()
    r2, m2 = model.simulate(currents, params, keys, seed, device=gpu)
    assert launched == [(gpu, 2), (gpu, 1)]
    np.testing.assert_array_equal(r2, r_ref)
    launched.clear()
    model.simulate(currents, params, keys, seed, device=Device(simulator=True))
    assert launched == []


def test_the_cuda_engines_tabulate_on_their_device(blobs, monkeypatch):
    """Both CUDA engines hand their device to the junction tables (MacrospinModel.bind); the CPU
    engines compute them on the CPU."""
    from spingpu.devices.macrospin import MacrospinModel

    seen = []
    real = MacrospinModel.bind

    def bind(self, layers, seed=0, networks=None, *, device=None, progress=False):
        seen.append(None if device is None else type(device).__name__)
        return real(self, layers, seed, networks, device=device, progress=progress)

    monkeypatch.setattr(MacrospinModel, "bind", bind)
    cfg = TrainConfig(hidden=(2,), epochs=1, lr=0.05, seed=3)
    for backend in (Backend("cuda", simulator=True, block_threads=32),
                    Backend("cuda", simulator=True, cuda_engine="batched"), "cpu", "numpy"):
        seen.clear()
        train(blobs, cfg, networks=[1], model=quick(), backend=backend)
        assert seen and set(seen) == ({"Device"} if isinstance(backend, Backend) else {None}), (backend, seen)


def test_a_stop_during_the_tables_acts_after_the_running_call(monkeypatch):
    """Training computes the tables with Ctrl-C and SIGTERM held back (the first call may compile):
    a stop during a call acts when it returns, and the next calls never start."""
    import os
    import signal
    import time

    from spingpu.devices import macrospin
    from spingpu.signals import deferred_interrupts, stop_signals_raise

    model, params, keys = tiny_runs(12, 5)
    calls = []
    real = k.mean_resistance

    def call(*args):
        calls.append(args[1].shape[0])
        real(*args)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    monkeypatch.setattr(macrospin._k, "mean_resistance", call)
    monkeypatch.setattr(macrospin, "CPU_RUNS_PER_THREAD", 1)
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), stop_signals_raise(), deferred_interrupts():
            model.tables(params, keys, seed=1)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert len(calls) == 2  # of 12 / (threads / 5 currents, at least 1) calls


@pytest.mark.filterwarnings("ignore::spingpu.ExtrapolationWarning")  # counted, and compared
@pytest.mark.parametrize("grad_mode", ["fd_forward", "model"])
def test_engines_train_macrospin_identically(blobs, grad_mode):
    from spingpu.training.batched_engine import BatchedCpuEngine
    from spingpu.training.trainer import _train_batched, extrapolated_fraction

    model = quick(table_i_min=-2e-4, table_i_max=3e-4)  # some readings beyond the tables: counted alike
    cfg = TrainConfig(hidden=(3,), epochs=2, lr=0.05, seed=7, dtype="float64", grad_mode=grad_mode,
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02))
    nets = np.array([0, 4])
    ref = train(blobs, cfg, networks=nets, model=model, backend="numpy")
    fused = train(blobs, cfg, networks=nets, model=model, backend="cpu")
    batched, _, _ = _train_batched(BatchedCpuEngine, blobs, cfg, nets, model, None, False)
    # the CUDA engines in Numba's simulator (tests/conftest.py), on the same bound tables
    gpu_fused = train(blobs, cfg, networks=nets, model=model, backend=Backend("cuda", simulator=True,
                                                                              block_threads=32))
    gpu_batched = train(blobs, cfg, networks=nets, model=model,
                        backend=Backend("cuda", simulator=True, cuda_engine="batched"))
    batched["extrapolated_readings"] = extrapolated_fraction(batched["readings_beyond_table"], batched["diverged"],
                                                             cfg, blobs)
    for name in ("train_loss", "grad_cosine", "test_acc", "extrapolated_readings"):
        np.testing.assert_allclose(fused[name].values, ref[name].values, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batched[name], ref[name].values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gpu_fused[name].values, fused[name].values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gpu_batched[name].values, ref[name].values, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(ref.train_loss.values)) and ref.attrs["device_model"] == "macrospin"
    assert np.all((0.05 < ref.extrapolated_readings) & (ref.extrapolated_readings < 0.95))
    assert json.loads(ref.attrs["device_settings"])["table_points"] == 9


# --- configuration ------------------------------------------------------------------------------------


def test_settings_and_parameters_from_text_lists_and_numbers():
    model = get_model("macrospin", h_ext="0,8e3,0", demag=[0, 0, 1], easy_axis=(0, 0, 2), eta_form="slonczewski",
                      ms=9e5, temperature=77)
    assert model.settings.h_ext == (0.0, 8e3, 0.0) and model.settings.easy_axis == (0.0, 0.0, 1.0)
    assert model.settings.eta_form == "slonczewski" and model.settings.temperature == 77.0
    assert model.nominal[model.parameter_names.index("ms")] == 9e5
    assert MACROSPIN.settings == MacrospinSettings()  # the registered model is unchanged
    assert get_model("macrospin", v_h=math.inf).nominal[-1] == math.inf


SETTABLE = ("allowed: ms, t_free, area, k_u, alpha, spin_polarization, stt_lambda, beta_fl, r_p, tmr0, v_h, "
            "easy_axis, demag, h_ext, reference, m0, eta_form, resistance_form, torque_form, temperature, dt, "
            "settle_time, average_time, table_i_min, table_i_max, table_points")
BAD = [
    (dict(eta_form="slon"), "param eta_form: 'slon'; allowed: constant, slonczewski, lambda"),
    (dict(resistance_form="ohmic"), "param resistance_form: 'ohmic'; allowed: conductance, resistance"),
    (dict(torque_form="ll"), "param torque_form: 'll'; allowed: gilbert, landau_lifshitz"),
    (dict(demag=(0.5, 0.5, 0.5)), "param demag: (0.5, 0.5, 0.5) sums to 1.5; allowed: Nx + Ny + Nz <= 1"),
    (dict(demag=(-0.1, 0.5, 0.5)), "param demag: (-0.1, 0.5, 0.5) is out of range; allowed: 0 <= each component <= 1"),
    (dict(easy_axis=(0, 0, 0)), "param easy_axis: the zero vector has no direction; give a non-zero x,y,z"),
    (dict(h_ext=(1.0, 2.0)), "param h_ext: (1.0, 2.0) is not a vector of 3 finite numbers x,y,z"),
    (dict(m0="a,b,c"), "param m0: ['a', 'b', 'c'] is not a vector of 3 numbers x,y,z"),
    (dict(ms=(1, 2, 3)), "param ms: (1, 2, 3) is not a number"),
    (dict(ms=-1.0), "param ms: -1.0 is out of range; allowed: 10000 <= value <= 1e7 (A/m)"),
    (dict(spin_polarization=1.0), "param spin_polarization: 1.0 is out of range; allowed: 0 < value <= 0.99"),
    (dict(temperature=-1), "param temperature: -1 is out of range; allowed: 0 <= value <= 10000 (K)"),
    (dict(dt=0.0), "param dt: 0.0 is out of range; allowed: 0 < value <= 1e-9 (s)"),
    (dict(table_points=300), "param table_points: 300 is out of range; allowed: 2 <= value <= 256"),
    (dict(table_i_min=1e-3), "param table_i_min: 0.001 must be below table_i_max (0.0006)"),
    (dict(settle_time=1e-3, dt=1e-15), "param dt: 1000001000000 steps per run is too many; "
                                       "allowed: (settle_time + average_time) / dt <= 1000000000"),
    # gamma0 (H_k + 0.8 Ms) dt / sqrt(1 + alpha^2) = 2.211e5 (3.18e3 + 8e6) 2e-12 / 1.0002 = 3.54 rad per step
    (dict(ms=1e7), "param dt: 2e-12 s turns the nominal junction's fastest precession by 3.54 rad per step; "
                   "allowed: at most 1 rad, dt <= 5.65e-13 s"),  # rounded down: the value shown suffices
    (dict(r_q=1.0), "param: unknown parameter 'r_q' for model 'macrospin' (did you mean 'r_p'?); " + SETTABLE),
    (dict(hext=(0.0, 1.0, 0.0)), "param: unknown parameter 'hext' for model 'macrospin' (did you mean 'h_ext'?); "
                                 + SETTABLE),
]


@pytest.mark.parametrize("values,message", BAD)
def test_bad_settings_are_one_line_errors(values, message):
    with pytest.raises(ConfigError) as err:
        get_model("macrospin", **values)
    assert str(err.value) == message


def test_devices_cli_writes_macrospin_curves(tmp_path, capsys):
    from spingpu.cli.main import main

    out = tmp_path / "iv.csv"
    args = ["devices", "--model", "macrospin", "--samples", "2", "--sigma-d2d", "0.1", "--points", "7",
            "--param", "h_ext=0,5e3,0", "--param", "eta_form=slonczewski", "--param", "table_points=9",
            "--param", "settle_time=0.4e-9", "--param", "average_time=0.2e-9", "--csv", str(out)]
    assert main(args) == 0
    rows = np.genfromtxt(out, delimiter=",", names=True, dtype=None, encoding=None)
    nominal = rows[rows["sample"] == -1]
    model = get_model("macrospin", h_ext=(0, 5e3, 0), eta_form="slonczewski", table_points=9, settle_time=0.4e-9,
                      average_time=0.2e-9)
    v, d = model.iv(nominal["current"])
    np.testing.assert_allclose(nominal["voltage"], v, rtol=1e-12)
    np.testing.assert_allclose(nominal["dvdi"], d, rtol=1e-12)
    assert len(rows) == 7 * 5
    assert main(["devices", "--model", "macrospin", "--param", "eta_form=slon"]) == 2
    assert capsys.readouterr().err.strip().endswith("param eta_form: 'slon'; allowed: constant, slonczewski, lambda")


@pytest.mark.parametrize("eta_form, torque_form", [("constant", "gilbert"), ("slonczewski", "gilbert"),
                                                    ("lambda", "landau_lifshitz")])
def test_precession_per_step_takes_the_largest_efficiency_over_the_angle(eta_form, torque_form):
    """The step check bounds the spin torque by eta's largest value over m.p in [-1, 1], found
    here on a grid of m.p from the efficiency formulas written out (DESIGN.md 3.2), not at m.p = 0:
    at P = 0.95 the slonczewski torque in the antiparallel state is 10 times its value there. The
    field's rate is g0 |H| / sqrt(1 + a^2) (precession and damping together), the torques' is
    divided by sqrt(1 + a^2) in the gilbert form and by 1 + a^2 in the landau_lifshitz one."""
    from spingpu.devices.macrospin import precession_per_step

    rng = np.random.default_rng()
    rows = np.repeat(MACROSPIN.nominal[None], 6, axis=0)
    col = dict(zip(MACROSPIN.parameter_names, rows.T))  # views: set in place
    col["spin_polarization"][:] = [0.2, 0.6, 0.9, 0.95, 0.99, rng.uniform(0.1, 0.99)]
    col["stt_lambda"][:] = [0.5, 1.0, 2.0, 3.0, rng.uniform(0.1, 4.0), 1.5]
    col["beta_fl"][:] = rng.normal(0.0, 0.3, 6)
    col["alpha"][:] = rng.uniform(0.001, 10.0, 6)
    settings = MacrospinSettings(eta_form=eta_form, torque_form=torque_form, dt=1e-13, table_i_min=-8e-4,
                                 table_i_max=5e-4)
    mp = np.linspace(-1.0, 1.0, 20_001)[:, None]
    pol, lam2 = col["spin_polarization"], col["stt_lambda"] ** 2
    eta = {"constant": pol + 0 * mp, "slonczewski": pol / (1 + pol ** 2 * mp),
           "lambda": 2 * pol * lam2 / (lam2 + 1 + (lam2 - 1) * mp)}[eta_form].max(axis=0)
    h_max = 2 * col["k_u"] / (k.MU0 * col["ms"]) + 0.8 * col["ms"]
    a_j = k.HBAR * 8e-4 / (2 * k.E_CHARGE * k.MU0 * col["ms"] * col["t_free"] * col["area"])
    root = np.sqrt(1 + col["alpha"] ** 2)
    torque = a_j * eta * (1 + abs(col["beta_fl"]))
    angle = k.G0 * 1e-13 * (h_max / root + (torque / root if torque_form == "gilbert" else torque / root**2))
    np.testing.assert_allclose(precession_per_step(rows, settings), angle, rtol=1e-12)


@pytest.mark.parametrize("torque_form", ["gilbert", "landau_lifshitz"])
def test_the_step_angle_bounds_the_kernels_fastest_motion(torque_form):
    """|dm/dt| dt of the kernel's right-hand side, at random directions m and both ends of the
    table's currents, never exceeds precession_per_step and reaches 40 % of it (the demag field's
    torque is at most half the bound's |H| term); at alpha from 3 to 10 the damping is the fast
    part: a bound by the precession alone, sqrt(1 + a^2) >= 3.2 times smaller, would be exceeded
    (RK4 steps it let through were unstable: R off by 95 ohm at alpha = 3)."""
    from spingpu.devices.macrospin import precession_per_step

    rng = np.random.default_rng()
    for alpha in (0.01, 1.0, rng.uniform(3.0, 10.0)):
        model = get_model("macrospin", alpha=alpha, beta_fl=rng.uniform(-0.5, 0.5), h_ext=(0, 3e4, 0),
                          torque_form=torque_form, dt=1e-13, table_i_min=-3e-3, table_i_max=3e-3)
        (row,) = coefficients(model.nominal[None], model.settings)
        m = rng.normal(size=(20_000, 3))
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        fastest = 0.0
        for current in (-3e-3, 3e-3):
            rate = np.array([k.rhs.py_func(*v, 0.0, 0.0, 0.0, row[k.C_AJ] * current, row) for v in m])
            fastest = max(fastest, np.linalg.norm(rate, axis=1).max() * 1e-13)
        bound = float(precession_per_step(model.nominal, model.settings)[0])
        assert 0.4 * bound < fastest <= bound, (alpha, fastest, bound)


def test_sampled_junctions_too_fast_for_dt_are_warned_of_not_refused():
    """Nominal 0.89 rad per step is allowed; rows with 1.2 and 3.5 times its Ms turn faster than
    1 rad (one beyond RK4's 2.83) and get tables with a one-line warning naming the dt that fits."""
    from spingpu import CoarseTimeStepWarning

    model = get_model("macrospin", ms=2.5e6, table_points=5, settle_time=0.1e-9, average_time=0.05e-9)
    rows = np.repeat(model.nominal[None], 4, axis=0)
    rows[1, 0] *= 1.2
    rows[2, 0] *= 3.5
    # gamma0 (H_k + 0.8 Ms + a_J eta (1 + |beta|)) dt / sqrt(1 + alpha^2), by hand from the defaults
    col = dict(zip(model.parameter_names, rows.T))
    h_k = 2 * col["k_u"] / (k.MU0 * col["ms"])
    a_j = k.HBAR * 0.6e-3 / (2 * k.E_CHARGE * k.MU0 * col["ms"] * col["t_free"] * col["area"])
    angle = k.G0 * (h_k + 0.8 * col["ms"] + a_j * col["spin_polarization"] * (1 + abs(col["beta_fl"]))) * 2e-12 \
        / np.sqrt(1 + col["alpha"] ** 2)
    assert angle[0] < 1.0 < angle[1] < 2.83 < angle[2]
    with pytest.warns(CoarseTimeStepWarning) as record:
        tables = model.tables(rows)
    assert len(record) == 1
    assert str(record[0].message) == (
        f"param dt: 2 of 4 junctions turn by more than 1 rad per step of 2e-12 s (largest {angle[2]:.4g} rad, "
        f"1 beyond RK4's stability limit of 2.83 rad); their I-V tables are less accurate; "
        f"dt <= {math.floor(2e-12 / angle[2] * 1e15) / 1e15:.3g} s resolves them all")  # rounded down (6.4e-13)
    assert np.all(np.isfinite(tables))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.tables(rows[[0, 3]])  # the nominal rows alone: no warning


@pytest.mark.filterwarnings("ignore::spingpu.CoarseTimeStepWarning")
def test_junction_curves_of_any_network_layer_and_unit_are_trainings():
    """At T > 0 each junction's table has its own thermal field, named by (network, layer, unit,
    member): junction_curves given those indices draws the curves training binds, and without
    them (networks 0.., layer 0, unit 0) other ones."""
    from spingpu import junction_curves

    model = get_model("macrospin", table_points=9, temperature=300.0, settle_time=5e-10, average_time=2e-10)
    rng = np.random.default_rng()
    networks = rng.choice(1000, 2, replace=False)
    current = np.linspace(-3e-4, 3e-4, 5)
    params = sample_layer(model, Variability(sigma_d2d=0.1), 3, networks, 1, 3)
    kernel_model, (_, rows) = model.bind([params, params], 3, networks)  # layer 1 is the second
    trained = kernel_model.iv(current, rows[:, :, :, None, :])[0]
    for unit in range(3):
        curves = junction_curves(model, params[:, unit], 3, networks=networks, layer=1, unit=unit)
        np.testing.assert_array_equal(curves(current)[0], trained[:, unit])
    assert np.abs(junction_curves(model, params[:, 1], 3)(current)[0] - trained[:, 1]).max() > 1e-4
    with pytest.raises(ConfigError, match="^networks: 3 indices for 2 samples of params; give one per sample$"):
        junction_curves(model, params[:, 0], 3, networks=[1, 2, 3])


def test_a_thermal_table_is_the_cold_one_shifted_smoothly_not_noise_at_each_knot():
    """At 300 K with the default 1 ns average, the tables of 16 nominal junctions stay within a few
    per mille of the T = 0 table in dV/dI: the grid points of a junction share its thermal field,
    so the slopes (knot differences) do not amplify the averaging's sampling error. With a field
    of its own per knot (before) the same check gave rms 4.6 % and 56 % at worst."""
    cold = get_model("macrospin")
    reference = cold.tables()[0][2]
    hot = cold.with_nominal(temperature=300.0)
    keys = np.array([[j, 0, 0, 0] for j in range(16)])
    seed = int(np.random.default_rng().integers(2**32))
    dvdi = hot.tables(np.repeat(hot.nominal[None], 16, axis=0), keys, seed=seed, warn=False)[:, 2]
    error = dvdi / reference - 1.0  # measured over 10 seeds: rms 0.22-0.38 %, largest 0.9-2.4 %
    assert np.sqrt(np.mean(error**2)) < 0.008 and np.abs(error).max() < 0.06, (seed, error)


@pytest.mark.filterwarnings("ignore::spingpu.ExtrapolationWarning")
def test_the_fused_cuda_engine_tabulates_the_run_once_and_launches_take_slices(blobs, monkeypatch):
    """The fused CUDA engine binds a macrospin run's junctions once, at set-up (its tables, their
    progress and warnings are the run's, as on the CPU), and each launch takes its networks' rows
    into the shared tables: one network per launch gives the numbers of one launch for all."""
    from spingpu.devices.macrospin import MacrospinModel
    from spingpu.training import cuda_engine

    model = quick(table_i_min=-2e-4, table_i_max=3e-4)
    cfg = TrainConfig(hidden=(3,), epochs=1, lr=0.05, seed=7, variability=Variability(sigma_d2d=0.1, sigma_pair=0.02))
    nets = np.array([0, 4, 5])
    backend = Backend("cuda", simulator=True, block_threads=32)
    whole = train(blobs, cfg, networks=nets, model=model, backend=backend)
    bound, real = [], MacrospinModel.bind

    def bind(self, layers, seed=0, networks=None, **kwargs):
        bound.append(list(networks))
        return real(self, layers, seed, networks, **kwargs)

    monkeypatch.setattr(MacrospinModel, "bind", bind)
    monkeypatch.setattr(cuda_engine, "LAUNCH_BLOCKS", 1)
    chunked = train(blobs, cfg, networks=nets, model=model, backend=backend)
    assert bound == [nets.tolist()]
    for name in ("train_loss", "grad_cosine", "test_acc", "extrapolated_readings"):
        np.testing.assert_array_equal(chunked[name].values, whole[name].values, err_msg=name)


@pytest.mark.filterwarnings("ignore::spingpu.ExtrapolationWarning")  # quick()'s narrow tables
def test_a_macrospin_run_whose_tables_do_not_fit_the_gpu_says_how_many_networks_do(blobs):
    """The fused CUDA engine keeps a macrospin run's tables on the device for the whole run: where
    they do not fit, one line says how many networks do, before any table is computed, and that
    many train."""
    import re

    cfg = TrainConfig(hidden=(2,), epochs=1, lr=0.05, seed=7)
    model = quick()
    backend = Backend("cuda", simulator=True, block_threads=32, gpu_memory_bytes=12_000)
    with pytest.raises(ConfigError) as caught:
        train(blobs, cfg, networks=np.arange(40), model=model, backend=backend)
    message = str(caught.value)
    match = re.fullmatch(r"networks: a macrospin run keeps every junction's table on the GPU, ([\d,]+) bytes per "
                         r"network: 40 networks do not fit the 12,000 bytes available with the dataset; at most "
                         r"(\d+) do \(a study: --networks-per-task (\d+)\)", message)
    assert match, message
    per, fits = int(match[1].replace(",", "")), int(match[2])
    assert per == 2 * 2 * model.table_bytes_per_junction and 1 <= fits < 40 and int(match[3]) == fits
    assert np.isfinite(train(blobs, cfg, networks=np.arange(fits), model=model, backend=backend).train_loss).all()
    with pytest.raises(ConfigError, match=f"^networks: .* {fits + 1} networks do not fit"):
        train(blobs, cfg, networks=np.arange(fits + 1), model=model, backend=backend)
