"""Compact spin-transfer-torque MTJ model (DESIGN.md 3.1), V(I) and its exact dV/dI.

The free layer's angle to the reference layer is turned by spin-transfer torque and the
tunnel magnetoresistance falls with bias:

    theta(I)    = theta0 - dtheta * tanh(I / i_c)
    TMR(V)      = tmr0 / (1 + (V / v_h)**2)
    G(theta, V) = (1 / r_p) * [ (1 + cos theta) / 2 + (1 - cos theta) / (2 (1 + TMR(V))) ]

With x = V / v_h, 1 / (1 + TMR) = (1 + x^2) / (1 + tmr0 + x^2), so V * G = I is the cubic

    p(V) = (a + b) V^3 / v_h^2 - I V^2 / v_h^2 + (a (1 + tmr0) + b) V - I (1 + tmr0) = 0,
    a = (1 + cos theta) / (2 r_p),  b = (1 - cos theta) / (2 r_p),

whose only real root is the voltage (V * G(V) is strictly increasing). Newton's method on p starts
from V_0 = I / G(theta, 0), beyond the root, where p is convex (concave for I < 0), so the iterates
approach the root monotonically and quadratically: a step of relative size s leaves a relative error
of about K s^2, K = V p''/(2 p') at the root. Writing p = D f with D = 1 + x^2 + tmr0 and
f = V G(V) - I gives K = V f''/(2 f') + V D'/D, and |K| < 1.5 + 2 = 3.5 for every parameter value
(the same bound holds for the macrospin module's resistance form, D = 1 + x^2). The iteration
therefore stops after a step below 1e-9 relative, which leaves < 3.5e-18, well below float64
rounding (1.1e-16), instead of taking one more step to see it. By the implicit function theorem

    dV/dI = (1 - V * dG/dtheta * theta'(I)) / (G + V * dG/dV).

Units: I in A, V in V, r_p in ohm, v_h in V, theta0 and dtheta in rad, i_c in A; tmr0 is a ratio
(1.5 = 150 %). The training kernels evaluate :func:`stt_compact_prepared` on rows whose per-junction
constants 1 / r_p, 1 / v_h^2 and 1 / i_c are computed once (:func:`prepare_rows`).

Single precision (the ``stt_compact_f32`` model): :func:`stt_compact_f32_prepared` evaluates the
same equations in float32 (IEEE binary32, unit roundoff u = 2^-24 = 6.0e-8) from float64 arguments
and returns float64 values; its Newton iteration stops after a step below 1e-4 relative, which
leaves < 3.5e-8 < u by the bound above. The float64 functions are the reference: the float32 ones
are a deliberate transcription, and a test bounds their difference.
"""

import math

import numba
import numpy as np

_NEWTON_MAX_STEPS = 100  # a cap only: ~3.5 steps are typical, 10 the most seen over 30 % spreads at 2 mA
NEWTON_LAST_STEP = 1e-9  # relative; the error it leaves is < 3.5 * (1e-9)^2 (module doc)


@numba.njit(cache=True)
def cubic_root(c3, c2, c1, c0, v, last_step, max_steps=_NEWTON_MAX_STEPS):
    """Root of c3 V^3 + c2 V^2 + c1 V + c0 by Newton's method from ``v`` (beyond the root, see
    the module doc), to rounding: it stops after a step below ``last_step`` relative (1e-9 for
    float64; 1e-4 for float32, whose arguments and ``last_step`` are then all float32), or after
    ``max_steps`` (a cap only: never reached but by a subnormal or non-finite input). 3 c3 and
    2 c2 are formed by additions, which round as 3.0 * c3 and 2.0 * c2 do but keep the precision
    of the arguments (a float literal would make float32 arithmetic float64)."""
    three_c3, two_c2 = c3 + c3 + c3, c2 + c2
    for _ in range(max_steps):
        p = ((c3 * v + c2) * v + c1) * v + c0
        dp = (three_c3 * v + two_c2) * v + c1
        step = p / dp
        v -= step
        if abs(step) <= last_step * abs(v):
            break
    return v


@numba.njit(cache=True)
def junction_constants(r_p, v_h, i_c):
    """(g_p, inv_vh2, inv_ic) = (1 / r_p, 1 / v_h^2, 1 / i_c) in S, V^-2, A^-1: what a reading
    needs of r_p, v_h and i_c, computed once per junction by the training kernels' rows."""
    return 1.0 / r_p, 1.0 / (v_h * v_h), 1.0 / i_c


