"""Commands about batches: submitting them, their status, history and control.

``add_submit_options`` and ``submit_from_args`` are shared with ``run``, which submits the
same way and then works the batch in its own process.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    CommandError,
    add_json,
    console,
    db_url,
    format_duration,
    open_yard,
    parse_duration,
    positive_int,
    print_json,
    store_exists,
)

if TYPE_CHECKING:
    from rich.console import Console

    from batchyard.inputs import Input
    from batchyard.models import BatchStatus, Item, LogLine
    from batchyard.yard import Batch, Yard

INPUT_HELP = (
    "INPUT is a file: JSONL (.jsonl, .ndjson, .json: one JSON object per line, blank lines "
    "skipped), CSV (.csv: a header row, values as strings) or Parquet (.parquet, .pq: needs "
    "pip install 'batchyard[parquet]'); '-' reads stdin (JSONL, or CSV with --format csv). "
    "A line may be at most 1 MiB. Any bad line (not JSON, not an object, not UTF-8, too "
    "long, a duplicate key) rejects the whole input with FILE:LINE and the reason, exit "
    "status 2, and creates no batch. Empty input is an error unless --open."
)


STATUS_JSON = """\
--json prints the status object:
  {"id", "name", "task", "state", "counts": {"pending", "running", "retry_wait",
   "succeeded", "failed", "cancelled", "total"}, "progress" (0..1), "usage": {"tokens_in",
   "tokens_out", "cost"}, "sealed", "concurrency", "max_attempts", "timeout", "priority",
   "metadata", "params", "round", "created_at", "started_at", "finished_at", "updated_at"
   (unix seconds or null), "elapsed" (s), "throughput" (items/s), "eta" (s or null)}"""

RAW = argparse.RawDescriptionHelpFormatter


def _wrap(text: str) -> str:
    # The RAW formatter keeps the JSON shapes of an epilog as written; wrap the prose here.
    import textwrap

    return textwrap.fill(text, 88)


def register(commands: Any) -> None:
    """Adds submit, seal, status, list, items, logs, retry, cancel, pause, resume, delete
    and prune."""
    _register_submit(commands)
    status = commands.add_parser(
        "status",
        help="a batch's state, counts, progress, throughput, ETA, usage and timestamps",
        description="Show a batch's state, item counts per state, progress, throughput, "
        "ETA, usage (tokens, cost) and timestamps. Reading it is O(1) at any size.",
        epilog=STATUS_JSON,
    )
    status.add_argument("batch", metavar="ID", help="the batch id (batch_...)")
    add_json(status)
    status.set_defaults(run=run_status)
    _register_listing(commands)
    _register_control(commands)


def run_status(args: argparse.Namespace) -> int:
    from batchyard.cli.views import status_view

    with open_yard(args, create=False) as yard:
        view = status_view(yard.batch(args.batch).status(), time.time())
    if args.json:
        print_json(view)
    else:
        print_status(view)
    return 0


def print_status(view: dict[str, Any]) -> None:
    from rich.table import Table

    counts, usage = view["counts"], view["usage"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    title = f"{view['id']}" + (f"  {view['name']!r}" if view["name"] else "")
    table.add_row("batch", title)
    table.add_row("task", view["task"])
    table.add_row(
        "state",
        f"{view['state']}  {view['progress']:.0%}  "
        f"({counts['total'] - counts['pending'] - counts['running'] - counts['retry_wait']}"
        f"/{counts['total']} finished)" + ("" if view["sealed"] else "  open: takes more items"),
    )
    table.add_row(
        "items",
        "  ".join(f"{state} {counts[state]:,}" for state in _STATES),
    )
    pace = f"{view['throughput']:,.1f} items/s" if view["throughput"] else "-"
    table.add_row("throughput", f"{pace}   ETA {format_duration(view['eta'])}")
    table.add_row(
        "usage",
        f"{usage['tokens_in']:,} tokens in  {usage['tokens_out']:,} out  ${usage['cost']:,.4f}",
    )
    table.add_row(
        "times",
        "  ".join(
            f"{label} {_when(view[key])}"
            for label, key in (
                ("created", "created_at"),
                ("started", "started_at"),
                ("finished", "finished_at"),
            )
        )
        + f"  (elapsed {format_duration(view['elapsed'])})",
    )
    console().print(table)


_STATES = ("pending", "running", "retry_wait", "succeeded", "failed", "cancelled")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


# -- submitting -----------------------------------------------------------------------


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """TASK, INPUT and the options of a new batch (or --batch to append to an open one)."""
    parser.add_argument("task", metavar="TASK", help="module:function, or a built-in task name")
    parser.add_argument("input", metavar="INPUT", help="a .jsonl, .csv or .parquet file, or -")
    parser.add_argument(
        "--format",
        dest="input_format",
        choices=("jsonl", "csv", "parquet"),
        help="read INPUT as this format (default: by its extension; JSONL for -)",
    )
    parser.add_argument("--name", help="a name to show beside the batch id")
    parser.add_argument(
        "--concurrency", type=positive_int, metavar="N", help="items in flight at once per worker"
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
        "--param",
        dest="params",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter (repeatable): VALUE is JSON when it parses as JSON, else a "
        "string; KEY=@FILE takes FILE's text as the string",
    )
    parser.add_argument(
        "--key-field",
        default="id",
        metavar="FIELD",
        help="the field that gives each item its key (default: id; an item without it is "
        "keyed by its line's item number)",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="keep the batch open for more items (submit --batch ID) until 'seal ID'",
    )
    parser.add_argument(
        "--batch",
        metavar="ID",
        help="add INPUT's items to this open batch instead of creating one",
    )


def submit_from_args(yard: Yard, args: argparse.Namespace) -> Batch:
    """Submit INPUT as a new batch, or with --batch add it to an open one, all or nothing.

    Raises InputError naming FILE:LINE for a bad line or a duplicate key, CommandError for
    options that do not go together, and whatever ``Yard.submit`` or ``Batch.add`` raise.
    """
    from batchyard.errors import InputError
    from batchyard.inputs import open_input

    params = _params(args.params)
    with open_input(args.input, args.input_format) as items:
        try:
            if args.batch is not None:
                return _append(yard, args, items)
            return yard.submit(
                args.task,
                items,
                name=args.name,
                max_attempts=args.max_attempts,
                priority=args.priority or 0,
                params=params,
                open=args.open,
                key_field=args.key_field,
                metadata={"input": items.source},
                **_task_overrides(args),
            )
        except InputError as exc:
            raise _located(exc, items, args.open) from exc.__cause__


def _task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    # Left out, Yard.submit takes the task's own concurrency and timeout.
    given = {"concurrency": args.concurrency, "timeout": args.timeout}
    return {key: value for key, value in given.items() if value is not None}


def _append(yard: Yard, args: argparse.Namespace, items: Input) -> Batch:
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
        )
        if value is not None
    ]
    if given:
        raise CommandError(
            f"{', '.join(given)} cannot be used with --batch (the batch has its own)"
        )
    batch = yard.batch(args.batch)
    status = batch.status()
    task = yard.registry.resolve(args.task).name
    if task != status.task:
        raise CommandError(f"batch {batch.id} runs task {status.task!r}, not {task!r}")
    # NOTE: positions are taken when the append starts; another append racing this one
    # would only shift the line numbers this error path reports, never the items written.
    first = status.counts.total + 1
    try:
        added = batch.add(items, key_field=args.key_field)
    except InputError as exc:
        raise items.locate(exc, first) from exc.__cause__
    if not added:
        raise InputError("no items: the input is empty", source=items.source)
    return batch


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


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


# -- commands ---------------------------------------------------------------------------


def _register_submit(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="create a batch from a file (or stdin) and queue it",
        description=_wrap(
            "Create a batch of TASK over INPUT's items and queue it for workers "
            "('batchyard worker'). Prints the batch id. " + INPUT_HELP
        ),
        epilog=STATUS_JSON.replace("--json prints", "--json prints, once queued,"),
        formatter_class=RAW,
    )
    add_submit_options(submit)
    add_json(submit)
    submit.set_defaults(run=run_submit)
    seal = commands.add_parser(
        "seal",
        help="an open batch stops taking items",
        description=_wrap(
            "Seal an open batch: it takes no more items and ends once they are done."
        ),
        epilog=STATUS_JSON,
        formatter_class=RAW,
    )
    seal.add_argument("batch", metavar="ID", help="the batch id")
    add_json(seal)
    seal.set_defaults(run=_control("seal", "sealed"))


def run_submit(args: argparse.Namespace) -> int:
    from batchyard.cli.views import status_view

    with open_yard(args) as yard:
        batch = submit_from_args(yard, args)
        status = batch.status()
    if args.json:
        print_json(status_view(status, time.time()))
        return 0
    verb = "added to" if args.batch else "queued as"
    console(stderr=True).print(
        f"{status.counts.total:,} items {verb} {status.id} (task {status.task})"
        + ("" if status.sealed else "; open: add more with --batch, end with 'seal'")
    )
    print(status.id)
    return 0


LIST_FORMATS = """\\
--format json prints a JSON array, one status object (see 'status --help') per line,
newest first. --format csv prints a header row and one row per batch with the columns
  id,name,task,state,total,pending,running,retry_wait,succeeded,failed,cancelled,
  progress,tokens_in,tokens_out,cost,created_at,started_at,finished_at
