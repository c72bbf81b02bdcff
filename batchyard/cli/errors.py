"""``batchyard errors ID``: a batch's failures grouped by signature (error clusters), with
their counts, shares, first and last times and a sample; ``retry ID --cluster C`` sends one
cluster's failed items back (in ``batches``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    add_json,
    command,
    console,
    open_yard,
    positive_int,
    print_json,
    when,
    wrap,
)

if TYPE_CHECKING:
    from batchyard.clusters import ErrorCluster

CLUSTER_JSON = (
    '{"id", "text" (the signature: error class, message with what varies blanked as\n'
    '<num> <str> <hex> <uuid> <id>, and " @ file:function" of the task\'s top frame),\n'
    '"attempts" (failed attempts with it, retried ones included), "items" (items failed\n'
    'with it now), "share" (items over the batch\'s failed items), "first_seen",\n'
    '"last_seen" (unix seconds), "sample" (the first message in full), "sample_key"}'
)
ERRORS_JSON = (
    '--json prints {"batch", "failed" (the batch\'s failed items), "clusters": [cluster]},\n'
    f"each cluster {CLUSTER_JSON}."
)


def register(commands: Any) -> None:
    errors = commands.add_parser(
        "errors",
        help="a batch's failures grouped by signature: counts, shares, first and last seen",
        description=wrap(
            "List a batch's error clusters: its failures grouped by signature (the error "
            "class, the message with ids, numbers, hex and quoted strings blanked, and the "
            "task's top frame), most failed items first. Counts are kept as failures are "
            "recorded: this reads no item. 'batchyard retry ID --cluster C' retries one."
        ),
        epilog=ERRORS_JSON,
        formatter_class=RAW,
    )
    errors.add_argument("batch", metavar="ID", help="the batch id")
    errors.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N clusters (default: all)"
    )
    add_json(errors)
    errors.set_defaults(run=run_errors)


def run_errors(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        clusters = batch.error_clusters(args.limit)
        failed = batch.status().counts.failed
    if args.json:
        print_json(
            {"batch": args.batch, "failed": failed, "clusters": [c.as_dict() for c in clusters]}
        )
    else:
        print_clusters(args.batch, failed, clusters, command(args))
    return 0


def print_clusters(
    batch_id: str, failed: int, clusters: list[ErrorCluster], cli: str = "batchyard"
) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not clusters:
        out.print(f"{batch_id}: no failures recorded")
        return
    attempts = sum(c.attempts for c in clusters)
    out.print(
        f"{batch_id}: {failed:,} failed item{'s' * (failed != 1)}, {attempts:,} failed "
        f"attempt{'s' * (attempts != 1)} in {len(clusters):,} "
        f"cluster{'s' * (len(clusters) != 1)}"
    )
    table = Table(box=None, header_style="bold")
    columns = ("cluster", "items", "share", "attempts", "first seen", "last seen", "signature")
    for column in columns:
        table.add_column(column, justify="right" if column in columns[1:4] else "left")
    for c in clusters:
        table.add_row(
            c.id,
            f"{c.items:,}",
            f"{c.share:.0%}",
            f"{c.attempts:,}",
            when(c.first_seen),
            when(c.last_seen),
            Text(c.text, overflow="fold"),
        )
    out.width = max(out.width, 200)
    out.print(table)
    out.print("samples")
    for c in clusters:
        out.print(Text(f"  {c.id}  {c.sample_key}: {first_line(c.sample)}"))
    failing = [c for c in clusters if c.items]
    if failing:
        out.print(f"retry one: {cli} retry {batch_id} --cluster {failing[0].id}")


def first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "-"
