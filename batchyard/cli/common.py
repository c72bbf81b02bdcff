"""What every command shares: opening the store, printing JSON, a Rich console, durations."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchyard.errors import CommandError as CommandError  # its old home, still importable
from batchyard.report_text import format_duration as format_duration  # shared with the core

if TYPE_CHECKING:  # imported lazily at run time: --help must not pay for them
    from rich.console import Console

    from batchyard.yard import Yard

#: Where the CLI keeps batches when neither --db nor $BATCHYARD_DB says.
DEFAULT_DB = "sqlite:///batchyard.db"
DB_HELP = (
    "the store: sqlite:///path.db or postgresql://user@host/db "
    f"(default: $BATCHYARD_DB, else {DEFAULT_DB}, a file in the current folder)"
)


def db_url(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get("BATCHYARD_DB") or DEFAULT_DB)


def command(args: argparse.Namespace) -> str:
    """The command a user types to reach this store again (``batchyard --db URL`` when the
    store was given with --db), for the commands a command suggests."""
    return "batchyard" if args.db is None else f"batchyard --db {args.db}"


@contextmanager
def open_yard(
    args: argparse.Namespace, *, create: bool = True, only_reads: bool = False
) -> Iterator[Yard]:
    """The Yard on the command's store, closed after the block. Without ``create``, a SQLite
    file that does not exist is an error (a mistyped --db must not leave an empty database
    behind); with it, a file this command created is removed again when the command fails
    before anything was submitted (a typo in an option leaves nothing behind either), or,
    with ``only_reads`` (an estimate without a pilot), when it ends holding no batch."""

    from batchyard.store import sqlite_path
    from batchyard.yard import Yard

    url = db_url(args)
    existed = store_exists(url)
    if not create and not existed:
        from batchyard.errors import StoreUnavailable

        raise StoreUnavailable(
            f"no database at {sqlite_path(url)}: nothing was submitted there "
            "(check --db or $BATCHYARD_DB)"
        )
    yard = Yard(url)
    created_for_nothing = False
    try:
        with yard:
            try:
                yield yard
            except BaseException:
                created_for_nothing = not existed and _holds_nothing(yard)
                raise
            created_for_nothing = only_reads and not existed and _holds_nothing(yard)
    finally:
        if created_for_nothing:  # closed by now, so the file can go
            _remove_sqlite(sqlite_path(url))


def _holds_nothing(yard: Yard) -> bool:
    try:
        return not yard.batches(limit=1).rows
    except Exception:  # a store that cannot even say: leave it
        return False


def _remove_sqlite(path: str | None) -> None:
    from pathlib import Path

    if path is None:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


def store_exists(url: str) -> bool:
    """False for a SQLite URL whose file does not exist (other stores: assume they do)."""
    from pathlib import Path

    from batchyard.store import sqlite_path

    path = sqlite_path(url)
    return path is None or Path(path).exists()


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON (documented shape) instead of text"
    )


def print_json(value: Any) -> None:
    """One JSON document on stdout, indented, keys in a stable order."""
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people too (CI logs): wide enough not to wrap a row.
    width = None if stream.isatty() else 120
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value = text.strip().lower()
    factor = units.get(value[-1:], None)
    number = value[:-1] if factor else value
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use e.g. 90s, 15m, 12h, 7d)"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    return seconds


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def human_age(seconds: float) -> str:
    """An age in words, in the largest unit up to days that holds it whole: ``7 days`` for
    7d (not ``168:00:00``), ``90 seconds`` for 90s, ``36 hours`` for 1.5d; ``0.5 seconds``."""
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    unit, size = next(
        ((u, n) for u, n in units if seconds >= n and seconds % n == 0), ("second", 1)
    )
    amount = f"{seconds / size:,.1f}".removesuffix(".0")
    return f"{amount} {unit}{'' if amount == '1' else 's'}"


STATUS_JSON = """\
--json prints the status object:
  {"id", "name", "task", "state", "counts": {"pending", "running", "retry_wait",
   "succeeded", "failed", "cancelled", "waiting", "total"} ("running" counts items
   executing; "waiting" those a worker holds until a rate limiter admits them),
   "progress" (0..1), "usage": {"tokens_in", "tokens_out", "cost" (null when no call had a
   price), "tokens_cached", "tokens_reasoning", "calls", "cache_hits", "saved_cost",
   "unpriced_calls", "cost_note" ("no price for MODEL", or how many calls had none, when
   cost is unknown or a lower bound; else null)}, "sealed", "concurrency", "max_attempts",
   "timeout", "priority", "metadata", "params", "round", "created_at", "started_at",
   "finished_at", "updated_at" (unix seconds or null), "budget" (or null), "pause_reason"
   (why batchyard paused it, or null), "limits" ({"rate_limit", "tokens_per_minute"} or
   null), "waiting_on" ({"key", "reason", "items", "until", "seconds", "rate"}: the rate
   limiter its waiting items wait on, or null), "projected_cost" (of the items left, at the
   average so far; null before any ran or while some calls had no price), "elapsed" (s),
   "throughput" (items/s), "eta" (s or null; counts the rate limit), "eta_range" ([low,
   high] s once enough items and time tell, else null), "stalled" (true when running with
   items to run but nothing started or ended for longer than its items take; null for a
   running batch in listings, which do not read its items), "quiet" (s since an item
   last started or ended, or null), "template" (NAME@N: the template version it runs
   with, or null), "rerun_of" (the batch it re-runs, or null)}"""

RAW = argparse.RawDescriptionHelpFormatter


def wrap(text: str) -> str:
    # The RAW formatter keeps the JSON shapes of an epilog as written; wrap the prose here.
    import textwrap

    return textwrap.fill(text, 88)


ITEM_STATES = ("pending", "running", "retry_wait", "succeeded", "failed", "cancelled")


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
