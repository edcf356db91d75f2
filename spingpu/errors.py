"""The one exception type for bad configuration or input, and the warning type of results computed
less accurately than asked."""

from __future__ import annotations

import dataclasses
import errno
import functools
import math
import numbers

import numpy as np


class ConfigError(ValueError):
    """A bad value, named by its field, with what is allowed.

    ``str(err)`` is one line, ``"<field>: <problem>"``, suitable for a command-line error: line
    breaks in either (a key or a path that holds one) are written ``\\n``, a field longer than
    MAX_FIELD characters keeps its start and its end (a study file's long path, then the key), and
    a problem longer than MAX_PROBLEM characters (a whole value
    quoted) keeps its start and its end, where the allowed range is said.
    """

    def __init__(self, field: str, problem: str):
        self.field = one_line(str(field))
        if len(self.field) > MAX_FIELD:  # a long path before the key ("<study file>: <key>"), or a long key
            self.field = f"{self.field[:MAX_FIELD // 3]}...{self.field[-(MAX_FIELD - MAX_FIELD // 3 - 3):]}"
        self.problem = one_line(str(problem))
        if len(self.problem) > MAX_PROBLEM:
            half = (MAX_PROBLEM - 5) // 2
            self.problem = f"{self.problem[:half]} ... {self.problem[-half:]}"
        super().__init__(f"{self.field}: {self.problem}")

    def __reduce__(self):  # picklable, so that errors raised on Dask workers travel back intact
        return (type(self), (self.field, self.problem))


class OutputError(ConfigError):
    """An output, checked writable before the work, that the machine then failed to write (a full
    disk or quota, a file size limit, a read-only or failing file system): named by its option,
    nothing of it left; ``spingpu`` commands exit with status 1 for it, as for the machine's other
    errors, not 2 (a bad value)."""


MAX_PROBLEM = 1000  # characters of a ConfigError's problem
MAX_FIELD = 200  # and of its field


# errors of the machine, not of the program: a full disk or quota, a read-only or failing file
# system, a file the user may not write; the commands say them in one line (spingpu.cli.main)
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM,
                            errno.EFBIG})


def os_error_text(err):
    """An OSError as one line: ``PATH: No space left on device`` (its reason alone where it names
    no file)."""
    what = os_error_reason(err)
    return one_line(f"{err.filename}: {what}" if err.filename else what)


def os_error_reason(err):
    """Why an OSError happened, without its file: ``No space left on device``."""
    return err.strerror or type(err).__name__


