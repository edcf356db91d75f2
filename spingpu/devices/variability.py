"""Hierarchical chip / neuron / pair-member variability (DESIGN.md 4).

For parameter k of a junction, with independent unit-variance draws per level,

    log p_k = log p_nominal,k + s_chip x_chip + s_d2d x_neuron + s_pair x_member   (lognormal; then
                                                         clipped to the parameter's [low, high])
    p_k     = p_nominal,k + scale_k (s_chip x_chip + s_d2d x_neuron + s_pair x_member)  (normal)

x_chip is shared by every junction of one network (one chip), x_neuron by the two junctions of one
neuron, x_member is each junction's own. Hence, for a lognormal parameter, the correlation of
log p between the two members of a pair is (s_chip^2 + s_d2d^2) / (s_chip^2 + s_d2d^2 + s_pair^2)
and between two neurons of one chip s_chip^2 / (s_chip^2 + s_d2d^2 + s_pair^2). Optional
correlations between parameters act within every level. Every draw is a pure function of
(seed, network, layer, unit, member): see :mod:`spingpu.kernels.variability`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError, _short, check_items, check_range, did_you_mean, keyword_checked
from ..kernels import variability as _kernels

MAX_SIGMA = 2.0  # a log-spread of 2 already spans a factor 50 at one standard deviation
LEVELS = ("chip", "d2d", "pair")


class FrozenMapping(dict):
    """A dict that refuses changes once made: the mapping fields of a frozen configuration, so that
    a value cannot skip the checks made when it was built. Hashable; pickles and copies as itself."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("this mapping of a frozen configuration cannot be changed; make a new one "
                        "(dataclasses.replace) with the values wanted")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self):
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return type(self), (dict(self),)


@keyword_checked
@dataclass(frozen=True)
class Variability:
    """Spreads of every junction parameter, per level, and correlations between parameters.

    ``sigma_chip``, ``sigma_d2d`` and ``sigma_pair`` apply to every parameter (standard deviations
    of ln p for lognormal parameters, about the relative spread while small; multiples of the
    parameter's ``spread_scale`` for normal ones). ``sigma_pair`` is each member's own spread, so
    the two junctions of a pair differ by ln p_B - ln p_A of std sqrt(2) * sigma_pair: for a
    measured std s of the A-B difference of neighbouring junctions, give sigma_pair = s / sqrt(2).
    ``per_parameter`` maps a parameter name to its own ``(chip, d2d, pair)`` spreads. Both mappings
    are stored read-only (a Variability, like every configuration object, is frozen).
    ``correlation`` maps a pair of parameter names (a, b) to the correlation rho in (-1, 1) of
    their draws x at each level (chip, neuron, member). The correlation of the junctions' ln p_a
    and ln p_b (of p for normal parameters) is then

        rho_total = rho (c_a c_b + d_a d_b + m_a m_b) / sqrt((c_a^2 + d_a^2 + m_a^2) (c_b^2 + d_b^2 + m_b^2))

    with c, d, m the chip, d2d and pair spreads of each: rho itself where both parameters have the
    same spreads, less where they differ (0 where one varies only per chip and the other only per
    pair member). For a wanted rho_total, give rho = rho_total / (the ratio above), if within (-1, 1).
    """

    sigma_chip: float = 0.0
    sigma_d2d: float = 0.0
    sigma_pair: float = 0.0
    per_parameter: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    correlation: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self):
        put = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen)
        for level in LEVELS:
            put(f"sigma_{level}", check_range(f"sigma_{level}", getattr(self, f"sigma_{level}"), 0.0, MAX_SIGMA))
        if not isinstance(self.per_parameter, Mapping):
            raise ConfigError("per_parameter", "expected a mapping of parameter name to (chip, d2d, pair) spreads, "
                                               f"got {_short(self.per_parameter)}")
        per_parameter = {}
        for name, spreads in self.per_parameter.items():
            if not isinstance(name, str):
                raise ConfigError("per_parameter", f"key {_short(name)} must be a parameter name")
            spreads = check_items(f"per_parameter.{name}", spreads, 3, "three spreads (chip, d2d, pair)")
            per_parameter[name] = tuple(check_range(f"per_parameter.{name}.{level}", s, 0.0, MAX_SIGMA)
                                        for level, s in zip(LEVELS, spreads))
        put("per_parameter", FrozenMapping(per_parameter))
        if not isinstance(self.correlation, Mapping):
            raise ConfigError("correlation", "expected a mapping of (name, name) pairs to correlation coefficients, "
                                             f"got {_short(self.correlation)}")
        correlation = {}
        for pair, rho in self.correlation.items():
            if (not isinstance(pair, tuple) or len(pair) != 2 or not all(isinstance(n, str) for n in pair)
                    or pair[0] == pair[1]):
                raise ConfigError("correlation", f"key {_short(pair)} must be a pair (name, name) of two different parameters")
            if pair[::-1] in correlation:  # one coefficient per pair: which of two would hold is not for us to guess
                raise ConfigError(f"correlation.{pair[0]}.{pair[1]}", f"given twice, also as {pair[::-1]}; give the "
                                                                      "pair once")
            correlation[pair] = check_range(f"correlation.{pair[0]}.{pair[1]}", rho, -1.0, 1.0,
                                            low_open=True, high_open=True)
        put("correlation", FrozenMapping(correlation))

    @property
    def is_zero(self):
        """True when no parameter varies at any level."""
        return (self.sigma_chip == self.sigma_d2d == self.sigma_pair == 0.0 and
                all(s == 0.0 for spreads in self.per_parameter.values() for s in spreads))

    def level_sigmas(self, model):
        """(3, P) array of the chip, d2d and pair spreads of each of ``model``'s parameters."""
        sig = np.empty((3, len(model.parameters)))
        sig[:] = np.array([[self.sigma_chip], [self.sigma_d2d], [self.sigma_pair]])
        for name, spreads in self.per_parameter.items():
            k = _index(model, name, "per_parameter")
            sig[:, k] = spreads
        return sig

    def cholesky(self, model):
        """Lower Cholesky factor of the parameters' correlation matrix (identity if none)."""
        n = len(model.parameters)
        corr = np.eye(n)
        for (a, b), rho in self.correlation.items():
            i, j = _index(model, a, "correlation"), _index(model, b, "correlation")
            corr[i, j] = corr[j, i] = rho
        try:
            return np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            raise ConfigError("correlation", "the correlations given do not form a positive-definite matrix") from None


