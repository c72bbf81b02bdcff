"""The live view of one batch: a Rich dashboard redrawn about every second on a terminal,
a plain status line every few seconds anywhere else (a pipe, CI: never a cursor code).

It reads only the store, so it shows the same thing whichever process does the work: the
batch's counts and progress, the pace, whether it has stalled (``progress.stall``), the
items in flight with their own progress and message, and recent errors. Items are followed
through the store's change feed, so a refresh costs what changed since the last one, not
the size of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TextIO

from batchyard.models import BatchStatus, Finishes, Item
from batchyard.progress import Meter, pace, stall
from batchyard.signals import serve_with_signals
from batchyard.states import ItemState
from batchyard.store.base import Store

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from batchyard.worker import Worker
    from batchyard.yard import Yard

#: Seconds between redraws on a terminal, and between status lines elsewhere.
TTY_INTERVAL = 1.0
PLAIN_INTERVAL = 3.0
#: Seconds between checks whether the batch a worker serves here has ended.
ENDED_POLL = 0.1
#: Changes read per refresh at most; past that the view skips ahead (see Watch._catch_up).
PAGE = 1000
PAGES_PER_READ = 2
#: Items in flight tracked at most (the screen shows fewer).
MAX_TRACKED = 1000
ERRORS_SHOWN = 5
#: Items changed last that a refresh reads for the stall rule (``Store.finishes``).
RECENT = 100
_ERROR_STATES = (ItemState.FAILED, ItemState.RETRY_WAIT)


@dataclass(frozen=True, slots=True)
class ErrorSeen:
    """An attempt's error, and the state its item is in now (a retry may have recovered)."""

    key: str
    attempt: int
    error: str
    state: ItemState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one refresh read: the status, items in flight, recent errors, and the pace."""

    status: BatchStatus
    running: list[Item]
    errors: list[ErrorSeen]
    rate: float
    eta: float | None
    elapsed: float
    #: Seconds it has been quiet, when that makes it stalled (``progress.stall``).
    stalled: float | None = None


class Watch:
    """Follows one batch in the store. ``read`` blocks (call it from a thread)."""

    def __init__(self, store: Store, batch_id: str) -> None:
        self.store = store
        self.batch_id = batch_id
        self.meter = Meter()
        self._cursor: int | None = None
        self._running: dict[str, Item] = {}
        self._errors: dict[str, ErrorSeen] = {}

    def read(self) -> Snapshot:
        if self._cursor is None:
            self._resync(with_errors=True)
        else:
            self._catch_up()
        status = self.store.get_batch(self.batch_id)
        # Only the items changed last (a bounded read by the feed's index): the stall rule's.
        finishes = self.store.finishes(self.batch_id, 0, RECENT)
        return self._snapshot(status, time.time(), finishes)

    def _resync(self, *, with_errors: bool = False) -> None:
        # The cursor first: a change made during the scans is then read again, not lost.
        self._cursor = self.store.cursor()
        running = self.store.items(
            self.batch_id, state=ItemState.RUNNING, limit=MAX_TRACKED, payloads=False, results=False
        )
        self._running = {item.key: item for item in running}
        if with_errors:
            for state in _ERROR_STATES:
                for item in self.store.items(
                    self.batch_id, state=state, limit=100, payloads=False, results=False
                ):
                    self._note_error(item)

    def _catch_up(self) -> None:
        assert self._cursor is not None  # set by _resync
        for _ in range(PAGES_PER_READ):
            changes = self.store.item_changes(
                self.batch_id, self._cursor, PAGE, payloads=False, results=False
            )
            for item in changes:
                self._apply(item)
            if changes:
                self._cursor = changes[-1].seq
            if len(changes) < PAGE:
                return
        # NOTE: thousands of changes a second: skip ahead rather than fall behind. Errors
        # in the skipped span are not shown; the counts (read from the batch) stay exact.
        self._resync()

    def _apply(self, item: Item) -> None:
        if item.state is ItemState.RUNNING:
            if item.key in self._running or len(self._running) < MAX_TRACKED:
                self._running[item.key] = item
        else:
            self._running.pop(item.key, None)
        if item.state in _ERROR_STATES and item.error:
            self._note_error(item)
        elif item.key in self._errors:
            self._errors[item.key] = replace(self._errors[item.key], state=item.state)

    def _note_error(self, item: Item) -> None:
        self._errors.pop(item.key, None)  # a later attempt's error replaces the earlier
        self._errors[item.key] = ErrorSeen(
            item.key, item.runs, last_line(item.error or ""), item.state
        )
        while len(self._errors) > ERRORS_SHOWN:
            del self._errors[next(iter(self._errors))]

    def _snapshot(self, status: BatchStatus, now: float, finishes: Finishes) -> Snapshot:
        self.meter.add(time.monotonic(), status.counts.finished)
        going = pace(status, now, self.meter.rate)
        running = sorted(self._running.values(), key=lambda item: item.position)
        errors = list(self._errors.values())
        quiet = stall(status, finishes, now)
        stalled = quiet.quiet if quiet is not None and quiet.is_stalled else None
        return Snapshot(status, running, errors, going.rate, going.eta, going.elapsed, stalled)


# -- drawing ------------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour), ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def counts_text(status: BatchStatus) -> str:
    c = status.counts
    parts = [
        f"ok {c.succeeded}",
        f"failed {c.failed}",
        f"running {c.running}",
        f"retry {c.retry_wait}",
        f"pending {c.pending}",
    ]
    if c.cancelled:
        parts.append(f"cancelled {c.cancelled}")
    if c.waiting:
        parts.append(f"waiting {c.waiting}")
    return "  ".join(parts)


def percent_done(progress: float) -> str:
    """Progress in whole percent, rounded down: 199 of 200 is 99%, not 100%."""
    return f"{math.floor(progress * 100 + 1e-9)}%"


def plain_line(snap: Snapshot) -> str:
    """One status line for a log or a pipe."""
    status, c = snap.status, snap.status.counts
    line = (
        f"[{clock(snap.elapsed)}] {status.id} {status.state.value} {c.finished}/{c.total} "
        f"({percent_done(status.progress)})  {counts_text(status)}  {snap.rate:.1f} items/s  "
        f"ETA {clock(snap.eta)}"
    )
    if status.waiting_on is not None:
        line += f"  ({status.waiting_on.describe(time.time())})"
    if snap.stalled is not None:
        line += f"  STALLED: nothing started or ended for {clock(snap.stalled)}"
    return line


def last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error


def render(snap: Snapshot, height: int = 40) -> RenderableType:
    """The dashboard: a header, a bar with the pace, counts, items in flight, errors."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    status, c = snap.status, snap.status.counts
    title = f"[bold]{status.id}[/]" + (f"  {status.name}" if status.name else "")
    head = Table.grid(padding=(0, 2))
    head.add_row(title, f"task [cyan]{status.task}[/]", f"state [bold]{status.state.value}[/]")
    bar = Table.grid(padding=(0, 2))
    bar.add_column(ratio=1)
    bar.add_row(
        ProgressBar(total=max(1, c.total), completed=c.finished),
        f"{status.progress:4.0%}  {c.finished:,}/{c.total:,}",
        f"{snap.rate:,.1f} items/s",
        f"ETA {clock(snap.eta)}",
        f"elapsed {clock(snap.elapsed)}",
    )
    parts: list[RenderableType] = [head, bar, counts_text(status) + _usage(status)]
    if snap.stalled is not None:
        parts.append(f"[bold red]stalled:[/] nothing started or ended for {clock(snap.stalled)}")
    room = max(1, height - 10 - (len(snap.errors) + 2 if snap.errors else 0))
    if snap.running:
        parts.append(_in_flight(snap.running, room, c.running))
    if snap.errors:
        parts.append(_errors(snap.errors))
    return Group(*parts)


