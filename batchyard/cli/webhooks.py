"""``batchyard webhooks ID``: a batch's webhook deliveries (event, URL, state, attempts, the
last try, the next one); ``batchyard webhooks secret``: the secret they are signed with."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import RAW, add_json, console, open_yard, print_json, when, wrap

if TYPE_CHECKING:
    from batchyard.deliveries import Delivery

WEBHOOKS_JSON = (
    '--json prints {"batch", "urls" (those the batch names), "deliveries": [delivery]},\n'
    'each delivery {"id" (its Batchyard-Delivery header), "batch_id", "event", "url",\n'
    '"state" (pending, delivered, failed), "attempts", "created_at", "next_at",\n'
    '"last_status", "last_error", "last_duration" (s), "delivered_at"} (times in unix\n'
    'seconds, null when none). For "secret": {"secret", "from" ("environment" or "store")}.'
)


def register(commands: Any) -> None:
    webhooks = commands.add_parser(
        "webhooks",
        help="a batch's webhook deliveries, or the secret they are signed with",
        description=wrap(
            "With a batch ID: the batch's webhook deliveries, oldest first: the event, the "
            "URL, its state (pending: waiting for its next try; delivered: the receiver "
            "answered 2xx; failed: given up after a day), the tries so far, the last try's "
            "HTTP status or error, when the next try is due and when it was delivered. "
            "With 'secret': the secret every delivery of this store is signed with "
            "(BATCHYARD_WEBHOOK_SECRET if set, else the one made for the store on first "
            "use); receivers check signatures with it (docs/webhooks.md)."
        ),
        epilog=WEBHOOKS_JSON,
        formatter_class=RAW,
    )
    webhooks.add_argument("batch", metavar="ID|secret", help="a batch id, or 'secret'")
    add_json(webhooks)
    webhooks.set_defaults(run=run_webhooks)


def run_webhooks(args: argparse.Namespace) -> int:
    import os

    from batchyard.webhooks import SECRET_ENV, signing_secret

    with open_yard(args, create=False) as yard:
        if args.batch == "secret":
            secret = signing_secret(yard.store)
            where = "environment" if os.environ.get(SECRET_ENV) else "store"
            print_json({"secret": secret, "from": where}) if args.json else print(secret)
            return 0
        batch = yard.batch(args.batch)
        urls, deliveries = batch.webhook_urls(), batch.webhooks()
    if args.json:
        print_json(
            {"batch": args.batch, "urls": urls, "deliveries": [d.as_dict() for d in deliveries]}
        )
    else:
        print_deliveries(args.batch, urls, deliveries)
    return 0


def print_deliveries(batch_id: str, urls: list[str], deliveries: list[Delivery]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not urls:
        out.print(f"{batch_id}: names no webhook ('submit --webhook URL' names one)")
    elif not deliveries:
        out.print(f"{batch_id}: no webhook deliveries yet (made when it ends or pauses) to")
        for url in urls:
            out.print(Text(f"  {url}"))
    if not deliveries:
        return
    table = Table(box=None, header_style="bold")
    columns = ("event", "url", "state", "attempts", "last", "next try", "delivered")
    for column in columns:
        table.add_column(column, justify="right" if column == "attempts" else "left")
    for d in deliveries:
        table.add_row(
            d.event,
            Text(d.url, overflow="fold"),
            d.state.value,
            f"{d.attempts:,}",
            Text(_last(d), overflow="fold"),
            when(d.next_at) if d.state.value == "pending" else "-",
            when(d.delivered_at),
        )
    out.width = max(out.width, 160)
    out.print(table)


def _last(delivery: Delivery) -> str:
    """The last try: its status or error, and how long it took."""
    if delivery.attempts == 0:
        return "-"
    what = delivery.last_error or (str(delivery.last_status) if delivery.last_status else "-")
    took = "" if delivery.last_duration is None else f" ({delivery.last_duration:.2f}s)"
    return what + took