@numba.njit(cache=True)
def _cubic(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic):
    """The cubic's coefficients (c3, c2, c1, c0), Newton's start I / G(theta, 0) and what the
    derivative needs of the angle (tanh(I / i_c), cos theta, sin theta, a, b) for
    :func:`stt_compact_prepared`."""
    th = math.tanh(current * inv_ic)
    theta = theta0 - dtheta * th
    cos_t = math.cos(theta)
    sin_t = math.sin(theta)
    a = 0.5 * (1.0 + cos_t) * g_p
    b = 0.5 * (1.0 - cos_t) * g_p
    c3 = (a + b) * inv_vh2
    c2 = -current * inv_vh2
    c1 = a * (1.0 + tmr0) + b
    c0 = -current * (1.0 + tmr0)
    return c3, c2, c1, c0, current * (1.0 + tmr0) / c1, th, sin_t, a, b


@numba.njit(cache=True)
def _dv_di(v, g_p, tmr0, inv_vh2, dtheta, inv_ic, th, sin_t, a, b):
    """dV/dI at the root ``v``: G, dG/dV and dG/dtheta there, then the implicit derivative."""
    x2 = v * v * inv_vh2
    inv_d = 1.0 / (1.0 + tmr0 + x2)
    ap = (1.0 + x2) * inv_d  # 1 / (1 + TMR(V))
    g = a + b * ap
    dap_dv = 2.0 * v * inv_vh2 * tmr0 * inv_d * inv_d
    dg_dv = b * dap_dv
    dg_dtheta = -0.5 * sin_t * g_p * (1.0 - ap)
    dtheta_di = -dtheta * (1.0 - th * th) * inv_ic
    return (1.0 - v * dg_dtheta * dtheta_di) / (g + v * dg_dv)


@numba.njit(cache=True)
def stt_compact_prepared(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic):
    """:func:`stt_compact` of a junction whose :func:`junction_constants` are given: the same
    numbers bit for bit, without the three float64 divisions per reading (the training kernels'
    form: on sm_90 ~8 % fewer float64 instructions per junction)."""
    c3, c2, c1, c0, v0, th, sin_t, a, b = _cubic(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic)
    v = cubic_root(c3, c2, c1, c0, v0, NEWTON_LAST_STEP)
    return v, _dv_di(v, g_p, tmr0, inv_vh2, dtheta, inv_ic, th, sin_t, a, b)


@numba.njit(cache=True)
def stt_compact_prepared_pair(current_a, g_p_a, tmr0_a, inv_vh2_a, theta0_a, dtheta_a, inv_ic_a,
                              current_b, g_p_b, tmr0_b, inv_vh2_b, theta0_b, dtheta_b, inv_ic_b):
    """(V_a, dV/dI_a, V_b, dV/dI_b) of two junctions (or one at two currents): two
    :func:`stt_compact_prepared` bit for bit, written so that a GPU thread works on both at once.
    A reading is a chain of dependent float64 operations (tanh, cos, a Newton step's Horner sums
    and division), whose latency a thread waits out where too few warps share its scheduler; two
    independent chains side by side give the scheduler a second instruction to issue in those
    waits. Both Newton iterations advance in one loop until one has converged; the other then
    finishes alone, with what is left of the step cap (each takes exactly its own steps, as
    :func:`cubic_root` would, the cap included)."""
    c3a, c2a, c1a, c0a, va, tha, sina, aa, ba = _cubic(current_a, g_p_a, tmr0_a, inv_vh2_a, theta0_a, dtheta_a,
                                                       inv_ic_a)
    c3b, c2b, c1b, c0b, vb, thb, sinb, ab, bb = _cubic(current_b, g_p_b, tmr0_b, inv_vh2_b, theta0_b, dtheta_b,
                                                       inv_ic_b)
    three_c3a, two_c2a, three_c3b, two_c2b = c3a + c3a + c3a, c2a + c2a, c3b + c3b + c3b, c2b + c2b
    done_a = done_b = False
    steps = 0
    while steps < _NEWTON_MAX_STEPS and not (done_a or done_b):
        steps += 1
        pa = ((c3a * va + c2a) * va + c1a) * va + c0a
        pb = ((c3b * vb + c2b) * vb + c1b) * vb + c0b
        dpa = (three_c3a * va + two_c2a) * va + c1a
        dpb = (three_c3b * vb + two_c2b) * vb + c1b
        step_a, step_b = pa / dpa, pb / dpb
        va -= step_a
        vb -= step_b
        done_a, done_b = abs(step_a) <= NEWTON_LAST_STEP * abs(va), abs(step_b) <= NEWTON_LAST_STEP * abs(vb)
    if not done_a:
        va = cubic_root(c3a, c2a, c1a, c0a, va, NEWTON_LAST_STEP, _NEWTON_MAX_STEPS - steps)
    if not done_b:
        vb = cubic_root(c3b, c2b, c1b, c0b, vb, NEWTON_LAST_STEP, _NEWTON_MAX_STEPS - steps)
    return (va, _dv_di(va, g_p_a, tmr0_a, inv_vh2_a, dtheta_a, inv_ic_a, tha, sina, aa, ba),
            vb, _dv_di(vb, g_p_b, tmr0_b, inv_vh2_b, dtheta_b, inv_ic_b, thb, sinb, ab, bb))


