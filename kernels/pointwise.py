"""Code generation that turns a device model's scalar function into array kernels.

A device model is a scalar function ``f(current, p_1, ..., p_P[, table]) -> (V, dV/dI)``
compiled with ``numba.njit`` (CUDA kernels call the same function as a device function). The
kernels below see every model through one calling convention, ``point(current, p, table)`` with
``p`` a float64 row of the junction's parameters and ``table`` a (3, K) float64 array (a measured
curve, or a (3, 1) placeholder for closed-form models).
"""

import numba
import numpy as np

COMPLEX_STEP_A = 1e-30  # ampere; the complex-step derivative's imaginary current increment


def _generate(name, source, namespace):
    exec(compile(source, f"<spingpu generated {name}>", "exec"), namespace)
    return namespace[name]


def point_source(n_params, uses_table, decorator="@numba.njit"):
    """Source of ``point(current, p, table) -> (V, dV/dI)`` calling a global ``scalar`` with the
    row ``p`` unpacked."""
    args = "".join(f", p[{k}]" for k in range(n_params)) + (", table" if uses_table else "")
    return f"{decorator}\ndef point(current, p, table):\n    return scalar(current{args})\n"


def point_row_source(n_params, uses_table, decorator='@numba.njit(inline="always")'):
    """Source of ``point_row(current, params, row, table) -> (V, dV/dI)``: the junction whose
    parameters are ``params[row, :]``. Reading elements instead of taking a row view keeps the
    training kernels free of array views (and of their reference counting) in their inner loops."""
    args = "".join(f", params[row, {k}]" for k in range(n_params)) + (", table" if uses_table else "")
    return f"{decorator}\ndef point_row(current, params, row, table):\n    return scalar(current{args})\n"


def point_row_pair_source(n_params, uses_table, has_pair, decorator='@numba.njit(inline="always")'):
    """Source of ``point_row_pair(current_a, params, row_a, current_b, row_b, table) -> (V_a,
    dV/dI_a, V_b, dV/dI_b)``: the junctions ``params[row_a, :]`` at ``current_a`` and
    ``params[row_b, :]`` at ``current_b`` (one junction at two currents where the rows are one),
    the two readings of a pair neuron. A global ``scalar_pair`` of both junctions' arguments where
    the model has one (``has_pair``: a form that works on both at once, equal to ``scalar`` twice),
    else ``scalar`` twice."""
    a = "".join(f", params[row_a, {k}]" for k in range(n_params))
    b = "".join(f", params[row_b, {k}]" for k in range(n_params))
    head = f"{decorator}\ndef point_row_pair(current_a, params, row_a, current_b, row_b, table):\n"
    if has_pair:
        if uses_table:
            raise ValueError("a scalar_pair of a model with a table is not supported")
        return head + f"    return scalar_pair(current_a{a}, current_b{b})\n"
    t = ", table" if uses_table else ""
    return head + (f"    v_a, d_a = scalar(current_a{a}{t})\n    v_b, d_b = scalar(current_b{b}{t})\n"
                   "    return v_a, d_a, v_b, d_b\n")


def beyond_row_source(n_params, uses_table, has_table_end, decorator='@numba.njit(inline="always")'):
    """Source of ``beyond_row(current, params, row, table) -> bool``: whether junction
    ``params[row, :]`` is read beyond its table at ``current`` (a global ``beyond`` with the scalar's
    arguments); constantly False for a model without ``has_table_end`` (closed form)."""
    if not has_table_end:
        return f"{decorator}\ndef beyond_row(current, params, row, table):\n    return False\n"
    args = "".join(f", params[row, {k}]" for k in range(n_params)) + (", table" if uses_table else "")
    return f"{decorator}\ndef beyond_row(current, params, row, table):\n    return beyond(current{args})\n"


def make_point(scalar, n_params, uses_table):
    """``point(current, p, table)`` for ``scalar`` (see :func:`point_source`)."""
    return _generate("point", point_source(n_params, uses_table), {"scalar": scalar, "numba": numba})


def make_point_row(scalar, n_params, uses_table):
    """``point_row(current, params, row, table)`` for ``scalar`` (see :func:`point_row_source`)."""
    return _generate("point_row", point_row_source(n_params, uses_table), {"scalar": scalar, "numba": numba})


def make_point_row_pair(scalar, scalar_pair, n_params, uses_table):
    """``point_row_pair(current_a, params, row_a, current_b, row_b, table)`` (see
    :func:`point_row_pair_source`)."""
    source = point_row_pair_source(n_params, uses_table, scalar_pair is not None)
    return _generate("point_row_pair", source, {"scalar": scalar, "scalar_pair": scalar_pair, "numba": numba})


def make_beyond_row(beyond, n_params, uses_table):
    """``beyond_row(current, params, row, table)`` for ``beyond`` (see :func:`beyond_row_source`)."""
    return _generate("beyond_row", beyond_row_source(n_params, uses_table, beyond is not None),
                     {"beyond": beyond, "numba": numba})


def make_scalar(voltage, dvdi, n_params):
    """Join a user's ``voltage(I, *p)`` and optional ``dvdi(I, *p)`` into ``f(I, *p) -> (V, dV/dI)``.

    Without ``dvdi`` the derivative is the complex-step derivative (Squire & Trapp, SIAM Rev. 40,
    110 (1998)): dV/dI = Im V(I + i h) / h, exact to rounding for a V analytic in I, because no
    difference of nearby values is taken.
    """
    names = ", ".join(f"p{k}" for k in range(n_params))
    sep = ", " if n_params else ""
    if dvdi is not None:
        source = (f"def scalar(current{sep}{names}):\n"
                  f"    return voltage(current{sep}{names}), dvdi(current{sep}{names})\n")
        namespace = {"voltage": voltage, "dvdi": dvdi}
    else:
        source = (f"def scalar(current{sep}{names}):\n"
                  f"    vc = voltage(complex(current, H){sep}{names})\n"
                  f"    return vc.real, vc.imag / H\n")
        namespace = {"voltage": voltage, "H": COMPLEX_STEP_A}
    return numba.njit(error_model="numpy")(_generate("scalar", source, namespace))


def make_iv_kernel(point):
    """CPU kernel ``iv_kernel(currents[M], params[M, P], table, v_out[M], dvdi_out[M])``, parallel
    over M."""

    @numba.njit(parallel=True)
    def iv_kernel(currents, params, table, v_out, dvdi_out):
        for m in numba.prange(currents.shape[0]):
            v, d = point(currents[m], params[m], table)
            v_out[m] = v
            dvdi_out[m] = d

    return iv_kernel


def make_beyond_kernel(beyond_row):
    """CPU kernel ``beyond_kernel(currents[M], params[M, P], table, out[M])``, parallel over M."""

    @numba.njit(parallel=True)
    def beyond_kernel(currents, params, table, out):
        for m in numba.prange(currents.shape[0]):
            out[m] = beyond_row(currents[m], params, m, table)

    return beyond_kernel


EMPTY_TABLE = np.zeros((3, 1))
