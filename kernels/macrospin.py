"""Macrospin LLGS physics of one junction (DESIGN.md 3.2), scalar, for the CPU and CUDA alike.

The free layer's unit magnetisation m obeys the Landau-Lifshitz form of the LLGS equation

    (1 + a^2) dm/dt = -g0 [ m x H + a m x (m x H) ]
                      -g0 c_DL m x (m x p) - g0 c_FL m x p
    H    = H_k (m.u) u - Ms N.m + H_ext + H_th          (A/m; N diagonal, u the easy axis)
    H_k  = 2 K_u / (mu0 Ms),   g0 = 2.211e5 m/(A s)
    a_J  = hbar eta(m.p) I / (2 e mu0 Ms t_free area)  (A/m),   b_J = beta_fl a_J
    torque_form "gilbert" (default):  c_DL = a_J + a b_J,  c_FL = b_J - a a_J
    torque_form "landau_lifshitz":    c_DL = a_J,          c_FL = b_J

"gilbert" is the Slonczewski torque -g0 [a_J m x (m x p) + b_J m x p] written in the Gilbert
equation and carried over to the Landau-Lifshitz form (the a-cross terms of DESIGN.md 3.2);
"landau_lifshitz" adds the torques to the Landau-Lifshitz form directly, as cmtj does.

Signs: a current I > 0 pulls m towards the reference direction p (it favours the parallel state);
b_J > 0 acts like a field b_J p. Spin-torque efficiency (eta_form): ``constant`` eta = P;
``slonczewski`` eta = P / (1 + P^2 m.p) (tunnel junction, Slonczewski PRB 39, 6995 (1989));
``lambda`` eta = 2 P L^2 / (L^2 + 1 + (L^2 - 1) m.p), normalised so that L = 1 is ``constant``
(Slonczewski JMMM 247, 324 (2002)). The thermal field H_th (temperature T > 0) has independent
Gaussian components of standard deviation sqrt(2 a kB T / (g0 mu0 Ms V dt)), V = t_free area
(Brown, PR 130, 1677 (1963)), constant over a step; the step is then stochastic Heun (Stratonovich,
Garcia-Palacios & Lazaro PRB 58, 14937 (1998)); without temperature it is classic RK4. After each
step m is renormalised to |m| = 1.

Resistance, with TMR(V) = tmr0 / (1 + (V / v_h)^2) (v_h = inf: no bias dependence):
``conductance`` (DESIGN.md 3.1): G = (1/r_p) [(1 + cos)/2 + (1 - cos) / (2 (1 + TMR(V)))], V G = I;
``resistance``: R = r_p [1 + TMR(V) (1 - cos)/2], V = I R; cos = m.p. The DC voltage at current I is
I times the resistance averaged over the ``n_average`` steps after ``n_settle`` steps.

Everything a junction needs is packed in one float64 row of ``N_COEF`` coefficients (the ``C_*``
indices; :func:`spingpu.devices.macrospin.coefficients` fills it from SI parameters). The thermal
field of step s of junction (network, layer, unit, member) is drawn from Philox counters (network,
stream_id(PURPOSE_THERMAL, layer, member, 0), unit, 2 s + 0/1), so results are a pure function of
(seed, junction, step). Every grid point of a junction's table sees the same thermal field
(common random numbers): the finite ``average_time``'s sampling error then shifts the table
smoothly instead of adding independent noise to each knot, which the table's slopes (differences
of neighbouring knots) would amplify into a dV/dI no device has.
"""

import math

import numba
import numpy as np
from numba import prange

from .philox import normal_pair, split_seed, stream_id
from .streams import PURPOSE_THERMAL
from .stt_compact import NEWTON_LAST_STEP, cubic_root

G0 = 2.211e5  # m / (A s), gyromagnetic ratio times mu0, rounded as OOMMF's default (CODATA: 2.2128e5)
MU0 = 4e-7 * math.pi  # T m / A (the pre-2019 exact value; the 2019 SI value, 1.25663706212e-6, is 5.4e-10 larger)
HBAR = 1.054571817e-34  # J s
E_CHARGE = 1.602176634e-19  # C
KB = 1.380649e-23  # J / K

