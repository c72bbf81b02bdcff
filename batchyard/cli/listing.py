"""Looking at batches from the command line: ``list``, ``items`` and ``logs``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchyard.cli import item as one_item
from batchyard.cli.common import (
    ITEM_STATES,
    RAW,
    CommandError,
    add_json,
    console,
    db_url,
    format_duration,
    open_yard,
    positive_int,
    print_json,
    store_exists,
    when,
    wrap,
)

if TYPE_CHECKING:
    from rich.console import Console

    from batchyard.models import BatchStatus, Item, LogLine
    from batchyard.yard import Yard

LIST_FORMATS = """\
--format json prints a JSON array, one status object (see 'status --help') per line,
newest first. --format csv prints a header row and one row per batch with the columns
  id,name,task,state,total,pending,running,retry_wait,succeeded,failed,cancelled,
  progress,tokens_in,tokens_out,cost,created_at,started_at,finished_at,template,rerun_of
(times in ISO 8601, UTC; template is NAME@N or empty, rerun_of the batch re-run or
empty). Both stream: any number of batches with flat memory."""

ITEMS_JSON = """\
--json prints a JSON array, one object per item in submission order:
  {"key", "position", "state", "attempts" (that ran), "duration" (s or null), "error"
   (the last error or null), "error_type", "started_at", "finished_at" (unix seconds or
   null); with --payload also "payload", the item's input}"""

LOGS_JSON = """\
--json prints {"batch_id", "key", "state", "attempts" (that ran), "error", "logs": [{"at"
(unix seconds), "attempt" (the lease's number: leases given back before they ran count
too), "kind", "message"}]}; kinds include log lines, progress messages and each attempt's
error."""


def register(commands: Any) -> None:
    from batchyard.states import BatchState, ItemState

    listing = commands.add_parser(
        "list",
        help="batches, newest first; as a table, JSON or CSV",
        description=wrap("List batches, newest first."),
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
        description=wrap("List a batch's items in submission order."),
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
    items.add_argument(
        "--payload",
        action="store_true",
        help='with --json: add each item\'s input as "payload"',
    )
    add_json(items)
    items.set_defaults(run=run_items)
    one_item.register(commands)

    logs = commands.add_parser(
        "logs",
        help="one item's log lines, progress messages and errors",
        description=wrap(
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


_CSV_COLUMNS = (
    "id,name,task,state,total,pending,running,retry_wait,succeeded,failed,cancelled,"
    "progress,tokens_in,tokens_out,cost,created_at,started_at,finished_at,template,rerun_of"
).split(",")


def run_list(args: argparse.Namespace) -> int:
    from batchyard.views import status_view

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
            + [counts[state] for state in ITEM_STATES]
            + [round(b.progress, 6), usage.tokens_in, usage.tokens_out]
            + ["" if usage.cost_is_unknown else usage.cost]
            + [_iso(b.created_at), _iso(b.started_at), _iso(b.finished_at)]
            + [str(b.template) if b.template else "", b.rerun_of or ""]
        )


def _iso(timestamp: float | None) -> str:
    from datetime import UTC

    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _print_batches(batches: list[BatchStatus]) -> None:
    from rich.table import Table

    from batchyard.live import percent_done

    if not batches:
        console().print("no batches")
        return
    table = Table(box=None, header_style="bold")
    columns = ["id", "name", "task", "state", "items", "done", "failed", "created"]
    if any(b.template for b in batches):
        columns.insert(3, "template")
    for column in columns:
        numeric = column in ("items", "done", "failed")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "name")
    for b in batches:
        template = [str(b.template or "")] if "template" in columns else []
        table.add_row(
            b.id,
            b.name or "",
            b.task,
            *template,
            b.state.value,
            f"{b.counts.total:,}",
            percent_done(b.progress),
            f"{b.counts.failed:,}",
            when(b.created_at)[:-3],
        )
    _wide_console().print(table)


def _wide_console() -> Console:
    # Piped, Rich would assume 80 columns and cut ids short; a pipe has no width to fit.
    out = console()
    if not out.is_terminal:
        out.width = 200
    return out


def _item_row(item: Item, *, payload: bool = False) -> dict[str, Any]:
    row = {
        "key": item.key,
        "position": item.position,
        "state": item.state.value,
        "attempts": item.runs,
        "duration": item.duration,
        "error": item.error,
        "error_type": item.error_type,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
    }
    if payload:
        row["payload"] = item.payload
    return row


def run_items(args: argparse.Namespace) -> int:
    from itertools import islice

    if args.payload and not args.json:
        raise CommandError(
            "--payload goes with --json (a table has no room for inputs; "
            "'batchyard item ID KEY' shows one item whole)"
        )

    limit = args.limit or (None if args.json else 100)
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        # A listing shows no result: never read one (it may be megabytes); inputs on request.
        pages = batch.items(
            args.state, page=min(limit or 1000, 1000), payloads=args.payload, results=False
        )
        rows = islice(pages, limit)
        if args.json:
            _stream_json(_item_row(item, payload=args.payload) for item in rows)
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
            str(item.runs),
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
                "attempts": item.runs,
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
        f"{item.runs} attempt{'s' * (item.runs != 1)}"
    )
    if not lines:
        out.print("no log lines", style="dim")
    width = max((len(ln.kind) for ln in lines), default=0)
    for ln in lines:
        style = "red" if ln.kind == "error" else ""
        out.print(
            f"{when(ln.at)}  #{ln.attempt}  {ln.kind:<{width}} ",
            escape(ln.message),
            style=style,
        )
