"""The ``tabulated`` model: a measured I-V curve as the nominal device (DESIGN.md 3.3).

The CSV holds two columns, current in A and voltage in V, one point per row, currents strictly
increasing; a first row that is not numeric is taken as a header. A row of more columns is refused
(measured dV/dI is given from Python: ``iv_table=(I, V, dVdI)``). The nominal curve is the
shape-preserving PCHIP interpolant of the points (scipy's slopes, evaluated by
:func:`spingpu.kernels.hermite.hermite_eval`), continued linearly outside the table. Variability
acts through ``i_scale``, ``v_scale`` and ``v_offset`` (:mod:`spingpu.kernels.tabulated`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .. import errors as _errors
from ..errors import ConfigError, check_items
from ..kernels.tabulated import beyond_tabulated
from ..kernels.tabulated import tabulated as _tabulated_scalar
from .models import DeviceModel, Parameter

ExtrapolationWarning = _errors.ExtrapolationWarning  # where it was defined before spingpu.errors (filters name it so)
MIN_POINTS = 4
MAX_ABS_CURRENT = 1.0  # A: far beyond any junction's (a table in other units is said to be)


def table_current_range(model):
    """(lowest, highest) current in A that the nominal device's table covers, beyond which its
    curve is continued linearly: the ``tabulated`` model's first and last knot (times its nominal
    ``i_scale``), the ``macrospin`` model's ``table_i_min``, ``table_i_max``; None for a
    closed-form model (``stt_compact``, registered models), which is evaluated anywhere."""
    settings = getattr(model, "settings", None)
    if settings is not None and hasattr(settings, "table_i_min"):
        return float(settings.table_i_min), float(settings.table_i_max)
    if model.table is None:
        return None
    scale = model.parameter("i_scale").nominal if "i_scale" in model.parameter_names else 1.0
    return float(model.table[0, 0]) * scale, float(model.table[0, -1]) * scale


def read_iv_csv(path, field="iv-csv"):
    """Current (A) and voltage (V) arrays of a two-column CSV, validated (see module doc)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(field, f"{path} is a folder; expected a CSV file of current in A, voltage in V")
    if not path.is_file():
        raise ConfigError(field, f"file not found: {path} (expected a CSV of current in A, voltage in V)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return _parse_iv_csv(path, handle, field)
    except UnicodeDecodeError as err:
        raise ConfigError(field, f"{path} is not a UTF-8 text file (byte {err.start}): expected a CSV of "
                                 "current in A, voltage in V") from None
    except (OSError, csv.Error) as err:
        raise ConfigError(field, f"cannot read {path}: {' '.join(str(err).split())}") from None


def _parse_iv_csv(path, handle, field):
    """:func:`read_iv_csv` of an open text file."""
    rows = []
    seen_header = False
    for line_no, row in enumerate(csv.reader(handle), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        while len(cells) > 2 and not cells[-1]:
            cells.pop()  # a trailing separator ("1e-4,0.1,") holds no column
        if len(cells) != 2:
            hint = ("; measured dV/dI (ohm) can be given from Python as get_model(\"tabulated\", "
                    "iv_table=(I, V, dVdI))" if len(cells) > 2 else "")
            raise ConfigError(field, f"{path} line {line_no}: expected 2 columns (current A, voltage V), "
                                     f"got {len(cells)}{hint}")
        try:
            values = (float(cells[0]), float(cells[1]))
        except ValueError:
            if not rows and not seen_header:
                seen_header = True
                continue  # the first row that holds anything is a header
            raise ConfigError(field, f"{path} line {line_no}: {cells[0]!r}, {cells[1]!r} is not a pair of numbers") from None
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(field, f"{path} line {line_no}: current and voltage must be finite numbers, got {values}")
        rows.append(values)
    table = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return check_iv_points(table[:, 0], table[:, 1], field, source=str(path))


def check_iv_points(current, voltage, field="iv_table", source="table"):
    """Validated float64 copies of a measured curve's current (A) and voltage (V) arrays."""
    try:
        current = np.asarray(current, dtype=np.float64).ravel()
        voltage = np.asarray(voltage, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ConfigError(field, f"{source}: current and voltage must be arrays of numbers") from None
    if current.shape != voltage.shape:
        raise ConfigError(field, f"{source}: current and voltage have different lengths ({current.size}, {voltage.size})")
    if current.size < MIN_POINTS:
        raise ConfigError(field, f"{source}: {current.size} points is too short; at least {MIN_POINTS} are needed")
    if not (np.all(np.isfinite(current)) and np.all(np.isfinite(voltage))):
        raise ConfigError(field, f"{source}: current and voltage must be finite (no NaN or inf)")
    steps = np.diff(current)
    if np.any(steps == 0):
        k = int(np.argmax(steps == 0)) + 1
        raise ConfigError(field, f"{source}: duplicated current {float(current[k])!r} (point {k + 1}); "
                                 "currents must be strictly increasing")
    if np.any(steps < 0):
        k = int(np.argmax(steps < 0)) + 1
        raise ConfigError(field, f"{source}: not sorted, current {float(current[k])!r} (point {k + 1}) follows "
                                 f"{float(current[k - 1])!r}; "
                                 "currents must be strictly increasing")
    if np.max(np.abs(current)) > MAX_ABS_CURRENT:
        k = int(np.argmax(np.abs(current) > MAX_ABS_CURRENT))
        raise ConfigError(field, f"{source}: current {float(current[k])!r} (point {k + 1}) is beyond "
                                 f"+-{MAX_ABS_CURRENT:g} A; currents are in amperes")
    return current, voltage


def _check_slopes(slopes, points):
    try:
        slopes = np.asarray(slopes, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ConfigError("iv_table", "dV/dI must be an array of numbers") from None
    if slopes.size != points or not np.all(np.isfinite(slopes)):
        raise ConfigError("iv_table", f"dV/dI must be {points} finite numbers, one per current; got {slopes.size}"
                                      f"{'' if np.all(np.isfinite(slopes)) else ' with NaN or inf'}")
    return slopes


def pchip_slopes(x, y, field="iv-csv"):
    """Knot slopes dy/dx of the shape-preserving PCHIP interpolant (scipy's PchipInterpolator:
    Fritsch-Butland weighted harmonic means of the secants, its end conditions) of y over the last
    axis, at the knots ``x`` (strictly increasing); a ConfigError naming ``field`` where they
    overflow float64."""
    from scipy.interpolate import PchipInterpolator

    with np.errstate(all="ignore"):  # overflowing slopes are refused below, not warned of
        try:
            slopes = PchipInterpolator(x, y, axis=-1).derivative()(x)
        except ValueError:  # scipy refuses its own non-finite intermediate slopes
            slopes = np.full(np.shape(y), np.nan)
    if not np.all(np.isfinite(slopes)):
        raise ConfigError(field, "the curve's slopes dV/dI overflow float64: currents too close together for "
                                 "the voltages' steps")
    return slopes


def tabulated_model(csv_path=None, table=None):
    """The ``tabulated`` model for a measured curve from ``csv_path`` or ``table = (I, V)``, the
    knots' slopes those of PCHIP; or ``table = (I, V, dV/dI)`` with measured differential
    resistances (ohm) as the slopes (a lock-in measurement; SciPy is then not needed)."""
    if (csv_path is None) == (table is None):
        raise ConfigError("iv-csv", "the tabulated model needs exactly one measured curve: a CSV file of current A, "
                                    "voltage V (--iv-csv; iv_csv in Python) or, in Python, iv_table = (I, V)")
    slopes = None
    if csv_path is not None:
        current, voltage = read_iv_csv(csv_path)
    else:
        items = check_items("iv_table", table, None, "two or three arrays (current in A, voltage in V, optionally "
                                                      "dV/dI in ohm)")
        if len(items) not in (2, 3):
            raise ConfigError("iv_table", f"expected two or three arrays (current in A, voltage in V, optionally dV/dI "
                                          f"in ohm), got {len(items)} arrays")
        current, voltage = check_iv_points(*items[:2])
        if len(items) == 3:
            slopes = _check_slopes(items[2], current.size)
    measured_slopes = slopes
    if slopes is None:
        slopes = pchip_slopes(current, voltage, "iv-csv" if csv_path is not None else "iv_table")
    knots = np.ascontiguousarray(np.stack([current, voltage, slopes]))
    v_full_scale = float(np.max(np.abs(voltage))) or 1.0
    return DeviceModel(
        name="tabulated",
        parameters=(
            Parameter("i_scale", 1.0, "1", "current scale: V(I) = v_scale V0(I / i_scale) + v_offset",
                      low=1e-3, high=1e3),
            Parameter("v_scale", 1.0, "1", "voltage scale", low=1e-3, high=1e3),
            Parameter("v_offset", 0.0, "V", "voltage offset (a unit spread is the table's largest |V|)",
                      low=-1e3, high=1e3, distribution="normal", spread_scale=v_full_scale),
        ),
        scalar=_tabulated_scalar,
        beyond=beyond_tabulated,
        table=knots,
        description=(f"measured curve{'' if csv_path is None else f' from {Path(csv_path).resolve()}'}, "
                     f"{current.size} points, {current[0]:.3g} A to {current[-1]:.3g} A "
                     f"({'PCHIP' if measured_slopes is None else 'measured dV/dI'})"),
    )


_FROM_CSV = {}


def tabulated_model_from_csv(csv_path):
    """:func:`tabulated_model` of a CSV file, built once per file version, so that its compiled
    kernels are reused (a study builds the model once per cell)."""
    path = Path(csv_path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return tabulated_model(csv_path=csv_path)  # reports the missing file
    if key not in _FROM_CSV:
        _FROM_CSV[key] = tabulated_model(csv_path=csv_path)
    return _FROM_CSV[key]
