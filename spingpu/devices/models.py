"""Device models: named parameters with units, a compiled scalar V(I), and a registry.

A model is a scalar function ``f(current, p_1, ..., p_P[, table]) -> (V, dV/dI)`` written once
with ``numba.njit`` (in ``spingpu.kernels``) together with the description of its parameters.
``DeviceModel.iv`` evaluates it on arrays; the training kernels call it per junction on the CPU
and, compiled as a CUDA device function, on the GPU.

Built in: ``stt_compact`` (DESIGN.md 3.1) and ``tabulated`` (a measured curve, see
:mod:`spingpu.devices.tabulated`). Users add their own with :func:`register_model`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, _short, check_choice, check_range, did_you_mean
from ..kernel_cache import cached_kernel
from ..kernels import pointwise
from ..kernels.stt_compact import prepare_rows as _stt_compact_prepare_rows
from ..kernels.stt_compact import stt_compact as _stt_compact_scalar
from ..kernels.stt_compact import stt_compact_f32 as _stt_compact_f32_scalar
from ..kernels.stt_compact import stt_compact_f32_prepared as _stt_compact_f32_prepared_scalar
from ..kernels.stt_compact import stt_compact_prepared as _stt_compact_prepared_scalar
from ..kernels.stt_compact import stt_compact_prepared_pair as _stt_compact_prepared_pair_scalar

DISTRIBUTIONS = ("lognormal", "normal")
_BUILD_LOCK = threading.RLock()  # re-entrant: a build may ask for the model's other kernels


@dataclass(frozen=True)
class Parameter:
    """One named model parameter.

    ``nominal`` is the nominal value in SI ``unit``; ``low``/``high`` bound the allowed values
    (``low_open``: the lower bound itself is excluded; bounds must be finite numbers or None, and
    a value must always be finite, except ``+inf`` where ``allow_inf`` is set, e.g. for a limit
    such as "no bias dependence"). ``distribution`` says how variability acts
    on it (:mod:`spingpu.devices.variability`): ``lognormal`` (positive quantities; a spread
    sigma is the standard deviation of ln p, about the relative spread for sigma << 1, and the
    nominal is the median) or ``normal`` (angles, offsets; a spread sigma means a standard deviation
    of sigma * ``spread_scale`` in ``unit``). ``spread_scale`` defaults to the declared |nominal|
    (1 for a nominal of 0) and is fixed when the parameter is declared: a new nominal
    (:meth:`DeviceModel.with_nominal`, a sweep) does not change the spread. A sampled lognormal
    value is clipped to [low, high]; a normal one is not.
    """

    name: str
    nominal: float
    unit: str
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    distribution: str = "lognormal"
    spread_scale: float | None = None
    allow_inf: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError("parameter name", f"{self.name!r} is not a valid identifier")
        for text in ("unit", "description"):
            if not isinstance(getattr(self, text), str):
                raise ConfigError(f"{self.name}.{text}", f"expected a string, got {_short(getattr(self, text))}")
        for flag in ("low_open", "allow_inf"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{self.name}.{flag}", f"expected True or False, got {_short(getattr(self, flag))}")
        check_choice(f"{self.name}.distribution", self.distribution, DISTRIBUTIONS)
        if self.distribution == "lognormal" and (self.low is None or self.low < 0 or
                                                 (self.low == 0 and not self.low_open)):
            raise ConfigError(f"{self.name}.low", "a lognormal parameter must be bounded to positive values (low=0, low_open=True)")
        for end in ("low", "high"):
            if getattr(self, end) is not None:
                object.__setattr__(self, end, check_range(f"{self.name}.{end}", getattr(self, end)))
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ConfigError(f"{self.name}.low", f"{self.low} must be below high ({self.high})")
        object.__setattr__(self, "nominal", self.check(self.nominal))
        if self.spread_scale is None:  # fixed now, so that copies with another nominal keep it
            finite = math.isfinite(self.nominal) and self.nominal != 0
            object.__setattr__(self, "spread_scale", abs(self.nominal) if finite else 1.0)
        object.__setattr__(self, "spread_scale", check_range(f"{self.name}.spread_scale", self.spread_scale,
                                                             0.0, low_open=True))

    def check(self, value, field_name=None):
        """``value`` as float if allowed, else ConfigError naming the parameter and range."""
        return check_range(field_name or self.name, value, self.low, self.high, low_open=self.low_open,
                           allow_inf=self.allow_inf, unit=self.unit)

    @property
    def scale(self):
        """Absolute size of a unit spread for a normal parameter (ignored for lognormal ones)."""
        return float(self.spread_scale)


PRECISIONS = ("float64", "float32")  # the formats a model's scalar function may compute in


@dataclass(frozen=True, eq=False)
class DeviceModel:
    """A junction model: parameters, compiled scalar function and, for measured curves, a table.

    ``scalar(current, *params[, table]) -> (V, dV/dI)`` is a ``numba.njit`` function; ``table`` is
    a (3, K) float64 array of (I, V, dV/dI) knots or None. ``beyond(current, *params[, table]) ->
    bool``, also ``numba.njit``, is True where ``scalar`` is not the measured or simulated curve but
    its table's end tangent continued linearly (None: a closed form, valid at every current).
    ``precision`` is the format ``scalar`` computes in, ``"float64"`` or ``"float32"`` (its results
    are float64 either way): training warns where a float32 V's rounding over the finite-difference
    step is a visible part of dV/dI. ``scalar_pair(current_a, *params_a, current_b, *params_b) ->
    (V_a, dV/dI_a, V_b, dV/dI_b)``, optional (``numba.njit``, closed forms only), is ``scalar`` of two
    junctions bit for bit, written to work on both at once: a pair neuron's two readings then give a
    GPU thread two independent chains of arithmetic (:func:`~spingpu.kernels.stt_compact.
    stt_compact_prepared_pair`).
    """

    name: str
    parameters: tuple[Parameter, ...]
    scalar: object
    table: np.ndarray | None = None
    description: str = ""
    beyond: object = None
    precision: str = "float64"
    scalar_pair: object = None
    _compiled: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)

    @property
    def parameter_names(self):
        return tuple(p.name for p in self.parameters)

    @property
    def nominal(self):
        """Nominal parameter vector, float64, in the order of ``parameters``."""
        return np.array([p.nominal for p in self.parameters], dtype=np.float64)

    @property
    def aux_table(self):
        """The table handed to kernels: the measured curve, or a (3, 1) placeholder."""
        return pointwise.EMPTY_TABLE if self.table is None else self.table

    @property
    def settable_names(self):
        """Names ``with_nominal`` (``--param``, ``[model.params]``) takes: the parameters, and a
        model's fixed settings where it has some."""
        return self.parameter_names

    def parameter(self, name):
        for p in self.parameters:
            if p.name == name:
                return p
        raise ConfigError("param", f"unknown parameter {name!r} for model {self.name!r}"
                                   f"{did_you_mean(name, self.settable_names)}; "
                                   f"allowed: {', '.join(self.settable_names)}")

    def with_nominal(self, **values):
        """A copy whose nominal values are replaced (each validated against its range)."""
        changed = {}
        for name, value in values.items():
            p = self.parameter(name)
            if isinstance(value, str) or not np.isscalar(value):
                raise ConfigError(f"param {name}", f"{_short(value)} is not a number")
            changed[name] = dataclasses.replace(p, nominal=p.check(value, f"param {name}"))
        params = tuple(changed.get(p.name, p) for p in self.parameters)
        # Compiled kernels take parameter values as arrays at run time: the copy shares them.
        return dataclasses.replace(self, parameters=params, _compiled=self._compiled)

    def __getstate__(self):
        """Pickled without its compiled functions (a study's worker compiles its own): lighter, and
        numba's dispatchers of nested functions are not found by name (pickle searches every module)."""
        return dict(self.__dict__, _compiled={})

    def compiled(self, key, build):
        """``build()`` once per model (and its :meth:`with_nominal` copies), kept under ``key``;
        once per process also when threads ask at the same time (a Dask worker runs tasks in
        threads: CPython's ``ast.parse``, which the kernel cache calls, is not thread-safe)."""
        try:
            return self._compiled[key]
        except KeyError:
            pass
        with _BUILD_LOCK:
            if key not in self._compiled:
                self._compiled[key] = build()
            return self._compiled[key]

    @property
    def point(self):
        """``point(current, p_row, table) -> (V, dV/dI)``, the kernels' calling convention."""
        return self.compiled("point", lambda: pointwise.make_point(self.scalar, len(self.parameters),
                                                                   self.table is not None))

    @property
    def point_row(self):
        """``point_row(current, params, row, table)``: :attr:`point` of junction ``params[row]``."""
        return self.compiled("point_row", lambda: pointwise.make_point_row(self.scalar, len(self.parameters),
                                                                           self.table is not None))

    @property
    def point_row_pair(self):
        """``point_row_pair(current_a, params, row_a, current_b, row_b, table) -> (V_a, dV/dI_a,
        V_b, dV/dI_b)``: :attr:`point_row` of two junctions, through ``scalar_pair`` where the model
        has one."""
        return self.compiled("point_row_pair", lambda: pointwise.make_point_row_pair(
            self.scalar, self.scalar_pair, len(self.parameters), self.table is not None))

    @property
    def beyond_row(self):
        """``beyond_row(current, params, row, table) -> bool``: ``beyond`` of junction ``params[row]``
        (constantly False for a closed-form model)."""
        return self.compiled("beyond_row", lambda: pointwise.make_beyond_row(self.beyond, len(self.parameters),
                                                                             self.table is not None))

    @property
    def pair_neuron(self):
        """The training kernels' hidden neuron for this model (:mod:`spingpu.kernels.pair_neuron`)."""
        from ..kernels.pair_neuron import make_pair_neuron

        return self.compiled("pair_neuron", lambda: make_pair_neuron(self.point, self.point_row, self.point_row_pair,
                                                                     self.beyond_row))

    @property
    def forward(self):
        """One sample through a network of :attr:`pair_neuron` layers
        (:func:`spingpu.kernels.network.make_forward`): one function for the fused CUDA kernels of
        every layout (compiled once per signature where the simulator runs it on the CPU)."""
        from ..kernels.network import make_forward

        return self.compiled("forward", lambda: make_forward(self.pair_neuron))

    @property
    def settings_values(self):
        """The model's fixed, non-parameter settings by name (none for closed-form models)."""
        return {}

    @property
    def settings_units(self):
        """SI units of the settings that have one, by name (the others are words, counts, factors)."""
        return {}

    @property
    def kernel_model(self):
        """The model whose scalar function the training kernels evaluate: itself, or the model of
        the rows :meth:`bind` returns (a table model for a model tabulated per junction; the
        prepared form of a :class:`PreparedModel`)."""
        return self

    @property
    def kernel_width(self):
        """Length of the junction rows the kernels read (:meth:`bind`'s rows)."""
        return len(self.parameters)

    @property
    def table_bytes_per_junction(self):
        """Bytes of the table :meth:`bind` adds for each junction (0: one shared table, if any)."""
        return 0

    def bind(self, layers, seed=0, networks=None, *, device=None, progress=False, first=(0, 0)):
        """What the kernels evaluate for junctions with parameter rows ``layers`` [(N, U, 2, P), ...]
        of networks ``networks`` sampled with ``seed``: (model, per-layer rows). A closed-form model
        is its own kernel model; a model tabulated per junction (``macrospin``) returns a table
        model and each junction's row into it, its tables computed on ``device`` (a GPU, else
        the CPU) with a progress bar when ``progress``. ``first``: the (layer, unit) of
        ``layers[0][:, 0]`` (for junctions taken out of a network, e.g. one unit's pairs)."""
        return self, layers

    def _broadcast(self, current, params):
        """float64 ``current``, ``params`` (default the nominal) and their broadcast shape."""
        current = _numbers("current", current)
        params = self.nominal if params is None else _numbers("params", params)
        if params.shape[-1:] != (len(self.parameters),):
            raise ConfigError("params", f"last axis must hold the {len(self.parameters)} parameters "
                                        f"{self.parameter_names}, got shape {params.shape}")
        self._check_lognormal(params)
        try:
            return current, params, np.broadcast_shapes(current.shape, params.shape[:-1])
        except ValueError:
            raise ConfigError("current", f"shape {current.shape} does not broadcast against the parameters' "
                                         f"{params.shape[:-1]}") from None

    def _check_lognormal(self, params):
        """ConfigError naming the first lognormal parameter of ``params`` (..., P) outside its range
        (sampling clips them into it; a normal parameter, not clipped, is not checked)."""
        for k, p in enumerate(self.parameters):
            if p.distribution != "lognormal":
                continue
            column = params[..., k]
            high = np.inf if p.high is None else p.high
            inside = ((column > p.low if p.low_open else column >= p.low) & (column <= high) & np.isfinite(column)
                      | (p.allow_inf & (column == np.inf)))
            if not inside.all():
                p.check(float(column[~inside].flat[0]), f"params[..., {k}] ({p.name})")

    def iv(self, current, params=None):
        """Voltage (V) and dV/dI (ohm) at ``current`` (A) for devices with parameters ``params``.

        ``current`` (shape ``S``) and ``params`` (shape ``T + (P,)``, default the nominal vector)
        broadcast against each other like NumPy arrays; results have the broadcast shape, float64.
        """
        flat_i, flat_p, shape = self._flat(current, params)
        v = np.empty(flat_i.shape)
        d = np.empty(flat_i.shape)
        kernel = cached_kernel(self, "iv_kernel", lambda: pointwise.make_iv_kernel(self.point))
        kernel(flat_i, flat_p, self.aux_table, v, d)
        return v.reshape(shape), d.reshape(shape)

    def beyond_table(self, current, params=None):
        """Boolean array, True where :meth:`iv` at ``current`` (A) for ``params`` (broadcast as in
        :meth:`iv`) is not the model's table but its end tangent continued linearly; all False
        for a closed-form model."""
        flat_i, flat_p, shape = self._flat(current, params)
        out = np.zeros(flat_i.shape, dtype=np.bool_)
        if self.beyond is not None:
            kernel = cached_kernel(self, "beyond_kernel", lambda: pointwise.make_beyond_kernel(self.beyond_row))
            kernel(flat_i, flat_p, self.aux_table, out)
        return out.reshape(shape)

    def _flat(self, current, params):
        """(currents (M,), parameter rows (M, P), broadcast shape) of :meth:`iv`'s arguments."""
        current, params, shape = self._broadcast(current, params)
        flat_i = np.ascontiguousarray(np.broadcast_to(current, shape)).reshape(-1)
        flat_p = np.ascontiguousarray(np.broadcast_to(params, shape + params.shape[-1:]))
        return flat_i, flat_p.reshape(flat_i.size, len(self.parameters)), shape