ETA_CONSTANT, ETA_SLONCZEWSKI, ETA_LAMBDA = 0, 1, 2
R_CONDUCTANCE, R_RESISTANCE = 0, 1
TORQUE_GILBERT, TORQUE_LL = 0, 1

# Coefficient row layout.
C_U = 0  # easy axis u (3), unit vector
C_HK = 3  # H_k = 2 K_u / (mu0 Ms), A/m
C_DEMAG = 4  # Ms N_x, Ms N_y, Ms N_z (3), A/m
C_HEXT = 7  # external field (3), A/m
C_P = 10  # reference direction p (3), unit vector
C_ALPHA = 13  # Gilbert damping
C_AJ = 14  # a_J / (eta I) = hbar / (2 e mu0 Ms t_free area), A/m per A
C_BETA = 15  # b_J / a_J
C_CROSS = 16  # alpha for the gilbert torque form, 0 for landau_lifshitz
C_ETA = 17  # eta form code
C_POL = 18  # spin polarisation P
C_LAM2 = 19  # Lambda^2 (eta form lambda)
C_SIGMA = 20  # std of each thermal-field component per step, A/m (0: no temperature, RK4)
C_RP = 21  # r_p, ohm
C_TMR = 22  # tmr0
C_VH = 23  # v_h, V (inf: no bias dependence)
C_RFORM = 24  # resistance form code
C_M0 = 25  # initial magnetisation (3), unit vector
C_DT = 28  # time step, s
C_SETTLE = 29  # steps before averaging
C_AVERAGE = 30  # steps averaged
N_COEF = 31

NOMINAL_MEMBER = 2  # member index of the thermal stream of junctions outside a network (nominal, iv)


@numba.njit(cache=True, error_model="numpy", inline="always")
def efficiency(mp, code, pol, lam2):
    """Spin-torque efficiency eta at m.p = ``mp`` for eta form ``code``."""
    if code == ETA_SLONCZEWSKI:
        return pol / (1.0 + pol * pol * mp)
    if code == ETA_LAMBDA:
        return 2.0 * pol * lam2 / (lam2 + 1.0 + (lam2 - 1.0) * mp)
    return pol


@numba.njit(cache=True, error_model="numpy", inline="always")
def rhs(mx, my, mz, tx, ty, tz, aj, c):
    """dm/dt (1/s) at magnetisation m, thermal field (tx, ty, tz) (A/m) and a_J / eta = ``aj``
    (A/m) for the junction of coefficient row ``c``."""
    ux, uy, uz = c[C_U], c[C_U + 1], c[C_U + 2]
    px, py, pz = c[C_P], c[C_P + 1], c[C_P + 2]
    alpha = c[C_ALPHA]
    mu = mx * ux + my * uy + mz * uz
    hk = c[C_HK] * mu
    hx = hk * ux - c[C_DEMAG] * mx + c[C_HEXT] + tx
    hy = hk * uy - c[C_DEMAG + 1] * my + c[C_HEXT + 1] + ty
    hz = hk * uz - c[C_DEMAG + 2] * mz + c[C_HEXT + 2] + tz
    mm = mx * mx + my * my + mz * mz
    mh = mx * hx + my * hy + mz * hz
    mp = mx * px + my * py + mz * pz
    a_j = aj * efficiency(mp, c[C_ETA], c[C_POL], c[C_LAM2])
    b_j = c[C_BETA] * a_j
    cross = c[C_CROSS]
    c_dl = a_j + cross * b_j
    c_fl = b_j - cross * a_j
    # m x (H + c_FL p) + m (a m.H + c_DL m.p) - (m.m) (a H + c_DL p),  as m x (m x v) = m (m.v) - v (m.m)
    wx = hx + c_fl * px
    wy = hy + c_fl * py
    wz = hz + c_fl * pz
    e = alpha * mh + c_dl * mp
    vx = my * wz - mz * wy + e * mx - mm * (alpha * hx + c_dl * px)
    vy = mz * wx - mx * wz + e * my - mm * (alpha * hy + c_dl * py)
    vz = mx * wy - my * wx + e * mz - mm * (alpha * hz + c_dl * pz)
    pref = -G0 / (1.0 + alpha * alpha)
    return pref * vx, pref * vy, pref * vz


