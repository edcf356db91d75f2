"""Entry point of the ``spingpu`` command: ``spingpu info``, ``spingpu devices``, ...

Every bad input ends the command with one line ``spingpu <command>: error: <field>: <problem>``
on stderr and exit status 2, before any output file is written.
"""

from __future__ import annotations

import argparse
import re
import sys

from ..errors import ConfigError

EXIT_USAGE = 2
NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2.

    Values such as ``-4e-4``, ``-.5``, ``-1E+3`` and ``-inf`` are read as negative numbers, not as
    options (a non-finite number is then refused by the option's range check, naming it).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser():
    from . import devices, info, report, run, train

    parser = _Parser(prog="spingpu", description="Variability studies of spintronic (MTJ) neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (info, devices, train, run, report):
        module.add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ConfigError as err:
        print(f"spingpu {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"spingpu {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
