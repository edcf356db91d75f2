"""Text of the figures: SI-prefixed values of quantities in units that take prefixes, and titles
wrapped to the figure's width."""

from __future__ import annotations

import textwrap

import numpy as np

# units of sweep axes and settings that read best with an SI prefix (5 µA, 2 kΩ), as written
ENGINEERING_UNITS = {"A": "A", "V": "V", "ohm": "Ω", "s": "s", "Hz": "Hz", "A/m": "A/m"}
TITLE_CHARACTERS = 100  # a suptitle wraps past this many characters (a 10.5-11 inch figure's width)


def engineering_formatter(units):
    """matplotlib's EngFormatter for ``units`` (``5e-06`` A reads ``5 µA``), or None for units
    without a prefix (``1``, ``K``, ``1/V``)."""
    if units not in ENGINEERING_UNITS:
        return None
    from matplotlib.ticker import EngFormatter

    return EngFormatter(unit=ENGINEERING_UNITS[units], sep=" ")


def value_text(value, units=None, digits=None):
    """A sweep value as a label: with an SI prefix and its unit where ``units`` take one (to 6
    significant digits, or ``digits``), else 3 significant digits (floats; or ``digits``) or as it
    is (integers, words)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        formatter = engineering_formatter(units)
        if formatter is not None:
            if digits is None:
                return formatter.format_data(float(value))
            mantissa = formatter.format_data(float(value)).split(" ")[0]  # in [1, 1000): places after its point
            formatter.places = max(digits - len(mantissa.split(".")[0].lstrip("-")), 0)
            return formatter.format_data(float(value))
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.{digits or 3}g}"
    return str(value)


def axis_value_texts(values, units=None):
    """The labels of an axis's ``values``, as :func:`value_text` writes them, with as many more
    digits as it takes to tell every value from the others (a linspace from 1.5 to 1.52 reads 1.5,
    1.505, 1.51, ..., not 1.5, 1.5, 1.51)."""
    values = list(values)
    texts = [value_text(v, units) for v in values]
    for digits in range(4, 18):
        if len(set(texts)) == len(set(map(str, values))):
            break
        texts = [value_text(v, units, digits) for v in values]
    return texts


def set_suptitle(fig, text, width=TITLE_CHARACTERS):
    """``fig.suptitle`` wrapped at ``width`` characters: a long title (a cell's every sweep value)
    would otherwise run past both edges of the figure."""
    fig.suptitle(textwrap.fill(text, width))