@numba.njit(cache=True, error_model="numpy", inline="always")
def _normalised(x, y, z):
    inv = 1.0 / math.sqrt(x * x + y * y + z * z)
    return x * inv, y * inv, z * inv


@numba.njit(cache=True, error_model="numpy", inline="always")
def rk4_step(mx, my, mz, aj, c, dt):
    """One classic Runge-Kutta step (no thermal field), renormalised."""
    h = 0.5 * dt
    k1x, k1y, k1z = rhs(mx, my, mz, 0.0, 0.0, 0.0, aj, c)
    k2x, k2y, k2z = rhs(mx + h * k1x, my + h * k1y, mz + h * k1z, 0.0, 0.0, 0.0, aj, c)
    k3x, k3y, k3z = rhs(mx + h * k2x, my + h * k2y, mz + h * k2z, 0.0, 0.0, 0.0, aj, c)
    k4x, k4y, k4z = rhs(mx + dt * k3x, my + dt * k3y, mz + dt * k3z, 0.0, 0.0, 0.0, aj, c)
    s = dt / 6.0
    return _normalised(mx + s * (k1x + 2.0 * (k2x + k3x) + k4x),
                       my + s * (k1y + 2.0 * (k2y + k3y) + k4y),
                       mz + s * (k1z + 2.0 * (k2z + k3z) + k4z))


@numba.njit(cache=True, error_model="numpy", inline="always")
def heun_step(mx, my, mz, tx, ty, tz, aj, c, dt):
    """One stochastic Heun step with the thermal field (tx, ty, tz) held over the step, renormalised."""
    ax, ay, az = rhs(mx, my, mz, tx, ty, tz, aj, c)
    bx, by, bz = rhs(mx + dt * ax, my + dt * ay, mz + dt * az, tx, ty, tz, aj, c)
    h = 0.5 * dt
    return _normalised(mx + h * (ax + bx), my + h * (ay + by), mz + h * (az + bz))


@numba.njit(cache=True, error_model="numpy")
def resistance(current, cos_t, c):
    """Resistance V / I (ohm) at current I (A) and cos theta = m.p (the zero-bias value at I = 0)."""
    r_p, tmr0, v_h = c[C_RP], c[C_TMR], c[C_VH]
    b = 0.5 * (1.0 - cos_t)
    if c[C_RFORM] == R_RESISTANCE:
        r0 = r_p * (1.0 + tmr0 * b)
        if current == 0.0 or math.isinf(v_h):
            return r0
        # V = I r_p (1 + tmr0 b / (1 + V^2/v_h^2)), times (1 + V^2/v_h^2) / r_p: a cubic in V.
        inv_vh2 = 1.0 / (v_h * v_h)
        v = cubic_root(inv_vh2 / r_p, -current * inv_vh2, 1.0 / r_p, -current * (1.0 + tmr0 * b), current * r0,
                       NEWTON_LAST_STEP)
        return v / current
    a = 0.5 * (1.0 + cos_t) / r_p
    b = b / r_p
    g0 = a + b / (1.0 + tmr0)
    if current == 0.0 or math.isinf(v_h):
        return 1.0 / g0
    inv_vh2 = 1.0 / (v_h * v_h)  # the cubic of stt_compact
    c1 = a * (1.0 + tmr0) + b
    v = cubic_root((a + b) * inv_vh2, -current * inv_vh2, c1, -current * (1.0 + tmr0), current / g0, NEWTON_LAST_STEP)
    return v / current


@numba.njit(cache=True, error_model="numpy")
def as_tuple(c):
    """The coefficient row as a tuple of N_COEF floats: values in registers, no array references
    in the step loop (the step functions take either)."""
    return (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15], c[16], c[17], c[18], c[19], c[20], c[21], c[22], c[23], c[24], c[25], c[26], c[27], c[28], c[29], c[30])