@dataclass(frozen=True, eq=False)
class PreparedModel(DeviceModel):
    """A closed-form model whose training kernels read constants computed once per junction, not
    once per reading (``stt_compact``: 1 / r_p, 1 / v_h^2, 1 / i_c).

    ``prepare(rows, out)`` (``numba.njit``) writes the kernel rows (M, P') of parameter rows
    (M, P); ``kernel_form`` is the model of those rows, whose scalar function gives on them bit for
    bit what ``scalar`` gives on the parameters. :meth:`iv` and :attr:`point` stay those of the
    parameters; :meth:`bind` (what the engines call) prepares the junctions' rows.
    """

    kernel_form: DeviceModel | None = None
    prepare: object = None

    def prepared(self, params):
        """Kernel rows (..., P') of parameter rows ``params`` (..., P)."""
        params = np.asarray(params, dtype=np.float64)
        rows = np.ascontiguousarray(params.reshape(-1, len(self.parameters)))
        out = np.empty((rows.shape[0], self.kernel_width))
        self.prepare(rows, out)
        return out.reshape(params.shape[:-1] + (self.kernel_width,))

    @property
    def kernel_width(self):
        return len(self.kernel_form.parameters)

    @property
    def kernel_model(self):
        """:attr:`kernel_form` with this model's nominal junction prepared (mode ``model``'s)."""
        form = self.kernel_form
        params = tuple(dataclasses.replace(p, nominal=float(value))
                       for p, value in zip(form.parameters, self.prepared(self.nominal)))
        return dataclasses.replace(form, parameters=params, _compiled=form._compiled)

    def bind(self, layers, seed=0, networks=None, *, device=None, progress=False, first=(0, 0)):
        """(:attr:`kernel_model`, each layer's (N, U, 2, P) rows prepared to (N, U, 2, P'))."""
        return self.kernel_model, [self.prepared(params) for params in layers]


