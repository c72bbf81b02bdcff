"""Worker: claims items in chunks, runs them in lanes, records outcomes in group commits.

One asyncio loop per process. ``concurrency`` lanes (long-lived coroutines) take jobs from
a queue, which costs far less per item than a task each. Every store call goes through one
thread of its own, in order. Outcomes wait in a buffer and are committed together just
before the next claim, or after ``flush_interval`` at the latest: an outcome is durable
before anything else learns of it, and a crash before the commit only means the item
runs again. Leases are renewed by a heartbeat; the store refuses an outcome whose lease
was taken over (the attempt number is the fencing token).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from batchyard.clock import Clock, SystemClock
from batchyard.errors import BatchyardError, StoreUnavailable
from batchyard.models import BatchStatus
from batchyard.runner import SHUTDOWN, TIMEOUT, DaemonThreads, Job, Runner
from batchyard.services import Hub
from batchyard.states import BatchState
from batchyard.store.base import Claim, LeaseUpdate, Outcome, Recorded, Store
from batchyard.tasks import TaskRegistry, TaskSpec

log = logging.getLogger("batchyard.worker")
#: How often attempts are checked against their deadline: the precision of timeouts.
WATCHDOG_INTERVAL = 0.05
#: Items shorter than this on average (seconds) make a worker prefetch (see _prefetch).
SHORT_ITEM = 0.25
#: The longest wait between tries while the store is unreachable (seconds).
OUTAGE_BACKOFF_MAX = 5.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. The defaults suit a worker on the same machine as its store.

    ``concurrency`` items run at once in this process. A lease lasts ``lease`` seconds and
    is renewed every ``lease / 3``; a worker that stops answering loses its items to others
    ``lease`` seconds later. ``grace`` is how long a stopping worker lets running items
    finish before it gives them back.
    """

    concurrency: int = 64
    lease: float = 30.0
    poll_interval: float = 0.5
    flush_interval: float = 0.02
    claim_chunk: int = 512
    prefetch: int | None = None
    grace: float = 30.0
    progress_interval: float = 1.0
    control_interval: float = 0.5
    tasks: tuple[str, ...] | None = None
    batches: tuple[str, ...] | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("worker concurrency must be at least 1")
        if self.lease <= 0 or self.grace < 0 or self.poll_interval <= 0:
            raise ValueError("lease and poll interval must be positive, grace not negative")


