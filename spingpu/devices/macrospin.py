"""The ``macrospin`` model: LLGS physics, tabulated per junction (DESIGN.md 3.2).

A junction is a free layer (macrospin) over a fixed reference layer; its V(I) is I times the
resistance averaged over ``average_time`` after ``settle_time`` of an LLGS run at constant current
from ``m0`` (equations, units and signs: :mod:`spingpu.kernels.macrospin`). The scalar, physical
quantities that differ from device to device are ordinary :class:`Parameter` s, so variability
(DESIGN.md 4) acts on them; the vectors, forms and numerical settings are fixed
(:class:`MacrospinSettings`), the same for every junction.

Kernels do not integrate the LLGS equation at every training step: each junction gets a table of V
and dV/dI on ``table_points`` currents from ``table_i_min`` to ``table_i_max``, computed by the
batched LLGS kernel, and is evaluated by cubic Hermite interpolation of its table (continued
linearly outside). The knot slopes are the PCHIP slopes of the V knots (Fritsch-Butland, as the
``tabulated`` model), which keep switching steps free of overshoot. :meth:`MacrospinModel.bind`
does this for every junction of a training run at once and returns what the kernels evaluate: a
``macrospin_table`` model whose rows are (offset, knots) into one stacked table.

Conventions against cmtj (https://github.com/LemurPwned/cmtj), which this model reproduces with
``eta_form="lambda"`` (or ``constant``), ``torque_form="landau_lifshitz"``,
``resistance_form="resistance"``, ``v_h=inf`` and the same constants:

- cmtj's ``Ms`` is mu0 Ms in tesla; its a_J = hbar j / (e Ms[T] t) lacks the 1/2 of ours
  (hbar j / (2 e mu0 Ms t)), and its eta = P L^2 / (L^2 + 1 + (L^2 - 1) m.p) is half ours at
  L = 1, so that a_J eta is the same in both: cmtj (P, Lambda) equals ours (P, stt_lambda = Lambda).
- cmtj adds the STT terms to the Landau-Lifshitz form (our ``landau_lifshitz`` torque form), and
  its field-like term is +g0 beta a_J eta m x p: cmtj's ``beta`` is ``-beta_fl``.
- cmtj's ``CLASSIC`` magnetoresistance R = Rp + (Rap - Rp)(1 - m.p)/2 is our ``resistance`` form
  with Rap = r_p (1 + tmr0) and v_h = inf.
- cmtj's defaults are g0 = 220880 m/(A s) and mu0 = 1.2566e-6 (ours 2.211e5, 4 pi 1e-7); set
  them with ``cmtj.constants.PhysicalConstants`` for an exact comparison.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import CoarseTimeStepWarning, ConfigError, bound_text, check_choice, check_range
from ..progress import progress_bar
from ..signals import stop_point
from ..kernels import macrospin as _k
from ..kernels.tabulated import beyond_stacked, stacked_tabulated
from .models import DeviceModel, Parameter

ETA_FORMS = {"constant": _k.ETA_CONSTANT, "slonczewski": _k.ETA_SLONCZEWSKI, "lambda": _k.ETA_LAMBDA}
RESISTANCE_FORMS = {"conductance": _k.R_CONDUCTANCE, "resistance": _k.R_RESISTANCE}
TORQUE_FORMS = {"gilbert": _k.TORQUE_GILBERT, "landau_lifshitz": _k.TORQUE_LL}
MAX_TABLE_POINTS = 256  # knots per junction table
# (junction, current) runs per call of the LLGS kernel, so that progress shows and a stop acts
# between calls (a second or a few on 2 cores): per CPU thread, and per GPU launch
CPU_RUNS_PER_THREAD = 4096
GPU_RUNS_PER_LAUNCH = 1 << 22
MAX_STEPS = 10**9
# Largest angle (rad) the nominal junction's fastest precession may turn in one time step (0.37 with
# the defaults; RK4 is unstable on the imaginary axis beyond 2 sqrt(2)). Sampled junctions beyond it
# are not refused, one extreme draw in a million must not stop a study, but warned of
# (:class:`CoarseTimeStepWarning`).
MAX_NOMINAL_PRECESSION_PER_STEP = 1.0
RK4_STABLE_PRECESSION_PER_STEP = 2.0 * math.sqrt(2.0)

PARAMETERS = (  # allowed nominal values: generous, finite ranges (the README's parameter table)
    Parameter("ms", 1.0e6, "A/m", "free-layer saturation magnetisation Ms", low=1e4, high=1e7),
    Parameter("t_free", 1.5e-9, "m", "free-layer thickness", low=1e-11, high=1e-6),
    Parameter("area", 4.0e-15, "m^2", "junction area (current density J = I / area)", low=1e-19, high=1e-9),
    Parameter("k_u", 2.0e4, "J/m^3", "uniaxial anisotropy energy density along easy_axis", low=0.0, high=1e8,
              low_open=True),
    Parameter("alpha", 0.02, "1", "Gilbert damping", low=1e-5, high=10.0),
    Parameter("spin_polarization", 0.6, "1", "spin polarisation P of the tunnelling current (at most 0.99: "
              "the slonczewski efficiency P / (1 + P^2 m.p) diverges at P = 1 in the antiparallel state)",
              low=0.0, high=0.99, low_open=True),
    Parameter("stt_lambda", 1.0, "1", "Slonczewski asymmetry Lambda (eta_form lambda)", low=1e-3, high=100.0),
    Parameter("beta_fl", 0.0, "1", "field-like over damping-like torque, b_J / a_J", low=-10.0, high=10.0,
              distribution="normal", spread_scale=0.1),
    Parameter("r_p", 1.0e3, "ohm", "parallel-state resistance", low=1.0, high=1e7),
    Parameter("tmr0", 1.5, "1", "zero-bias tunnel magnetoresistance ratio (1.5 = 150 %)", low=0.0, high=100.0,
              low_open=True),
    Parameter("v_h", 0.5, "V", "bias at which the TMR has halved (inf: no bias dependence)",
              low=1e-3, high=1e3, allow_inf=True),
)


def _vector(name, value, *, unit=False, low=None, high=None):
    """A 3-vector of finite floats from a tuple/list/array or 'x,y,z' text."""
    if isinstance(value, str):
        value = value.split(",")
    try:
        vec = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"param {name}", f"{value!r} is not a vector of 3 numbers x,y,z") from None
    if len(vec) != 3 or not all(math.isfinite(v) for v in vec):
        raise ConfigError(f"param {name}", f"{value!r} is not a vector of 3 finite numbers x,y,z")
    for v in vec:
        if (low is not None and v < low) or (high is not None and v > high):
            allowed = " <= ".join([*([bound_text(low)] if low is not None else []), "each component",
                                   *([bound_text(high)] if high is not None else [])])
            raise ConfigError(f"param {name}", f"{vec} is out of range; allowed: {allowed}")
    if unit:
        norm = math.sqrt(sum(v * v for v in vec))
        if norm == 0.0:
            raise ConfigError(f"param {name}", "the zero vector has no direction; give a non-zero x,y,z")
        vec = tuple(v / norm for v in vec)
    return vec


def _choice(name, value, allowed):
    return check_choice(f"param {name}", value, tuple(allowed))


@dataclass(frozen=True)
class MacrospinSettings:
    """The fixed part of a macrospin junction: vectors, forms, temperature and numerics.

    Directions (``easy_axis``, ``reference``, ``m0``) are normalised to unit vectors; ``demag`` is
    the diagonal (Nx, Ny, Nz) of the demagnetisation tensor (each in [0, 1], sum at most 1);
    ``h_ext`` is the external (bias) field in A/m. ``temperature`` in K (0: deterministic RK4; > 0:
    thermal field, stochastic Heun). ``dt``, ``settle_time`` and ``average_time`` in s. The table
    of each junction has ``table_points`` currents from ``table_i_min`` to ``table_i_max`` (A).
    """

    easy_axis: tuple = (1.0, 0.0, 0.0)
    demag: tuple = (0.0, 0.0, 0.8)
    h_ext: tuple = (0.0, 0.0, 0.0)
    reference: tuple = (0.0, 1.0, 0.0)
    m0: tuple = (1.0, 0.0, 0.0)
    eta_form: str = "constant"
    resistance_form: str = "conductance"
    torque_form: str = "gilbert"
    temperature: float = 0.0
    dt: float = 2e-12
    settle_time: float = 5e-9
    average_time: float = 1e-9
    table_i_min: float = -600e-6
    table_i_max: float = 600e-6
    table_points: int = 49

    def __post_init__(self):
        put = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen)
        for key in ("easy_axis", "reference", "m0"):
            put(key, _vector(key, getattr(self, key), unit=True))
        put("h_ext", _vector("h_ext", self.h_ext))
        put("demag", _vector("demag", self.demag, low=0.0, high=1.0))
        if sum(self.demag) > 1.0 + 1e-9:
            raise ConfigError("param demag", f"{self.demag} sums to {sum(self.demag):.6g}; allowed: Nx + Ny + Nz <= 1")
        _choice("eta_form", self.eta_form, ETA_FORMS)
        _choice("resistance_form", self.resistance_form, RESISTANCE_FORMS)
        _choice("torque_form", self.torque_form, TORQUE_FORMS)

        def ranged(name, low, high, **kwargs):  # in the setting's unit, named where refused
            return check_range(f"param {name}", getattr(self, name), low, high, unit=SETTING_UNITS[name], **kwargs)

        put("temperature", ranged("temperature", 0.0, 1e4))
        put("dt", ranged("dt", 0.0, 1e-9, low_open=True))
        put("settle_time", ranged("settle_time", 0.0, 1e-3))
        put("average_time", ranged("average_time", self.dt, 1e-3))
        if self.steps[0] + self.steps[1] > MAX_STEPS:
            raise ConfigError("param dt", f"{self.steps[0] + self.steps[1]} steps per run is too many; "
                                          f"allowed: (settle_time + average_time) / dt <= {MAX_STEPS}")
        put("table_i_min", ranged("table_i_min", -1.0, 1.0))
        put("table_i_max", ranged("table_i_max", -1.0, 1.0))
        if not self.table_i_min < self.table_i_max:
            raise ConfigError("param table_i_min", f"{self.table_i_min} must be below table_i_max ({self.table_i_max})")
        put("table_points", check_range("param table_points", self.table_points, 2, MAX_TABLE_POINTS, integer=True))

    @property
    def steps(self):
        """(settle steps, averaged steps)."""
        return round(self.settle_time / self.dt), max(1, round(self.average_time / self.dt))

    @property
    def table_currents(self):
        """The currents (A) of every junction's table."""
        return np.linspace(self.table_i_min, self.table_i_max, self.table_points)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(MacrospinSettings))