(times in ISO 8601, UTC). Both stream: any number of batches with flat memory."""

ITEMS_JSON = """\\
--json prints a JSON array, one object per item in submission order:
  {"key", "position", "state", "attempts", "duration" (s or null), "error" (the last
   error or null), "error_type", "started_at", "finished_at" (unix seconds or null)}"""

LOGS_JSON = """\\
--json prints {"batch_id", "key", "state", "attempts", "error", "logs": [{"at" (unix
seconds), "attempt", "kind", "message"}]}; kinds include log lines, progress messages and
each attempt's error."""


def _register_listing(commands: Any) -> None:
    from batchyard.states import BatchState, ItemState

    listing = commands.add_parser(
        "list",
        help="batches, newest first; as a table, JSON or CSV",
        description=_wrap("List batches, newest first."),
        epilog=LIST_FORMATS,
        formatter_class=RAW,
    )
    listing.add_argument("--state", choices=[s.value for s in BatchState], help="only these")
    listing.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="at most N batches (default: 50 in a table, all with json or csv)",
    )
    listing.add_argument("--format", choices=("table", "json", "csv"), default="table")
    listing.add_argument(
        "--json", action="store_const", dest="format", const="json", help="--format json"
    )
    listing.set_defaults(run=run_list)

    items = commands.add_parser(
        "items",
        help="a batch's items: key, state, attempts, duration, last error",
        description=_wrap("List a batch's items in submission order."),
        epilog=ITEMS_JSON,
        formatter_class=RAW,
    )
    items.add_argument("batch", metavar="ID", help="the batch id")
    items.add_argument("--state", choices=[s.value for s in ItemState], help="only these")
    items.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="at most N items (default: 100 in a table, all with --json)",
    )
    add_json(items)
    items.set_defaults(run=run_items)

    logs = commands.add_parser(
        "logs",
        help="one item's log lines, progress messages and errors",
        description=_wrap(
            "Show one item's log lines, progress messages and every attempt's "
            "error, with their times."
        ),
        epilog=LOGS_JSON,
        formatter_class=RAW,
    )
    logs.add_argument("batch", metavar="ID", help="the batch id")
    logs.add_argument("key", metavar="KEY", help="the item's key")
    add_json(logs)
    logs.set_defaults(run=run_logs)