@numba.njit(cache=True)
def stt_compact(current, r_p, tmr0, v_h, theta0, dtheta, i_c):
    """Voltage (V) and differential resistance dV/dI (ohm) of the compact STT junction."""
    g_p, inv_vh2, inv_ic = junction_constants(r_p, v_h, i_c)
    return stt_compact_prepared(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic)


@numba.njit(parallel=True, cache=True)
def prepare_rows(rows, out):
    """Kernel rows (g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic) of junction rows (r_p, tmr0, v_h,
    theta0, dtheta, i_c), both (M, 6), by :func:`junction_constants`."""
    for k in numba.prange(rows.shape[0]):
        g_p, inv_vh2, inv_ic = junction_constants(rows[k, 0], rows[k, 2], rows[k, 5])
        out[k, 0], out[k, 1], out[k, 2] = g_p, rows[k, 1], inv_vh2
        out[k, 3], out[k, 4], out[k, 5] = rows[k, 3], rows[k, 4], inv_ic


# --- single precision ----------------------------------------------------------------------------
# float32 constants: Numba types a Python float literal as float64 and would promote the arithmetic.
_F32_ONE, _F32_HALF, _F32_TWO = np.float32(1.0), np.float32(0.5), np.float32(2.0)
_F32_LAST_STEP = np.float32(1e-4)  # relative; leaves < 3.5 * (1e-4)^2 = 3.5e-8, below float32's u = 6.0e-8


@numba.njit(cache=True)
def stt_compact_f32_prepared(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic):
    """:func:`stt_compact_prepared` evaluated in float32: the arguments (float64) are rounded to
    float32, every operation is a float32 one (tanhf, cosf, sinf), and V (V) and dV/dI (ohm) are
    returned as float64. Its error is a few times what rounding the arguments alone to float32
    causes in the float64 function (V's condition number, which grows with tmr0 near theta = +-pi,
    amplifies both): ~3e-7 relative near the nominal junction, up to ~2e-6 (V) and ~8e-6 (dV/dI)
    over the parameters' allowed ranges, where it is finite for |I| up to ~1e3 A (float32
    overflows far beyond)."""
    current, g_p, tmr0 = np.float32(current), np.float32(g_p), np.float32(tmr0)
    inv_vh2, theta0, dtheta, inv_ic = np.float32(inv_vh2), np.float32(theta0), np.float32(dtheta), np.float32(inv_ic)
    th = math.tanh(current * inv_ic)
    theta = theta0 - dtheta * th
    cos_t = math.cos(theta)
    sin_t = math.sin(theta)
    a = _F32_HALF * (_F32_ONE + cos_t) * g_p
    b = _F32_HALF * (_F32_ONE - cos_t) * g_p
    c3 = (a + b) * inv_vh2
    c2 = -current * inv_vh2
    c1 = a * (_F32_ONE + tmr0) + b
    c0 = -current * (_F32_ONE + tmr0)
    v = cubic_root(c3, c2, c1, c0, current * (_F32_ONE + tmr0) / c1, _F32_LAST_STEP)
    x2 = v * v * inv_vh2
    inv_d = _F32_ONE / (_F32_ONE + tmr0 + x2)
    ap = (_F32_ONE + x2) * inv_d
    g = a + b * ap
    dap_dv = _F32_TWO * v * inv_vh2 * tmr0 * inv_d * inv_d
    dg_dv = b * dap_dv
    dg_dtheta = -_F32_HALF * sin_t * g_p * (_F32_ONE - ap)
    dtheta_di = -dtheta * (_F32_ONE - th * th) * inv_ic
    return np.float64(v), np.float64((_F32_ONE - v * dg_dtheta * dtheta_di) / (g + v * dg_dv))


@numba.njit(cache=True)
def stt_compact_f32(current, r_p, tmr0, v_h, theta0, dtheta, i_c):
    """:func:`stt_compact` in float32 (:func:`stt_compact_f32_prepared` after the float64
    :func:`junction_constants`): voltage (V) and dV/dI (ohm), as float64."""
    g_p, inv_vh2, inv_ic = junction_constants(r_p, v_h, i_c)
    return stt_compact_f32_prepared(current, g_p, tmr0, inv_vh2, theta0, dtheta, inv_ic)
