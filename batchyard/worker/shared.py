"""What every part of one worker uses: its store (reached through one thread of its own),
its tasks, its settings, its clock and its running tally."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from batchyard.clock import Clock
from batchyard.store.base import Store
from batchyard.tasks import TaskRegistry
from batchyard.worker.config import WorkerConfig, WorkerStats

T = TypeVar("T")
log = logging.getLogger("batchyard.worker")


class Outage:
    """Says when the store went away and when it came back: one line each per outage,
    whichever part of the worker met it, however many calls failed in between. The first
    error's traceback is logged at INFO (``-v``), later ones at DEBUG."""

    def __init__(self) -> None:
        self.since: float | None = None

    def down(self, exc: BaseException) -> None:
        if self.since is not None:
            log.debug("store still unavailable", exc_info=exc)
            return
        self.since = time.monotonic()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "store unavailable (%s); keeping what this worker holds and trying again", reason
        )
        log.info("the error that began the outage", exc_info=exc)

    def up(self) -> None:
        if self.since is not None:
            log.warning("store back after %.1f s; carrying on", time.monotonic() - self.since)
            self.since = None


class StoreThread:
    """One thread for every store call of a worker: calls run in the order they are made,
    and the event loop never waits on the database."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batchyard-db")

    def close(self) -> None:
        """Wait for the call in progress, then stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the store thread. Raises whatever ``fn`` raises, and
        RuntimeError when called outside ``open`` ... ``close``."""
        if self._executor is None:
            raise RuntimeError("the worker's store thread is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


@dataclass(slots=True)
class Shared:
    """One worker's store, registry, config, clock, tally and store thread."""

    store: Store
    registry: TaskRegistry
    config: WorkerConfig
    clock: Clock
    #: Whether the clock is the store's own (not one a caller injected, like a test's
    #: FakeClock): then lengths of time are measured on the monotonic clock.
    steady: bool = False
    stats: WorkerStats = field(default_factory=WorkerStats)
    db: StoreThread = field(default_factory=StoreThread)
    outage: Outage = field(default_factory=Outage)

    def now(self) -> float:
        return self.clock.now()

    def timer(self) -> float:
        """Seconds for measuring lengths of time (timeouts): the monotonic clock, which
        never steps, unless the worker was given a clock of its own (a test's FakeClock,
        moved past a deadline)."""
        return time.monotonic() if self.steady else self.clock.now()

    def known_tasks(self) -> list[str]:
        """The tasks this worker serves: those registered (by its Yard, or loaded when found
        in the store), only those its config names if it names some."""
        wanted = self.config.tasks
        return [name for name in self.registry.names() if wanted is None or name in wanted]