def _numbers(field_name, value):
    """``value`` as a float64 array, else ConfigError naming ``field_name``."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field_name, f"expected numbers, got {_short(value)}") from None


# --- the compact STT model ---------------------------------------------------------------------
# Allowed nominal values: generous but finite ranges around the nominal (a few orders of magnitude
# for positive quantities), so that no value reaches the scalar kernel as 0, inf or a number whose
# square under- or overflows (variability then spreads them by at most a few factors e^sigma).

_STT_PARAMETERS = (
    Parameter("r_p", 1e3, "ohm", "parallel-state resistance", low=1.0, high=1e7),
    Parameter("tmr0", 1.5, "1", "zero-bias tunnel magnetoresistance ratio (1.5 = 150 %)",
              low=0.0, high=100.0, low_open=True),
    Parameter("v_h", 0.5, "V", "bias voltage at which the TMR has halved (inf: no bias dependence)",
              low=1e-3, high=1e3, allow_inf=True),
    Parameter("theta0", math.pi / 2, "rad", "free-layer angle at zero current (set by the bias field)",
              low=0.0, high=math.pi, distribution="normal", spread_scale=math.pi / 2),
    Parameter("dtheta", 1.2, "rad", "largest spin-torque rotation of the free layer",
              low=-math.pi, high=math.pi, distribution="normal", spread_scale=1.2),
    Parameter("i_c", 200e-6, "A", "current scale of the spin-torque rotation", low=1e-8, high=1.0),
)

# The training kernels' form of stt_compact: its rows hold 1 / r_p, 1 / v_h^2 and 1 / i_c in place
# of r_p, v_h and i_c (kernels/stt_compact.py). Never sampled: its parameters name the rows' columns
# (positive; 1 / v_h^2 is 0 for v_h = inf), their nominals are set by PreparedModel.kernel_model.
_STT_COMPACT_KERNEL_FORM = DeviceModel(
    name="stt_compact_prepared",
    parameters=(
        Parameter("g_p", 1e-3, "S", "parallel-state conductance 1 / r_p", low=0.0, low_open=True),
        _STT_PARAMETERS[1],
        Parameter("inv_vh2", 4.0, "V^-2", "1 / v_h^2 (0: no bias dependence)", low=0.0, distribution="normal"),
        _STT_PARAMETERS[3],
        _STT_PARAMETERS[4],
        Parameter("inv_ic", 5e3, "A^-1", "1 / i_c", low=0.0, low_open=True),
    ),
    scalar=_stt_compact_prepared_scalar,
    scalar_pair=_stt_compact_prepared_pair_scalar,
    description="stt_compact with its per-junction constants 1 / r_p, 1 / v_h^2, 1 / i_c computed once",
)

STT_COMPACT = PreparedModel(
    name="stt_compact",
    parameters=_STT_PARAMETERS,
    scalar=_stt_compact_scalar,
    description="theta(I) = theta0 - dtheta tanh(I/i_c); TMR(V) = tmr0/(1+(V/v_h)^2); "
                "V G(theta, V) = I (DESIGN.md 3.1)",
    kernel_form=_STT_COMPACT_KERNEL_FORM,
    prepare=_stt_compact_prepare_rows,
)

# The same junction evaluated in float32 (kernels/stt_compact.py): fewer and cheaper operations per
# reading on a GPU, for studies whose read noise and dI dwarf its rounding. Measured against
# stt_compact at 200,000 random junctions (30 % spreads of every parameter, |I| <= 2 mA): V and dV/dI
# within 3.3e-7 and 3.9e-7 relative; over the parameters' whole ranges up to ~2e-6 and ~8e-6, a few
# times the error of rounding the inputs to float32 (tests/test_stt_compact_f32.py).
STT_COMPACT_F32 = PreparedModel(
    name="stt_compact_f32",
    parameters=_STT_PARAMETERS,
    scalar=_stt_compact_f32_scalar,
    description="stt_compact evaluated in single precision (float32): V and dV/dI within ~4e-7 relative "
                "of stt_compact's float64 values near the nominal junction (up to ~2e-6 and ~8e-6 at the "
                "edges of the parameter ranges)",
    precision="float32",
    kernel_form=dataclasses.replace(_STT_COMPACT_KERNEL_FORM, name="stt_compact_f32_prepared",
                                    scalar=_stt_compact_f32_prepared_scalar, scalar_pair=None,
                                    description="stt_compact_f32 with its per-junction constants computed once",
                                    precision="float32", _compiled={}),
    prepare=_stt_compact_prepare_rows,
)

_REGISTRY: dict[str, DeviceModel] = {"stt_compact": STT_COMPACT, "stt_compact_f32": STT_COMPACT_F32}
TABLE_MODELS = ("tabulated",)
MODULE_MODELS = ("macrospin",)  # built in, defined in their own modules (imported when asked for)


_BUILT_IN = dict(_REGISTRY)


def model_attrs(model):
    """What results record of a device model (DESIGN.md 7): its name, nominal parameters and fixed
    settings, their SI units, and its description."""
    return {"device_model": model.name,
            "device_parameters": {p.name: p.nominal for p in model.parameters},
            "device_parameter_units": {p.name: p.unit for p in model.parameters},
            "device_settings": model.settings_values,
            "device_settings_units": model.settings_units,
            "device_description": model.description}


def registered_models(names):
    """The models among ``names`` that :func:`register_model` made in this process (a built-in
    name that it replaced included), each with a fingerprint (sha256 of its pickle), for
    :func:`shipped_models` in another process: a Dask worker of a study, where a registration in a
    script's ``if __name__ == "__main__":`` block, in a notebook or in a study's model file never
    runs. DeviceModels pickle with their functions (by value where those are not importable, as a
    lambda, a function of ``__main__`` or of a model file), not their compiled code."""
    import cloudpickle

    return tuple((hashlib.sha256(cloudpickle.dumps(_REGISTRY[name])).hexdigest(), _REGISTRY[name])
                 for name in dict.fromkeys(names) if name in _REGISTRY and _REGISTRY[name] is not _BUILT_IN.get(name))


_FILE_MODELS = frozenset()  # while a model file runs: the names model files registered, which it may register again
_SHIPPED = {}  # fingerprint -> the first copy of that model this process got: its kernels compile once


def shipped_models(models):
    """{name: model} of ``models`` ((fingerprint, model) pairs of :func:`registered_models` in
    another process), each the copy this process first got of that fingerprint, so that its
    compiled kernels serve every later task and cell. This process's registry is left as it is:
    a later run on the same worker gets only what it ships."""
    return {model.name: _SHIPPED.setdefault(fingerprint, model) for fingerprint, model in models}


def available_models():
    """Names of every model :func:`get_model` knows."""
    return tuple(sorted(set(_REGISTRY) | set(TABLE_MODELS) | set(MODULE_MODELS)))


def get_model(name, *, iv_csv=None, iv_table=None, **nominal):
    """The model called ``name``, with nominal values replaced by ``nominal``.

    ``tabulated`` needs a measured curve: ``iv_csv`` (a CSV path) or ``iv_table`` (two arrays,
    current in A and voltage in V, and optionally a third, the measured dV/dI in ohm).
    """
    if name == "tabulated":
        from .tabulated import tabulated_model_from_csv, tabulated_model

        model = (tabulated_model_from_csv(iv_csv) if iv_csv is not None and iv_table is None
                 else tabulated_model(csv_path=iv_csv, table=iv_table))
    elif name in _REGISTRY or name in MODULE_MODELS:
        if iv_csv is not None or iv_table is not None:
            raise ConfigError("iv-csv", f"a measured curve is only used by the 'tabulated' model, not {name!r}")
        if name == "macrospin":
            from .macrospin import MACROSPIN as model
        else:
            model = _REGISTRY[name]
    else:
        raise ConfigError("model", f"unknown device model {name!r}{did_you_mean(name, available_models())}; "
                                   f"allowed: {', '.join(available_models())}, or a model of your own registered "
                                   "with spingpu.register_model (in a study, by the file its [model] module names; "
                                   "for spingpu train and devices, by --model-file)")
    return model.with_nominal(**nominal) if nominal else model


# Currents at which a registered model's derivative is checked: 1.2 uA to 120 mA, both signs, at
# non-round values (a piecewise model's breakpoints are likely round), and the relative agreement asked.
DERIVATIVE_CHECK_CURRENTS_A = np.outer([1.0, -1.0], 1.234567e-6 * 10.0 ** (np.arange(11) / 2)).ravel()
DERIVATIVE_RTOL = 1e-4
_RELATIVE_STEP = 1e-5  # of the current: truncation ~1e-10 x I^2 V'''/V' relative, rounding ~1e-11 x V/(I V')


def derivative_check_rows(model):
    """Parameter rows at which :func:`derivative_mismatch` checks a model: the nominal one, then each
    parameter moved alone one unit spread either side (lognormal: x e^-1 and x e^1; normal: -+ its
    spread scale), where the value stays in the parameter's range."""
    rows = [np.array(model.nominal, dtype=np.float64)]
    for k, p in enumerate(model.parameters):
        if p.distribution == "lognormal":
            moved = (p.nominal * math.exp(-1.0), p.nominal * math.exp(1.0))
        else:
            moved = (p.nominal - p.scale, p.nominal + p.scale)
        for value in moved:
            try:
                p.check(value)
            except ConfigError:
                continue
            row = rows[0].copy()
            row[k] = value
            rows.append(row)
    return np.array(rows)