CONTROL_JSON = STATUS_JSON.replace("--json prints", "--json prints, afterwards,")


def _register_control(commands: Any) -> None:
    helps = {
        "retry": "send a batch's failed items back, ahead of fresh work (attempts kept)",
        "cancel": "cancel a batch: no more claims; running items are told to stop",
        "pause": "stop claims on a batch; running items finish",
        "resume": "let workers claim a paused batch's items again",
    }
    for name, text in helps.items():
        parser = commands.add_parser(
            name,
            help=text,
            description=_wrap(text[0].upper() + text[1:] + "."),
            epilog=CONTROL_JSON
            + ('\nretry --json adds "retried": how many items it sent back.' * (name == "retry")),
            formatter_class=RAW,
        )
        parser.add_argument("batch", metavar="ID", help="the batch id")
        add_json(parser)
        parser.set_defaults(run=run_retry if name == "retry" else _control(name, _DONE[name]))

    delete = commands.add_parser(
        "delete",
        help="delete a finished batch and everything recorded about it",
        description="Delete a finished batch (cancel it first if it is not finished).",
        epilog='--json prints {"id", "deleted": true}.',
    )
    delete.add_argument("batch", metavar="ID", help="the batch id")
    add_json(delete)
    delete.set_defaults(run=run_delete)

    prune = commands.add_parser(
        "prune",
        help="delete finished batches older than a given age",
        description="Delete every finished batch that ended more than --older-than ago.",
        epilog='--json prints {"deleted" (how many batches), "older_than" (seconds)}.',
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="an age such as 90s, 15m, 12h, 7d or 2w",
    )
    add_json(prune)
    prune.set_defaults(run=run_prune)