@numba.njit(cache=True, error_model="numpy")
def run_junction(current, c, k0, k1, network, stream, unit):
    """Mean resistance (ohm) over the averaging window and the final m of one junction at ``current``.

    Starts from m0, takes ``c[C_SETTLE] + c[C_AVERAGE]`` steps of ``c[C_DT]``; the thermal field of
    step s comes from Philox counters (network, stream, unit, 2 s) and (.., 2 s + 1) under key
    (k0, k1).
    """
    c = as_tuple(c)
    mx, my, mz = c[C_M0], c[C_M0 + 1], c[C_M0 + 2]
    px, py, pz = c[C_P], c[C_P + 1], c[C_P + 2]
    dt = c[C_DT]
    n_settle = np.int64(c[C_SETTLE])
    n_total = n_settle + np.int64(c[C_AVERAGE])
    aj = c[C_AJ] * current
    sigma = c[C_SIGMA]
    acc = 0.0
    if sigma > 0.0:
        for s in range(n_total):
            g0, g1 = normal_pair(network, stream, unit, 2 * s, k0, k1)
            g2, _ = normal_pair(network, stream, unit, 2 * s + 1, k0, k1)
            mx, my, mz = heun_step(mx, my, mz, sigma * g0, sigma * g1, sigma * g2, aj, c, dt)
            if s >= n_settle:
                acc += resistance(current, mx * px + my * py + mz * pz, c)
    else:  # the same, deterministic: RK4, and no branch in the settling loop
        for s in range(n_settle):
            mx, my, mz = rk4_step(mx, my, mz, aj, c, dt)
        for s in range(n_settle, n_total):
            mx, my, mz = rk4_step(mx, my, mz, aj, c, dt)
            acc += resistance(current, mx * px + my * py + mz * pz, c)
    return acc / (n_total - n_settle), mx, my, mz


LANES = 16  # deterministic runs the CPU kernel advances together (the lane loop is SIMD-vectorised)


@numba.njit(cache=True, error_model="numpy", inline="always")
def lane_row(rows, lane):
    """Column ``lane`` of the (N_COEF, LANES) coefficient block as a tuple, as :func:`as_tuple`."""
    return (rows[0, lane], rows[1, lane], rows[2, lane], rows[3, lane], rows[4, lane], rows[5, lane], rows[6, lane], rows[7, lane], rows[8, lane], rows[9, lane], rows[10, lane], rows[11, lane], rows[12, lane], rows[13, lane], rows[14, lane], rows[15, lane], rows[16, lane], rows[17, lane], rows[18, lane], rows[19, lane], rows[20, lane], rows[21, lane], rows[22, lane], rows[23, lane], rows[24, lane], rows[25, lane], rows[26, lane], rows[27, lane], rows[28, lane], rows[29, lane], rows[30, lane])


@numba.njit(cache=True, error_model="numpy")
def run_lanes(current, rows, out):
    """:func:`run_junction` of ``LANES`` deterministic runs (T = 0, the same step counts) at once.

    ``current[l]`` (A) and coefficient column ``rows[:, l]`` are run l; ``out[l]`` receives its mean
    resistance and final m. Each step is a loop over the lanes without branches or calls, which the
    compiler turns into vector instructions (about 3x on AVX-512). The arithmetic of every lane is
    that of :func:`run_junction`, operation for operation, so the numbers are the same to the bit.
    """
    mx = rows[C_M0].copy()
    my = rows[C_M0 + 1].copy()
    mz = rows[C_M0 + 2].copy()
    aj = rows[C_AJ] * current
    acc = np.zeros(LANES)
    n_settle = np.int64(rows[C_SETTLE, 0])
    n_average = np.int64(rows[C_AVERAGE, 0])
    for s in range(n_settle + n_average):
        for lane in range(LANES):
            c = lane_row(rows, lane)
            mx[lane], my[lane], mz[lane] = rk4_step(mx[lane], my[lane], mz[lane], aj[lane], c, c[C_DT])
        if s >= n_settle:
            for lane in range(LANES):
                c = lane_row(rows, lane)
                acc[lane] += resistance(current[lane], mx[lane] * c[C_P] + my[lane] * c[C_P + 1] + mz[lane] * c[C_P + 2], c)
    for lane in range(LANES):
        out[lane, 0] = acc[lane] / n_average
        out[lane, 1] = mx[lane]
        out[lane, 2] = my[lane]
        out[lane, 3] = mz[lane]


