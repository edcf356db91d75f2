"""Readout chain of a junction: DAC on the drive current, read noise, ADC on the voltage.

The equations are those of :mod:`spingpu.kernels.readout`; this module holds the validated
configuration and NumPy ufuncs compiled from the same scalar functions.
"""

from __future__ import annotations


import math
import numbers
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..errors import ConfigError, _short, check_choice, check_range, keyword_checked
from ..kernels import readout as _kernels

NOISE_MODELS = ("gaussian", "johnson_shot")
MAX_BITS = 24


def _volts_or_amps(field, value):
    """``value`` as a float64 array (what the converters take), else ConfigError naming ``field``."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, f"expected numbers, got {_short(value)}") from None


@cache
def _ufuncs():
    import numba

    quantize = numba.vectorize(["float64(float64, float64, float64, int64)"])(_kernels.quantize.py_func)
    johnson = numba.vectorize(["float64(float64, float64, float64, float64, float64)"])(
        _kernels.johnson_shot_std.py_func)
    return quantize, johnson


UNITS = {"read_noise": "V", "temperature": "K", "bandwidth": "Hz", "adc_range": "V", "dac_range": "A"}
"""SI units of the :class:`Readout` fields that have one (the others are counts or words)."""
# the widest ADC (V) and DAC (A) ranges taken (wider ones are unit slips; within them
# (hi - lo) / (2**bits - 1) is finite); currents above 1 A are out of range as for i_bias
CONVERTER_LIMITS = {"adc": 1e3, "dac": 1.0}


@keyword_checked
@dataclass(frozen=True)
class Readout:
    """How a voltage is read and a current driven.

    noise_model   ``gaussian``: additive noise of std ``read_noise`` (V);
                  ``johnson_shot``: thermal and shot noise of the tunnel junction at ``temperature``
                  (K) over ``bandwidth`` (Hz), sigma_V = sqrt(B (r_d^2 S_I + 4 kB T r_bridge))
                  with S_I = 2 q |I| coth(q |I| r_d / 2 kB T) and r_d = dV/dI: the bridge
                  resistor's Johnson noise adds in quadrature (:mod:`spingpu.kernels.readout`).
    adc_bits      0 for an ideal read, else the ADC's bits over ``adc_range`` = (lo, hi) in V
                  (within +-1000 V).
    dac_bits      0 for an ideal drive, else the current DAC's bits over ``dac_range`` in A
                  (within +-1 A). The DAC sets a pair's current I; the finite-difference step dI
                  is added after it.

    A converter has 2**bits levels from lo to hi inclusive, step (hi - lo) / (2**bits - 1); values
    go to the nearest level, beyond the range to its ends, NaN stays NaN
    (:func:`spingpu.kernels.readout.quantize`).
    """

    noise_model: str = "gaussian"
    read_noise: float = 0.0
    temperature: float = 300.0
    bandwidth: float = 1e6
    adc_bits: int = 0
    adc_range: tuple[float, float] = (-1.0, 1.0)
    dac_bits: int = 0
    dac_range: tuple[float, float] = (-1e-3, 1e-3)

    def __post_init__(self):
        put = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen)
        check_choice("noise_model", self.noise_model, NOISE_MODELS)
        put("read_noise", check_range("read_noise", self.read_noise, 0.0, 1.0, unit=UNITS["read_noise"]))
        put("temperature", check_range("temperature", self.temperature, 0.0, 1e4, unit=UNITS["temperature"]))
        put("bandwidth", check_range("bandwidth", self.bandwidth, 0.0, 1e12, low_open=True, unit=UNITS["bandwidth"]))
        for name in ("adc", "dac"):
            put(f"{name}_bits", check_range(f"{name}_bits", getattr(self, f"{name}_bits"), 0, MAX_BITS, integer=True))
            limit, unit = CONVERTER_LIMITS[name], UNITS[f"{name}_range"]
            allowed = f"-{limit:g} <= low < high <= {limit:g} ({unit})"
            lo, hi = _pair(f"{name}_range", getattr(self, f"{name}_range"), allowed)
            if not lo < hi:
                raise ConfigError(f"{name}_range", f"lower end {lo} must be below upper end {hi}")
            if not -limit <= lo < hi <= limit:
                raise ConfigError(f"{name}_range", f"({lo:g}, {hi:g}) is out of range; allowed: {allowed}")
            put(f"{name}_range", (lo, hi))

    @property
    def is_ideal(self):
        return self.noise_std_is_zero and self.adc_bits == 0 and self.dac_bits == 0

    @property
    def noise_std_is_zero(self):
        return (self.read_noise == 0.0) if self.noise_model == "gaussian" else False

    def noise_std(self, current, dv_di, r_bridge=0.0):
        """Read-noise standard deviation (V) of a junction carrying ``current`` (A) with
        differential resistance ``dv_di`` (ohm), read through a bridge resistor ``r_bridge``
        (ohm; 0 for a direct read)."""
        if self.noise_model == "gaussian":
            return np.broadcast_to(np.float64(self.read_noise), np.broadcast_shapes(np.shape(current), np.shape(dv_di)))
        return _ufuncs()[1](current, dv_di, float(r_bridge), float(self.temperature), float(self.bandwidth))

    def read(self, voltage, current, dv_di, normals):
        """The ADC's output for a direct read of a junction at ``voltage`` (V), ``current`` (A) and
        differential resistance ``dv_di`` (ohm), with standard normals ``normals``."""
        return self.adc(voltage + self.noise_std(current, dv_di) * normals)

    def adc(self, value):
        """The ADC's output (V) for an analog input ``value`` (V)."""
        lo, hi = self.adc_range
        return _ufuncs()[0](_volts_or_amps("value", value), float(lo), float(hi), int(self.adc_bits))

    def drive(self, current):
        """The DAC's output current (A) for a requested ``current``."""
        lo, hi = self.dac_range
        return _ufuncs()[0](_volts_or_amps("current", current), float(lo), float(hi), int(self.dac_bits))


def _pair(field_name, value, allowed):
    """(low, high) of a converter's range ``value``, two finite numbers (``allowed``: the range's
    limits, named where an end is NaN or infinite)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        lo, hi = value
    except (TypeError, ValueError):
        raise ConfigError(field_name, f"expected two numbers (low, high), got {_short(value)}") from None
    for end in (lo, hi):
        if isinstance(end, numbers.Real) and not isinstance(end, bool) and not math.isfinite(end):
            raise ConfigError(field_name, f"expected finite numbers, got {end}; allowed: {allowed}")
    return check_range(f"{field_name}[0]", lo), check_range(f"{field_name}[1]", hi)
