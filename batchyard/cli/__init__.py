"""The command line: ``batchyard [--db URL] COMMAND ...``. Thin: parse, call the Yard, print.

Each command lives in a module of this package that registers its parser; the modules import
nothing heavy at load time, so ``--help`` answers at once. Errors map to exit codes in one
place: 2 for bad input or usage, 1 for any other batchyard error (a message, no traceback
unless ``-v``), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from batchyard.cli import batches, reports, spend, work
from batchyard.cli.common import DB_HELP

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean ...?" for a mistyped command or choice."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong[2])
            close = difflib.get_close_matches(wrong[1], choices, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="batchyard",
        description="Run batches of work durably: submit items, run workers, watch, report.",
        epilog="Run 'batchyard COMMAND --help' for a command's options.",
    )
    parser.add_argument("--db", metavar="URL", help=DB_HELP)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks and worker logs"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_Parser
    )
    commands.required = True
    for module in (batches, work, reports, spend):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (the console script exits with it)."""
    # Tasks are named module:function, with the current folder importable as for `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("batchyard: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `batchyard results ... | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        return _report(exc, verbose=args.verbose)


def _report(exc: Exception, *, verbose: bool) -> int:
    from batchyard.errors import BatchyardError, CommandError, ConfigError, InputError

    if verbose or not isinstance(exc, BatchyardError):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        if not isinstance(exc, BatchyardError):
            return EXIT_FAILED
    print(f"batchyard: error: {exc}", file=sys.stderr)
    if isinstance(exc, (InputError, CommandError, ConfigError)):
        return EXIT_USAGE
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
