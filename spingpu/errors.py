"""The one exception type for bad configuration or input."""


class ConfigError(ValueError):
    """A bad value, named by its field, with what is allowed.

    ``str(err)`` is one line, ``"<field>: <problem>"``, suitable for a command-line error.
    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self):  # picklable, so that errors raised on Dask workers travel back intact
        return (type(self), (self.field, self.problem))


def check_range(field, value, low=None, high=None, *, low_open=False, high_open=False, integer=False):
    """Return ``value`` as a float (or int) if it lies in the allowed range, else raise ConfigError."""
    import math

    kind = "an integer" if integer else "a number"
    try:
        if integer:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            number = int(value)
        else:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"expected {kind}, got {value!r}") from None
    if not integer and math.isnan(number):
        raise ConfigError(field, f"expected {kind}, got NaN")
    lo_ok = low is None or (number > low if low_open else number >= low)
    hi_ok = high is None or (number < high if high_open else number <= high)
    if not (lo_ok and hi_ok):
        raise ConfigError(field, f"{value!r} is out of range; allowed: {_describe(low, high, low_open, high_open)}")
    return number


def _describe(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"{low} {'<' if low_open else '<='} value {'<' if high_open else '<='} {high}"
    if low is not None:
        return f"value {'>' if low_open else '>='} {low}"
    return f"value {'<' if high_open else '<='} {high}"
