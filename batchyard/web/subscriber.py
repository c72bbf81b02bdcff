"""A subscriber of the feed follower: which batches it wants, and its bounded queue.

The follower never waits for a subscriber: it appends to the queue, and a subscriber that
lets the queue fill is closed with a reason. Its client reconnects and resumes from the last
event it received (``Last-Event-ID``, or a WebSocket ``cursor``), read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from batchyard.web.stream_events import Mark, StreamEvent


class Subscriber:
    """Wants the batches in ``batches`` (None: every batch of ``owner``; ``owner`` None:
    every batch). Holds at most ``limit`` events not yet taken."""

    def __init__(self, owner: str | None, batches: set[str] | None, limit: int) -> None:
        self.owner = owner
        self.batches = batches
        self.limit = limit
        #: Why the follower closed it (too slow, the server stopping), None while open.
        self.closed: str | None = None
        #: Past this mark per batch (or ``since`` for the others), a live event is new to
        #: the client: its replay sent what came before.
        self.sent: dict[str, Mark] = {}
        self.since: Mark | None = None
        self._queue: deque[StreamEvent] = deque()
        self._ready = asyncio.Event()

    @property
    def is_wide(self) -> bool:
        """Whether it wants batches by owner rather than by id."""
        return self.batches is None

    def push(self, event: StreamEvent) -> None:
        """Queue an event (from the follower, on the loop); never waits."""
        if self.closed is not None:
            return
        if len(self._queue) >= self.limit:
            self.close(
                f"too slow: {self.limit} events were waiting to be sent; "
                "reconnect with the last event id to resume"
            )
            return
        self._queue.append(event)
        self._ready.set()

    def close(self, reason: str) -> None:
        """Close it: what is queued is still sent, then the stream ends saying ``reason``."""
        if self.closed is None:
            self.closed = reason
        self._ready.set()

    @property
    def is_done(self) -> bool:
        """Closed, and nothing left to send."""
        return self.closed is not None and not self._queue

    async def take(self, timeout: float) -> list[StreamEvent]:
        """Every event queued and not yet sent to the client (waiting up to ``timeout``
        seconds for one; [] then, or once it is done). Events at or before their batch's
        ``sent`` mark (its replay sent them already), or of a batch it no longer follows,
        are passed over."""
        while True:
            if self._queue:
                taken, self._queue = self._queue, deque()
                fresh = [event for event in taken if self._is_new(event)]
                if fresh:
                    return fresh
                continue
            if self.closed is not None:
                return []
            self._ready.clear()
            # asyncio.timeout, not wait_for: wait_for (3.11) can swallow a cancellation
            # that comes as the event is set, and a stream whose client left would go on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            if not self._queue:
                return []

    def _is_new(self, event: StreamEvent) -> bool:
        if self.batches is not None and event.batch_id not in self.batches:
            return False
        mark = self.sent.get(event.batch_id, self.since)
        # Nearly every live event has a later cursor than its batch's mark: one comparison.
        return mark is None or event.mark.seq > mark.seq or event.mark.is_after(mark)