def _usage(status: BatchStatus) -> str:
    u = status.usage
    text = ""
    if not u.is_zero:
        text = f"   tokens {u.tokens_in:,} in {u.tokens_out:,} out  {status.cost_text()}"
    if u.cache_hits:
        text += f"  ({u.cache_hits:,} from cache, ${u.saved_cost:,.4f} saved)"
    projected = status.projected_cost
    if projected is not None and status.counts.remaining and u.cost:
        text += f"  ~${projected:,.4f} to go"
    if status.budget is not None:
        text += f"  budget ${status.budget:,.2f}"
    if status.pause_reason:
        text += f"\npaused: {status.pause_reason}"
    if status.waiting_on is not None:
        text += f"\n[yellow]waiting:[/] {status.waiting_on.describe(time.time())}"
    return text


def _in_flight(running: list[Item], room: int, total: int) -> RenderableType:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    now = time.time()
    shown = running[:room]
    more = max(total, len(running)) - len(shown)
    caption = f"and {more} more" if more > 0 else None
    table = Table(title="in flight", title_justify="left", caption=caption, box=None)
    for name in ("item", "attempt", "progress", "", "message", "for"):
        table.add_column(name, no_wrap=True)
    for item in shown:
        value = item.progress or 0.0
        table.add_row(
            item.key,
            str(item.runs),
            ProgressBar(total=1.0, completed=value, width=12),
            f"{value:4.0%}",
            item.message or "",
            f"{now - item.started_at:.1f}s" if item.started_at else "",
        )
    return table


