"""``Worker``: one asyncio loop per process that puts the parts of this package together
and runs them until stopped (see the package's docstring for the parts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from batchyard.clock import Clock
from batchyard.errors import BatchyardError, StoreUnavailable
from batchyard.runner import DaemonThreads, Job, Runner
from batchyard.services import Hub
from batchyard.store.base import Outcome, Store
from batchyard.tasks import TaskRegistry
from batchyard.waits import Waits
from batchyard.worker.callbacks import Callbacks
from batchyard.worker.chores import Chores, every
from batchyard.worker.claims import ClaimLoop
from batchyard.worker.collector import larger_young_generation
from batchyard.worker.config import WorkerConfig, WorkerStats
from batchyard.worker.discovery import Discovery
from batchyard.worker.inflight import InFlight
from batchyard.worker.lanes import Lanes
from batchyard.worker.shared import Shared

log = logging.getLogger("batchyard.worker")


class Worker:
    """Runs the items of every claimable batch whose task this process can resolve."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        config: WorkerConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or WorkerConfig()
        self.clock = clock or store.clock()
        self._shared = Shared(
            store, registry, self.config, self.clock, steady=self.clock is store.clock()
        )
        self.stats: WorkerStats = self._shared.stats
        self._threads = DaemonThreads(self.config.concurrency)
        self._waits = Waits(store.clock().now)
        hub = Hub(store, self.clock, self._waits)
        runner = Runner(self.clock, self._threads, hub, self.config.worker_id)
        self._inflight = InFlight(self.config, self._waits)
        self._lanes = Lanes(
            self.config.concurrency,
            runner,
            self.clock,
            self._shared.timer,
            self._settle,
            self._pause_and_give_back,
        )
        self._callbacks = Callbacks(self._shared)
        self._discovery = Discovery(self._shared, self._wake_claims)
        self._claims = ClaimLoop(
            self._shared, self._inflight, self._lanes, hub, self._callbacks, self._discovery
        )
        self._chores = Chores(self._shared, self._inflight, self._waits)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- control from outside ---------------------------------------------------------

    def stop(self, *, immediately: bool = False) -> None:
        """Stop claiming; running items get ``grace`` seconds (none if ``immediately``)."""
        self._claims.stop(immediately=immediately)
        self._discovery.stop()

    @property
    def stopping(self) -> bool:
        return self._claims.stopping

    def wake(self) -> None:
        """Look for work now rather than at the next poll (thread-safe)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        self._discovery.nudge()  # a batch of a task not seen yet, perhaps
        self._claims.wake()

    def _wake_claims(self) -> None:
        self._claims.wake()

    # -- running ----------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Work until stopped, or, with ``until_idle``, until nothing is left to run. While
        it runs, the process's garbage collector scans its young objects less often
        (``collector.larger_young_generation``)."""
        with larger_young_generation():
            return await self._run(until_idle)

    async def _run(self, until_idle: bool) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        self._claims.open()
        self._discovery.open()
        self._shared.db.open()
        lanes = self._lanes.start()
        chores = [
            asyncio.create_task(every(seconds, chore, self._shared.outage))
            for seconds, chore in [
                *self._chores.schedule(),
                (self.config.poll_interval, self._callbacks.run_due),
            ]
        ]
        chores.append(asyncio.create_task(self._discovery.run()))
        stop_listening = self.store.on_change(self.wake)
        try:
            try:
                await self._chores.reclaim()
            except StoreUnavailable as exc:  # the claim loop waits for the store to return
                self._shared.outage.down(exc)
            await self._claims.work(until_idle)
            await self._claims.drain()
        finally:
            stop_listening()
            for task in lanes + chores:
                task.cancel()
            await asyncio.gather(*lanes, *chores, return_exceptions=True)
            await self._chores.forget_waits()
            self._threads.shutdown()
            self._shared.db.close()
            self._loop = None
        return self.stats

    def _settle(self, job: Job, outcome: Outcome | None) -> None:
        """Where a lane hands a finished job (after ``_pause_and_give_back`` when its task
        asked to pause the batch): to the claim loop."""
        self._claims.done(job, outcome)

    async def _pause_and_give_back(self, job: Job) -> None:
        """The task raised PauseBatch: pause its batch with the reason, then give back the
        item, and those of the batch claimed but not started (after the pause, so nobody
        claims them meanwhile). Items of the batch still running finish."""
        batch, reason = job.claim.batch, job.pause_reason
        if self._inflight.first_pause(batch.pk):
            log.warning("pausing batch %s: %s", batch.id, reason)
            try:
                await self._shared.db.call(self.store.pause, batch.id, self.clock.now(), reason)
            except BatchyardError as exc:  # ended or deleted meanwhile: nothing to pause
                log.info("could not pause batch %s: %s", batch.id, exc)
        waiting = self._lanes.take_waiting(batch.pk)
        for other in waiting:
            self._claims.done(other, None)
        waiting += self._inflight.take_ready(batch.pk)
        try:
            await self._claims.give_back([job, *waiting])
        except BatchyardError as exc:  # their leases will expire and bring them back
            log.warning("could not give back %d item(s): %s", 1 + len(waiting), exc)