@numba.njit(cache=True, error_model="numpy")
def run_grid_point(t, currents, coefs, keys, k0, k1, out_r, out_m):
    """Task ``t`` = (junction j, grid point k) of :func:`mean_resistance`; shared with CUDA."""
    n_k = currents.shape[0]
    j = t // n_k
    k = t % n_k
    stream = stream_id(PURPOSE_THERMAL, keys[j, 1], keys[j, 3], 0)  # every grid point: the same thermal field
    r, mx, my, mz = run_junction(currents[k], coefs[j], k0, k1, keys[j, 0], stream, keys[j, 2])
    out_r[j, k] = r
    out_m[j, k, 0] = mx
    out_m[j, k, 1] = my
    out_m[j, k, 2] = mz


@numba.njit(parallel=True, cache=True, error_model="numpy")
def mean_resistance(currents, coefs, keys, seed, out_r, out_m):
    """Batched CPU kernel: every junction j (coefficient row ``coefs[j]``, thermal-stream key
    ``keys[j]`` = (network, layer, unit, member)) at every current ``currents[k]`` (A).

    Writes the time-averaged resistance ``out_r[j, k]`` (ohm) and the final magnetisation
    ``out_m[j, k, :]``. Tasks t = j n_k + k go to threads in blocks of ``LANES``; a block of
    deterministic runs with equal step counts runs as one :func:`run_lanes` (a short last block is
    padded with copies of its last task), any other block task by task (:func:`run_grid_point`).
    """
    k0, k1 = split_seed(seed)
    n_k = currents.shape[0]
    n_tasks = coefs.shape[0] * n_k
    for block in prange((n_tasks + LANES - 1) // LANES):
        first = block * LANES
        last = min(first + LANES, n_tasks)
        c0 = coefs[first // n_k]
        together = True
        for t in range(first, last):
            c = coefs[t // n_k]
            if c[C_SIGMA] != 0.0 or c[C_SETTLE] != c0[C_SETTLE] or c[C_AVERAGE] != c0[C_AVERAGE]:
                together = False
        if not together:
            for t in range(first, last):
                run_grid_point(t, currents, coefs, keys, k0, k1, out_r, out_m)
            continue
        rows = np.empty((N_COEF, LANES))
        current = np.empty(LANES)
        for lane in range(LANES):
            t = min(first + lane, last - 1)
            rows[:, lane] = coefs[t // n_k]
            current[lane] = currents[t % n_k]
        out = np.empty((LANES, 4))
        run_lanes(current, rows, out)
        for t in range(first, last):
            out_r[t // n_k, t % n_k] = out[t - first, 0]
            for i in range(3):
                out_m[t // n_k, t % n_k, i] = out[t - first, 1 + i]


@numba.njit(cache=True, error_model="numpy")
def reduced_energy(mx, my, mz, c):
    """Magnetic energy without the thermal field in field units (A/m): E / (mu0 Ms V) =
    -H_k (m.u)^2 / 2 + m.(Ms N).m / 2 - m.H_ext, whose negative gradient in m is H."""
    mu = mx * c[C_U] + my * c[C_U + 1] + mz * c[C_U + 2]
    demag = c[C_DEMAG] * mx * mx + c[C_DEMAG + 1] * my * my + c[C_DEMAG + 2] * mz * mz
    zeeman = mx * c[C_HEXT] + my * c[C_HEXT + 1] + mz * c[C_HEXT + 2]
    return -0.5 * c[C_HK] * mu * mu + 0.5 * demag - zeeman