_DONE = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}


def _control(method: str, done: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from batchyard.cli.views import status_view

        with open_yard(args, create=False) as yard:
            status = getattr(yard.batch(args.batch), method)()
        if args.json:
            print_json(status_view(status, time.time()))
        else:
            console().print(f"{done} {status.id}: now {status.state.value}")
        return 0

    return run


def run_retry(args: argparse.Namespace) -> int:
    from batchyard.cli.views import status_view

    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        retried = batch.retry_failed()
        status = batch.status()
    if args.json:
        print_json({**status_view(status, time.time()), "retried": retried})
    elif retried:
        console().print(f"sent {retried:,} failed items of {status.id} back to the queue")
    else:
        console().print(f"{status.id} has no failed items to retry")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        yard.batch(args.batch).delete()
    if args.json:
        print_json({"id": args.batch, "deleted": True})
    else:
        console().print(f"deleted {args.batch}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        deleted = yard.prune(args.older_than)
    if args.json:
        print_json({"deleted": deleted, "older_than": args.older_than})
    else:
        age = format_duration(args.older_than)
        console().print(f"deleted {deleted:,} finished batches older than {age}")
    return 0


_CSV_COLUMNS = (
    "id,name,task,state,total,pending,running,retry_wait,succeeded,failed,cancelled,"
    "progress,tokens_in,tokens_out,cost,created_at,started_at,finished_at"
).split(",")


def run_list(args: argparse.Namespace) -> int:
    from batchyard.cli.views import status_view

    limit = args.limit or (50 if args.format == "table" else None)
    if not store_exists(db_url(args)):  # nothing submitted here yet: nothing to list
        if args.format == "json":
            print_json([])
        elif args.format == "csv":
            _stream_csv(iter(()))
        else:
            _print_batches([])
        return 0
    with open_yard(args, create=False) as yard:
        batches = _all_batches(yard, args.state, limit)
        if args.format == "json":
            _stream_json(status_view(b, time.time()) for b in batches)
        elif args.format == "csv":
            _stream_csv(batches)
        else:
            _print_batches(list(batches))
    return 0


def _all_batches(yard: Yard, state: str | None, limit: int | None) -> Iterator[BatchStatus]:
    after, left = None, limit
    while left is None or left > 0:
        page = yard.batches(state=state, limit=min(left or 500, 500), after=after)
        yield from page.rows
        if left is not None:
            left -= len(page.rows)
        if page.next is None or not page.rows:
            return
        after = page.next


def _stream_json(rows: Iterable[dict[str, Any]]) -> None:
    """A JSON array with one element per line, written as it is read."""
    import orjson

    out = sys.stdout
    out.write("[")
    for n, row in enumerate(rows):
        out.write(("\n" if n == 0 else ",\n") + orjson.dumps(row).decode())
    out.write("\n]\n")


def _stream_csv(batches: Iterable[BatchStatus]) -> None:
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for b in batches:
        counts, usage = b.counts.as_dict(), b.usage
        writer.writerow(
            [b.id, b.name or "", b.task, b.state.value, b.counts.total]
            + [counts[state] for state in _STATES]
            + [round(b.progress, 6), usage.tokens_in, usage.tokens_out, usage.cost]
            + [_iso(b.created_at), _iso(b.started_at), _iso(b.finished_at)]
        )


def _iso(timestamp: float | None) -> str:
    from datetime import UTC

    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _print_batches(batches: list[BatchStatus]) -> None:
    from rich.table import Table

    if not batches:
        console().print("no batches")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "task", "state", "items", "done", "failed", "created"):
        numeric = column in ("items", "done", "failed")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "name")
    for b in batches:
        table.add_row(
            b.id,
            b.name or "",
            b.task,
            b.state.value,
            f"{b.counts.total:,}",
            f"{b.progress:.0%}",
            f"{b.counts.failed:,}",
            _when(b.created_at)[:-3],
        )
    _wide_console().print(table)