@dataclass(slots=True)
class WorkerStats:
    """What one run of a worker did."""

    claimed: int = 0
    recorded: int = 0
    rejected: int = 0
    released: int = 0
    batches_ended: list[str] = field(default_factory=list)


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
        self.clock = clock or SystemClock()
        self.stats = WorkerStats()
        self._inflight: dict[int, Job] = {}
        self._by_task: Counter[str] = Counter()
        self._outcomes: list[Outcome] = []
        self._unknown_tasks: set[str] = set()
        self._stop_requested = False
        self._hard_stop = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._specs: dict[str, TaskSpec] = {}
        self._mean_duration: float | None = None
        self._alone: Job | None = None
        #: Batches this worker paused (PauseBatch), so it says so once.
        self._paused: set[int] = set()
        self._ready: deque[Job] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._waking = 0
        self._db: ThreadPoolExecutor | None = None
        self._threads = DaemonThreads(self.config.concurrency)
        self._hub = Hub(store, self.clock)
        self._runner = Runner(self.clock, self._threads, self._hub)

    # -- control from outside ---------------------------------------------------------

    def stop(self, *, immediately: bool = False) -> None:
        """Stop claiming; running items get ``grace`` seconds (none if ``immediately``)."""
        self._hard_stop = self._hard_stop or immediately or self._stop_requested
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def wake(self) -> None:
        """Look for work now rather than at the next poll (thread-safe)."""
        wake, loop = self._wake, self._loop
        if wake is not None and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- the loop ---------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Work until stopped, or, with ``until_idle``, until nothing is left to run."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="batchyard-db")
        lanes = [asyncio.create_task(self._lane()) for _ in range(cfg.concurrency)]
        chores = [
            asyncio.create_task(
                self._every(min(cfg.progress_interval, cfg.lease / 3), self._heartbeat)
            ),
            asyncio.create_task(self._every(cfg.poll_interval, self._run_callbacks)),
            asyncio.create_task(self._every(WATCHDOG_INTERVAL, self._watchdog)),
            asyncio.create_task(self._every(cfg.control_interval, self._control)),
            asyncio.create_task(self._every(min(cfg.lease / 2, 5.0), self._reclaim)),
        ]
        stop_listening = self.store.on_change(self.wake)
        try:
            await self._reclaim()
            await self._work(until_idle)
            await self._drain()
        finally:
            stop_listening()
            for task in lanes + chores:
                task.cancel()
            await asyncio.gather(*lanes, *chores, return_exceptions=True)
            self._threads.shutdown()
            self._db.shutdown(wait=True)
            self._loop = None
        return self.stats

    async def _work(self, until_idle: bool) -> None:
        cfg, wake = self.config, self._wake
        assert wake is not None  # set by run()
        quiet_since: float | None = None
        outage = 0.0  # the current wait between tries while the store is unreachable
        while not self._stop_requested:
            wake.clear()
            try:
                free = cfg.concurrency + self._prefetch() - len(self._inflight)
                if self._alone is not None:  # a suspect runs by itself
                    free = 0
                claims = await self._flush_and_claim(free) if free > 0 else []
                outage = 0.0
                if claims:
                    quiet_since = None
                    continue
                if not self._inflight and not self._outcomes:
                    await self._run_callbacks()
                    outlook = await self._db_call(
                        self.store.outlook, self._known_tasks(), self._now(), self.config.batches
                    )
                    if until_idle and outlook.remaining == 0 and outlook.callbacks_due == 0:
                        return
                    quiet_since = quiet_since or self._now()
                    timeout = self._idle_wait(outlook.next_due, quiet_since)
                else:
                    timeout = cfg.flush_interval if self._outcomes else cfg.poll_interval
            except StoreUnavailable as exc:
                # A database restart or a network cut: keep what we hold and try again,
                # waiting longer each time. Leases outlive a short outage; after a long one
                # our items went to others, and our late outcomes are refused.
                outage = min(max(outage * 2, 0.1), OUTAGE_BACKOFF_MAX)
                log.warning("store unavailable (%s); retrying in %.1fs", exc, outage)
                timeout = outage
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    def _idle_wait(self, next_due: float | None, quiet_since: float) -> float:
        # Poll often just after work stops (a new batch often follows), then back off.
        cfg = self.config
        quiet = self._now() - quiet_since
        wait = min(cfg.poll_interval, max(0.01, quiet / 4))
        if next_due is not None:
            wait = min(wait, max(0.0, next_due - self._now()))
        return wait

    async def _flush_and_claim(self, free: int) -> list[Claim]:
        # Outcomes also gather by themselves while the store thread is busy with the
        # previous commit (see _finish for when the loop is woken to come here).
        cfg = self.config
        capacity = self._capacity(free)
        outcomes, self._outcomes = self._outcomes, []
        limit = min(free, cfg.claim_chunk)
        try:
            claims = await self._db_call(self._flush_then_claim, outcomes, capacity, limit)
        except StoreUnavailable:
            self._outcomes[:0] = outcomes  # not recorded (or not known to be): try again
            raise
        self._dispatch(claims)
        return claims

    def _prefetch(self) -> int:
        """How many items to hold beyond ``concurrency``, so lanes never wait a round trip
        for work. Only while items are short: a long item's prefetched neighbours would sit
        leased here while another worker could run them."""
        cfg = self.config
        if cfg.prefetch is not None:
            return cfg.prefetch
        if self._mean_duration is not None and self._mean_duration < SHORT_ITEM:
            return min(cfg.claim_chunk, cfg.concurrency)
        return 0

    def _flush_then_claim(
        self, outcomes: list[Outcome], capacity: dict[str, int], limit: int
    ) -> list[Claim]:
        # Runs on the store thread: one transaction for both.
        if self._stop_requested:
            capacity = {}
        done, claims = self.store.record_and_claim(
            outcomes,
            self.config.worker_id,
            capacity,
            limit,
            self.clock.now(),
            self.config.lease,
            alone=not self._inflight,
            only=self.config.batches,
        )
        self._note(outcomes, done)
        return claims

    def _record(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._note(outcomes, self.store.record(outcomes, self.clock.now()))

    def _note(self, outcomes: list[Outcome], done: Recorded) -> None:
        self.stats.recorded += len(outcomes) - len(done.rejected)
        self.stats.rejected += len(done.rejected)
        self.stats.batches_ended.extend(done.ended)
        for outcome in done.rejected:
            log.warning(
                "outcome of item %s (attempt %d) refused: its lease was taken over",
                outcome.key,
                outcome.attempt,
            )

    def _capacity(self, free: int) -> dict[str, int]:
        capacity = {}
        for name in self._known_tasks():
            spec = self.registry.find(name)
            if spec is None:
                continue
            room = free
            if spec.concurrency is not None:
                room = min(room, spec.concurrency - self._by_task[name])
            if room > 0:
                capacity[name] = room
        return capacity

    def _spec(self, name: str) -> TaskSpec:
        spec = self.registry.find(name)
        if spec is None:  # pragma: no cover - capacity only lists resolvable tasks
            raise RuntimeError(f"claimed an item of unknown task {name}")
        self._specs[name] = spec
        return spec

    def _known_tasks(self) -> list[str]:
        if self.config.tasks is not None:
            return list(self.config.tasks)
        return self.registry.names()

    def _dispatch(self, claims: list[Claim]) -> None:
        assert self._loop is not None
        now = self._now()
        for claim in claims:
            spec = self._specs.get(claim.batch.task) or self._spec(claim.batch.task)
            job = Job(claim, spec, now, self._hub)
            self._paused.discard(claim.batch.pk)  # claimable again: it was resumed
            if claim.alone:
                self._alone = job
            self._inflight[claim.item_id] = job
            self._by_task[spec.name] += 1
            self._ready.append(job)
        self.stats.claimed += len(claims)
        self._wake_lane()

    def _wake_lane(self) -> None:
        # One lane at a time is woken; a lane that takes a job wakes the next. Jobs that
        # never suspend run back to back in one lane without waking any other.
        if self._ready and self._idle and not self._waking:
            self._idle.pop().set_result(None)
            self._waking += 1

    async def _lane(self) -> None:
        assert self._loop is not None
        task = asyncio.current_task()
        assert task is not None
        while True:
            while self._ready:
                job = self._ready.popleft()
                self._wake_lane()
                await self._run(job, task)
            idle = self._loop.create_future()
            self._idle.append(idle)
            await idle
            self._waking -= 1

    async def _run(self, job: Job, task: asyncio.Task[None]) -> None:
        if job.cancel_reason is not None:  # stopped before it started
            self._finish(job, self._runner.stopped(job))
            return
        job.lane = task
        job.started_at = self._now()
        limit = job.claim.batch.timeout
        if limit is not None:
            job.deadline = job.started_at + limit
        outcome: Outcome | None = None
        try:
            outcome = await self._runner.run(job)
        except asyncio.CancelledError:
            if job.cancel_reason != SHUTDOWN:
                raise
            task.uncancel()
        finally:
            job.lane = None
        if job.cancel_reason is not None and task.cancelling():
            await _absorb_cancel(task)
        if job.pause_reason is not None:
            await self._pause_and_give_back(job)
        self._finish(job, outcome)

    async def _pause_and_give_back(self, job: Job) -> None:
        """The task raised PauseBatch: pause its batch with the reason, then give back the
        item, and those of the batch claimed but not started (after the pause, so nobody
        claims them meanwhile). Items of the batch still running finish."""
        claim, reason = job.claim, job.pause_reason
        batch = claim.batch
        if batch.pk not in self._paused:
            self._paused.add(batch.pk)
            log.warning("pausing batch %s: %s", batch.id, reason)
            try:
                await self._db_call(self.store.pause, batch.id, self._now(), reason)
            except BatchyardError as exc:  # ended or deleted meanwhile: nothing to pause
                log.info("could not pause batch %s: %s", batch.id, exc)
        waiting = [other for other in self._ready if other.claim.batch.pk == batch.pk]
        for other in waiting:
            self._ready.remove(other)
            self._finish(other, None)
        leases = [(j.claim.item_id, j.claim.attempt) for j in (job, *waiting)]
        try:
            self.stats.released += await self._db_call(self.store.release, leases, self._now())
        except BatchyardError as exc:  # their leases will expire and bring them back
            log.warning("could not give back %d item(s): %s", len(leases), exc)

    def _finish(self, job: Job, outcome: Outcome | None) -> None:
        self._inflight.pop(job.claim.item_id, None)
        if self._alone is job:
            self._alone = None
        self._by_task[job.spec.name] -= 1
        if outcome is not None:
            self._outcomes.append(outcome)
            took = outcome.finished_at - outcome.started_at
            mean = self._mean_duration
            self._mean_duration = took if mean is None else 0.9 * mean + 0.1 * took
        # Group commit with a bounded delay: while prefetched work keeps every lane busy,
        # outcomes wait (at most flush_interval, the main loop's timeout) to be committed
        # together; once the queue runs low, or a chunk of them has gathered, commit and
        # claim at once so no lane goes idle.
        if (
            len(self._ready) <= self._prefetch() // 2
            or len(self._outcomes) >= self.config.claim_chunk
        ):
            assert self._wake is not None
            self._wake.set()

    # -- stopping ---------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running items finish within the grace period, then give back the rest."""
        assert self._wake is not None
        deadline = self._now() + (0.0 if self._hard_stop else self.config.grace)
        while self._inflight and self._now() < deadline and not self._hard_stop:
            self._wake.clear()
            await self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_interval * 5)
        left = list(self._inflight.values())
        for job in left:
            job.stop(SHUTDOWN)
        while self._ready:  # claimed, never started
            self._finish(self._ready.popleft(), None)
        await asyncio.sleep(0)  # let cancelled lanes unwind before their leases go back
        await self._flush()
        leases = [(job.claim.item_id, job.claim.attempt) for job in left]
        if leases:
            released = await self._db_call(self.store.release, leases, self._now())
            self.stats.released += released
            log.info("gave back %d unfinished item(s) for other workers", released)

    async def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        await self._db_call(self._record, outcomes)

    # -- chores -----------------------------------------------------------------------

    async def _every(self, seconds: float, chore: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await chore()
            except Exception:
                log.exception("worker chore %s failed; trying again", chore.__name__)

    async def _heartbeat(self) -> None:
        renew_every = self.config.lease / 3
        now = self._now()
        updates = []
        for job in list(self._inflight.values()):
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
        if not updates:
            return
        lost = await self._db_call(self.store.heartbeat, updates, now, self.config.lease)
        for item_id in lost:
            lost_job = self._inflight.get(item_id)
            if lost_job is not None:
                log.warning("lost the lease of item %s; stopping it", lost_job.claim.key)
                lost_job.stop("lease lost")

    async def _control(self) -> None:
        batches = {job.claim.batch.pk for job in self._inflight.values()}
        if not batches:
            return
        states = await self._db_call(self.store.batch_states, batches)
        for job in list(self._inflight.values()):
            state = states.get(job.claim.batch.pk)
            if state is None or state is BatchState.CANCELLED:
                job.stop("batch cancelled" if state else "batch deleted")

    async def _watchdog(self) -> None:
        # The injected clock, as for leases: a test moves a FakeClock past the deadline.
        now = self._now()
        for job in list(self._inflight.values()):
            if job.deadline is not None and job.deadline <= now and job.lane is not None:
                job.stop(TIMEOUT)

    async def _reclaim(self) -> None:
        await self._db_call(self._discover_tasks)
        moved = await self._db_call(self.store.reclaim_expired, self._now())
        if moved:
            log.info("took back %d item(s) whose worker stopped answering", moved)

    def _discover_tasks(self) -> None:
        """Import the ``module:function`` tasks of claimable batches this process can run."""
        if self.config.tasks is not None:
            return
        for name in self.store.active_tasks():
            if name not in self._unknown_tasks and self.registry.find(name) is None:
                self._unknown_tasks.add(name)
                log.warning("cannot run task %s here; leaving its batches to others", name)

    async def _run_callbacks(self) -> None:
        tasks = self._known_tasks()
        due = await self._db_call(
            self.store.claim_callbacks, tasks, self._now(), self.config.lease, self.config.batches
        )
        for status, round_ in due:
            spec = self.registry.find(status.task)
            if spec is not None:
                await _call_callbacks(spec, status)
            await self._db_call(self.store.finish_callbacks, status.id, round_)

    # -- helpers ----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now()

    async def _db_call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None and self._db is not None
        return await self._loop.run_in_executor(self._db, fn, *args)


async def _absorb_cancel(task: asyncio.Task[None]) -> None:
    """Swallow a cancel that arrived after its job had already finished."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        task.uncancel()


async def _call_callbacks(spec: TaskSpec, status: BatchStatus) -> None:
    chosen = [spec.on_complete]
    if status.state is BatchState.COMPLETED:
        chosen.append(spec.on_success)
    elif status.state in (BatchState.FAILED, BatchState.PARTIALLY_COMPLETED):
        chosen.append(spec.on_failure)
    for callback in chosen:
        if callback is None:
            continue
        try:
            if inspect.iscoroutinefunction(callback):
                await callback(status)
            else:
                await asyncio.to_thread(callback, status)
        except Exception:
            log.exception("callback %r of batch %s failed", callback, status.id)
