"""Entry point of the ``spingpu`` command: ``spingpu info``, ``spingpu devices``, ...

Every bad input ends the command with one line ``spingpu <command>: error: <field>: <problem>``
on stderr and exit status 2, before any output file is written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import warnings

from ..errors import MACHINE_ERRNOS, ConfigError, OutputError, SpingpuWarning, one_line, os_error_text
from ..signals import stop_signals_raise, stopped

EXIT_USAGE = 2
EXIT_FAILURE = 1  # the work failed (a task, the machine: a full disk)
NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2.

    Values such as ``-4e-4``, ``-.5``, ``-1E+3`` and ``-inf`` are read as negative numbers, not as
    options (a non-finite number is then refused by the option's range check, naming it). Options
    are given whole: an abbreviation (``--model`` for ``--model-file``, ``--over``) is not an option,
    and the error suggests the closest.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    commands = ()  # the top-level parser's subcommands, named when none is given

    def error(self, message):
        text = field_message(message)
        if text == "command: required" and self.commands:
            text += f"; allowed: {', '.join(self.commands)} (spingpu COMMAND --help)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text}\n")


_ARGPARSE_PROBLEMS = (  # argparse's wording -> ours (a problem after the field's name)
    (re.compile(r"^invalid integer value: (.*)$"), r"expected a whole number, got \1"),
    (re.compile(r"^invalid float value: (.*)$"), r"expected a number, got \1"),
    (re.compile(r"^invalid choice: (.*?) \(choose from (.*)\)$"),
     lambda m: f"{m.group(1)}{_closest(m.group(1), m.group(2))}; allowed: {m.group(2)}"),
    (re.compile(r"^expected one argument$"), "expects a value"),
    (re.compile(r"^expected (\d+) arguments$"), r"expects \1 values"),
)


def _closest(quoted, choices):
    """argparse's invalid choice ``'x'`` among ``'a', 'b'``: the did-you-mean of the closest."""
    from ..errors import did_you_mean

    return did_you_mean(quoted.strip("'"), [c.strip().strip("'") for c in choices.split(",")])


def _option_hint(parser, command, word):
    """`` (did you mean '--x'?)`` for an unknown ``word`` of ``command``: the option the word
    begins with (--grad-modes for --grad-mode), else the options it shortens or names a part of
    (--net for --networks; --model for train's --device-model and --model-file, --device-model for
    devices' --model), else the closest by spelling (dashes aside: "--" is no likeness), else
    ``""``."""
    from ..errors import closest

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = {name.lstrip("-"): name for name in sub._option_string_actions}
    word = word.split("=")[0].lstrip("-")
    begun = max((o for o in options if len(o) > 1 and word.startswith(o)), key=len, default=None)
    named = sorted(o for o in options if len(o) > 1 and len(word) > 1
                   and (o.startswith(word) or word in o.split("-") or o in word.split("-")))
    close = [begun] if begun else named or [closest(word, sorted(options))]
    return f" (did you mean {' or '.join(repr(options[o]) for o in close)}?)" if close[0] else ""


def field_message(message):
    """argparse's ``argument --out/-o: problem`` as ``out: problem`` (the field first, as every
    other error of the CLI); ``the following arguments are required: X`` as ``X: required``."""
    m = re.match(r"^argument ([^:]+): (.*)$", message, re.DOTALL)
    if m:
        names = [n.strip() for n in m.group(1).split("/")]
        field = max(names, key=len).lstrip("-")
        problem = m.group(2)
        for pattern, wording in _ARGPARSE_PROBLEMS:
            problem = pattern.sub(wording, problem)
        return f"{field}: {problem}"
    m = re.match(r"^the following arguments are required: (.*)$", message)
    if m:
        return f"{m.group(1)}: required"
    return message


def build_parser():
    from .. import __version__
    from . import devices, info, report, run, train

    parser = _Parser(prog="spingpu", description="Variability studies of spintronic (MTJ) neural networks.")
    parser.add_argument("--version", action="version", version=f"spingpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (info, devices, train, run, report):
        module.add_parser(sub)
    parser.commands = tuple(sub.choices)
    return parser


def _one_line_warnings(command, show_other):
    """``warnings.showwarning`` printing spingpu's own warnings as ``spingpu <command>: warning:
    <field>: <what>``, and any other warning as ``show_other`` does."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SpingpuWarning):
            line = f"spingpu {command}: warning: {one_line(str(message))}"
            try:  # above a progress bar, which tqdm then draws again
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr if file is None else file)
            except ImportError:
                print(line, file=sys.stderr if file is None else file)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show


class _StdoutAfterItsReaderLeft:
    """``sys.stdout`` of a command: once the pipe's reader has gone (``spingpu train | head -1``),
    what is printed goes to /dev/null and the command carries on, so that a long run still writes
    its results instead of dying with a BrokenPipeError traceback at its next line of output."""

    def __init__(self, stream):
        self._stream = stream

    def _reader_left(self):
        devnull = os.open(os.devnull, os.O_WRONLY)  # on the same descriptor: Python's exit flush goes there too
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_may_close():
    stream = sys.stdout
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's StringIO): nothing to guard
        yield
        return
    sys.stdout = _StdoutAfterItsReaderLeft(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def main(argv=None):
    with _stdout_may_close():
        return _main(argv)


def _main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = [word for word in extra if word != "--"]
    if extra:  # named with the command, like every other error (argparse would say "spingpu: error")
        hint = _option_hint(parser, args.command, extra[0])
        print(f"spingpu {args.command}: error: {extra[0]}: not an option or argument of spingpu {args.command}{hint} "
              f"(spingpu {args.command} --help lists them)", file=sys.stderr)
        return EXIT_USAGE
    try:
        with warnings.catch_warnings(), stop_signals_raise():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return args.run(args) or 0
    except ConfigError as err:
        print(f"spingpu {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(err, OutputError) else EXIT_USAGE
    except OSError as err:
        if err.errno in MACHINE_ERRNOS:  # a full disk, a read-only file system: the machine's, said in one line
            print(f"spingpu {args.command}: error: {os_error_text(err)}", file=sys.stderr)
            return EXIT_FAILURE
        if err.errno != errno.ENAMETOOLONG:
            raise
        # any path the command was given or derives (a store named after its study): the file system's
        # limit is per name in a path, 255 bytes on most
        print(f"spingpu {args.command}: error: {err.filename}: a name in this path is too long for the file "
              "system (most allow 255 bytes per name)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        what, status = stopped(err)
        print(f"spingpu {args.command}: {what}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
