"""Parsing of command-line values shared by several commands."""

from __future__ import annotations

import argparse
import contextlib
from decimal import Decimal, InvalidOperation

from ..errors import ConfigError


MAX_INTEGER_DIGITS = 30  # far beyond every count and seed (64 bits) spingpu takes


def integer(text):
    """argparse type of a count: ``100``, or a whole number written as ``1e6`` or ``2.0`` (read
    exactly, as a decimal: ``1e23`` is 10**23, not the nearest float). One of more than
    MAX_INTEGER_DIGITS digits is refused as such (``1e999999999`` would take minutes to build)."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(text) from None
    if value.is_finite() and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise argparse.ArgumentTypeError(f"{text.strip()} is out of range; allowed: whole numbers of at most "
                                         f"{MAX_INTEGER_DIGITS} digits")
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(text)
    return int(value)


integer.__name__ = "integer"  # argparse names the type in its message: "invalid integer value"


def parse_param(text):
    """``NAME=VALUE`` (VALUE a number, ``x,y,z`` for a vector, or a word such as ``slonczewski``
    for a model's option) into (name, float, tuple or str)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError("param", f"{text!r}: expected NAME=VALUE (vectors as NAME=x,y,z)")
    if value.strip().isidentifier() and value.strip().lower() not in ("inf", "infinity", "nan"):
        return name, value.strip()  # a word: the model checks it
    parts = [v.strip() for v in value.split(",")]
    try:
        numbers = tuple(float(v) for v in parts)
    except ValueError:
        raise ConfigError(f"param {name}", f"{value!r} is not a number (vectors are written x,y,z)") from None
    return name, numbers[0] if len(numbers) == 1 else numbers


def params_dict(texts, model_name=None):
    """Every ``--param`` as a dict; a name given twice is an error."""
    out = {}
    for text in texts or ():
        name, value = parse_param(text)
        if name in out:
            raise ConfigError(f"param {name}", "given more than once")
        out[name] = value
    return out


MODEL_HELP = ("device model: stt_compact (the default), stt_compact_f32 (the same junction in float32), "
              "tabulated (with --iv-csv), macrospin, or one that --model-file registers")
SPREAD_HELP = {  # --sigma-* of the commands that sample junctions
    "d2d": "device-to-device spread: the std of ln p of every lognormal device parameter p (about its "
           "relative spread), in units of spread_scale for the normal ones (angles, offsets) (default 0)",
    "pair": "mismatch of the two junctions of a pair, on top of --sigma-d2d, same units (default 0)",
    "chip": "chip-to-chip spread, shared by every junction of a network (chip), same units (default 0)",
}


def run_model_file_option(path, model, option):
    """``--model-file FILE``: run the Python file whose spingpu.register_model calls make the
    models a command may then name (:mod:`spingpu.devices.model_files`); ConfigError naming
    ``model-file`` where it is not a file or fails, or where ``model`` (the name the command's
    ``--OPTION`` gives, or its default) is none of them: the file would do nothing."""
    if path is None:
        return
    import os
    from pathlib import Path

    from ..devices.model_files import registers_text, run_model_file

    if not path.strip() or not Path(os.path.expanduser(path)).is_file():
        raise ConfigError("model-file", f"{path!r} is not a file; expected a Python file that calls "
                                        "spingpu.register_model")
    names = run_model_file(str(Path(os.path.expanduser(path)).resolve()), field="model-file")
    if model not in names:
        raise ConfigError("model-file", f"{path} {registers_text(names)}, and --{option} is {model!r}: name one of "
                                        f"its models with --{option}, or leave --model-file out")


def add_spread_options(parser, default=0.0):
    """--sigma-d2d, --sigma-pair and --sigma-chip (floats; unset, they hold ``default``; their
    help says 0, Variability's default)."""
    for level in ("d2d", "pair", "chip"):
        parser.add_argument(f"--sigma-{level}", type=float, default=default, help=SPREAD_HELP[level])


# Configuration fields named as the options that set them, for error messages.
OPTION_OF_FIELD = {"grad_mode": "grad", "delta_i": "delta-i", "batch_size": "batch-size", "lr_schedule": "lr-schedule",
                   "lr_schedule every": "lr-schedule EVERY", "lr_schedule gamma": "lr-schedule GAMMA",
                   "weight_decay": "weight-decay", "read_noise": "read-noise", "adc_bits": "adc-bits",
                   "adc_range": "adc-range", "adc_range[0]": "adc-range", "adc_range[1]": "adc-range",
                   "sigma_d2d": "sigma-d2d", "sigma_pair": "sigma-pair", "sigma_chip": "sigma-chip",
                   "model": "device-model", "data_dir": "data-dir", "i_bias": "i-bias", "i_gain": "i-gain",
                   "r_ref": "r-ref", "v_scale": "v-scale", "noise_model": "noise-model",
                   "temperature": "noise-temperature", "bandwidth": "noise-bandwidth", "dac_bits": "dac-bits",
                   "dac_range": "dac-range", "dac_range[0]": "dac-range", "dac_range[1]": "dac-range"}


@contextlib.contextmanager
def named_as_options():
    """ConfigErrors of configuration fields re-raised under the command-line option that sets them."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(OPTION_OF_FIELD.get(err.field, err.field), err.problem) from None
