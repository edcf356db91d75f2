"""Hierarchical device-to-device variability as a pure function of a junction's address.

For parameter k of junction (network n, layer l, unit u, member m), DESIGN.md 4:

    y_k = s_chip,k x_chip,k(n) + s_d2d,k x_neuron,k(n, l, u) + s_pair,k x_member,k(n, l, u, m)
    p_k = p_nominal,k * exp(y_k)             lognormal parameters (the nominal is the median),
                                             clipped to the parameter's range [low_k, high_k]
    p_k = p_nominal,k + scale_k * y_k        normal parameters (angles, offsets), not clipped

Each level's vector x = L z has unit variances and correlation L L^T (L the Cholesky factor of
the parameters' correlation matrix); z are independent standard normals drawn by Philox from
counter (n, stream(purpose, l, m), u, k // 2). Chip draws use l = u = m = 0, neuron draws m = 0,
so the two members of a pair share x_neuron and every junction of a chip shares x_chip.
"""

import math

import numba
import numpy as np

from .philox import PURPOSE_CHIP, PURPOSE_MEMBER, PURPOSE_NEURON, normal_pair, split_seed, stream_id


@numba.njit(cache=True)
def _level_normals(k0, k1, network, level, layer, unit, member, n_params, chol, z, x):
    """Correlated standard normals of junction (layer, unit, member)'s level 0 (chip), 1 (neuron)
    or 2 (member) into ``x[:n_params]`` (``z`` is scratch). Its callers pass run-time values, not
    literals, so that it is compiled once (see network.make_forward)."""
    if level == 0:
        stream, row = stream_id(PURPOSE_CHIP, 0, 0, 0), 0
    elif level == 1:
        stream, row = stream_id(PURPOSE_NEURON, layer, 0, 0), unit
    else:
        stream, row = stream_id(PURPOSE_MEMBER, layer, member, 0), unit
    for j in range((n_params + 1) // 2):
        a, b = normal_pair(network, stream, row, j, k0, k1)
        z[2 * j] = a
        if 2 * j + 1 < n_params:
            z[2 * j + 1] = b
    for i in range(n_params):
        acc = 0.0
        for j in range(i + 1):
            acc += chol[i, j] * z[j]
        x[i] = acc


@numba.njit(cache=True)
def _add_level(out, sigmas, level, x, n_params):
    """``out[k] += s_level,k x_k``: one level's term of y_k."""
    for k in range(n_params):
        out[k] += sigmas[level, k] * x[k]


@numba.njit(cache=True)
def _to_parameters(out, nominal, is_log, scale, bounds, n_params):
    """y_k in ``out`` -> p_k: lognormal (clipped to ``bounds``) or normal (module docstring)."""
    for k in range(n_params):
        if is_log[k]:
            out[k] = min(max(nominal[k] * math.exp(out[k]), bounds[0, k]), bounds[1, k])
        else:
            out[k] = nominal[k] + scale[k] * out[k]


@numba.njit(cache=True)
def sample_junction(k0, k1, network, layer, unit, member, nominal, is_log, scale, bounds, sigmas, chol,
                    z, x, out):
    """Parameters of one junction into ``out``, by its address alone (the module doc's definition,
    which :func:`sample_layer` computes sharing the chip's and the neuron's draws); ``sigmas`` is
    (3, P): chip, d2d, pair rows; ``bounds`` (2, P) the (low, high) a lognormal parameter is
    clipped to; ``z`` and ``x`` are scratch arrays of length >= P."""
    n_params = nominal.shape[0]
    for k in range(n_params):
        out[k] = 0.0
    for level in range(3):
        _level_normals(k0, k1, network, level, layer, unit, member, n_params, chol, z, x)
        _add_level(out, sigmas, level, x, n_params)
    _to_parameters(out, nominal, is_log, scale, bounds, n_params)


@numba.njit(parallel=True, cache=True)
def sample_layer(seed, networks, layer, n_units, nominal, is_log, scale, bounds, sigmas, chol, out):
    """Junction parameters of one layer: ``out[i, u, m, :]`` for network ``networks[i]``,
    unit u < n_units and member m in (0 = A, 1 = B): :func:`sample_junction`'s numbers, with each
    network's chip draw and each unit's neuron draw made once for all the junctions that share it."""
    k0, k1 = split_seed(seed)
    n_params = nominal.shape[0]
    chip, neuron, member, zero = np.int64(0), np.int64(1), np.int64(2), np.int64(0)  # run-time values
    for i in numba.prange(networks.shape[0]):
        z = np.empty(n_params)
        x_chip = np.empty(n_params)
        x_neuron = np.empty(n_params)
        x_member = np.empty(n_params)
        _level_normals(k0, k1, networks[i], chip, layer, zero, zero, n_params, chol, z, x_chip)
        for u in range(n_units):
            _level_normals(k0, k1, networks[i], neuron, layer, u, zero, n_params, chol, z, x_neuron)
            for m in range(2):
                _level_normals(k0, k1, networks[i], member, layer, u, m, n_params, chol, z, x_member)
                row = out[i, u, m]
                for k in range(n_params):
                    row[k] = 0.0
                _add_level(row, sigmas, chip, x_chip, n_params)
                _add_level(row, sigmas, neuron, x_neuron, n_params)
                _add_level(row, sigmas, member, x_member, n_params)
                _to_parameters(row, nominal, is_log, scale, bounds, n_params)