def one_line(text):
    """``text`` with its line breaks written ``\\n`` and ``\\r``: one line of a message."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class SpingpuWarning(UserWarning):
    """Something to know about a result or a setting, which did not stop the work; ``str`` is one
    line "<field>: <what>" (``spingpu`` commands print it as ``spingpu <command>: warning: ...``).
    The subclasses below say which kind; ``warnings.filterwarnings`` takes any of them."""


class UnusedSettingWarning(SpingpuWarning):
    """A setting that was given has no effect: a value other than its default in a configuration
    that does not use it, or, in a study file, a key both set and swept (the sweep's values win)."""


class ExtrapolationWarning(SpingpuWarning):
    """Currents asked for beyond a tabulated curve's range, where V(I) is the table's end tangent
    continued linearly (dV/dI constant), not a measured or simulated value."""


class CoarseTimeStepWarning(SpingpuWarning):
    """Some junctions' tables were integrated with a step too coarse for their precession."""


def check_range(field, value, low=None, high=None, *, low_open=False, high_open=False, integer=False,
                allow_inf=False, unit=None):
    """Return ``value`` as a float (or int) if it lies in the allowed range, else raise ConfigError.

    ``value`` must be a real number (an int, float or NumPy number; not a string, bytes or bool),
    finite, and within [low, high] (either end open, either end None for no bound). With
    ``integer`` it must be a whole number (a whole float such as ``2.0`` is accepted) and an int is
    returned. ``allow_inf``: ``+inf`` is accepted as well (e.g. "no bias dependence"), whatever
    ``high`` is. ``unit``: the value's SI unit, named after the allowed range (``(A)``), so that a
    value given in another unit (mA for A) shows why it is out of range.
    """
    kind = "an integer" if integer else "a number"
    allowed = _describe(low, high, low_open, high_open, allow_inf) + (f" ({unit})" if unit and unit != "1" else "")
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise ConfigError(field, f"expected {kind}, got {value!r}")
    try:
        if integer and isinstance(value, numbers.Integral):
            number = int(value)
        else:
            number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(field, f"expected {kind}, got {_short(value)}") from None
    if isinstance(number, float):
        if math.isnan(number):
            raise ConfigError(field, f"expected {kind}, got NaN; allowed: {allowed}")
        if math.isinf(number):
            if allow_inf and number > 0:
                return number
            raise ConfigError(field, f"expected a finite {'integer' if integer else 'number'}, got {number}; allowed: "
                                     f"{allowed}")
        if integer:
            if not number.is_integer():
                raise ConfigError(field, f"expected {kind}, got {_short(value)}")
            number = int(number)
    lo_ok = low is None or (number > low if low_open else number >= low)
    hi_ok = high is None or (number < high if high_open else number <= high)
    if not (lo_ok and hi_ok):
        shown = int(value) if isinstance(value, numbers.Integral) else float(value)  # as given: 1e+30, not its digits
        raise ConfigError(field, f"{_plain(shown)} is out of range; allowed: {allowed}")
    return number


def check_items(field, value, length, expected):
    """``value`` as a tuple of its items (a sequence or an array; not a string, mapping, set or
    scalar), ``length`` of them unless ``length`` is None; else ConfigError "expected <expected>,
    got ..."."""
    from collections.abc import Mapping, Set

    if (isinstance(value, (str, bytes, Mapping, Set)) or (isinstance(value, np.ndarray) and value.ndim == 0)
            or not hasattr(value, "__len__") or (length is not None and len(value) != length)):
        raise ConfigError(field, f"expected {expected}, got {_short(value)}")
    return tuple(value)


# words users give for one of spingpu's own, which spelling alone would not find (gpu is not
# close to cuda, but is to cpu)
SYNONYMS = {"gpu": "cuda", "nvidia": "cuda", "cupy": "cuda", "numba": "cpu", "host": "cpu"}


def closest(word, options):
    """The closest of ``options`` to a misspelt ``word`` (difflib's ratio >= 0.6, letter case
    ignored: ``STT_COMPACT`` finds ``stt_compact``), or the option a word means (SYNONYMS: ``gpu``
    finds ``cuda``), else None."""
    import difflib

    by_lower = {str(o).lower(): str(o) for o in reversed(list(options))}  # the first of options equal but for case
    meant = SYNONYMS.get(str(word).lower())
    if meant in by_lower:
        return by_lower[meant]
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def did_you_mean(word, options):
    """`` (did you mean 'x'?)`` for the :func:`closest` of ``options`` to ``word``, else ``""``."""
    close = closest(word, options)
    return f" (did you mean {close!r}?)" if close else ""


def keyword_checked(cls):
    """Class decorator for a dataclass of settings: an unknown keyword to its constructor is a
    ConfigError naming it, the closest setting and the allowed ones (Python's TypeError said only
    "unexpected keyword argument"), as scikit-learn's estimators name a bad parameter."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for key in kwargs:
            if key not in names:
                raise ConfigError(key, f"not a setting of {cls.__name__}{did_you_mean(key, names)}; allowed: "
                                       f"{', '.join(names)}")
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def check_choice(field, value, allowed):
    """``value`` if it is one of the strings ``allowed``, else ConfigError listing them (and the
    closest, where a misspelt word has one)."""
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise ConfigError(field, f"{_short(value)}{hint}; allowed: {', '.join(allowed)}")
    return value


def _plain(number):
    """A number as plain text (``-0.536``, not ``np.float64(-0.536)``)."""
    return repr(int(number)) if isinstance(number, int) else repr(float(number))


def _short(value, limit=80):
    """``repr(value)`` cut to one line of at most ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def bound_text(number):
    """A range's end as the shortest text that reads back as the same number: ``1e7`` for
    10000000.0, ``0`` for 0.0, ``0.001``, ``3.141592653589793``."""
    if isinstance(number, numbers.Integral):
        return str(int(number))
    number = float(number)
    if not math.isfinite(number):
        return repr(number)

    def tidy(text):
        mantissa, e, exponent = text.partition("e")
        mantissa = mantissa[:-2] if mantissa.endswith(".0") else mantissa
        return mantissa + (f"e{int(exponent)}" if e else "")

    exact = [text for text in (tidy(f"{number:g}"), tidy(repr(number))) if float(text) == number]
    return min(exact, key=len)


def count_text(n, noun):
    """``1 cell``, ``3 cells``, ``2 processes``: a count and its noun, in the plural unless it is one."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def _describe(low, high, low_open=False, high_open=False, allow_inf=False):
    if low is not None and high is not None:
        text = f"{bound_text(low)} {'<' if low_open else '<='} value {'<' if high_open else '<='} {bound_text(high)}"
    elif low is not None:
        text = f"value {'>' if low_open else '>='} {bound_text(low)}"
    elif high is not None:
        text = f"value {'<' if high_open else '<='} {bound_text(high)}"
    else:
        text = "any finite number"
    return text + (" or inf" if allow_inf else "")
