"""How a worker learns the tasks of batches it finds in the store: it imports their
``module:function`` names within ``poll_interval`` of a new batch, and at once when the
store wakes it (PostgreSQL's NOTIFY, a submit in this process).

An import runs on a daemon thread of its own and the worker waits for it at most
``IMPORT_PATIENCE`` at a time, so a module that hangs as it loads (a script that runs a
worker when imported) never blocks the worker nor keeps it from its signals. A name no worker
may import (a lambda, a nested function, a script's function: ``tasks.unimportable``) is never
tried. A task that cannot be loaded is logged once and its batches are left to other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from batchyard.errors import StoreUnavailable
from batchyard.tasks import TaskSpec, import_task, unimportable
from batchyard.worker.shared import Shared

log = logging.getLogger("batchyard.worker")
#: How long a worker waits at a time for a task's module to load (seconds of wall time: a
#: FakeClock that stands still must not make it wait forever). A slower import goes on in
#: the background; its batches wait for it, and ``run_until_idle`` stops without them.
IMPORT_PATIENCE = 10.0


class Discovery:
    """Loads the tasks of claimable batches this worker does not know yet."""

    def __init__(self, shared: Shared, learned: Callable[[], None]) -> None:
        self._shared = shared
        self._learned = learned  # told (on the loop) when a task was added to the registry
        self._unknown: set[str] = set()  # names logged as not runnable here, never retried
        self._loading: dict[str, tuple[float, asyncio.Future[TaskSpec]]] = {}
        self._slow: set[str] = set()  # loading past IMPORT_PATIENCE, logged once
        self._nudge = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    def open(self) -> None:
        """Get ready to run on the running loop (a worker may run more than once)."""
        self._nudge = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._loading.clear()  # imports of an earlier run answer a loop that is gone

    def nudge(self) -> None:
        """Look now rather than at the next poll (on the loop's thread)."""
        self._nudge.set()

    def stop(self) -> None:
        """Stop waiting for imports: the worker is stopping."""
        self._stopping.set()

    async def run(self) -> None:
        """Look every ``poll_interval``, and at once when nudged, until the worker stops
        (or this is cancelled)."""
        while not self._stopping.is_set():
            self._nudge.clear()
            try:
                await self.discover()
            except StoreUnavailable:
                pass  # the claim loop says so, and waits for the store; look again later
            except Exception:
                log.exception("looking for new tasks failed; trying again")
            # NOTE: asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that comes as the nudge does (a NOTIFY as the worker stops), and
            # this loop then outlived its worker's run, which waited for it forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._shared.config.poll_interval):
                    await self._nudge.wait()

    async def discover(self) -> None:
        """Load the tasks of claimable batches not known yet, waiting for their imports
        within IMPORT_PATIENCE (less if the worker stops); wakes the claim loop when it
        learned one."""
        async with self._lock:
            shared = self._shared
            active = await shared.db.call(shared.store.active_tasks)
            wanted = shared.config.tasks
            for name in sorted(active):
                if (
                    shared.registry.get(name) is None
                    and name not in self._unknown
                    and name not in self._loading
                    and (wanted is None or name in wanted)
                ):
                    self._start(name)
            await self._wait()
            if self._harvest():
                self._learned()

    def _start(self, name: str) -> None:
        reason = unimportable(name)
        if reason is not None:
            self._give_up(name, reason)
            return
        module = name.partition(":")[0]
        if any(other.partition(":")[0] == module for other in self._loading):
            return  # its module is loading for another task: next time
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[TaskSpec] = loop.create_future()

        def load() -> None:
            try:
                answer: tuple[Callable[[Any], None], Any] = (
                    loaded.set_result,
                    import_task(name, for_worker=True),
                )
            except BaseException as exc:  # SystemExit from a script, too
                answer = (loaded.set_exception, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, loaded, *answer)

        self._loading[name] = (time.monotonic(), loaded)
        threading.Thread(target=load, name=f"batchyard-import {name}", daemon=True).start()

    async def _wait(self) -> None:
        """Wait for the imports in progress until the newest one's patience ends, or the
        worker stops."""
        if not self._loading:
            return
        deadline = max(started for started, _ in self._loading.values()) + IMPORT_PATIENCE
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            while not stopping.done():
                pending: list[asyncio.Future[Any]] = [
                    f for _, f in self._loading.values() if not f.done()
                ]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    break
                await asyncio.wait(
                    [*pending, stopping], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stopping.cancel()

    def _harvest(self) -> bool:
        """Register what loaded; log what failed (once) and what is slow (once)."""
        learned = False
        for name, (started, loaded) in list(self._loading.items()):
            if not loaded.done():
                if time.monotonic() - started >= IMPORT_PATIENCE and name not in self._slow:
                    self._slow.add(name)
                    log.warning(
                        "task %s: its module is still loading after %.0fs (does it run a "
                        "script when imported?); its batches wait",
                        name,
                        IMPORT_PATIENCE,
                    )
                continue
            del self._loading[name]
            exc = loaded.exception()
            if exc is not None:
                self._give_up(name, str(exc) or type(exc).__name__)
                continue
            try:
                self._shared.registry.add(loaded.result())
            except Exception as error:  # two functions under one name
                self._give_up(name, str(error))
                continue
            log.info("task %s loaded", name)
            learned = True
        return learned

    def _give_up(self, name: str, reason: str) -> None:
        self._unknown.add(name)
        log.warning("cannot run task %s here (%s); leaving its batches to others", name, reason)


def _settle(loaded: asyncio.Future[TaskSpec], answer: Callable[[Any], None], value: Any) -> None:
    if not loaded.done():  # (cancelled when its worker's run ended)
        answer(value)
