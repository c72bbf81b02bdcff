"""Commands about batches: their status, history and control."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any

from batchyard.cli.common import add_json, console, format_duration, open_yard, print_json


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="a batch's state, counts, progress, throughput, ETA, usage and timestamps",
        description="Show a batch's state, item counts per state, progress, throughput, "
        "ETA, usage (tokens, cost) and timestamps. Reading it is O(1) at any size.",
    )
    status.add_argument("batch", metavar="ID", help="the batch id (batch_...)")
    add_json(status)
    status.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    from batchyard.cli.views import status_view

    with open_yard(args) as yard:
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
