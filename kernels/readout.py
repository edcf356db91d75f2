"""Reading a junction: read noise, ADC and DAC as scalar functions (DESIGN.md 4).

Thermal and shot noise of a tunnel junction read over a bandwidth B (``johnson_shot``). A tunnel
barrier's current noise (one-sided spectral density, Fano factor 1) crosses over from Johnson-Nyquist
to full shot noise with bias (Blanter & Buettiker, Phys. Rep. 336, 1 (2000); Spietz et al.,
Science 300, 1929 (2003)):

    S_I = 2 q I coth(q V_b / (2 k_B T))     -> 4 k_B T / r_d at |q V_b| << k_B T,  2 q |I| at T = 0,

with the barrier's bias taken as V_b = |I r_d|, r_d = dV/dI the junction's differential resistance.
That is exact in both limits and, for the default stt_compact junction at 300 K, within 2.8 % in
sigma_V of using the junction's V (tests/test_readout.py); it keeps the noise finite for curves
whose V and I do not vanish together (a tabulated curve with a voltage offset). The junction is current-biased, so its noise current flows through r_d: the voltage noise is
r_d^2 S_I. A bridge readout's reference resistor r_bridge adds its own Johnson noise 4 k_B T r_bridge:

    sigma_V = sqrt(B (r_d^2 S_I + 4 k_B T r_bridge)).

A converter with ``bits`` bits and range [lo, hi] has 2**bits levels lo + c * lsb, c = 0 ..
2**bits - 1, lsb = (hi - lo) / (2**bits - 1): both ends of the range are levels. A value is rounded
to the nearest level (a tie goes up) and clipped to the range; no dither. For a range symmetric
about 0 (the defaults) 0 is not a level: the converter is mid-rise there, and 0 reads as +lsb / 2.
"""

import math

import numba

K_B = 1.380649e-23  # J/K, exact (SI 2019)
Q_E = 1.602176634e-19  # C, exact (SI 2019)


@numba.njit(cache=True)
def johnson_shot_std(current, dv_di, r_bridge, temperature, bandwidth):
    """Voltage noise std (V) of a reading of a junction carrying ``current`` (A) with differential
    resistance ``dv_di`` (ohm), through a bridge resistor ``r_bridge`` (ohm, 0 for a direct read),
    at ``temperature`` (K) over ``bandwidth`` (Hz)."""
    kt = K_B * temperature
    r_d = abs(dv_di)
    x = Q_E * abs(current) * r_d  # q V_b, J
    if kt == 0.0:
        s_i = 2.0 * Q_E * abs(current)
    elif x < 1e-6 * kt:  # zero bias: Johnson noise of r_d (x coth x = 1 + x^2 / 3 + ...)
        s_i = 4.0 * kt / r_d if r_d > 0.0 else 0.0
    else:
        s_i = 2.0 * Q_E * abs(current) / math.tanh(x / (2.0 * kt))
    return math.sqrt(bandwidth * (dv_di * dv_di * s_i + 4.0 * kt * r_bridge))


@numba.njit(cache=True)
def quantize(value, lo, hi, bits):
    """Nearest of the 2**bits levels spanning [lo, hi], values beyond the range clipped to its
    end levels and NaN kept NaN; ``bits <= 0`` passes ``value`` through."""
    if bits <= 0:
        return value
    n_steps = (1 << bits) - 1
    lsb = (hi - lo) / n_steps
    t = (value - lo) / lsb
    if t != t:  # NaN: a diverged reading stays visible
        return value
    # Clip in floating point: converting an out-of-range t (1e30, inf) to an integer would overflow.
    code = 0.0 if t <= 0.0 else (float(n_steps) if t >= n_steps else float(math.floor(t + 0.5)))
    return lo + code * lsb
