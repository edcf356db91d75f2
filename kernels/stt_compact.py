"""Compact spin-transfer-torque MTJ model (DESIGN.md 3.1), V(I) and its exact dV/dI.

The free layer's angle to the reference layer is turned by spin-transfer torque and the
tunnel magnetoresistance falls with bias:

    theta(I)    = theta0 - dtheta * tanh(I / i_c)
    TMR(V)      = tmr0 / (1 + (V / v_h)**2)
    G(theta, V) = (1 / r_p) * [ (1 + cos theta) / 2 + (1 - cos theta) / (2 (1 + TMR(V))) ]

The voltage solves V * G(theta(I), V) = I (Newton's method in V, started from the zero-bias
conductance, which approaches the root monotonically from outside), and by the implicit function
theorem

    dV/dI = (1 - V * dG/dtheta * theta'(I)) / (G + V * dG/dV).

Units: I in A, V in V, r_p in ohm, v_h in V, theta0 and dtheta in rad, i_c in A; tmr0 is a ratio
(1.5 = 150 %).
"""

import math

import numba

_NEWTON_MAX_STEPS = 30
_NEWTON_RTOL = 1e-14


@numba.njit(cache=True)
def _conductance(cos_theta, v, r_p, tmr0, v_h):
    """G(theta, V) in siemens and dG/dV in S/V."""
    x = v / v_h
    tmr = tmr0 / (1.0 + x * x)
    dtmr_dv = -2.0 * tmr0 * x / (v_h * (1.0 + x * x) * (1.0 + x * x))
    ap = 1.0 / (1.0 + tmr)
    g = ((1.0 + cos_theta) * 0.5 + (1.0 - cos_theta) * 0.5 * ap) / r_p
    dg_dv = -(1.0 - cos_theta) * 0.5 * ap * ap * dtmr_dv / r_p
    return g, dg_dv, ap


@numba.njit(cache=True)
def stt_compact(current, r_p, tmr0, v_h, theta0, dtheta, i_c):
    """Voltage (V) and differential resistance dV/dI (ohm) of the compact STT junction."""
    u = current / i_c
    th = math.tanh(u)
    theta = theta0 - dtheta * th
    dtheta_di = -dtheta * (1.0 - th * th) / i_c
    cos_t = math.cos(theta)
    sin_t = math.sin(theta)
    g, dg_dv, ap = _conductance(cos_t, 0.0 * current, r_p, tmr0, v_h)
    v = current / g
    for _ in range(_NEWTON_MAX_STEPS):
        g, dg_dv, ap = _conductance(cos_t, v, r_p, tmr0, v_h)
        step = (v * g - current) / (g + v * dg_dv)
        v = v - step
        if abs(step) <= _NEWTON_RTOL * abs(v):
            break
    g, dg_dv, ap = _conductance(cos_t, v, r_p, tmr0, v_h)
    dg_dtheta = -sin_t * 0.5 * (1.0 - ap) / r_p
    dvdi = (1.0 - v * dg_dtheta * dtheta_di) / (g + v * dg_dv)
    return v, dvdi
