"""The feed follower: one per server process, it reads the store's change feed once for
every live stream and fans each change out to the subscribers that want it.

It wakes on the store's notification after a commit (PostgreSQL) or polls the feed's
cursor (SQLite: one row), then reads on a thread of its own what changed up to the newest
final cursor: the feed's events, and the changed items of the batches someone follows. No
read is made per subscriber. A batch's status is read at most 4 times a second (and at
once when it ends), and sent as a ``status`` event; an ended batch gets an ``end`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from batchyard.models import Event
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Store
from batchyard.web.feed_reads import Changes, FeedReader
from batchyard.web.stream_events import StreamEvent, end_event, item_event, status_event
from batchyard.web.subscriber import Subscriber

log = logging.getLogger("batchyard.web.streams")
T = TypeVar("T")

#: Seconds between polls of the cursor on a store without notifications (SQLite).
POLL = 0.02
#: A store with notifications is polled too, this often: a notification may be lost.
SAFETY_POLL = 1.0
#: Seconds at least between two reads of the feed (a storm of commits is read in steps).
MIN_GAP = 0.01
#: Seconds at least between two status events of one batch.
STATUS_GAP = 0.25
#: What a stream is told when the server stops (its client may reconnect to another).
STOPPING = "the server is stopping"
#: Events a subscriber may have waiting before it is closed.
QUEUE_LIMIT = 10_000
#: Batches whose items may change without a batch event in the same read: claims move a
#: queued batch to processing as they start, so its first changes come with that event.
#: NOTE: the follower reads the changes of each of these at every step (one indexed
#: query each); a store operation naming the batches changed since a cursor would spare
#: that with thousands of batches running at once.
ACTIVE = frozenset({BatchState.PROCESSING, BatchState.RETRYING, BatchState.PAUSED})
#: Item states an attempt ends in (its duration is then the attempt's).
_ATTEMPT_ENDED = frozenset({ItemState.SUCCEEDED, ItemState.FAILED, ItemState.RETRY_WAIT})


class FeedFollower:
    """Follows ``store``'s change feed for every stream of one server. ``start`` and ``stop``
    it with the app; ``subscribers`` counts its open streams (for the metrics), and
    ``durations``, if given, hears the duration of every attempt that finishes."""

    def __init__(
        self,
        store: Store,
        settings: object = None,
        *,
        poll: float = POLL,
        queue_limit: int = QUEUE_LIMIT,
        durations: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self._reader = FeedReader(store)
        self.settings = settings
        self.poll = poll
        self.queue_limit = queue_limit
        self.durations = durations
        self._cursor = 0
        #: The batches not ended, and their states (as the feed last said).
        self._live: dict[str, BatchState] = {}
        self._owners: dict[str, str | None] = {}
        self._dirty: set[str] = set()
        self._last_status: dict[str, float] = {}
        self._by_batch: dict[str, set[Subscriber]] = {}
        self._wide: set[Subscriber] = set()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batchyard-feed")
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._polling = True
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- for the streams ---------------------------------------------------------------
    @property
    def cursor(self) -> int:
        """The cursor up to which every change has been sent to the subscribers."""
        return self._cursor

    @property
    def subscribers(self) -> int:
        """The streams open (SSE and WebSocket)."""
        return len(self._wide) + len({s for subs in self._by_batch.values() for s in subs})

    @property
    def live_batches(self) -> frozenset[str]:
        """Batches whose items may still change, as the follower knows them."""
        return frozenset(self._live)

    def subscribe(self, owner: str | None, batches: Iterable[str] | None) -> Subscriber:
        """A new subscriber; every change after ``cursor`` (read now) reaches it."""
        sub = Subscriber(owner, None if batches is None else set(), self.queue_limit)
        if batches is None:
            self._wide.add(sub)
        for batch_id in batches or ():
            self.follow(sub, batch_id)
        return sub

    def follow(self, sub: Subscriber, batch_id: str) -> None:
        """Add a batch to a subscriber's (a WebSocket's subscribe)."""
        if sub.batches is None:
            raise ValueError("a subscriber of every batch follows each one already")
        sub.batches.add(batch_id)
        self._by_batch.setdefault(batch_id, set()).add(sub)

    def unfollow(self, sub: Subscriber, batch_id: str) -> None:
        if sub.batches is not None:
            sub.batches.discard(batch_id)
        subs = self._by_batch.get(batch_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_batch[batch_id]

    def unsubscribe(self, sub: Subscriber) -> None:
        self._wide.discard(sub)
        for batch_id in list(sub.batches or ()):
            self.unfollow(sub, batch_id)

    async def call(self, read: Callable[..., T], *args: Any) -> T:
        """Run a blocking store read off the event loop (a stream's replay)."""
        return await asyncio.to_thread(read, *args)

    # -- running -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._cursor, statuses = await loop.run_in_executor(self._thread, self._reader.begin)
        self._live = {s.id: s.state for s in statuses}
        self._owners.update((s.id, s.owner) for s in statuses)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._woken.set)

        self._unlisten = self.store.on_feed(wake)
        self._polling = self._unlisten is None
        self._task = asyncio.create_task(self._run(), name="batchyard-feed")

    async def stop(self) -> None:
        self._stopping = True
        self._woken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._unlisten is not None:
            self._unlisten()
        self._close_all(STOPPING)
        self._thread.shutdown(wait=False)

    def end_streams(self) -> None:
        """Close every stream, from any thread or a signal handler: call it when the
        server begins to stop. Its server waits for open responses to end before it stops
        the app (and the follower with it), and a stream would never end by itself."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is open
                self._loop.call_soon_threadsafe(self._close_all, STOPPING)

    def _close_all(self, reason: str) -> None:
        for sub in [*self._wide, *(s for subs in self._by_batch.values() for s in subs)]:
            sub.close(reason)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while not self._stopping:
            started = loop.time()
            try:
                await self._step(loop)
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("live streams: reading the store failed (%s); retrying", exc)
                failing = True
                await asyncio.sleep(1.0)
            await asyncio.sleep(max(0.0, started + MIN_GAP - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait_for()):
                    await self._woken.wait()
            self._woken.clear()

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        wide = bool(self._wide)
        wanted = frozenset(self._by_batch)
        # The durations need every item; without them, only those someone follows.
        every = wide or self.durations is not None
        active = {b for b, state in self._live.items() if state in ACTIVE}
        probe = frozenset(active if every else active & wanted)
        known = frozenset(self._owners)
        changes = await loop.run_in_executor(
            self._thread, self._reader.read, self._cursor, probe, wanted, every, known
        )
        ended = self._apply(changes) if changes is not None else set()
        await self._flush(loop, ended)

    def _wait_for(self) -> float:
        wait = self.poll if self._polling else SAFETY_POLL
        if self._dirty:
            now = time.monotonic()
            due = min(self._last_status.get(b, -math.inf) + STATUS_GAP for b in self._dirty)
            wait = min(wait, max(0.0, due - now))
        return wait

    # -- on the loop ---------------------------------------------------------------------
    def _apply(self, changes: Changes) -> set[str]:
        """Send the items, note what changed; returns the batches that ended or went."""
        for named, status in changes.statuses.items():
            self._owners[named] = None if status is None else status.owner
        ended = self._note_events(changes.events)
        for item in sorted(changes.items, key=lambda i: (i.seq, i.batch_id, i.position)):
            self._publish(item_event(item))
            self._dirty.add(item.batch_id)
            if self.durations is not None and item.duration is not None:
                if item.state in _ATTEMPT_ENDED:
                    self.durations(item.duration)
        for batch_id in ended:
            self._live.pop(batch_id, None)
        self._cursor = changes.upper
        return ended

    def _note_events(self, events: list[Event]) -> set[str]:
        """Mark the batches the events name as changed, follow their states; returns
        those that ended (or were deleted)."""
        ended: set[str] = set()
        for event in events:
            batch_id = event.batch_id
            if event.kind == "batch.deleted":
                batch_id = str(event.data.get("batch_id"))
                ended.add(batch_id)
            elif event.kind == "batch.state" and batch_id is not None:
                state = BatchState(str(event.data["to"]))
                if state.is_terminal:
                    ended.add(batch_id)
                else:
                    ended.discard(batch_id)
                    self._live[batch_id] = state
            if batch_id is not None:
                self._dirty.add(batch_id)
        return ended

    async def _flush(self, loop: asyncio.AbstractEventLoop, ended: set[str]) -> None:
        """Send the status of each changed batch someone follows, at most every
        STATUS_GAP seconds a batch (at once when it ended), and ``end`` for those ended."""
        now = time.monotonic()
        self._dirty = {b for b in self._dirty if self._is_wanted(b)}
        due = {
            b
            for b in self._dirty
            if b in ended or now - self._last_status.get(b, -math.inf) >= STATUS_GAP
        }
        if not due:
            return
        statuses = await loop.run_in_executor(self._thread, self._reader.statuses, sorted(due))
        seq = self._cursor
        for batch_id, status in statuses.items():
            over = status is None or status.state.is_terminal
            if over and batch_id not in ended:
                # The status was read after the feed: the batch ended after ``seq``. Its
                # last items, status and end come with the read that reaches its end.
                continue
            self._dirty.discard(batch_id)
            if status is not None:
                self._owners[batch_id] = status.owner
                self._publish(status_event(status, seq))
            if over:
                self._publish(end_event(status, batch_id, seq))
                self._last_status.pop(batch_id, None)
            else:
                self._last_status[batch_id] = now

    def _is_wanted(self, batch_id: str) -> bool:
        if batch_id in self._by_batch:
            return True
        owner = self._owners.get(batch_id)
        return any(sub.owner is None or sub.owner == owner for sub in self._wide)

    def _publish(self, event: StreamEvent) -> None:
        for sub in self._by_batch.get(event.batch_id, ()):
            sub.push(event)
        if self._wide:
            owner = self._owners.get(event.batch_id)
            for sub in self._wide:
                if sub.owner is None or sub.owner == owner:
                    sub.push(event)
