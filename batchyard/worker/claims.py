"""The claim/commit loop: the one place a worker talks to the store about work.

Outcomes wait in a buffer and are committed in one transaction together with the next
claim, as soon as there is room to claim, or after ``flush_interval`` at the latest: an
outcome is durable before anything else learns of it, and a crash before the commit only
means the item runs again. The store refuses an outcome whose lease was taken over (the
attempt number is the fencing token). A stopping worker drains: running items get
``grace`` seconds, the rest are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from batchyard.errors import StoreUnavailable
from batchyard.runner import SHUTDOWN, Job
from batchyard.services import Hub
from batchyard.store.base import Claim, Outcome, Recorded, Standby
from batchyard.tasks import TaskSpec
from batchyard.worker.callbacks import Callbacks
from batchyard.worker.discovery import Discovery
from batchyard.worker.inflight import InFlight
from batchyard.worker.journal import Journal
from batchyard.worker.lanes import Lanes
from batchyard.worker.shared import Shared

log = logging.getLogger("batchyard.worker")
#: The longest wait between tries while the store is unreachable (seconds).
OUTAGE_BACKOFF_MAX = 5.0


class ClaimLoop:
    """Claims work into the lanes and commits what they finish, until stopped."""

    def __init__(
        self,
        shared: Shared,
        inflight: InFlight,
        lanes: Lanes,
        hub: Hub,
        callbacks: Callbacks,
        discovery: Discovery,
    ) -> None:
        self._shared = shared
        self._discovery = discovery
        self._inflight = inflight
        self._lanes = lanes
        self._hub = hub
        self._callbacks = callbacks
        self._specs: dict[str, TaskSpec] = {}
        self._journal = Journal()
        self._wake = asyncio.Event()
        self.stopping = False
        self._hard_stop = False

    # -- told from outside --------------------------------------------------------------

    def open(self) -> None:
        """Get ready to run on the running loop (a worker may run more than once)."""
        self._wake = asyncio.Event()

    def stop(self, *, immediately: bool = False) -> None:
        """Stop claiming; running items get ``grace`` seconds (none if ``immediately``, or
        if this is the second call)."""
        self._hard_stop = self._hard_stop or immediately or self.stopping
        self.stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Go round the loop now rather than at the next poll (on the loop's thread)."""
        self._wake.set()

    def done(self, job: Job, outcome: Outcome | None) -> None:
        """A job finished (``outcome`` None: nothing to record); a job held ready of its
        batch starts in its place at once. Wake the loop when the buffered outcomes should
        be committed now (see ``InFlight.should_commit``)."""
        ready = self._inflight.finish(job, outcome, replace=not self.stopping)
        if ready is not None:
            self._lanes.push_first(ready)
        if self._inflight.should_commit(len(self._lanes.waiting)):
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def work(self, until_idle: bool) -> None:
        """Claim and commit until stopped, or with ``until_idle`` until nothing is left."""
        quiet_since: float | None = None
        outage = 0.0  # the current wait between tries while the store is unreachable
        while not self.stopping:
            self._wake.clear()
            try:
                await self._give_back_orphans()
                free = self._inflight.free()
                claims = await self._flush_and_claim(free) if free > 0 else []
                outage = 0.0
                self._shared.outage.up()
                if claims:
                    quiet_since = None
                    if len(claims) >= min(free, self._shared.config.claim_chunk):
                        continue  # a full claim: there may be more to take at once
                    # A short one: the store had no more for us now (a batch at its cap,
                    # a task at its concurrency, nothing left), so asking again at once
                    # would only hold up the next commit; a finished item wakes us.
                if self._inflight.jobs or self._inflight.outcomes:
                    timeout = self._busy_wait()
                else:
                    quiet_since = quiet_since or self._shared.timer()
                    wait = await self._when_idle(until_idle, quiet_since)
                    if wait is None:
                        return
                    timeout = wait
            except StoreUnavailable as exc:
                # A database restart or a network cut: keep what we hold and try again,
                # waiting longer each time. Leases outlive a short outage; after a long one
                # our items went to others, and our late outcomes are refused.
                outage = min(max(outage * 2, 0.1), OUTAGE_BACKOFF_MAX)
                self._shared.outage.down(exc)
                timeout = outage
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _busy_wait(self) -> float:
        cfg = self._shared.config
        return cfg.flush_interval if self._inflight.outcomes else cfg.poll_interval

    async def _when_idle(self, until_idle: bool, quiet_since: float) -> float | None:
        """Nothing held: run due callbacks and look ahead. How long to wait before the
        next look, or None when ``until_idle`` and nothing is left to do."""
        shared = self._shared
        await self._callbacks.run_due()
        known = shared.known_tasks()
        outlook = await shared.db.call(
            shared.store.outlook, known, shared.now(), shared.config.batches
        )
        if until_idle and outlook.remaining == 0 and outlook.callbacks_due == 0:
            # Idle only once the tasks of every claimable batch were looked for.
            await self._discovery.discover()
            return None if shared.known_tasks() == known else 0.0
        return self._idle_wait(outlook.next_due, quiet_since)

    def _idle_wait(self, next_due: float | None, quiet_since: float) -> float:
        # Poll often just after work stops (a new batch often follows), then back off. How
        # long it has been quiet is a length of time (Shared.timer): on the wall clock, a
        # clock stepped back would keep the worker polling at its fastest for as long.
        cfg = self._shared.config
        wait = min(cfg.poll_interval, max(0.01, (self._shared.timer() - quiet_since) / 4))
        if next_due is not None:  # a time the store keeps: on the wall clock
            wait = min(wait, max(0.0, next_due - self._shared.now()))
        return wait

    async def _flush_and_claim(self, free: int) -> list[Claim]:
        # Outcomes also gather by themselves while the store thread is busy with the
        # previous commit (see done() for when the loop is woken to come here).
        capacity = self._capacity(free)
        outcomes = self._inflight.take_outcomes()
        limit = min(free, self._shared.config.claim_chunk)
        # Decided here, on the loop: the store thread must not read what the loop changes.
        alone = not self._inflight.jobs
        standby = self._inflight.standby(self._inflight.take_started())
        try:
            claims = await self._shared.db.call(
                self._flush_then_claim, outcomes, capacity, limit, alone, standby
            )
        except StoreUnavailable:
            # Not recorded (or not known to be): try again.
            self._inflight.put_back(outcomes, list(standby.started))
            raise
        self._dispatch(claims)
        return claims

    def _flush_then_claim(
        self,
        outcomes: list[Outcome],
        capacity: dict[str, int],
        limit: int,
        alone: bool,
        standby: Standby,
    ) -> list[Claim]:
        # Runs on the store thread: one transaction for both.
        shared = self._shared
        if self.stopping:
            capacity = {}
        done, claims = shared.store.record_and_claim(
            outcomes,
            shared.config.worker_id,
            capacity,
            limit,
            shared.now(),
            shared.config.lease,
            alone=alone,
            only=shared.config.batches,
            standby=standby,
        )
        self._note(outcomes, done)
        self._journal.claimed(shared.store, claims)
        return claims

    def _record(self, outcomes: list[Outcome], started: list[tuple[int, int]]) -> None:
        # Started jobs held ready count against their caps before their outcomes apply.
        if outcomes or started:
            self._flush_then_claim(outcomes, {}, 0, False, Standby(started=started))

    def _note(self, outcomes: list[Outcome], done: Recorded) -> None:
        stats = self._shared.stats
        stats.recorded += len(outcomes) - len(done.rejected)
        stats.rejected += len(done.rejected)
        stats.batches_ended.extend(done.ended)
        self._journal.ended(self._shared.store, done.ended)
        for outcome in done.rejected:
            log.warning(
                "outcome of item %s (attempt %d) not recorded: the store had moved the item on "
                "meanwhile (its batch was cancelled, or its lease ran out and it went back "
                "to the queue)",
                outcome.key,
                outcome.attempt,
            )

    def _capacity(self, free: int) -> dict[str, int]:
        capacity = {}
        for name in self._shared.known_tasks():
            spec = self._shared.registry.get(name)
            room = 0 if spec is None else self._inflight.room(spec, free)
            if room > 0:
                capacity[name] = room
        return capacity

    def _spec(self, name: str) -> TaskSpec:
        spec = self._specs.get(name) or self._shared.registry.get(name)
        if spec is None:  # pragma: no cover - capacity only lists resolvable tasks
            raise RuntimeError(f"claimed an item of unknown task {name}")
        self._specs[name] = spec
        return spec

    def _dispatch(self, claims: list[Claim]) -> None:
        now = self._shared.now()
        jobs = [Job(claim, self._spec(claim.batch.task), now, self._hub) for claim in claims]
        for job in jobs:
            self._inflight.add(job)
        self._shared.stats.claimed += len(claims)
        # Jobs held ready beyond a cap wait in InFlight.ready for one of ours to end, or
        # start now in place of one that ended while they were on their way.
        ready = {claim.batch.pk for claim in claims if claim.standby}
        if ready:
            jobs = [job for job in jobs if not job.claim.standby]
        self._lanes.push(jobs, together=self._inflight.waits())
        for pk in ready:
            for job in self._inflight.start_ready(pk):
                self._lanes.push_first(job)

    async def _give_back_orphans(self) -> None:
        """Give back the jobs held ready that cannot start here (see InFlight.orphans)."""
        orphans = self._inflight.orphans()
        if not orphans:
            return
        try:
            await self.give_back(orphans)
        except StoreUnavailable as exc:  # their leases will expire and bring them back
            log.warning("could not give back %d item(s) held ready: %s", len(orphans), exc)

    # -- stopping ---------------------------------------------------------------------

    async def drain(self) -> None:
        """Let running items finish within the grace period, then give back the rest."""
        cfg = self._shared.config
        deadline = self._shared.now() + (0.0 if self._hard_stop else cfg.grace)
        while self._inflight.jobs and self._shared.now() < deadline and not self._hard_stop:
            await self._give_back_unstarted()
            if not self._inflight.jobs:
                break
            self._wake.clear()
            await self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), cfg.flush_interval * 5)
        left = list(self._inflight.jobs.values())
        for job in left:
            job.stop(SHUTDOWN)
        for job in self._lanes.take_waiting():  # claimed, never started
            self.done(job, None)
        self._inflight.take_ready()  # held ready, never started: in ``left`` too
        await asyncio.sleep(0)  # let cancelled lanes unwind before their leases go back
        await self.flush()
        if left:
            released = await self.give_back(left)
            log.info("gave back %d unfinished item(s) for other workers", released)

    async def _give_back_unstarted(self) -> None:
        """Items claimed but not started, or waiting for a rate limiter to admit them, go
        back at once, unspent: the grace is for work under way, and they have none."""
        waits = self._hub.waits
        waiting = [
            job
            for job in self._inflight.jobs.values()
            if waits is not None and waits.is_waiting(job.claim.item_id)
        ]
        unstarted = self._lanes.take_waiting()
        for job in unstarted:
            self.done(job, None)
        unstarted += self._inflight.take_ready()
        if not waiting and not unstarted:
            return
        for job in waiting:
            job.stop(SHUTDOWN)
        await asyncio.sleep(0)  # let the stopped lanes unwind before the leases go back
        try:
            released = await self.give_back([*waiting, *unstarted])
        except StoreUnavailable as exc:  # their leases will expire and bring them back
            log.warning("could not give back %d item(s): %s", len(waiting) + len(unstarted), exc)
            return
        log.info("gave back %d item(s) waiting for a rate limit or a lane", released)

    async def flush(self) -> None:
        """Record the buffered outcomes now."""
        inflight = self._inflight
        await self._shared.db.call(self._record, inflight.take_outcomes(), inflight.take_started())

    async def give_back(self, jobs: list[Job]) -> int:
        """Release the leases of ``jobs`` unspent, for any worker to claim at once; returns
        how many were released. An attempt whose task was called counts as a run, unless
        the task paused its batch (it gave its item back to run later). Raises what the
        store raises."""
        leases = [(job.claim.item_id, job.claim.attempt) for job in jobs]
        if not leases:
            return 0
        ran = [job.claim.item_id for job in jobs if job.ran and job.pause_reason is None]
        shared = self._shared
        released = await shared.db.call(shared.store.release, leases, shared.now(), ran)
        shared.stats.released += released
        return released