def _errors(errors: list[ErrorSeen]) -> RenderableType:
    from rich.table import Table

    table = Table(title="recent errors", title_justify="left", box=None)
    for name in ("item", "attempt", "now", "error"):
        table.add_column(name, no_wrap=name != "error")
    for seen in reversed(errors):  # newest first
        style = _ERROR_STYLES.get(seen.state, "yellow")
        table.add_row(seen.key, str(seen.attempt), f"[{style}]{seen.state.value}[/]", seen.error)
    return table


_ERROR_STYLES = {
    ItemState.FAILED: "red",
    ItemState.CANCELLED: "red",
    ItemState.SUCCEEDED: "green",
}


# -- following ----------------------------------------------------------------------------


def is_terminal(out: TextIO) -> bool:
    return out.isatty() and os.environ.get("TERM") != "dumb"


async def follow(
    store: Store,
    batch_id: str,
    *,
    done: asyncio.Event | None = None,
    out: TextIO | None = None,
    interval: float | None = None,
) -> BatchStatus:
    """Show a batch until it ends or ``done`` is set, then once more; returns its last
    status. Store reads run in a thread, so the loop (and a worker on it) never waits."""
    out = out or sys.stdout
    tty = is_terminal(out)
    pause = interval or (TTY_INTERVAL if tty else PLAIN_INTERVAL)
    watch = Watch(store, batch_id)
    stop = done or asyncio.Event()
    if not tty:
        return await _loop(watch, stop, pause, lambda snap: _print_line(out, snap))
    from rich.live import Live

    console = _console(out)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        return await _loop(
            watch,
            stop,
            pause,
            lambda snap: live.update(render(snap, console.size.height), refresh=True),
        )


async def _loop(
    watch: Watch, stop: asyncio.Event, pause: float, show: Callable[[Snapshot], None]
) -> BatchStatus:
    while True:
        last_round = stop.is_set()
        snap = await asyncio.to_thread(watch.read)
        show(snap)
        if last_round or snap.status.is_finished:
            return snap.status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)


def _print_line(out: TextIO, snap: Snapshot) -> None:
    out.write(plain_line(snap) + "\n")
    out.flush()


def _console(out: TextIO) -> Console:
    from rich.console import Console

    return Console(file=out, highlight=False)


# -- working while watching -----------------------------------------------------------


async def work_and_follow(
    yard: Yard, batch_id: str, *, concurrency: int | None = None, out: TextIO | None = None
) -> BatchStatus:
    """Work one batch in this process while the live view follows it; returns its last
    status (not finished when a signal stopped the worker first).

    Ctrl-C or SIGTERM as for ``Yard.work``: the first stops claiming and lets running
    items finish, a second stops at once; unfinished items go back to the queue.
    """
    options = {} if concurrency is None else {"concurrency": concurrency}
    worker = yard.worker(batches=(batch_id,), **options)
    done = asyncio.Event()
    view = asyncio.create_task(follow(yard.store, batch_id, done=done, out=out))
    # A view that fails must not leave a worker running unseen.
    view.add_done_callback(lambda task: _stop_if_failed(task, worker))
    ender = asyncio.create_task(_stop_when_finished(yard.store, batch_id, worker))
    try:
        await serve_with_signals(worker, until_idle=False)
    finally:
        ender.cancel()
        done.set()
        status = await view
    if status.is_finished:
        # The batch's callbacks (on_complete ...) may have been due as the worker stopped.
        await yard.worker(batches=(batch_id,), concurrency=1).run(until_idle=True)
    return status


def _stop_if_failed(task: asyncio.Task[BatchStatus], worker: Worker) -> None:
    if not task.cancelled() and task.exception() is not None:
        worker.stop(immediately=True)


async def _stop_when_finished(store: Store, batch_id: str, worker: Worker) -> None:
    # Polled, not taken from the worker: another process may end the batch (cancel). A
    # batch batchyard paused (its budget, a provider's quota) waits for a person: stop too.
    while not _stops_here(await asyncio.to_thread(store.get_batch, batch_id)):
        await asyncio.sleep(ENDED_POLL)
    worker.stop()


def _stops_here(status: BatchStatus) -> bool:
    held = status.pause_reason is not None and not status.counts.running
    return status.is_finished or held
