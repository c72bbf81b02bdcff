"""Commands about one batch: its status and control (seal, retry, cancel, pause, resume,
delete, prune). Submitting is in ``submit``, looking around in ``listing``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from batchyard.cli import listing, submit
from batchyard.cli.common import (
    ITEM_STATES,
    RAW,
    STATUS_JSON,
    add_json,
    console,
    db_url,
    format_duration,
    human_age,
    open_yard,
    parse_duration,
    print_json,
    when,
    wrap,
)

if TYPE_CHECKING:
    from batchyard.models import Reruns


def register(commands: Any) -> None:
    """Adds submit, seal, status, list, items, logs, retry, cancel, pause, resume, delete
    and prune."""
    submit.register(commands)
    _register_seal(commands)
    status = commands.add_parser(
        "status",
        help="a batch's state, counts, progress, throughput, ETA, usage and timestamps",
        description="Show a batch's state, item counts per state, progress, throughput, "
        "ETA, usage (tokens, cost) and timestamps. Reading it is O(1) at any size. Without "
        "ID: the newest batch (its id is said on stderr).",
        epilog=STATUS_JSON[:-1] + STATUS_CLUSTERS,
        formatter_class=RAW,
    )
    status.add_argument(
        "batch", metavar="ID", nargs="?", help="the batch id (batch_...; default: the newest)"
    )
    add_json(status)
    status.set_defaults(run=run_status)
    listing.register(commands)
    _register_control(commands)


def _register_seal(commands: Any) -> None:
    seal = commands.add_parser(
        "seal",
        help="an open batch stops taking items",
        description=wrap("Seal an open batch: it takes no more items and ends once they are done."),
        epilog=STATUS_JSON,
        formatter_class=RAW,
    )
    seal.add_argument("batch", metavar="ID", help="the batch id")
    add_json(seal)
    seal.set_defaults(run=_control("seal", "sealed"))


def run_status(args: argparse.Namespace) -> int:
    from batchyard.clusters import TOP_CLUSTERS
    from batchyard.views import status_view

    with open_yard(args, create=False) as yard:
        if args.batch is None:
            newest = yard.batches(limit=1).rows
            if not newest:
                from batchyard.store import sqlite_path

                # Not the URL itself: a PostgreSQL one may hold a password.
                where = sqlite_path(db_url(args)) or "the store"
                print(
                    f"no batches in {where} yet: submit one first "
                    "('batchyard submit TASK FILE', or try 'batchyard demo')",
                    file=sys.stderr,
                )
                return 1
            args.batch = newest[0].id
            print(f"the newest batch: {args.batch}", file=sys.stderr)
        batch = yard.batch(args.batch)
        status = batch.status()
        view = status_view(status, time.time(), batch.finishes())
        if args.json:
            view["error_clusters"] = [c.as_dict() for c in batch.error_clusters(TOP_CLUSTERS)]
    if args.json:
        print_json(view)
    else:
        print_status(view, status.reruns)
    return 0


def _eta_text(view: dict[str, Any]) -> str:
    """``4m 10s`` (one figure), or ``3m 50s-4m 40s`` once the range means something."""
    span = view.get("eta_range")
    if span:
        return f"{format_duration(span[0])}-{format_duration(span[1])}"
    return format_duration(view["eta"])


def print_status(view: dict[str, Any], reruns: Reruns | None = None) -> None:
    """The status as text; with ``reruns``, a line on why items ran again, if any did."""
    from rich.table import Table

    counts = view["counts"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    title = f"{view['id']}" + (f"  {view['name']!r}" if view["name"] else "")
    table.add_row("batch", title)
    table.add_row("task", view["task"])
    if view.get("template"):
        table.add_row("template", view["template"])
    if view.get("rerun_of"):
        table.add_row("re-run of", view["rerun_of"])
    table.add_row(
        "state",
        f"{view['state']}  {view['progress']:.0%}  "
        f"({counts['succeeded'] + counts['failed'] + counts['cancelled']}"
        f"/{counts['total']} finished)" + ("" if view["sealed"] else "  open: takes more items"),
    )
    shown = [*ITEM_STATES, "waiting"] if counts.get("waiting") else ITEM_STATES
    table.add_row("items", "  ".join(f"{state} {counts[state]:,}" for state in shown))
    if view["waiting_on"]:
        table.add_row("waiting", _waiting_text(view["waiting_on"]))
    pace = f"{view['throughput']:,.1f} items/s" if view["throughput"] else "-"
    table.add_row("throughput", f"{pace}   ETA {_eta_text(view)}")
    if view.get("stalled"):
        table.add_row("stalled", f"nothing started or ended for {format_duration(view['quiet'])}")
    if reruns is not None and reruns.total:
        table.add_row("ran again", reruns.describe())
    for label, text in usage_rows(view):
        table.add_row(label, text)
    table.add_row(
        "times",
        "  ".join(
            f"{label} {when(view[key])}"
            for label, key in (
                ("created", "created_at"),
                ("started", "started_at"),
                ("finished", "finished_at"),
            )
        )
        + f"  (elapsed {format_duration(view['elapsed'])})",
    )
    console().print(table)


def _waiting_text(waiting: dict[str, Any]) -> str:
    items = waiting["items"]
    return (
        f"{items:,} item{'s' * (items != 1)} for rate limit {waiting['key']} "
        f"({waiting['reason']}), the last in ~{format_duration(waiting['seconds'])}"
    )


def usage_rows(view: dict[str, Any]) -> list[tuple[str, str]]:
    """The usage, cost, cache and budget lines of a status, those that say something."""
    from batchyard.models import cost_text

    usage = view["usage"]
    tokens = f"{usage['tokens_in']:,} tokens in  {usage['tokens_out']:,} out"
    extra = [
        f"{usage[key]:,} {label}"
        for key, label in (("tokens_cached", "cached in"), ("tokens_reasoning", "reasoning"))
        if usage[key]
    ]
    rows = [("usage", "  ".join([tokens, *extra]))]
    cost = cost_text(usage["cost"], usage["cost_note"])
    if usage["calls"]:
        cost += f" for {usage['calls']:,} calls"
    if (
        view["projected_cost"] is not None
        and view["counts"]["total"]
        > view["counts"]["succeeded"] + view["counts"]["failed"] + view["counts"]["cancelled"]
    ):
        cost += f"   ~${view['projected_cost']:,.4f} more for the items left"
    if usage["cost"] or usage["calls"] or view["budget"] is not None:
        rows.append(("cost", cost))
    if usage["cache_hits"]:
        rows.append(
            (
                "cache",
                f"{usage['cache_hits']:,} answers reused, ${usage['saved_cost']:,.4f} saved",
            )
        )
    if view["budget"] is not None:
        left = view["budget"] - (usage["cost"] or 0.0)
        rows.append(("budget", f"${view['budget']:,.4f}  (${max(left, 0.0):,.4f} left)"))
    if view["pause_reason"]:
        rows.append(("paused", view["pause_reason"]))
    return rows


# -- submitting -----------------------------------------------------------------------


STATUS_CLUSTERS = (
    ',\n   "error_clusters" (the top 5 error clusters, as\n'
    "   'batchyard errors ID --json' lists them)}"
)
CONTROL_JSON = STATUS_JSON.replace("--json prints", "--json prints, afterwards,")


def _register_control(commands: Any) -> None:
    helps = {
        "retry": "send a finished batch's failed items back, ahead of fresh work",
        "cancel": "cancel a batch: no more claims; running items are told to stop",
        "pause": "stop claims on a batch; running items finish",
        "resume": "let workers claim a paused batch's items again",
    }
    for name, text in helps.items():
        parser = commands.add_parser(
            name,
            help=text,
            description=wrap(text[0].upper() + text[1:] + "."),
            epilog=(RETRY_EPILOG if name == "retry" else "")
            + CONTROL_JSON
            + ('\nretry --json adds "retried": how many items it sent back.' * (name == "retry")),
            formatter_class=RAW,
        )
        parser.add_argument("batch", metavar="ID", help="the batch id")
        if name == "retry":
            _retry_options(parser)
        if name == "resume":
            parser.add_argument(
                "--budget",
                type=submit.budget_amount,
                metavar="AMOUNT",
                help="set a new cap on the batch's cost first (a batch its budget paused "
                "carries on within the new one)",
            )
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
        epilog='--json prints {"deleted" (how many batches), "older_than" (seconds),\n'
        '"cached_answers" (with --cache: how many answers were forgotten)}.',
        formatter_class=RAW,
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="an age such as 90s, 15m, 12h, 7d or 2w",
    )
    prune.add_argument(
        "--cache",
        action="store_true",
        help="also forget the llm response cache's answers kept longer than that",
    )
    add_json(prune)
    prune.set_defaults(run=run_prune)


_DONE = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}


def _control(method: str, done: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from batchyard.views import status_view

        with open_yard(args, create=False) as yard:
            batch = yard.batch(args.batch)
            if getattr(args, "budget", None) is not None:
                batch.set_budget(args.budget)
            status = getattr(batch, method)()
        if args.json:
            print_json(status_view(status, time.time()))
        else:
            console().print(f"{done} {status.id}: now {status.state.value}")
        return 0

    return run


RETRY_EPILOG = (
    "Which items: the failed ones (default); --state cancelled for the items their task\n"
    "cancelled, --state failed --state cancelled for both; --key K (repeatable) for only\n"
    "those items, each of which must be in one of those states. All or nothing.\n"
    "Each item sent back gets a fresh --max-attempts and its retry backoff starts again;\n"
    "its attempt count keeps counting. The batch runs a new round (state retrying) and\n"
    "ends again, with its callbacks. Only a failed or partially completed batch retries.\n"
    "--cluster C sends back only the failed items whose failure is in error cluster C\n"
    "(an id 'batchyard errors ID' lists, or a start of it that only one cluster has).\n\n"
)


def _retry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        dest="keys",
        action="append",
        metavar="KEY",
        help="send back only this item (repeat for more)",
    )
    parser.add_argument(
        "--state",
        dest="states",
        action="append",
        choices=["failed", "cancelled"],
        help="send back the items in this state (repeat for both; default: failed)",
    )
    parser.add_argument(
        "--cluster",
        metavar="C",
        help="send back only the failed items of this error cluster (see 'batchyard errors')",
    )


def run_retry(args: argparse.Namespace) -> int:
    from batchyard.views import status_view

    states = args.states or ["failed"]
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        retried = batch.retry_failed(keys=args.keys, states=states, cluster=args.cluster)
        status = batch.status()
    if args.json:
        print_json({**status_view(status, time.time()), "retried": retried})
    else:
        which = " or ".join(sorted(set(states)))
        of = f" of error cluster {args.cluster}" if args.cluster else ""
        console().print(f"sent {retried:,} {which} item(s){of} of {status.id} back to the queue")
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
        forgotten = yard.forget_cached(args.older_than) if args.cache else None
    if args.json:
        view = {"deleted": deleted, "older_than": args.older_than}
        print_json(view if forgotten is None else {**view, "cached_answers": forgotten})
    else:
        age = human_age(args.older_than)
        console().print(f"deleted {deleted:,} finished batches older than {age}")
        if forgotten is not None:
            console().print(f"forgot {forgotten:,} cached llm answers older than {age}")
    return 0