def derivative_mismatch(model, currents=DERIVATIVE_CHECK_CURRENTS_A, rows=None):
    """(current, parameter row, dV/dI of the model, central difference of V) at the first of
    ``currents`` (A) and parameter ``rows`` (default :func:`derivative_check_rows`) where the
    model's dV/dI differs from (V(I + h) - V(I - h)) / 2h, h = 1e-5 |I|, by more than
    DERIVATIVE_RTOL of the largest of |dV/dI|, the difference and |V / I|; None where they agree
    (points where any of these is not finite are skipped)."""
    rows = derivative_check_rows(model) if rows is None else np.atleast_2d(np.asarray(rows, dtype=np.float64))
    currents = np.asarray(currents, dtype=np.float64)[:, None]
    up, down = currents + _RELATIVE_STEP * np.abs(currents), currents - _RELATIVE_STEP * np.abs(currents)
    v, d = model.iv(currents, rows)
    with np.errstate(all="ignore"):  # a model may overflow at the largest currents: those points are skipped
        difference = (model.iv(up, rows)[0] - model.iv(down, rows)[0]) / (up - down)
        scale = np.maximum(np.maximum(np.abs(d), np.abs(difference)), np.abs(v / currents))
        bad = np.isfinite(scale) & np.isfinite(d) & (np.abs(difference - d) > DERIVATIVE_RTOL * scale)
    if not bad.any():
        return None
    i, r = np.unravel_index(int(np.argmax(bad.T.ravel())), bad.T.shape)[::-1]  # the first row, then current
    return float(currents[i, 0]), rows[r], float(d[i, r]), float(difference[i, r])


