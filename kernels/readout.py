"""Reading a junction: read noise, ADC and DAC as scalar functions (DESIGN.md 4).

Thermal (Johnson-Nyquist) and shot noise of a junction of resistance R = V / I carrying I, read
over a bandwidth B, give the voltage noise standard deviation

    sigma_V = sqrt(4 k_B T R B + 2 q |I| B R^2).

A converter with ``bits`` bits and range [lo, hi] has 2**bits levels lo + c * lsb, c = 0 ..
2**bits - 1, lsb = (hi - lo) / (2**bits - 1); a value is rounded to the nearest level and clipped
to the range (mid-tread quantiser, no dither).
"""

import math

import numba

K_B = 1.380649e-23  # J/K, exact (SI 2019)
Q_E = 1.602176634e-19  # C, exact (SI 2019)


@numba.njit(cache=True)
def johnson_shot_std(voltage, current, temperature, bandwidth):
    """Voltage noise std (V) of a junction at (V, I) at temperature (K) over bandwidth (Hz)."""
    if current == 0.0:
        return 0.0
    r = abs(voltage / current)
    return math.sqrt(4.0 * K_B * temperature * r * bandwidth + 2.0 * Q_E * abs(current) * bandwidth * r * r)


@numba.njit(cache=True)
def quantize(value, lo, hi, bits):
    """Nearest of the 2**bits levels spanning [lo, hi]; ``bits <= 0`` passes ``value`` through."""
    if bits <= 0:
        return value
    n_steps = (1 << bits) - 1
    lsb = (hi - lo) / n_steps
    code = math.floor((value - lo) / lsb + 0.5)
    if code < 0.0:
        code = 0.0
    elif code > n_steps:
        code = float(n_steps)
    return lo + code * lsb
