"""One hidden neuron, scalar: activation, derivative used by backprop, exact derivative.

The equations are those of :mod:`spingpu.training.numpy_engine` (DESIGN.md 5); this is the
per-element form the fused CPU and CUDA engines call. Arguments are packed in small float64
arrays so that one signature serves every mode:

    neuron  = (i_bias, i_gain, r_bridge, v_scale, delta_i)
    readout = (noise_kind, read_noise, temperature, bandwidth, adc_bits, adc_lo, adc_hi,
               dac_bits, dac_lo, dac_hi)          noise_kind 0: none, 1: gaussian, 2: johnson_shot

``xi0`` and ``xi1`` are the standard normals of the first and second reading. With
``derivatives`` False (evaluation) only the activation is computed; the derivatives returned are 0.
The fourth value returned counts the neuron's junction readings beyond the device's table
(``beyond_row``), where V(I) is the table's end tangent continued linearly; :func:`readings` the
readings taken.
"""

import math

import numba

from .readout import johnson_shot_std, quantize

FD_FORWARD, FD_SINGLE, FD_SYMMETRIC, MODEL, ORACLE, TANH, RELU, SIGMOID = range(8)
MODE_CODES = {"fd_forward": FD_FORWARD, "fd_single": FD_SINGLE, "fd_symmetric": FD_SYMMETRIC,
              "model": MODEL, "oracle": ORACLE, "tanh": TANH, "relu": RELU, "sigmoid": SIGMOID}
NOISE_NONE, NOISE_GAUSSIAN, NOISE_JOHNSON_SHOT = 0, 1, 2


@numba.njit(cache=True)
def digital(mode, z):
    """Activation and derivative of a digital baseline."""
    if mode == TANH:
        h = math.tanh(z)
        return h, 1.0 - h * h
    if mode == RELU:
        return (z, 1.0) if z > 0.0 else (0.0, 0.0)
    h = 1.0 / (1.0 + math.exp(-z))
    return h, h * (1.0 - h)


def readings(mode, derivatives):
    """Junction readings of one pair neuron's evaluation (the nominal model's in mode ``model`` is
    not a junction's): A, and B (or A again at I + dI) where a finite difference is taken."""
    if mode >= TANH:
        return 0
    if mode == FD_SYMMETRIC or (derivatives and mode in (FD_FORWARD, FD_SINGLE)):
        return 2
    return 1


@numba.njit(cache=True)
def read(v, dv_di, current, r_bridge, readout, xi):
    """ADC output of one reading of a junction at (V, I) with differential resistance ``dv_di``."""
    y = v - r_bridge * current
    kind = readout[0]
    if kind == NOISE_GAUSSIAN:
        y += readout[1] * xi
    elif kind == NOISE_JOHNSON_SHOT:
        y += johnson_shot_std(current, dv_di, r_bridge, readout[2], readout[3]) * xi
    return quantize(y, readout[5], readout[6], int(readout[4]))


def make_pair_neuron(point, point_row, point_row_pair, beyond_row):
    """``pair_neuron(mode, z, params, row_a, row_b, nominal, table, neuron, readout, xi0, xi1,
    derivatives) -> (activation, derivative used, exact derivative, readings beyond the table)``:
    junctions A and B are rows ``row_a`` and ``row_b`` of ``params`` (rows, P), the nominal junction
    the vector ``nominal`` (P,). Where a finite difference takes two readings, both junction
    evaluations come from one ``point_row_pair`` call (the same numbers as two ``point_row``)."""

    @numba.njit(inline="always")
    def pair_neuron(mode, z, params, row_a, row_b, nominal, table, neuron, readout, xi0, xi1, derivatives):
        if mode >= TANH:
            h, d = digital(mode, z)
            return h, d, d, 0
        i_bias, i_gain, r_bridge, v_scale, delta_i = neuron[0], neuron[1], neuron[2], neuron[3], neuron[4]
        dac_bits, dac_lo, dac_hi = int(readout[7]), readout[8], readout[9]
        gain = v_scale * i_gain
        i_req = i_bias + i_gain * z
        i_dac = quantize(i_req, dac_lo, dac_hi, dac_bits)  # the DAC sets I; dI is added after it, exactly
        if mode == FD_SYMMETRIC:
            i_a = i_dac - 0.5 * delta_i
            i_b = i_dac + 0.5 * delta_i
        else:
            i_a = i_dac
            i_b = i_dac + delta_i
        two = mode == FD_SYMMETRIC or (derivatives and (mode == FD_FORWARD or mode == FD_SINGLE))
        v_b, d_b = 0.0, 0.0
        if two:  # B at I + dI (fd_single: A again)
            v_a, d_a, v_b, d_b = point_row_pair(i_a, params, row_a, i_b, row_a if mode == FD_SINGLE else row_b, table)
        else:
            v_a, d_a = point_row(i_a, params, row_a, table)
        r_a = read(v_a, d_a, i_a, r_bridge, readout, xi0)
        beyond = 1 if beyond_row(i_a, params, row_a, table) else 0
        if not derivatives and mode != FD_SYMMETRIC:
            return v_scale * r_a, 0.0, 0.0, beyond
        exact = gain * (d_a - r_bridge)
        if mode == FD_FORWARD or mode == FD_SYMMETRIC:
            r_b = read(v_b, d_b, i_b, r_bridge, readout, xi1)
            beyond += 1 if beyond_row(i_b, params, row_b, table) else 0
            used = gain * (r_b - r_a) / delta_i
            if mode == FD_SYMMETRIC:
                exact = gain * (0.5 * (d_a + d_b) - r_bridge)
                r_a = 0.5 * (r_a + r_b)
        elif mode == FD_SINGLE:
            beyond += 1 if beyond_row(i_b, params, row_a, table) else 0
            used = gain * (read(v_b, d_b, i_b, r_bridge, readout, xi1) - r_a) / delta_i
        elif mode == MODEL:
            _, d_nom = point(i_a, nominal, table)
            used = gain * (d_nom - r_bridge)
        else:
            used = exact
        return v_scale * r_a, used, exact, beyond

    return pair_neuron