# a model's signature values agree to this relative to each other, by the model's precision (another
# machine's libm may round otherwise: float32's tanhf or cosf by an ulp, 6e-8, moves V by a few)
SIGNATURE_RTOL = {"float64": 1e-9, "float32": 1e-5}


def closed_form_signatures(names):
    """{name: :func:`model_signature`} of the models among ``names`` that this process's registry
    makes (the closed forms: the built-ins and those :func:`register_model` made or replaced),
    with JSON's types: what a study's store records, since a registered model's code, unlike a
    measured curve or a model file, is in no file the study's digest hashes."""
    import json

    return json.loads(json.dumps({name: model_signature(_REGISTRY[name]) for name in dict.fromkeys(names)
                                  if name in _REGISTRY}, default=str))


def model_signature(model):
    """A model's parameters (each its name, nominal value, range, unit and spread law), settings, and
    V (V) and dV/dI (ohm) at the derivative check's 22 currents (rows) and parameter rows
    (:func:`derivative_check_rows`, columns): two models of one signature give one junction."""
    rows = derivative_check_rows(model)
    v, d = (np.empty((DERIVATIVE_CHECK_CURRENTS_A.size, len(rows))) for _ in range(2))
    with np.errstate(all="ignore"):  # the scalar function itself, as :meth:`iv` calls it: no kernel to load
        for i, current in enumerate(DERIVATIVE_CHECK_CURRENTS_A.tolist()):
            for r, row in enumerate(rows.tolist()):
                v[i, r], d[i, r] = model.scalar(current, *row)
    return {"parameters": [repr(p) for p in model.parameters], "settings": model.settings_values,
            "voltage_V": v.tolist(), "dvdi_ohm": d.tolist()}


