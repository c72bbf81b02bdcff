"""A worker's periodic chores beside its claim loop: the heartbeat (leases and progress),
control (cancelled or deleted batches), the timeout watchdog, and the reclaim of leases
that expired elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from batchyard.errors import StoreUnavailable
from batchyard.runner import TIMEOUT
from batchyard.states import BatchState
from batchyard.store.base import LeaseUpdate
from batchyard.worker.inflight import InFlight
from batchyard.worker.shared import Outage, Shared

log = logging.getLogger("batchyard.worker")
#: How often attempts are checked against their deadline: the precision of timeouts.
WATCHDOG_INTERVAL = 0.05

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

    def __init__(self, shared: Shared, inflight: InFlight) -> None:
        self._shared = shared
        self._inflight = inflight

    def schedule(self) -> list[tuple[float, Chore]]:
        """Each chore with how often it runs (seconds)."""
        cfg = self._shared.config
        return [
            (min(cfg.progress_interval, cfg.lease / 3), self.heartbeat),
            (WATCHDOG_INTERVAL, self.watchdog),
            (cfg.control_interval, self.control),
            (min(cfg.lease / 2, 5.0), self.reclaim),
        ]

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
                lost_job.stop("lease lost")

    def _lease_updates(self, now: float) -> list[LeaseUpdate]:
        renew_every = self._shared.config.lease / 3
        updates = []
        for job in list(self._inflight.jobs.values()):
            ctx = job.ctx
            if not ctx.progress_changed and now - job.renewed_at < renew_every:
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
        # The injected clock, as for leases: a test moves a FakeClock past the deadline.
        now = self._shared.now()
        for job in list(self._inflight.jobs.values()):
            if job.deadline is not None and job.deadline <= now and job.lane is not None:
                job.stop(TIMEOUT)

    async def reclaim(self) -> None:
        """Send items whose lease expired (their worker stopped answering) back."""
        shared = self._shared
        moved = await shared.db.call(shared.store.reclaim_expired, shared.now())
        if moved:
            log.info("took back %d item(s) whose worker stopped answering", moved)
