"""A worker's periodic chores beside its claim loop: the heartbeat (leases and progress),
control (cancelled or deleted batches), the timeout watchdog, and the reclaim of leases
that expired elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from batchyard.errors import BatchyardError, StoreUnavailable
from batchyard.runner import LEASE_LOST, TIMEOUT
from batchyard.states import BatchState
from batchyard.store.base import LeaseUpdate
from batchyard.waits import Waits
from batchyard.worker.inflight import InFlight
from batchyard.worker.shared import Outage, Shared

log = logging.getLogger("batchyard.worker")
#: How often attempts are checked against their deadline: the precision of timeouts.
WATCHDOG_INTERVAL = 0.05
#: How often a change in the items waiting for a rate limiter is written to the store: how
#: late a status elsewhere may count a freshly claimed item as running, not waiting.
WAITS_INTERVAL = 0.2

Chore = Callable[[], Awaitable[None]]


async def every(seconds: float, chore: Chore, outage: Outage) -> None:
    """Run ``chore`` every ``seconds`` until cancelled; a failure is logged, not raised
    (the store being away, once per outage: the claim loop says when it is back)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await chore()
        except StoreUnavailable as exc:
            outage.down(exc)
        except Exception:
            log.exception("worker chore %s failed; trying again", chore.__name__)


class Chores:
    """The chores over the jobs a worker holds."""

    def __init__(self, shared: Shared, inflight: InFlight, waits: Waits) -> None:
        self._shared = shared
        self._inflight = inflight
        self._waits = waits
        #: When waits were last written (store's clock, as limiters and statuses use), None
        #: while the store holds none of this worker's.
        self._waits_written: float | None = None

    def schedule(self) -> list[tuple[float, Chore]]:
        """Each chore with how often it runs (seconds)."""
        cfg = self._shared.config
        return [
            (min(cfg.progress_interval, cfg.lease / 3), self.heartbeat),
            (WATCHDOG_INTERVAL, self.watchdog),
            (cfg.control_interval, self.control),
            (min(cfg.lease / 2, 5.0), self.reclaim),
            (WAITS_INTERVAL, self.publish_waits),
        ]

    async def publish_waits(self) -> None:
        """Write which held items wait for which limiter when that changed, and again
        every third of a lease while any wait (each row is trusted for one lease)."""
        # The store's clock, not the worker's: limiters wait on it, and statuses read it.
        now, lease = self._shared.store.clock().now(), self._shared.config.lease
        written = self._waits_written
        if not self._waits.changed and (written is None or now - written < lease / 3):
            return
        shared = self._shared
        rows = self._waits.rows(now)
        try:
            await shared.db.call(
                shared.store.publish_waits, shared.config.worker_id, rows, now, now + lease
            )
        except BaseException:
            self._waits.changed = True  # still to be written: next time round
            raise
        self._waits_written = now if rows else None

    async def forget_waits(self) -> None:
        """Take this worker's waits out of the store (it is stopping)."""
        if self._waits_written is None:
            return
        shared = self._shared
        try:
            await shared.db.call(
                shared.store.publish_waits,
                shared.config.worker_id,
                [],
                shared.store.clock().now(),
                0.0,
            )
        except BatchyardError as exc:  # they expire by themselves within a lease
            log.info("could not clear this worker's rate limit waits: %s", exc)
        self._waits_written = None

    async def heartbeat(self) -> None:
        """Renew leases older than a third of a lease and save changed progress, in one
        store call; attempts whose lease was lost are stopped."""
        shared = self._shared
        now = shared.now()
        updates = self._lease_updates(now)
        if not updates:
            return
        lost = await shared.db.call(shared.store.heartbeat, updates, now, shared.config.lease)
        for item_id in lost:
            lost_job = self._inflight.jobs.get(item_id)
            if lost_job is not None:
                log.warning("lost the lease of item %s; stopping it", lost_job.claim.key)
                lost_job.stop(LEASE_LOST)

    def _lease_updates(self, now: float) -> list[LeaseUpdate]:
        renew_every = self._shared.config.lease / 3
        updates = []
        for job in list(self._inflight.jobs.values()):
            ctx = job.ctx
            # A renewal "in the future" means the clock went back: renew now, or the lease
            # would wait for the clock to catch up and look lapsed meanwhile.
            if not ctx.progress_changed and 0 <= now - job.renewed_at < renew_every:
                continue
            job.renewed_at = now
            updates.append(
                LeaseUpdate(
                    job.claim.item_id,
                    job.claim.attempt,
                    ctx.progress_value,
                    ctx.message,
                    ctx.progress_changed,
                    ctx.take_logs() if ctx.progress_changed else [],
                )
            )
            ctx.progress_changed = False
        return updates

    async def control(self) -> None:
        """Stop the attempts whose batch was cancelled or deleted."""
        batches = self._inflight.batch_pks()
        if not batches:
            return
        states = await self._shared.db.call(self._shared.store.batch_states, batches)
        for job in list(self._inflight.jobs.values()):
            state = states.get(job.claim.batch.pk)
            if state is None or state is BatchState.CANCELLED:
                job.stop("batch cancelled" if state else "batch deleted")

    async def watchdog(self) -> None:
        """Stop the running attempts past their deadline."""
        # Not a wall clock: a step of it would time out every attempt at once.
        now = self._shared.timer()
        for job in list(self._inflight.jobs.values()):
            if job.deadline is not None and job.deadline <= now and job.lane is not None:
                job.stop(TIMEOUT)

    async def reclaim(self) -> None:
        """Send items whose lease expired (their worker stopped answering) back."""
        shared = self._shared
        # The store's own clock makes the sweep watch leases on the monotonic clock, so no
        # clock step takes a live one (``rules.LeaseWatch``); a clock a caller injected (a
        # test's FakeClock) decides alone.
        steady = shared.timer() if shared.steady else None
        moved = await shared.db.call(shared.store.reclaim_expired, shared.now(), steady)
        if moved:
            log.info("took back %d item(s) whose worker stopped answering", moved)