def signature_difference(recorded, name):
    """What differs between a :func:`closed_form_signatures` entry ``recorded`` and the model the
    registry makes of ``name`` now, in words (its first differing value named), or None."""
    now = closed_form_signatures([name]).get(name)
    if now is None:
        return None  # not a closed form here now: the cells' own checks say what is missing
    rtol = SIGNATURE_RTOL[_REGISTRY[name].precision]
    for key, what in (("parameters", "parameters (names, nominal values, ranges, units or spreads)"),
                      ("settings", "settings")):
        if recorded.get(key) != now[key]:
            return f"its {what} differ"
    for key, what, unit in (("voltage_V", "V", "V"), ("dvdi_ohm", "dV/dI", "ohm")):
        before, after = (np.asarray(x, dtype=np.float64) for x in (recorded.get(key), now[key]))
        if before.shape != after.shape:
            return f"its {what} differ"
        same = np.isclose(before, after, rtol=rtol, atol=0.0, equal_nan=True)
        if not same.all():
            i, r = np.argwhere(~same)[0]
            return (f"its {what} at {DERIVATIVE_CHECK_CURRENTS_A[i]:.4g} A differs ({before[i, r]:.10g} {unit} in "
                    f"the store, {after[i, r]:.10g} {unit} now)")
    return None


