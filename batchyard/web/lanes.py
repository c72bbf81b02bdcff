"""Worker lanes inside the server (``batchyard serve --workers N``): one worker of N lanes
on a thread of its own with its own event loop, so a slow task never holds the server's
loop, and so a one-machine set-up needs no second process."""

from __future__ import annotations

import asyncio
import logging
import threading

from batchyard.worker import Worker
from batchyard.yard import Yard

log = logging.getLogger("batchyard.web")
#: Seconds the server waits, when it stops, for running items to finish before giving
#: the rest back to the queue.
GRACE = 10.0


class Lanes:
    """``count`` worker lanes over ``yard`` (none when 0)."""

    def __init__(self, yard: Yard, count: int) -> None:
        self._yard = yard
        self._count = count
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = threading.Event()

    def start(self) -> None:
        if self._count == 0:
            return
        self._worker = self._yard.worker(concurrency=self._count, grace=GRACE)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="batchyard-lanes", daemon=True
        )
        self._thread.start()
        self._running.wait(10)

    async def _run(self) -> None:
        assert self._worker is not None
        self._loop = asyncio.get_running_loop()
        self._running.set()
        await self._worker.run()

    def stop(self) -> None:
        """Let running items finish (up to GRACE seconds), give the rest back."""
        if self._worker is None or self._thread is None:
            return
        if self._loop is not None:  # the worker is not thread-safe: stop it on its loop
            self._loop.call_soon_threadsafe(self._worker.stop)
        self._thread.join(GRACE + 5)
        if self._thread.is_alive():
            log.warning("the worker lanes did not stop within %.0f s", GRACE + 5)
