"""Measured I-V curve as a device model (DESIGN.md 3.3).

The nominal curve V_0(I) is a cubic Hermite interpolant of a measured table (PCHIP slopes). A
junction varies from it through a current scale s_i, a voltage scale s_v and an offset v_0:

    V(I)  = s_v * V_0(I / s_i) + v_0
    dV/dI = (s_v / s_i) * V_0'(I / s_i)

Beyond the table's first and last current V_0 is the end tangent continued linearly
(:mod:`spingpu.kernels.hermite`); ``beyond_*`` say whether a current lies there, with the same
comparisons as the interpolation, so that the training kernels can count such readings.
"""

import numba
import numpy as np

from .hermite import hermite_eval


@numba.njit(cache=True)
def tabulated(current, i_scale, v_scale, v_offset, table):
    """Voltage (V) and dV/dI (ohm) of a measured curve ``table`` = (I, V, dV/dI) rows."""
    v0, d0 = hermite_eval(current / i_scale, table)
    return v_scale * v0 + v_offset, v_scale / i_scale * d0


@numba.njit(cache=True)
def stacked_tabulated(current, offset, knots, table):
    """Voltage (V) and dV/dI (ohm) of a junction with its own curve: the ``knots`` columns of
    ``table`` = (I, V, dV/dI) rows from column ``offset`` on (many junctions' tables side by side)."""
    lo = np.int64(offset)
    return hermite_eval(current, table[:, lo:lo + np.int64(knots)])


@numba.njit(cache=True)
def beyond_tabulated(current, i_scale, v_scale, v_offset, table):
    """True where ``tabulated`` continues the curve linearly: I / i_scale outside the table's
    currents."""
    x = current / i_scale
    return x < table[0, 0] or x > table[0, table.shape[1] - 1]


@numba.njit(cache=True)
def beyond_stacked(current, offset, knots, table):
    """True where ``stacked_tabulated`` continues the junction's curve linearly."""
    lo = np.int64(offset)
    return current < table[0, lo] or current > table[0, lo + np.int64(knots) - 1]