def _wide_console() -> Console:
    # Piped, Rich would assume 80 columns and cut ids short; a pipe has no width to fit.
    out = console()
    if not out.is_terminal:
        out.width = 200
    return out


def _item_row(item: Item) -> dict[str, Any]:
    return {
        "key": item.key,
        "position": item.position,
        "state": item.state.value,
        "attempts": item.attempts,
        "duration": item.duration,
        "error": item.error,
        "error_type": item.error_type,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
    }


def run_items(args: argparse.Namespace) -> int:
    from itertools import islice

    limit = args.limit or (None if args.json else 100)
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        rows = islice(batch.items(args.state, page=min(limit or 1000, 1000)), limit)
        if args.json:
            _stream_json(_item_row(item) for item in rows)
        else:
            _print_items(list(rows), batch.status().counts.total, limit)
    return 0


def _last_error(item: Item) -> str:
    """One line for a table: an error's last line (a traceback's ends with the exception)."""
    lines = [line for line in (item.error or "").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if item.error_type and last and not last.startswith(item.error_type):
        return f"{item.error_type}: {last}"
    return last


def _print_items(items: list[Item], total: int, limit: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    if not items:
        console().print("no items")
        return
    table = Table(box=None, header_style="bold")
    for column in ("key", "state", "attempts", "duration", "last error"):
        table.add_column(column, justify="right" if column in ("attempts", "duration") else "left")
    for item in items:
        error = _last_error(item)
        table.add_row(
            item.key,
            item.state.value,
            str(item.attempts),
            format_duration(item.duration),
            Text(error, overflow="ellipsis", no_wrap=True),
        )
    out = _wide_console()
    out.print(table)
    if limit is not None and len(items) == limit and total > limit:
        out.print(f"(the first {limit:,}; --limit N or --json for more)", style="dim")


def run_logs(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        item = batch.item(args.key)
        lines = batch.logs(args.key)
    if args.json:
        print_json(
            {
                "batch_id": item.batch_id,
                "key": item.key,
                "state": item.state.value,
                "attempts": item.attempts,
                "error": item.error,
                "logs": [
                    {"at": ln.at, "attempt": ln.attempt, "kind": ln.kind, "message": ln.message}
                    for ln in lines
                ],
            }
        )
        return 0
    _print_logs(item, lines)
    return 0


def _print_logs(item: Item, lines: list[LogLine]) -> None:
    from rich.markup import escape

    out = console()
    out.print(
        f"[bold]{escape(item.key)}[/]  {item.state.value}  "
        f"{item.attempts} attempt{'s' * (item.attempts != 1)}"
    )
    if not lines:
        out.print("no log lines", style="dim")
    for ln in lines:
        style = "red" if ln.kind == "error" else ""
        out.print(
            f"{_when(ln.at)}  #{ln.attempt}  {ln.kind:<8} ",
            escape(ln.message),
            style=style,
        )
