"""Submitting from the command line: the options and input handling shared by ``submit``
and ``run`` (``add_submit_options``, ``submit_from_args``), and the ``submit`` command."""

from __future__ import annotations

import argparse
import re
import time
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    STATUS_JSON,
    add_json,
    console,
    open_yard,
    parse_duration,
    positive_int,
    print_json,
    wrap,
)
from batchyard.cli.sources import add_source_options, check_source, submit_source, takes_source
from batchyard.errors import CommandError

if TYPE_CHECKING:
    from batchyard.batch import Batch
    from batchyard.inputs import Input
    from batchyard.yard import Yard

INPUT_HELP = (
    "INPUT is a file: JSONL (.jsonl, .ndjson, .json: one JSON object per line, blank lines "
    "skipped), CSV (.csv: a header row, values as strings unless --csv-types) or Parquet "
    "(.parquet, .pq: needs pip install 'batchyard[parquet]'); '-' reads stdin (JSONL, or CSV "
    "with --format csv). "
    "A line, and an item as compact JSON, may be at most 1 MiB (1,048,576 bytes). "
    "Any bad line (not JSON, not an object, not UTF-8, too "
    "long, a duplicate key) rejects the whole input with FILE:LINE and the reason, exit "
    "status 2, and writes nothing."
)
#: INPUT_HELP for the commands that make a batch of INPUT (they take --open).
BATCH_INPUT_HELP = INPUT_HELP + " Empty input is an error unless --open."

SOURCES_HELP = (
    "Instead of INPUT: --dataset NAME takes the rows of a stored dataset ('batchyard "
    "dataset add'), all or those --where and --keys pick, copied inside the store, each "
    "item keyed by its row's key; the batch's metadata records the dataset, the conditions "
    'and the number of rows. --count N makes N items {"n": 0} ... {"n": N-1}, keyed '
    "0 ... N-1, for a task that generates from its --param values."
)


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """TASK, INPUT and the options of a new batch (or --batch to append to an open one)."""
    parser.add_argument(
        "task",
        metavar="TASK",
        nargs="?",
        help="module:function, or a built-in task name (with --template: the template's)",
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        nargs="?",
        help="a .jsonl, .csv or .parquet file, or - (or --dataset NAME, or --count N)",
    )
    parser.add_argument(
        "--template",
        metavar="NAME[@N]",
        help="run with a template's task and parameters: NAME its latest version, NAME@N "
        "that one; --param values override the template's",
    )
    add_input_options(parser)
    add_source_options(parser)
    parser.add_argument("--name", help="a name to show beside the batch id")
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="items of this batch in flight at once, across all workers (default: the task's)",
    )
    parser.add_argument(
        "--max-attempts", type=positive_int, metavar="N", help="attempts per item (default: task's)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_duration,
        metavar="DURATION",
        help="time limit per attempt: 30, 30s, 5m, 2h (default: the task's)",
    )
    parser.add_argument(
        "--priority", type=_integer, metavar="N", help="higher runs first (default 0)"
    )
    parser.add_argument(
        "--key-field",
        metavar="FIELD",
        help="the field that gives each item its key (default: id; an item without it is "
        "keyed by its line's item number; a CSV whose header lacks a field named here is "
        "refused)",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="keep the batch open for more items (submit --batch ID) until 'seal ID'",
    )
    parser.add_argument(
        "--batch",
        metavar="ID",
        help="add INPUT's items to this open batch instead of creating one (with the "
        "--key-field it was opened with: the batch does not keep it, and items without it "
        "are keyed by their position)",
    )
    parser.add_argument(
        "--max-result-size",
        dest="max_result_bytes",
        type=byte_size,
        metavar="SIZE",
        help="the largest result an item may return, as JSON: 500KB, 16MiB, 1000000 (default: "
        "the task's, 16 MiB); a bigger one fails its item",
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submit at most once: the same KEY with the same task, options and input gives "
        "the batch made the first time and writes nothing (also when run at the same time); "
        "with other input it is refused. Kept a day",
    )
    add_limit_options(parser)
    parser.add_argument(
        "--webhook",
        dest="webhooks",
        action="append",
        type=webhook_url,
        metavar="URL",
        help="POST the batch's status, signed, to this http(s) URL when it ends, is paused or "
        "needs attention (repeatable; 'batchyard webhooks ID' shows the deliveries)",
    )
    parser.add_argument(
        "--budget",
        type=budget_amount,
        metavar="AMOUNT",
        help="cap the batch's cost (in the price table's currency, USD): it pauses, with "
        "the reason in its status, rather than pass it; 'resume ID --budget N' carries on",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """--format, --csv-types and --param: how INPUT is read and what the task is given."""
    add_csv_options(parser)


def add_csv_options(parser: argparse.ArgumentParser) -> None:
    """--format and --csv-types: how INPUT is read."""
    parser.add_argument(
        "--format",
        dest="input_format",
        choices=("jsonl", "csv", "parquet"),
        help="read INPUT as this format (default: by its extension; JSONL for -)",
    )
    parser.add_argument(
        "--csv-types",
        dest="csv_types",
        action="append",
        type=_csv_types,
        default=[],
        metavar="COL=TYPE,...",
        help="CSV only: convert these columns (types: str, int, float, bool, json), e.g. "
        "employees=int,score=float; other columns stay strings, an empty cell is null, a "
        "value that does not parse rejects the input with FILE:LINE and the column",
    )
    add_param_option(parser)


def add_param_option(parser: argparse.ArgumentParser) -> None:
    """--param KEY=VALUE, repeatable."""
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter (repeatable): VALUE is JSON when it parses as JSON, else a "
        "string; KEY=@FILE takes FILE's text as the string",
    )


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """--rate-limit, --tokens-per-minute and --no-cache: how a batch may call its provider."""
    parser.add_argument(
        "--rate-limit",
        metavar="RATE",
        help="calls allowed across every worker: 25/min, 10/s, 5000/h (default: the task's)",
    )
    parser.add_argument(
        "--tokens-per-minute",
        metavar="N",
        help="tokens allowed across every worker, a number per minute or a rate (5500/min)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="llm task: call the provider even for a request it has answered before",
    )