def _numba_reason(err, limit=300):
    """``TypeName: line`` of a Numba error: its first line that is not one of the ``Failed in ...
    pipeline`` headers it repeats per nested function (``Unknown attribute 'erf' of type
    Module(scipy.special)``), cut to ``limit`` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next((line for line in lines if not line.startswith("Failed in")), lines[0] if lines else "")
    reason = reason if len(reason) <= limit else reason[:limit - 3] + "..."
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def register_model(name, voltage, parameters, *, dvdi=None, description="", replace=False, check_derivative=True):
    """Add a device model written as a scalar Python function.

    ``voltage(current, p_1, ..., p_P)`` returns the voltage (V) at ``current`` (A); its argument
    names after the current must be the names of ``parameters`` (a sequence of :class:`Parameter`)
    in order. It must be compilable by ``numba.njit``. ``dvdi`` with the same signature gives
    dV/dI in ohm (then ``math`` functions may be used); without it the complex-step derivative is
    used, which evaluates ``voltage`` at a complex current: write it with arithmetic, powers and
    ``cmath`` functions, not ``math.*``.
    The model is compiled for the CPU and, as a CUDA device function, for the GPU like a built-in.

    The model's dV/dI (``dvdi``, or the complex-step derivative) must equal a central difference of
    ``voltage`` to 1e-4 relative at 22 currents from +-1.2 uA to +-120 mA, at the nominal parameters
    and with each parameter moved alone by one unit spread either side (:func:`derivative_mismatch`);
    a derivative that does not is refused, because training would then compare the measured finite
    difference with a wrong exact derivative. (The complex step fails silently where a power ``x**n``
    has a negative base: Numba computes it through exp and log, whose rounding swamps the step;
    write it as a product, ``x * x * x``.) Pass
    ``check_derivative=False`` for a ``dvdi`` that is deliberately not ``voltage``'s derivative.
    """
    import numba

    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError("model name", f"{name!r} is not a valid identifier")
    if not isinstance(description, str):
        raise ConfigError("description", f"expected a string, got {_short(description)}")
    for flag, value in (("replace", replace), ("check_derivative", check_derivative)):
        if not isinstance(value, bool):
            raise ConfigError(flag, f"expected True or False, got {_short(value)}")
    if name in TABLE_MODELS:
        raise ConfigError("model name", f"{name!r} is built in and needs a measured curve; choose another name")
    if name in MODULE_MODELS:
        raise ConfigError("model name", f"{name!r} is built in; choose another name")
    if name in _REGISTRY and not replace and name not in _FILE_MODELS:
        raise ConfigError("model name", f"{name!r} is already registered (pass replace=True to replace it)")
    if isinstance(parameters, Parameter):
        raise ConfigError("parameters", "expected a sequence of spingpu.Parameter, got one Parameter: give "
                                        "[Parameter(...)]")
    try:
        parameters = tuple(parameters)
    except TypeError:
        raise ConfigError("parameters", f"expected a sequence of spingpu.Parameter, got {_short(parameters)}") from None
    if not all(isinstance(p, Parameter) for p in parameters):
        raise ConfigError("parameters", "expected a sequence of spingpu.Parameter")
    names = [p.name for p in parameters]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ConfigError("parameters", f"{twice!r} is named twice; the parameters need distinct names")
    expected = ["current", *names]
    for role, fn in (("voltage", voltage), ("dvdi", dvdi)):
        if fn is None:
            continue
        py = getattr(fn, "py_func", fn)
        if not callable(py):
            raise ConfigError(role, f"expected a function of (current, {', '.join(names)}), got {_short(fn)}")
        try:
            got = list(inspect.signature(py).parameters)
        except (TypeError, ValueError):  # a builtin without a signature
            raise ConfigError(role, f"the signature of {_short(fn)} cannot be read; give a Python function") from None
        if len(got) != len(expected) or got[1:] != expected[1:]:
            raise ConfigError(role, f"signature ({', '.join(got)}) must be (current, "
                                    f"{', '.join(expected[1:])}) to match the parameters")

    def jit(fn):  # numpy error model: 1/0 gives inf (caught below), not an exception in a kernel
        return fn if hasattr(fn, "py_func") else numba.njit(error_model="numpy")(fn)

    voltage, dvdi = jit(voltage), None if dvdi is None else jit(dvdi)
    nominal = [p.nominal for p in parameters]
    # each alone first, as the engines call it (without dvdi, voltage at a complex current): the error
    # is then about its own code
    for role, fn in (("voltage", voltage), ("dvdi", dvdi)):
        if fn is None:
            continue
        try:
            value = fn(1e-4 if dvdi is not None else complex(1e-4, 1e-20), *nominal)
        except Exception as err:
            hint = " (without dvdi, voltage must accept a complex current)" if dvdi is None else ""
            raise ConfigError(role, f"model {name!r}: {role} does not compile with numba{hint}: "
                                    f"{_numba_reason(err)}") from None
        kinds = (int, float) if dvdi is not None else (int, float, complex)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ConfigError(role, f"model {name!r}: {role} must return a real number ({'V' if role == 'voltage' else 'ohm'}), "
                                    f"got {_short(value)} at I = 100 uA and the nominal parameters")
    scalar = pointwise.make_scalar(voltage, dvdi, len(parameters))
    model = DeviceModel(name=name, parameters=parameters, scalar=scalar, description=description)
    try:
        v, d = model.iv(np.array([0.0, 1e-4, -1e-4]))
    except Exception as err:  # numba typing errors are long; one line says what to do
        hint = "" if dvdi is not None else " (without dvdi, voltage must accept a complex current)"
        raise ConfigError("voltage", f"model {name!r} does not compile with numba{hint}: "
                                     f"{_numba_reason(err)}") from None
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        raise ConfigError("voltage", f"model {name!r} is not finite at the nominal parameters near I = 0")
    mismatch = derivative_mismatch(model) if check_derivative else None
    if mismatch is not None:
        current, row, got, difference = mismatch
        how, hint = (("dvdi gives", "pass check_derivative=False if that is intended") if dvdi is not None else
                     ("the complex-step derivative gives", "voltage must be analytic in a complex current: "
                      "abs(), comparisons, min/max and math.* break the complex step, and so does a power "
                      "x**n of a negative x (write x * x * x); or give dvdi"))
        moved = [f"{p.name}={value:.4g}" for p, value, nominal in zip(parameters, row, model.nominal) if value != nominal]
        where = f" with {moved[0]}" if moved else ""
        raise ConfigError("dvdi" if dvdi is not None else "voltage",
                          f"model {name!r}: at I = {current:.4g} A{where} {how} {got:.7g} ohm, a central difference "
                          f"of voltage {difference:.7g} ohm; allowed: within {DERIVATIVE_RTOL:g} relative ({hint})")
    _REGISTRY[name] = model
    return model
