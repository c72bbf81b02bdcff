"""Commands that run workers and show live progress: run, worker, monitor, demo.

``run``, ``monitor`` and ``demo`` exit 0 when their batch completed and 1 when it ended
with failures or was cancelled (the demo: 0 once its batch ended, since it fails a couple
of items on purpose); 130 when a signal stopped them first.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    command,
    db_url,
    open_yard,
    parse_duration,
    positive_int,
    print_json,
)
from batchyard.cli.submit import BATCH_INPUT_HELP, add_submit_options, submit_from_args

if TYPE_CHECKING:
    from batchyard.models import BatchStatus

EXIT_INTERRUPTED = 130
#: Seconds a command that ends after its batches gives their webhooks to be sent.
DRAIN = 5.0


def register(commands: Any) -> None:
    """Adds run, worker, monitor and demo."""
    run = commands.add_parser(
        "run",
        help="submit a batch and work it in this process with live progress",
        description="Submit INPUT as a batch of TASK and work it here, with a live view "
        "(a plain status line every few seconds when stdout is not a terminal), until the "
        "batch ends; then print its report (as 'batchyard report' does) and the commands to "
        "look further. Exit status 0 when it completed, 1 when it ended with failures or was "
        "cancelled, 130 when Ctrl-C stopped it first (its unfinished items wait for a "
        "worker; a second Ctrl-C stops without waiting for running items).",
        epilog=BATCH_INPUT_HELP,
    )
    add_submit_options(run)
    run.add_argument(
        "--json",
        action="store_true",
        help="print the batch's final status as JSON on stdout (the shape of status --json); "
        "the live view goes to stderr",
    )
    run.set_defaults(run=run_run)

    worker = commands.add_parser(
        "worker",
        help="work queued batches until stopped (or until idle)",
        description="A long-running worker for every queued batch whose task this process "
        "can import (or only the batches given with --batch). It also sends the store's "
        "webhook deliveries (docs/webhooks.md; with --until-idle, for up to 5 s more before "
        "it exits). Prints a line on stderr for "
        "each batch it starts and each it ends; logs to stderr (-v for INFO). "
        "A SQLite store must exist already (submit a batch first): a missing file is an "
        "error, exit status 1. "
        "Ctrl-C or SIGTERM: running items get --grace seconds to finish; a second one "
        "stops at once. Unfinished items go back to the queue.",
    )
    worker.add_argument(
        "--concurrency", type=positive_int, default=64, metavar="N", help="items at once"
    )
    worker.add_argument(
        "--batch",
        dest="batches",
        action="append",
        metavar="ID",
        help="serve only this batch (repeatable); others are left alone",
    )
    worker.add_argument(
        "--until-idle", action="store_true", help="exit when nothing is left to run"
    )
    worker.add_argument(
        "--lease",
        type=parse_duration,
        default=30.0,
        metavar="S",
        help="lease per item, renewed every third of it while the item runs (default 30s); "
        "a worker that died loses its items to others once a running worker has seen its "
        "lease run out and stay unrenewed for one more lease: about two leases after it died",
    )
    worker.add_argument(
        "--grace",
        type=parse_duration,
        default=30.0,
        metavar="S",
        help="how long running items may finish once stopped (default 30s)",
    )
    worker.set_defaults(run=run_worker)

    monitor = commands.add_parser(
        "monitor",
        help="a live dashboard of a batch until it ends",
        description="Show a batch live, as read from the store (whichever process works "
        "it): counts, a progress bar, throughput, ETA, items in flight with their progress "
        "and message, recent errors; redrawn about every second, a plain status line every "
        "few seconds when stdout is not a terminal. Exits when the batch ends: 0 when it "
        "completed, 1 when it ended with failures or was cancelled.",
    )
    monitor.add_argument("batch", metavar="ID", help="the batch id (batch_...)")
    monitor.set_defaults(run=run_monitor)

    demo = commands.add_parser(
        "demo",
        help="score sample leads in a batch, with live progress and a report",
        description="Write sample sales leads to demo-leads.jsonl in the current folder, "
        "run a batch of the built-in demo task (batchyard.demo:score_lead: real work, "
        "realistic latency, a few transient failures and two bad leads) on them with live "
        "progress, then print a report. The batch stays in the store for the other "
        "commands (status, items, report ...).",
    )
    demo.add_argument(
        "--items", type=positive_int, default=None, metavar="N", help="how many leads (300)"
    )
    demo.add_argument(
        "--concurrency", type=positive_int, default=8, metavar="N", help="items at once (8)"
    )
    demo.add_argument("--seed", type=int, default=7, help="fixes the leads and the failures")
    demo.set_defaults(run=run_demo)


def run_run(args: argparse.Namespace) -> int:
    """Submit, work with the live view, then end like the demo: the report and the commands
    to look further (with --json: the final status only, the rest on stderr)."""
    import asyncio
    import time

    from batchyard.live import work_and_follow
    from batchyard.report_text import ending
    from batchyard.views import status_view
    from batchyard.webhooks import start_deliveries

    out = sys.stderr if args.json else sys.stdout
    with open_yard(args) as yard:
        batch, _ = submit_from_args(yard, args)
        status = batch.status()
        out.write(f"batch {batch.id}: {status.counts.total:,} items of {status.task}\n")
        if not status.sealed:
            # Otherwise run sits at 100% with no word of why it does not end.
            cli = command(args)
            out.write(
                f"the batch is open: run waits for more items ('{cli} submit ... --batch "
                f"{batch.id}') until '{cli} seal {batch.id}'\n"
            )
        out.flush()
        stop_deliveries = start_deliveries(yard.store)
        try:
            final = asyncio.run(
                work_and_follow(yard, batch.id, concurrency=status.concurrency, out=out)
            )
        finally:
            stop_deliveries(drain=DRAIN)
        out.write(f"\n{ending(batch.report(), command(args))}\n")
        out.flush()
    if args.json:
        print_json(status_view(final, time.time()))
    return _ending(final, command(args))


def run_worker(args: argparse.Namespace) -> int:
    import logging

    from batchyard.webhooks import start_deliveries

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("batchyard.cli")
    # One line per batch started and ended, with or without -v.
    journal = logging.getLogger("batchyard.worker.batches")
    journal.setLevel(logging.INFO)
    # Without -v the lines get a short handler of their own; with it, the log's format.
    journal.handlers = [h for h in journal.handlers if h.get_name() != "batchyard-cli"]
    journal.propagate = bool(args.verbose)
    if not args.verbose:
        lines = logging.StreamHandler(sys.stderr)
        lines.set_name("batchyard-cli")
        lines.setFormatter(logging.Formatter("worker: %(message)s"))
        journal.addHandler(lines)
    # A worker only reads what was submitted: in the wrong folder it must say so, not wait
    # forever on an empty batchyard.db it made there.
    with open_yard(args, create=False) as yard:
        batches = tuple(dict.fromkeys(args.batches)) if args.batches else None
        for batch_id in batches or ():
            yard.batch(batch_id)  # BatchNotFound now rather than an idle worker
        options: dict[str, Any] = {
            "concurrency": args.concurrency,
            "batches": batches,
            "lease": args.lease,
            "grace": args.grace,
        }
        log.info(
            "worker on %s: %s, concurrency %d%s",
            db_url(args),
            "batches " + ", ".join(batches) if batches else "all batches",
            args.concurrency,
            ", until idle" if args.until_idle else "",
        )
        stop_deliveries = start_deliveries(yard.store)
        try:
            stats = yard.run_until_idle(**options) if args.until_idle else yard.work(**options)
        finally:
            # Until idle: the endings it just made are sent before it exits, if they can be.
            stop_deliveries(drain=DRAIN if args.until_idle else 0.0)
        log.info(
            "worker done: %d item(s) recorded, %d given back, %d batch(es) ended",
            stats.recorded,
            stats.released,
            len(stats.batches_ended),
        )
    return 0


def run_monitor(args: argparse.Namespace) -> int:
    import asyncio

    from batchyard.live import follow

    with open_yard(args, create=False) as yard:
        yard.batch(args.batch)  # BatchNotFound before the screen is taken over
        return _ending(asyncio.run(follow(yard.store, args.batch)), command(args))


def run_demo(args: argparse.Namespace) -> int:
    from batchyard.demo import play

    return play(
        db_url(args),
        items=args.items,
        concurrency=args.concurrency,
        seed=args.seed,
        cli=command(args),
    )


def _ending(status: BatchStatus, cli: str) -> int:
    """The exit status for a batch as a command left it; ``cli`` is the command that reaches
    its store again (see ``common.command``), for the commands it suggests."""
    from batchyard.states import BatchState

    if status.pause_reason is not None and not status.is_finished:
        print(
            f"paused: batch {status.id}: {status.pause_reason}\n"
            f"{status.counts.remaining:,} item(s) left; after '{cli} resume {status.id}', "
            f"'{cli} worker --batch {status.id}' goes on with it",
            file=sys.stderr,
        )
        return 1
    if not status.is_finished:
        print(
            f"stopped: batch {status.id} is {status.state.value} with "
            f"{status.counts.remaining:,} item(s) left; '{cli} worker --batch {status.id}' "
            "goes on with it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0 if status.state is BatchState.COMPLETED else 1