def _index(model, name, field_name):
    try:
        return model.parameter_names.index(name)
    except ValueError:
        raise ConfigError(field_name, f"unknown parameter {name!r} for model {model.name!r}"
                                      f"{did_you_mean(name, model.parameter_names)}; "
                                      f"allowed: {', '.join(model.parameter_names)}") from None


def kernel_arguments(model, variability):
    """The arrays the sampling kernel takes: nominal, is_log, scale, bounds (2, P: the low and high
    a lognormal parameter is clipped to, -+inf where it has none), sigmas (3, P), cholesky."""
    return (
        model.nominal,
        np.array([p.distribution == "lognormal" for p in model.parameters]),
        np.array([p.scale for p in model.parameters], dtype=np.float64),
        np.array([[-np.inf if p.low is None else p.low for p in model.parameters],
                  [np.inf if p.high is None or p.allow_inf else p.high for p in model.parameters]],
                 dtype=np.float64),  # an allowed inf (v_h: no bias dependence) stays inf
        np.ascontiguousarray(variability.level_sigmas(model)),
        np.ascontiguousarray(variability.cholesky(model)),
    )


MAX_NETWORK_INDEX = 2**32 - 1  # the streams' network counter


def check_network_indices(networks, distinct=True, allow_empty=False):
    """``networks`` as a 1-D int64 array of global network indices in 0 .. 2**32 - 1 (integral
    floats accepted), else ConfigError naming ``networks``; ``distinct``: each index at most once
    (a network is trained once); ``allow_empty``: no index is an answer too."""
    if isinstance(networks, (str, bytes)):
        raise ConfigError("networks", f"expected a sequence of network indices, got {networks!r}")
    try:
        array = np.asarray(networks)
    except (TypeError, ValueError):  # ragged
        array = np.asarray(networks, dtype=object)
    if array.ndim != 1:
        raise ConfigError("networks", f"expected a 1-D sequence of network indices, got shape {array.shape}")
    if array.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int64)
        raise ConfigError("networks", "is empty; give at least one network index")
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ConfigError("networks", f"expected integer network indices, got dtype {array.dtype}")
    if array.size > 10**9:
        raise ConfigError("networks", f"{array.size} networks; allowed: at most 1000000000")
    if array.min() < 0 or array.max() > MAX_NETWORK_INDEX:
        bad = array[(array < 0) | (array > MAX_NETWORK_INDEX)][0]
        raise ConfigError("networks", f"index {int(bad)} is out of range; allowed: 0 <= index <= {MAX_NETWORK_INDEX}")
    array = array.astype(np.int64)
    if distinct:
        unique, counts = np.unique(array, return_counts=True)
        if unique.size != array.size:
            raise ConfigError("networks", f"index {int(unique[counts > 1][0])} is given more than once; "
                                          "each network is trained once")
    return array


def check_seed(seed):
    return check_range("seed", seed, 0, 2**64 - 1, integer=True)