SETTING_UNITS = {"h_ext": "A/m", "temperature": "K", "dt": "s", "settle_time": "s", "average_time": "s",
                 "table_i_min": "A", "table_i_max": "A"}  # the others: unit vectors, factors, words, counts


def precession_per_step(params, settings):
    """Angle (rad) the fastest motion turns in one step ``dt`` of junctions ``params`` (J, P):
    |dm/dt|max dt, from the Landau-Lifshitz form of DESIGN.md 3.2 (:mod:`spingpu.kernels.macrospin`).
    Its field terms m x H + a m x (m x H) are orthogonal, of length |m x H| sqrt(1 + a^2); its
    torques c_DL m x (m x p) + c_FL m x p have length |m x p| sqrt(c_DL^2 + c_FL^2), which is
    a_J eta sqrt((1 + a^2)(1 + beta^2)) for the gilbert form and a_J eta sqrt(1 + beta^2) for
    landau_lifshitz. So

        angle = g0 dt [|H|max sqrt(1 + a^2) + a_J eta_max (1 + |beta_fl|) k] / (1 + a^2),

    k = sqrt(1 + a^2) (gilbert) or 1 (landau_lifshitz), with |H|max = H_k + Ms max(N) + |H_ext|
    bounding the field and a_J eta_max the spin torque at the table's largest |I|, eta_max the
    efficiency's largest value over m.p in [-1, 1] (:func:`spingpu.kernels.macrospin.efficiency`,
    monotonic in m.p: P / (1 - P^2) for slonczewski, P max(1, Lambda^2) for lambda). The damping
    counts: at alpha = 3 a step in which the precession alone, g0 |H| dt / (1 + a^2), turns
    0.95 rad turns the whole motion by 3 rad, where RK4 is unstable (2.8 on the axes). Unit
    renormalisation keeps a too-coarse step finite, so it has to be checked, not noticed."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    col = {p.name: params[:, k] for k, p in enumerate(PARAMETERS)}
    ms, alpha = col["ms"], col["alpha"]
    h_max = 2.0 * col["k_u"] / (_k.MU0 * ms) + ms * max(settings.demag) + math.hypot(*settings.h_ext)
    eta = np.maximum(*(_k.efficiency.py_func(mp, ETA_FORMS[settings.eta_form], col["spin_polarization"],
                                             col["stt_lambda"] ** 2) for mp in (-1.0, 1.0)))
    i_max = max(abs(settings.table_i_min), abs(settings.table_i_max))
    a_j = _k.HBAR * i_max / (2.0 * _k.E_CHARGE * _k.MU0 * ms * col["t_free"] * col["area"])
    root = np.sqrt(1.0 + alpha * alpha)
    torque_factor = root if settings.torque_form == "gilbert" else 1.0
    torque = a_j * eta * (1.0 + np.abs(col["beta_fl"])) * torque_factor
    return _k.G0 * (h_max * root + torque) * settings.dt / (1.0 + alpha * alpha)


def _fitting_dt(dt, angle):
    """The time step that turns ``angle`` (rad per step of ``dt``) by at most the allowed angle,
    rounded down to 3 significant digits (so that the value printed suffices)."""
    bound = dt * MAX_NOMINAL_PRECESSION_PER_STEP / angle
    unit = 10.0 ** (math.floor(math.log10(bound)) - 2)
    return math.floor(bound / unit) * unit


def _check_time_step(nominal, settings):
    angle = float(precession_per_step(nominal, settings)[0])
    limit = MAX_NOMINAL_PRECESSION_PER_STEP
    if not angle <= limit:
        raise ConfigError("param dt", f"{settings.dt:.3g} s turns the nominal junction's fastest precession by "
                                      f"{angle:.3g} rad per step; allowed: at most {limit:g} rad, "
                                      f"dt <= {_fitting_dt(settings.dt, angle):.3g} s")


def _warn_coarse_time_step(params, settings):
    """Warn (once per call) when sampled junctions ``params`` (J, P) turn faster per step than the
    nominal junction is allowed to: their tables are computed, less accurately."""
    angle = precession_per_step(params, settings)
    over = angle > MAX_NOMINAL_PRECESSION_PER_STEP
    if not over.any():
        return
    worst = float(angle.max())
    unstable = int(np.count_nonzero(angle > RK4_STABLE_PRECESSION_PER_STEP))
    beyond = f", {unstable} beyond RK4's stability limit of 2.83 rad" if unstable else ""
    warnings.warn(f"param dt: {int(over.sum())} of {angle.size} junctions turn by more than "
                  f"{MAX_NOMINAL_PRECESSION_PER_STEP:g} rad per step of {settings.dt:.3g} s (largest {worst:.4g} "
                  f"rad{beyond}); their I-V tables are less accurate; dt <= "
                  f"{_fitting_dt(settings.dt, worst):.3g} s resolves them all", CoarseTimeStepWarning, stacklevel=3)


def coefficients(params, settings):
    """(J, N_COEF) coefficient rows of :mod:`spingpu.kernels.macrospin` for parameter rows
    ``params`` (J, P) in the order of ``PARAMETERS`` and :class:`MacrospinSettings` ``settings``."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    col = {p.name: params[:, k] for k, p in enumerate(PARAMETERS)}
    ms, alpha = col["ms"], col["alpha"]
    volume = col["t_free"] * col["area"]
    st = settings
    n_settle, n_average = st.steps
    out = np.empty((params.shape[0], _k.N_COEF))
    out[:, _k.C_U:_k.C_U + 3] = st.easy_axis
    out[:, _k.C_HK] = 2.0 * col["k_u"] / (_k.MU0 * ms)
    out[:, _k.C_DEMAG:_k.C_DEMAG + 3] = ms[:, None] * np.array(st.demag)
    out[:, _k.C_HEXT:_k.C_HEXT + 3] = st.h_ext
    out[:, _k.C_P:_k.C_P + 3] = st.reference
    out[:, _k.C_ALPHA] = alpha
    out[:, _k.C_AJ] = _k.HBAR / (2.0 * _k.E_CHARGE * _k.MU0 * ms * volume)
    out[:, _k.C_BETA] = col["beta_fl"]
    out[:, _k.C_CROSS] = alpha if st.torque_form == "gilbert" else 0.0
    out[:, _k.C_ETA] = ETA_FORMS[st.eta_form]
    out[:, _k.C_POL] = col["spin_polarization"]
    out[:, _k.C_LAM2] = col["stt_lambda"] ** 2
    out[:, _k.C_SIGMA] = np.sqrt(2.0 * alpha * _k.KB * st.temperature / (_k.G0 * _k.MU0 * ms * volume * st.dt))
    out[:, _k.C_RP] = col["r_p"]
    out[:, _k.C_TMR] = col["tmr0"]
    out[:, _k.C_VH] = col["v_h"]
    out[:, _k.C_RFORM] = RESISTANCE_FORMS[st.resistance_form]
    out[:, _k.C_M0:_k.C_M0 + 3] = st.m0
    out[:, _k.C_DT] = st.dt
    out[:, _k.C_SETTLE] = n_settle
    out[:, _k.C_AVERAGE] = n_average
    return out


