"""Where a batch's items come from when not from an INPUT file: the rows of a dataset
(``--dataset NAME [--where ...] [--keys ...]``) or numbered items (``--count N``); options of
``submit`` and ``run``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import CommandError

if TYPE_CHECKING:
    from batchyard.batch import Batch
    from batchyard.yard import Yard

WHERE_HELP = (
    "a condition on a row's field (repeatable; all must hold): FIELD=VALUE, FIELD!=VALUE, "
    "FIELD<VALUE, FIELD<=VALUE, FIELD>VALUE, FIELD>=VALUE, FIELD~TEXT (contains, any case), "
    "FIELD=A|B|C (one of). VALUE is read as the field's type: numbers compare as numbers"
)


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--where", action="append", default=[], metavar="CONDITION", help=WHERE_HELP
    )
    parser.add_argument(
        "--keys", type=_keys, metavar="K1,K2,...", help="only the rows with these keys"
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, --where, --keys and --count: a batch's items without an INPUT file."""
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="take the items from this dataset's rows (all, or those --where and --keys "
        "pick), copied inside the store; instead of INPUT",
    )
    add_selection_options(parser)
    parser.add_argument(
        "--count",
        type=_count,
        metavar="N",
        help='make N items numbered 0 to N-1 ({"n": 0}, ...; keys "0", ...) for a task '
        "that generates from its --param values; instead of INPUT",
    )


def _keys(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise argparse.ArgumentTypeError(f"{text!r} names no key")
    return keys


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a batch needs at least 1 item")
    return value


# -- submit --dataset / --count -----------------------------------------------------------


def takes_source(args: argparse.Namespace) -> bool:
    """Whether a submission's items come from --dataset or --count rather than INPUT."""
    return args.dataset is not None or args.count is not None


def check_source(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before anything is opened or written."""
    if args.dataset is None and (args.where or args.keys):
        raise CommandError("--where and --keys pick rows of a dataset: add --dataset NAME")
    if args.dataset is not None and args.count is not None:
        raise CommandError("--dataset and --count cannot be used together")
    if not takes_source(args):
        if args.input is None:
            raise CommandError("name an INPUT file (or -), --dataset NAME or --count N")
        return
    flag = "--dataset" if args.dataset is not None else "--count"
    if args.input is not None:
        what = "takes the items from the dataset" if flag == "--dataset" else "makes the items"
        raise CommandError(f"{flag} {what}: give no INPUT file ({args.input} was given)")
    given = [
        option
        for option, value in (
            ("--batch", args.batch),
            ("--format", args.input_format),
            ("--csv-types", args.csv_types or None),
            ("--open", args.open if flag == "--dataset" else None),
            ("--key-field", args.key_field),
        )
        if value
    ]
    if given:
        raise CommandError(f"{', '.join(given)} cannot be used with {flag}")


def submit_source(yard: Yard, args: argparse.Namespace, options: dict[str, Any]) -> Batch:
    """The batch of --dataset's rows or of --count items, with ``options`` (the keywords
    of ``Yard.submit`` the other options made)."""
    if args.count is not None:
        metadata = {"count": args.count}
        return yard.submit(args.task, count=args.count, metadata=metadata, **options)
    for unused in ("open", "key_field"):
        options.pop(unused, None)
    return yard.datasets.submit(
        args.task, args.dataset, where=args.where, keys=args.keys, **options
    )
