"""Configuration of a batch of MTJ-pair networks and of their training (DESIGN.md 5).

Pre-activation z of a hidden neuron drives junction A with I = i_bias + i_gain * z. The activation
is the read voltage, optionally across a bridge with a reference resistor, scaled:

    h = v_scale * (V_A(I) - r_ref * I)          (``readout="bridge"``; ``direct`` has r_ref = 0)

so that dh/dz = v_scale * i_gain * (dV/dI - r_ref). Gradient modes say which estimate of dh/dz
backpropagation uses (``GRAD_MODES``); the output layer is a digital softmax.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from decimal import Decimal

import numbers

import numpy as np

from ..devices import Readout, Variability
from ..devices.readout import UNITS as READOUT_UNITS
from .. import errors as _errors
from ..errors import ConfigError, _short, check_choice, check_items, check_range, did_you_mean, keyword_checked

UnusedSettingWarning = _errors.UnusedSettingWarning  # where it was defined before spingpu.errors (filters name it so)

FD_MODES = ("fd_forward", "fd_single", "fd_symmetric")  # the finite-difference ones, which take a step dI
MTJ_MODES = FD_MODES + ("model", "oracle")
DIGITAL_MODES = ("tanh", "relu", "sigmoid")
GRAD_MODES = MTJ_MODES + DIGITAL_MODES
OPTIMIZERS = ("sgd", "momentum", "adam")
READOUTS = ("direct", "bridge")
DTYPES = ("float32", "float64")
# Units of the fields of TrainConfig.as_dict() (and of a study's tables) that have one, by dotted key;
# every other field is a number of the dimension 1, a count or a word.
NEURON_UNITS = {"i_bias": "A", "i_gain": "A", "r_ref": "ohm", "v_scale": "1/V", "delta_i": "A"}
CONFIG_UNITS = ({f"neuron.{key}": unit for key, unit in NEURON_UNITS.items()}
                | {f"readout.{key}": unit for key, unit in READOUT_UNITS.items()})


@keyword_checked
@dataclass(frozen=True)
class PairNeuron:
    """How a pre-activation drives a junction pair and how its voltage becomes an activation.

    i_bias (A), i_gain (A per unit of pre-activation), readout ``direct`` or ``bridge`` (subtracts
    r_ref * I, r_ref in ohm), v_scale (1/V), delta_i: the finite-difference step dI (A).
    Defaults put the stt_compact nonlinearity (i_c = 200 uA) across typical pre-activations and
    give activations and derivatives of order one (dh/dz between about 1.0 and 2.0).
    """

    i_bias: float = 0.0
    i_gain: float = 200e-6
    readout: str = "direct"
    r_ref: float = 1000.0
    v_scale: float = 5.0
    delta_i: float = 20e-6

    def __post_init__(self):
        def ranged(name, low, high, **kwargs):  # in the field's unit, named where refused
            return check_range(name, getattr(self, name), low, high, unit=NEURON_UNITS[name], **kwargs)

        _put(self, "i_bias", ranged("i_bias", -1.0, 1.0))
        _put(self, "i_gain", ranged("i_gain", 0.0, 1.0, low_open=True))
        check_choice("readout", self.readout, READOUTS)
        _put(self, "r_ref", ranged("r_ref", 0.0, 1e9))
        _put(self, "v_scale", ranged("v_scale", 0.0, 1e9, low_open=True))
        _put(self, "delta_i", ranged("delta_i", 0.0, 1.0, low_open=True))

    @property
    def r_bridge(self):
        """The resistance subtracted from dV/dI: r_ref for a bridge, 0 for a direct read."""
        return self.r_ref if self.readout == "bridge" else 0.0


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _decimal(text, whole=False):
    """A number written in ASCII decimal (``0.5``, ``1e3``, or inf or nan; not ``1_0`` or other
    scripts' digits, which float() also reads) as a float, or with ``whole`` as an int (``1e3`` is
    1000); else ValueError."""
    text = text.strip(" \t")  # spaces around a number, as step: 100:0.5 (not a line break)
    if not whole and text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        return float(text)  # the range check says what is wrong with it
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    if not whole:
        return float(text)
    value = Decimal(text)
    if value.adjusted() >= 30 or value != value.to_integral_value():
        raise ValueError(text)
    return int(value)


@keyword_checked
@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule per epoch e = 0 .. E - 1 of E: ``constant``; ``step``
    (lr * gamma^floor(e/every)); ``exp`` (lr * gamma^e); ``cosine`` (lr * (1 + cos(pi e / E)) / 2).
    The results number epochs from 1: their epoch k trains with the rate of e = k - 1 (the first
    at lr)."""

    kind: str = "constant"
    every: int = 1
    gamma: float = 1.0

    @classmethod
    def parse(cls, text):
        """``constant``, ``step:EVERY:GAMMA``, ``exp:GAMMA`` or ``cosine``."""
        allowed = "allowed: constant, step:EVERY:GAMMA, exp:GAMMA, cosine"
        parts = str(text).split(":")
        if parts == ["constant"] or parts == ["cosine"]:
            return cls(parts[0])
        try:
            if parts[0] == "step" and len(parts) == 3:
                every, gamma = _decimal(parts[1], whole=True), _decimal(parts[2])
            elif parts[0] == "exp" and len(parts) == 2:
                every, gamma = 1, _decimal(parts[1])
            else:
                raise ValueError
        except ValueError:
            raise ConfigError("lr_schedule", f"{text!r}; {allowed}") from None
        return cls(parts[0], every=every, gamma=gamma)  # range errors name every or gamma

    def __post_init__(self):
        check_choice("lr_schedule", self.kind, ("constant", "step", "exp", "cosine"))
        _put(self, "every", check_range("lr_schedule every", self.every, 1, 10**9, integer=True))
        _put(self, "gamma", check_range("lr_schedule gamma", self.gamma, 0.0, 1.0, low_open=True))
        for name, default, kinds in (("every", 1, ("step",)), ("gamma", 1.0, ("step", "exp"))):
            value = getattr(self, name)
            if self.kind not in kinds and value != default:  # ignored, and lost from the schedule's text
                raise ConfigError(f"lr_schedule {name}", f"{value!r} has no effect on the {self.kind} schedule (only "
                                                         f"{' and '.join(kinds)} {'take' if len(kinds) > 1 else 'takes'} "
                                                         f"{name}); leave it at {default}")

    def factor(self, epoch, epochs):
        if self.kind == "step":
            return self.gamma ** (epoch // self.every)
        if self.kind == "exp":
            return self.gamma ** epoch
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        return 1.0

    def __str__(self):
        """The text :meth:`parse` reads back to this schedule (gamma to its last digit)."""
        gamma = repr(float(self.gamma))
        return {"constant": "constant", "cosine": "cosine", "exp": f"exp:{gamma}",
                "step": f"step:{self.every}:{gamma}"}[self.kind]


@keyword_checked
@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation: loss = (1 - alpha) CE(y) + alpha T^2 KL(p_teacher^T || p_student^T)."""

    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self):
        _put(self, "temperature", check_range("distillation.temperature", self.temperature, 0.0, 100.0,
                                              low_open=True))
        _put(self, "alpha", check_range("distillation.alpha", self.alpha, 0.0, 1.0))


@keyword_checked
@dataclass(frozen=True)
class TrainConfig:
    """Architecture and training of N networks (all share it; each has its own junctions/weights).

    ``hidden`` is a tuple of layer widths (an integer is one layer); ``lr_schedule`` a
    :class:`Schedule` or its text (``constant``, ``step:EVERY:GAMMA``, ``exp:GAMMA``, ``cosine``,
    parsed by :meth:`Schedule.parse`). Numbers are checked and stored converted (``epochs=2.0`` is
    stored as 2; strings are refused), nested settings must be their classes (``neuron`` a
    :class:`PairNeuron`, ``variability`` a Variability, ``readout`` a Readout, ``distillation`` a
    :class:`Distillation` or None). Bad values raise ConfigError naming the field.

    ``batch_size`` None trains on the full batch every step. ``weight_decay`` is an L2 term added
    to the gradient before the optimiser (g' = g + weight_decay w, for weights and biases alike,
    also inside Adam's moments; not decoupled as in AdamW). ``init_gain``: initial weights W = init_gain / sqrt(fan_in) N(0, 1),
    biases 0, from each network's own Philox stream. ``seed`` is the study's 64-bit seed of every
    random number (junctions, weights, read noise, batch order; DESIGN.md 4), not of the dataset's
    splits. ``dtype``: the weights' and activations' float type in the batched engines (the fused
    engines compute in float64 whatever it says; the results' ``weights_dtype`` says which).
    """

    hidden: tuple[int, ...] = (8,)
    grad_mode: str = "fd_forward"
    epochs: int = 100
    batch_size: int | None = None  # None: full batch
    optimizer: str = "adam"
    lr: float = 0.01
    lr_schedule: Schedule = field(default_factory=Schedule)
    weight_decay: float = 0.0
    momentum: float = 0.9
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    init_gain: float = 1.0
    neuron: PairNeuron = field(default_factory=PairNeuron)
    variability: Variability = field(default_factory=Variability)
    readout: Readout = field(default_factory=Readout)
    distillation: Distillation | None = None
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        hidden = self.hidden
        if isinstance(hidden, (numbers.Real, np.ndarray)) and np.ndim(hidden) == 0:
            hidden = (hidden,)  # one hidden layer of that width (a whole float too, as epochs=2.0 is 2)
        hidden = check_items("hidden", hidden, None, "hidden layer widths (a tuple of integers)")
        if not 1 <= len(hidden) <= 16:
            raise ConfigError("hidden", f"{len(hidden)} hidden layers; allowed: 1 to 16")
        _put(self, "hidden", tuple(check_range("hidden", w, 1, 65536, integer=True) for w in hidden))
        check_choice("grad_mode", self.grad_mode, GRAD_MODES)
        _put(self, "epochs", check_range("epochs", self.epochs, 1, 10**6, integer=True))
        if self.batch_size is not None:
            _put(self, "batch_size", check_range("batch_size", self.batch_size, 1, 10**7, integer=True))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _put(self, "lr", check_range("lr", self.lr, 0.0, 100.0, low_open=True))
        if isinstance(self.lr_schedule, str):
            _put(self, "lr_schedule", Schedule.parse(self.lr_schedule))
        _check_type("lr_schedule", self.lr_schedule, Schedule,
                    "a Schedule or text: constant, step:EVERY:GAMMA, exp:GAMMA, cosine")
        _put(self, "weight_decay", check_range("weight_decay", self.weight_decay, 0.0, 10.0))
        _put(self, "momentum", check_range("momentum", self.momentum, 0.0, 1.0, high_open=True))
        betas = check_items("adam_betas", self.adam_betas, 2, "two numbers (beta1, beta2)")
        _put(self, "adam_betas", tuple(check_range(f"adam_betas[{k}]", b, 0.0, 1.0, high_open=True)
                                       for k, b in enumerate(betas)))
        _put(self, "adam_eps", check_range("adam_eps", self.adam_eps, 0.0, 1.0, low_open=True))
        _put(self, "init_gain", check_range("init_gain", self.init_gain, 0.0, 100.0, low_open=True))
        _check_type("neuron", self.neuron, PairNeuron, "a spingpu.PairNeuron")
        _check_type("variability", self.variability, Variability, "a spingpu.Variability")
        _check_type("readout", self.readout, Readout, "a spingpu.Readout")
        if self.distillation is not None:
            _check_type("distillation", self.distillation, Distillation, "a Distillation or None")
        _put(self, "seed", check_range("seed", self.seed, 0, 2**64 - 1, integer=True))
        # numpy.float32, numpy.dtype("float64"); not a number such as numpy.float32(3), which np.dtype also reads
        if isinstance(self.dtype, (type, np.dtype)):
            try:
                _put(self, "dtype", np.dtype(self.dtype).name)
            except TypeError:
                pass
        check_choice("dtype", self.dtype, DTYPES)

    @property
    def is_mtj(self):
        return self.grad_mode in MTJ_MODES

    def as_dict(self):
        """Plain nested dict (for attributes of results and study files); :meth:`from_dict` reads it back."""
        out = asdict(self)
        out["lr_schedule"] = str(self.lr_schedule)
        out["variability"]["per_parameter"] = dict(self.variability.per_parameter)
        out["variability"]["correlation"] = {f"{a},{b}": r for (a, b), r in self.variability.correlation.items()}
        return out

    @classmethod
    def from_dict(cls, values):
        """The TrainConfig of :meth:`as_dict`'s ``values``, or of its JSON text (a result's ``config``
        attribute: ``TrainConfig.from_dict(results.attrs["config"])`` is the configuration that
        trained it); every value is checked as when the configuration was built."""
        import json

        if isinstance(values, str):
            try:
                values = json.loads(values)
            except ValueError as err:
                raise ConfigError("config", f"not the JSON text of a configuration: {err}") from None
        if not isinstance(values, Mapping):
            raise ConfigError("config", f"expected a mapping (TrainConfig.as_dict()) or its JSON text, got {_short(values)}")

        def known(kind, mapping, where):
            names = [f.name for f in fields(kind)]
            unknown = [k for k in mapping if k not in names]
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}", f"unknown setting{did_you_mean(unknown[0], names)}; "
                                                           f"allowed: {', '.join(names)}")
            return dict(mapping)

        kwargs = known(cls, values, "config")
        for key, kind in {"neuron": PairNeuron, "readout": Readout, "distillation": Distillation}.items():
            if isinstance(kwargs.get(key), Mapping):
                kwargs[key] = kind(**known(kind, kwargs[key], f"config.{key}"))
        if isinstance(kwargs.get("variability"), Mapping):
            var = known(Variability, kwargs["variability"], "config.variability")
            correlation = var.get("correlation", {})
            if isinstance(correlation, Mapping):
                var["correlation"] = {tuple(k.split(",")) if isinstance(k, str) else k: r for k, r in correlation.items()}
            kwargs["variability"] = Variability(**var)
        return cls(**kwargs)  # lists (hidden, adam_betas) and the schedule's text are converted there


# What a conditional setting can need: name -> (whether a TrainConfig meets it, the need in words)
NEEDS = {
    "mtj": (lambda c: c.is_mtj, f"an MTJ grad_mode ({', '.join(MTJ_MODES)}; {', '.join(DIGITAL_MODES)} "
                                "networks have no junctions)"),
    "dI": (lambda c: c.grad_mode in FD_MODES, f"a finite-difference grad_mode ({', '.join(FD_MODES)})"),
    "gaussian": (lambda c: c.readout.noise_model == "gaussian", 'noise_model = "gaussian" (johnson_shot sets its own)'),
    "johnson_shot": (lambda c: c.readout.noise_model == "johnson_shot", 'noise_model = "johnson_shot"'),
    "adc": (lambda c: c.readout.adc_bits > 0, "adc_bits > 0"),
    "dac": (lambda c: c.readout.dac_bits > 0, "dac_bits > 0"),
    "bridge": (lambda c: c.neuron.readout == "bridge", 'readout = "bridge"'),
    "momentum": (lambda c: c.optimizer == "momentum", 'optimizer = "momentum"'),
    "adam": (lambda c: c.optimizer == "adam", 'optimizer = "adam"'),
    "spread": (lambda c: not c.variability.is_zero,
               "a spread above 0 (sigma_chip, sigma_d2d, sigma_pair or per_parameter)"),
}
# A setting that acts only in some configurations: dotted key -> the NEEDS it has (all of them).
# Every junction, drive and readout setting needs junctions: a digital baseline has none.
CONDITIONAL_SETTINGS = {
    **{f"neuron.{name}": ("mtj",) for name in ("i_bias", "i_gain", "readout", "v_scale")},
    "neuron.r_ref": ("mtj", "bridge"),
    "neuron.delta_i": ("dI",),  # a finite-difference grad_mode is an MTJ one
    **{f"variability.{name}": ("mtj",) for name in ("sigma_chip", "sigma_d2d", "sigma_pair", "per_parameter")},
    "variability.correlation": ("mtj", "spread"),  # correlates the spreads' draws
    **{f"readout.{name}": ("mtj",) for name in ("noise_model", "adc_bits", "dac_bits")},
    "readout.read_noise": ("mtj", "gaussian"),
    "readout.temperature": ("mtj", "johnson_shot"),
    "readout.bandwidth": ("mtj", "johnson_shot"),
    "readout.adc_range": ("mtj", "adc"),
    "readout.dac_range": ("mtj", "dac"),
    "training.momentum": ("momentum",),
    "training.adam_betas": ("adam",),
    "training.adam_eps": ("adam",),
}


def unmet_needs(config, key):
    """Names (:data:`NEEDS`) of what the setting ``key`` needs and ``config`` lacks; empty where
    the setting acts (or is not conditional)."""
    return tuple(need for need in CONDITIONAL_SETTINGS.get(key, ()) if not NEEDS[need][0](config))


def needs_text(names):
    """The needs ``names`` in words, joined by "and"."""
    return " and ".join(NEEDS[name][1] for name in names)


def setting_value(config, key):
    """(value, default) of the setting ``key`` ("section.name", section training for the
    TrainConfig's own fields) of ``config``."""
    section, name = key.split(".")
    holder = config if section == "training" else getattr(config, section)
    spec = next(f for f in fields(holder) if f.name == name)
    return getattr(holder, name), spec.default if spec.default is not MISSING else spec.default_factory()


def unused_settings(config):
    """[(dotted key, value, what it needs)] of the settings of ``config`` that differ from their
    defaults and do nothing in it (:data:`CONDITIONAL_SETTINGS`), e.g. a read_noise with
    johnson_shot noise or in a tanh network."""
    out = []
    for key in CONDITIONAL_SETTINGS:
        value, default = setting_value(config, key)
        unmet = unmet_needs(config, key)
        if value != default and unmet:
            out.append((key, value, needs_text(unmet)))
    return out


def effective_config(config):
    """``config`` with every setting that does nothing in it (:func:`unused_settings`) at its
    default: two configurations with the same effective configuration train the same networks
    to the same numbers."""
    changes, nested = {}, {}
    for key, _, _ in unused_settings(config):
        section, name = key.split(".")
        (changes if section == "training" else nested.setdefault(section, {}))[name] = setting_value(config, key)[1]
    for section, values in nested.items():
        changes[section] = replace(getattr(config, section), **values)
    return replace(config, **changes) if changes else config


def _put(obj, name, value):
    """Store a validated (converted) value on a frozen dataclass."""
    object.__setattr__(obj, name, value)


def _check_type(field_name, value, kind, expected):
    if not isinstance(value, kind):
        raise ConfigError(field_name, f"expected {expected}, got {type(value).__name__} {_short(value)}")
