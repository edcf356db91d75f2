"""Measured I-V curve as a device model (DESIGN.md 3.3).

The nominal curve V_0(I) is a cubic Hermite interpolant of a measured table (PCHIP slopes). A
junction varies from it through a current scale s_i, a voltage scale s_v and an offset v_0:

    V(I)  = s_v * V_0(I / s_i) + v_0
    dV/dI = (s_v / s_i) * V_0'(I / s_i)
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