def sample_layer(model, variability, seed, networks, layer, n_units):
    """Junction parameters of one layer, shape (len(networks), n_units, 2, P), float64.

    ``networks`` are global network indices (so any chunk of networks gets the same parameters
    as it would among all of them); ``layer`` in 0..255 is the hidden layer; member 0 is junction
    A of the pair, member 1 junction B.
    """
    from .models import DeviceModel, get_model

    if isinstance(model, str):
        model = get_model(model)
    elif not isinstance(model, DeviceModel):
        raise ConfigError("model", f"expected a device model or its name (spingpu.get_model), got {_short(model)}")
    if not isinstance(variability, Variability):
        raise ConfigError("variability", f"expected a spingpu.Variability, got {_short(variability)}")
    seed = check_seed(seed)
    layer = check_range("layer", layer, 0, 255, integer=True)
    n_units = check_range("n_units", n_units, 1, 2**31 - 1, integer=True)
    networks = np.ascontiguousarray(check_network_indices(networks, distinct=False, allow_empty=True))
    shape = (networks.size, n_units, 2, len(model.parameters))
    _check_memory(8 * math.prod(shape), networks.size, n_units)
    out = np.empty(shape)
    _kernels.sample_layer(np.uint64(seed), networks, layer, n_units, *kernel_arguments(model, variability), out)
    return out


def _check_memory(n_bytes, networks, n_units):
    """ConfigError where the sampled parameters would not fit in the memory available: NumPy may
    hand out more than there is (the kernel's writes would then end the process), not refuse."""
    from ..outputs import size_text
    from ..training.trainer import available_memory

    free = available_memory()
    if free is not None and n_bytes > free:
        raise ConfigError("units", f"{networks} networks x {n_units} units of junction pairs need {size_text(n_bytes)} "
                                   f"of memory and {size_text(free)} is available; sample fewer at a time")


def junction_curves(model, params, seed, *, networks=None, layer=0, unit=0, progress=False):
    """``curves(current)``: V (V) and dV/dI (ohm) of sampled pairs ``params`` (samples, 2, P) at
    ``current`` (A, a number or 1-D), shape (samples, 2, currents), as training evaluates them:
    ``model.bind`` of sample k as the pair of unit ``unit`` of hidden layer ``layer`` of network
    ``networks[k]`` (default k) under ``seed``, i.e. ``sample_layer(model, variability, seed,
    networks, layer, U)[:, unit]`` (``macrospin``: each junction's own table, its thermal field
    drawn from its own stream, which those indices name). ``curves.beyond_table(current)``: True
    where that junction's curve is its own table's end tangent continued linearly (a ``tabulated``
    junction's table reaches i_scale times the measured currents), as training counts readings
    beyond the table; all False for a closed-form model. ``progress``: a progress bar while
    per-junction tables are computed. ``model`` may be given by name (:func:`spingpu.get_model`)."""
    from .models import DeviceModel, get_model

    if isinstance(model, str):
        model = get_model(model)
    elif not isinstance(model, DeviceModel):
        raise ConfigError("model", f"expected a device model or its name (spingpu.get_model), got {_short(model)}")
    seed = check_seed(seed)
    expected = f"(samples >= 1, 2, {len(model.parameters)}) float parameters of {model.name} pairs"
    if (not isinstance(params, np.ndarray) or params.dtype.kind != "f"
            or params.shape[1:] != (2, len(model.parameters)) or params.shape[0] < 1):
        shape = params.shape if isinstance(params, np.ndarray) else type(params).__name__
        raise ConfigError("params", f"expected {expected} (one unit of sample_layer's (N, U, 2, P)), got {shape}")
    may_be_inf = np.array([p.allow_inf for p in model.parameters])
    bad = ~np.isfinite(params) & ~(may_be_inf & (params == np.inf))
    if bad.any():
        raise ConfigError("params", f"expected finite values, found {params[bad][0]}")
    networks = (np.arange(params.shape[0]) if networks is None else
                check_network_indices(networks, distinct=False))
    if networks.size != params.shape[0]:
        raise ConfigError("networks", f"{networks.size} indices for {params.shape[0]} samples of params; give one per sample")
    layer = check_range("layer", layer, 0, 255, integer=True)
    unit = check_range("unit", unit, 0, 2**31 - 1, integer=True)
    kernel_model, (rows,) = model.bind([params[:, None]], seed, networks, progress=progress, first=(layer, unit))
    rows = rows[:, 0, :, None, :]  # (samples, 2, 1, row)

    def currents(current):
        if np.ndim(current) > 1:
            raise ConfigError("current", f"expected a number or a 1-D array of currents (A), got shape "
                                         f"{np.shape(current)}")
        return current

    def curves(current):
        return kernel_model.iv(currents(current), rows)

    curves.beyond_table = lambda current: kernel_model.beyond_table(currents(current), rows)
    return curves
