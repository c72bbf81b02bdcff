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
from typing import Any, NoReturn

from batchyard.cli import (
    batches,
    catalog,
    datasets,
    errors,
    reports,
    serve,
    spend,
    templates,
    webhooks,
    work,
)
from batchyard.cli.common import DB_HELP

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean ...?" for a mistyped command, choice or option."""

    #: The parser of each command (set on the top-level parser by build_parser).
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong[2])
            close = difflib.get_close_matches(wrong[1], choices, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)

    def parse_command_line(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """parse_args, but an unknown option is reported by its command's parser (with that
        command's usage) and with the closest option it has, or where it goes."""
        args, unknown = self.parse_known_args(argv)
        if unknown:
            parser = self.commands.get(args.command, self)
            hints = (_hint(word, parser, self, args.command) for word in unknown)
            hint = next((h for h in hints if h), "")
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return args


def _hint(
    word: str, parser: argparse.ArgumentParser, top: argparse.ArgumentParser, command: str
) -> str:
    """What to say about one unrecognized word: the closest option of its command, or that
    an option of batchyard itself (-v, --db) goes before the command; else nothing."""
    flag = word.partition("=")[0]
    if not flag.startswith("-"):
        return ""
    if any(flag in action.option_strings for action in top._actions):
        return f"; {flag} goes before the command: 'batchyard {flag} ... {command} ...'"
    options = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


class _Version(argparse.Action):
    """--version: read from the installed package's metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print batchyard's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("batchyard")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "unknown (not installed)"
        print(f"batchyard {found}")
        parser.exit()


def build_parser() -> _Parser:
    parser = _Parser(
        prog="batchyard",
        description="Run batches of work durably: submit items, run workers, watch, report.",
        epilog="Run 'batchyard COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--db", metavar="URL", help=DB_HELP)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks and worker logs"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_Parser
    )
    commands.required = True
    for module in (
        batches,
        work,
        reports,
        spend,
        catalog,
        templates,
        datasets,
        errors,
        serve,
        webhooks,
    ):
        module.register(commands)
    parser.commands = dict(commands.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (the console script exits with it)."""
    # Tasks are named module:function, with the current folder importable as for `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_command_line(argv)
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