def budget_amount(text: str) -> float:
    try:
        amount = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount such as 12.50") from None
    if not amount >= 0 or amount == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a budget is an amount of at least 0")
    return amount


def spending(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of Yard.submit/estimate that --rate-limit and --tokens-per-minute set."""
    return {"rate_limit": args.rate_limit, "tokens_per_minute": args.tokens_per_minute}


def task_params(args: argparse.Namespace) -> dict[str, Any]:
    """The --param values, with --no-cache folded in."""
    params = _params(args.params)
    if getattr(args, "no_cache", False):
        params["cache"] = False
    return params


def read_input(args: argparse.Namespace) -> Input:
    """INPUT opened as --format and --csv-types say (see ``open_input``)."""
    from batchyard.inputs import open_input

    types: dict[str, str] = {}
    for given in args.csv_types:
        for column, kind in given.items():
            if column in types:
                raise CommandError(f"--csv-types gives column {column!r} a type twice")
            types[column] = kind
    # Only a key field given on purpose must be a CSV column: the default, id, may be absent.
    key_field = getattr(args, "key_field", None)
    return open_input(args.input, args.input_format, csv_types=types, key_field=key_field)


def _csv_types(text: str) -> dict[str, str]:
    from batchyard.columns import ColumnTypes
    from batchyard.errors import ConfigError

    try:
        return ColumnTypes.parse(text).types
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def submit_from_args(yard: Yard, args: argparse.Namespace) -> tuple[Batch, int]:
    """Submit INPUT as a new batch, or with --batch add it to an open one, all or nothing;
    returns the batch and how many items this call put in it.

    Raises InputError naming FILE:LINE for a bad line or a duplicate key, CommandError for
    options that do not go together, and whatever ``Yard.submit`` or ``Batch.add`` raise.
    """
    from batchyard.errors import InputError

    _shift_positionals(args)
    check_source(args)
    if args.task is None and args.template is None and args.batch is None:
        raise CommandError("submit needs TASK (or --template NAME): which task runs the items")
    params = task_params(args)
    if takes_source(args):
        made = submit_source(yard, args, _submit_options(args, params))
        return made, made.status().counts.total
    with read_input(args) as items:
        try:
            if args.batch is not None:
                return _append(yard, args, items)
            batch = yard.submit(
                args.task,
                items,
                metadata={"input": items.source},
                **_submit_options(args, params),
            )
            return batch, items.count
        except InputError as exc:
            raise _located(exc, items, args.open) from exc.__cause__


def _key_field(args: argparse.Namespace) -> str:
    """The field that keys the items: --key-field, else ``id``."""
    return "id" if args.key_field is None else str(args.key_field)


def _shift_positionals(args: argparse.Namespace) -> None:
    """With --template, TASK may be left out: then the one word given is INPUT (unless
    --dataset or --count make the items, when it is TASK)."""
    if args.template is not None and args.input is None and not takes_source(args):
        args.task, args.input = None, args.task


def _submit_options(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``Yard.submit`` the command line's options give."""
    return {
        "name": args.name,
        "max_attempts": args.max_attempts,
        "priority": args.priority or 0,
        "params": params,
        "open": args.open,
        "key_field": _key_field(args),
        "budget": args.budget,
        "idempotency_key": args.idempotency_key,
        "max_result_bytes": args.max_result_bytes,
        "template": args.template,
        "webhooks": args.webhooks or (),
        **spending(args),
        **_task_overrides(args),
    }


def _task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    # Left out, Yard.submit takes the task's own concurrency and timeout.
    given = {"concurrency": args.concurrency, "timeout": args.timeout}
    return {key: value for key, value in given.items() if value is not None}


def _append(yard: Yard, args: argparse.Namespace, items: Input) -> tuple[Batch, int]:
    from batchyard.errors import InputError

    given = [
        flag
        for flag, value in (
            ("--name", args.name),
            ("--concurrency", args.concurrency),
            ("--max-attempts", args.max_attempts),
            ("--timeout", args.timeout),
            ("--priority", args.priority),
            ("--param", args.params or None),
            ("--open", args.open or None),
            ("--budget", args.budget),
            ("--rate-limit", args.rate_limit),
            ("--tokens-per-minute", args.tokens_per_minute),
            ("--no-cache", args.no_cache or None),
            ("--idempotency-key", args.idempotency_key),
            ("--max-result-size", args.max_result_bytes),
            ("--template", args.template),
            ("--webhook", args.webhooks),
        )
        if value is not None
    ]
    if given:
        raise CommandError(
            f"{', '.join(given)} cannot be used with --batch (the batch has its own)"
        )
    batch = yard.batch(args.batch)
    status = batch.status()
    task = status.task if args.task is None else yard.registry.resolve(args.task).name
    if task != status.task:
        raise CommandError(f"batch {batch.id} runs task {status.task!r}, not {task!r}")
    # NOTE: positions are taken when the append starts; another append racing this one
    # would only shift the line numbers this error path reports, never the items written.
    first = status.counts.total + 1
    try:
        added = batch.add(items, key_field=_key_field(args))
    except InputError as exc:
        raise items.locate(exc, first) from exc.__cause__
    if not added:
        raise InputError("no items: the input is empty", source=items.source)
    return batch, added


def _located(exc: Exception, items: Input, is_open: bool) -> Exception:
    from batchyard.errors import InputError

    if not isinstance(exc, InputError):
        return exc
    if items.count == 0 and exc.position is None and exc.source is None and not is_open:
        return InputError(
            "no items: the input is empty (--open makes an open batch)", source=items.source
        )
    return items.locate(exc)


def _params(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key in params:
            raise CommandError(f"--param {key} is given twice")
        params[key] = value
    return params


def _param(text: str) -> tuple[str, Any]:
    """KEY=VALUE: VALUE as JSON when it parses, else the string; KEY=@FILE: FILE's text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as file:
                return key.strip(), file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise argparse.ArgumentTypeError(f"{key}: cannot read {raw[1:]!r}: {reason}") from None
    import orjson

    try:
        return key.strip(), orjson.loads(raw)
    except orjson.JSONDecodeError:
        return key.strip(), raw


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the time limit must be more than zero")
    return seconds


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_UNITS |= {"k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}


def byte_size(text: str) -> int:
    """A size in bytes: a whole number with an optional unit (KB, MB, GB are powers of
    1000; K, KiB, M, MiB, G, GiB of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (500KB, 16MiB, 1000000)")
    size = int(float(match.group(1)) * unit)
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be at least 1 byte")
    return size


def webhook_url(text: str) -> str:
    """A --webhook URL, checked before any input is read."""
    from batchyard.deliveries import check_webhooks
    from batchyard.errors import InputError

    try:
        return check_webhooks([text])[0]
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


# -- the command ------------------------------------------------------------------------


def register(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="create a batch from a file (or stdin) and queue it",
        description=wrap(
            "Create a batch of TASK over INPUT's items and queue it for workers "
            "('batchyard worker'). Prints the batch id. " + BATCH_INPUT_HELP + " " + SOURCES_HELP
        ),
        epilog=STATUS_JSON.replace("--json prints", "--json prints, once queued,"),
        formatter_class=RAW,
    )
    add_submit_options(submit)
    add_json(submit)
    submit.set_defaults(run=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    from batchyard.views import status_view

    with open_yard(args) as yard:
        batch, added = submit_from_args(yard, args)
        status = batch.status()
    if args.json:
        print_json(status_view(status, time.time()))
        return 0
    if batch.replayed:
        console(stderr=True).print(
            f"idempotency key {args.idempotency_key!r}: {status.id} was submitted with the "
            "same input before; nothing written"
        )
        print(status.id)
        return 0
    if args.batch:
        what = (
            f"{added:,} item{'s' * (added != 1)} added to {status.id}, "
            f"{status.counts.total:,} in all"
        )
    else:
        total = status.counts.total
        what = f"{total:,} item{'s' * (total != 1)} queued as {status.id}"
    runs = f"task {status.task}" + (f", template {status.template}" if status.template else "")
    console(stderr=True).print(
        f"{what} ({runs})"
        + ("" if status.sealed else "; open: add more with --batch, end with 'seal'")
    )
    print(status.id)
    return 0