# What kernels evaluate: a junction's row is (offset, knots) into one stacked (3, K_total) table.
TABLE_MODEL = DeviceModel(
    name="macrospin",
    parameters=(
        Parameter("knot_offset", 0.0, "1", "first column of the junction's knots in the stacked table",
                  low=0.0, distribution="normal", spread_scale=1.0),
        Parameter("knots", 2.0, "1", "number of the junction's knots", low=0.0, low_open=True),
    ),
    scalar=stacked_tabulated,
    beyond=beyond_stacked,
    table=np.array([[-1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]),  # a placeholder; bind() gives the real one
    description="per-junction LLGS tables (I, V, dV/dI), cubic Hermite",
)


def _table_model(table, nominal_offset, knots):
    params = (dataclasses.replace(TABLE_MODEL.parameters[0], nominal=float(nominal_offset)),
              dataclasses.replace(TABLE_MODEL.parameters[1], nominal=float(knots)))
    return dataclasses.replace(TABLE_MODEL, parameters=params, table=table, _compiled=TABLE_MODEL._compiled)


_IV_TABLES = {}  # (settings, parameter rows) -> bind() of MacrospinModel.iv, the last few


@dataclass(frozen=True, eq=False)
class MacrospinModel(DeviceModel):
    """The ``macrospin`` device model: :data:`PARAMETERS` (varied) and ``settings`` (fixed).

    ``point`` is the kernels' view of a junction, its own table (see the module doc); the physical
    parameter rows that :func:`spingpu.sample_layer` draws become table rows through :meth:`bind`.
    """

    settings: MacrospinSettings = MacrospinSettings()

    def with_nominal(self, **values):
        """A copy with nominal parameter values and/or settings replaced (each validated)."""
        fixed = {k: values.pop(k) for k in list(values) if k in SETTING_NAMES}
        model = super().with_nominal(**values) if values else self
        if fixed:
            model = dataclasses.replace(model, settings=dataclasses.replace(self.settings, **fixed),
                                        _compiled=self._compiled)
        _check_time_step(model.nominal, model.settings)
        return model

    @property
    def settable_names(self):
        return self.parameter_names + SETTING_NAMES

    @property
    def point(self):
        return TABLE_MODEL.point

    @property
    def point_row(self):
        return TABLE_MODEL.point_row

    @property
    def point_row_pair(self):
        return TABLE_MODEL.point_row_pair

    @property
    def beyond_row(self):
        return TABLE_MODEL.beyond_row

    @property
    def kernel_width(self):
        return len(TABLE_MODEL.parameters)

    @property
    def kernel_model(self):
        return TABLE_MODEL

    @property
    def table_bytes_per_junction(self):
        return 3 * 8 * self.settings.table_points  # (I, V, dV/dI) float64 at each knot

    @property
    def settings_values(self):
        return dataclasses.asdict(self.settings)

    @property
    def settings_units(self):
        return SETTING_UNITS

    def simulate(self, current, params=None, keys=None, seed=0, *, device=None, progress=False):
        """Mean resistance (J, K) in ohm and final magnetisation (J, K, 3) of junctions with
        parameter rows ``params`` (J, P; default the nominal) at currents ``current`` (K,) in A.

        ``keys`` (J, 4) = (network, layer, unit, member) name each junction's thermal-field stream
        (default: every junction the nominal stream); ``seed`` is the Philox seed. The runs go in
        calls of a few seconds, with a progress bar of junctions when ``progress`` and more than
        one call, and a held Ctrl-C or SIGTERM acts between calls
        (:func:`spingpu.signals.stop_point`). ``device``: a GPU
        (:class:`spingpu.training.cuda_engine.Device`) runs them with the CUDA kernel, one thread
        per run (in Numba's simulator, the CPU kernel runs them: the simulator would take hours).
        """
        params = np.atleast_2d(self.nominal if params is None else np.asarray(params, dtype=np.float64))
        current = np.ascontiguousarray(np.atleast_1d(current), dtype=np.float64)
        if keys is None:
            keys = np.zeros((params.shape[0], 4), dtype=np.int64)
            keys[:, 3] = _k.NOMINAL_MEMBER
        coefs = coefficients(params, self.settings)
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        n = params.shape[0]
        out_r = np.empty((n, current.size))
        out_m = np.empty((n, current.size, 3))
        on_gpu = device is not None and not device.simulator
        runs = GPU_RUNS_PER_LAUNCH if on_gpu else CPU_RUNS_PER_THREAD * numba.get_num_threads()
        per_call = max(1, runs // current.size)
        with progress_bar(progress and n > per_call, n, "junction tables") as bar:
            for lo in range(0, n, per_call):
                part = slice(lo, min(lo + per_call, n))
                if on_gpu:
                    simulate_on_gpu(device, current, coefs[part], keys[part], seed, out_r[part], out_m[part])
                else:
                    _k.mean_resistance(current, coefs[part], keys[part], np.uint64(seed), out_r[part], out_m[part])
                stop_point()
                if bar is not None:
                    bar.update(part.stop - lo)
        return out_r, out_m

    def tables(self, params=None, keys=None, seed=0, warn=True, *, device=None, progress=False):
        """(J, 3, K) tables (I, V, dV/dI) of junctions ``params`` on the settings' current grid:
        V = I times the mean resistance, dV/dI the PCHIP slopes of V (``device``, ``progress``:
        as :meth:`simulate`)."""
        from .tabulated import pchip_slopes

        current = self.settings.table_currents
        if params is not None and warn:
            _warn_coarse_time_step(params, self.settings)
        r, _ = self.simulate(current, params, keys, seed, device=device, progress=progress)
        if not np.all(np.isfinite(r)):
            raise ConfigError("param", "the LLGS integration gives non-finite resistances for these parameters "
                                       "(a stiffer system than dt resolves? try a smaller dt)")
        v = current * r
        out = np.empty((v.shape[0], 3, current.size))
        out[:, 0] = current
        out[:, 1] = v
        out[:, 2] = pchip_slopes(current, v, "param")
        return out

    def bind(self, layers, seed=0, networks=None, *, device=None, progress=False, first=(0, 0)):
        """The table model the kernels evaluate and, per layer, the (N, U, 2, 2) table rows of
        the junctions whose physical parameters are ``layers`` [(N, U, 2, P), ...].

        Junction (n, u, m) of layer l gets its own table, its thermal field drawn from stream
        (networks[n], l, u, m) under ``seed`` (l and u counted from ``first`` = (layer, unit) of
        ``layers[0][:, 0]``); the nominal junction's table comes last.
        ``device``, ``progress``: where the tables are computed, and a progress bar
        (:meth:`simulate`).
        """
        rows, keys = [], []
        for layer, params in enumerate(layers, start=first[0]):
            n, u = params.shape[:2]
            nets = np.arange(n) if networks is None else np.asarray(networks, dtype=np.int64)
            members = np.arange(params.shape[2])
            units = np.arange(u) + (first[1] if layer == first[0] else 0)
            grid = np.stack(np.meshgrid(nets, [layer], units, members, indexing="ij"), axis=-1)
            keys.append(grid.reshape(-1, 4))
            rows.append(params.reshape(-1, params.shape[-1]))
        nominal_key = np.array([[0, 0, 0, _k.NOMINAL_MEMBER]])
        _warn_coarse_time_step(np.concatenate(rows), self.settings)  # the sampled junctions, not the nominal
        tables = self.tables(np.concatenate(rows + [self.nominal[None]]), np.concatenate(keys + [nominal_key]), seed,
                             warn=False, device=device, progress=progress)
        n_knots = tables.shape[2]
        stacked = np.ascontiguousarray(tables.transpose(1, 0, 2).reshape(3, -1))
        bound, start = [], 0
        for params in layers:
            count = int(np.prod(params.shape[:-1]))
            offsets = (start + np.arange(count)) * n_knots
            bound.append(np.stack([offsets, np.full(count, n_knots)], axis=-1).astype(np.float64)
                         .reshape(params.shape[:-1] + (2,)))
            start += count
        return _table_model(stacked, start * n_knots, n_knots), bound

    def iv(self, current, params=None):
        """Voltage (V) and dV/dI (ohm) at ``current`` (A), broadcasting like :meth:`DeviceModel.iv`;
        each distinct parameter row gets its table. At T > 0 identical rows share one table and
        the thermal fields are not those of training (rows are keyed by their rank, seed 0); for
        the junctions of networks as training sees them use :meth:`bind`."""
        table_model, current, rows = self._bound(current, params)
        return table_model.iv(current, rows)

    def beyond_table(self, current, params=None):
        """True where :meth:`iv` at ``current`` (A) lies beyond the junction's table
        (``table_i_min`` to ``table_i_max``), where its curve is continued linearly."""
        table_model, current, rows = self._bound(current, params)
        return table_model.beyond_table(current, rows)

    def _bound(self, current, params):
        """(table model, currents, table rows) of :meth:`iv`'s arguments, broadcast."""
        current, params, shape = self._broadcast(current, params)
        unique, inverse = np.unique(params.reshape(-1, params.shape[-1]), axis=0, return_inverse=True)
        key = (self.settings, unique.tobytes())
        if key not in _IV_TABLES:  # the same junctions are often asked for again (plots, summaries)
            if len(_IV_TABLES) >= 8:
                _IV_TABLES.pop(next(iter(_IV_TABLES)))
            _IV_TABLES[key] = self.bind([unique[None, :, None, :]])
        table_model, (rows,) = _IV_TABLES[key]
        rows = rows[0, inverse.reshape(params.shape[:-1]), 0]
        return table_model, np.broadcast_to(current, shape), np.broadcast_to(rows, shape + (2,))


def simulate_on_gpu(device, current, coefs, keys, seed, out_r, out_m):
    """:func:`spingpu.kernels.macrospin.mean_resistance` of junctions ``coefs`` (J, N_COEF) at
    ``current`` (K,) by the CUDA kernel ``macrospin_mean_resistance`` on ``device`` (one thread
    per (junction, current) run, from the same scalar code), into the host arrays ``out_r``
    (J, K) and ``out_m`` (J, K, 3)."""
    from ..kernels import cuda_devices
    from ..kernels.philox import split_seed

    xp = device.xp
    k0, k1 = split_seed(np.uint64(seed))
    r = xp.full(out_r.shape, np.nan)
    m = xp.full(out_m.shape, np.nan)
    blocks = -(-out_r.size // cuda_devices.THREADS)
    device.launch(cuda_devices.macrospin_mean_resistance, blocks, cuda_devices.THREADS, device.put(current),
                  device.put(np.ascontiguousarray(coefs)), device.put(np.ascontiguousarray(keys)), k0, k1, r, m)
    out_r[...] = device.get(r)
    out_m[...] = device.get(m)


MACROSPIN = MacrospinModel(
    name="macrospin",
    parameters=PARAMETERS,
    scalar=None,
    description="LLGS macrospin free layer, Slonczewski torques, thermal field; per-junction I-V tables "
                "(DESIGN.md 3.2)",
    _compiled=TABLE_MODEL._compiled,
)


def set_cmtj_constants(cmtj):
    """Set cmtj's physical constants (``cmtj.constants.PhysicalConstants``) to spingpu's, for an
    exact comparison; ``PhysicalConstants.resetToDefaults()`` undoes it. Returns ``cmtj``."""
    constants = cmtj.constants.PhysicalConstants
    constants.set_gyromagnetic_ratio(_k.G0)
    constants.set_magnetic_permeability(_k.MU0)
    constants.set_hbar(_k.HBAR)
    constants.set_elementary_charge(_k.E_CHARGE)
    constants.set_boltzmann_constant(_k.KB)
    return cmtj
