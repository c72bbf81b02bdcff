"""The attempts one worker holds, from claim to recorded outcome, and the two heuristics
that follow from them: how much to prefetch, and when the buffered outcomes should be
committed."""

from __future__ import annotations

from collections import Counter, deque

from batchyard.runner import Job
from batchyard.store.base import Outcome, Standby
from batchyard.tasks import TaskSpec
from batchyard.waits import Waits
from batchyard.worker.config import WorkerConfig

#: Items shorter than this on average (seconds) make a worker prefetch (see ``prefetch``).
SHORT_ITEM = 0.25
#: A worker prefetches no more than its lanes would start within this long (seconds).
PREFETCH_HORIZON = 0.05
#: Items longer than this on average (seconds) wait on something: their lanes start
#: together (see ``Lanes.push``).
WAITING_ITEM = 0.001


class InFlight:
    """Jobs claimed and not yet finished, counted per task, plus the outcomes waiting for
    the next group commit. Pure bookkeeping: no store, no event loop."""

    def __init__(self, config: WorkerConfig, waits: Waits | None = None) -> None:
        self._config = config
        #: Items waiting for a rate limiter: while any do, prefetching gains nothing.
        self._waits = waits
        self.jobs: dict[int, Job] = {}
        self.by_task: Counter[str] = Counter()
        self.outcomes: list[Outcome] = []
        #: A suspect item runs by itself: while it does, nothing else is claimed.
        self.alone: Job | None = None
        #: Mean duration of recent attempts (an exponential average), None before any.
        self.mean_duration: float | None = None
        #: Batches this worker paused (PauseBatch), so it says so once.
        self._paused: set[int] = set()
        #: ``prefetch()`` as of the last ``free()``: ``should_commit`` runs once per item
        #: and need not work it out again each time.
        self._prefetch = 0
        #: Jobs held ready beyond their batch's cap (``Claim.standby``), per batch pk,
        #: oldest first: one starts when one of ours of that batch ends.
        self.ready: dict[int, deque[Job]] = {}
        #: Jobs held ready that started since the last round, as (item id, attempt): the
        #: next round says so, before their outcomes.
        self.started: list[tuple[int, int]] = []
        #: Per batch pk, our items that ended with nothing held ready to start in their
        #: place, since the last round was sent: their outcomes are not committed yet, so
        #: jobs held ready that arrive meanwhile may still start in their place.
        self._unreplaced: Counter[int] = Counter()
        #: Per batch pk with a cap of its own, the jobs held of it (held ready or not).
        self._capped: Counter[int] = Counter()

    def add(self, job: Job) -> None:
        """Hold a freshly claimed job."""
        self._paused.discard(job.claim.batch.pk)  # claimable again: it was resumed
        if job.claim.alone:
            self.alone = job
        self.jobs[job.claim.item_id] = job
        self.by_task[job.spec.name] += 1
        claim = job.claim
        if claim.batch.concurrency is not None:
            self._capped[claim.batch.pk] += 1
            if claim.standby:
                self.ready.setdefault(claim.batch.pk, deque()).append(job)

    def finish(self, job: Job, outcome: Outcome | None, *, replace: bool = True) -> Job | None:
        """Let go of a job; its outcome (None: nothing to record) joins the buffer. Returns
        a job held ready of the same batch to start in its place now (it is noted for the
        next round), if ``replace`` and the job ended with an outcome."""
        claim = job.claim
        held = self.jobs.pop(claim.item_id, None) is not None  # not let go of already
        if held:
            if self.alone is job:
                self.alone = None
            self.by_task[job.spec.name] -= 1
        if outcome is not None:
            self.outcomes.append(outcome)
            took = outcome.finished_at - outcome.started_at
            mean = self.mean_duration
            self.mean_duration = took if mean is None else 0.9 * mean + 0.1 * took
        if claim.batch.concurrency is None:
            return None
        return self._replace(job, held, replace and outcome is not None)

    def _replace(self, job: Job, held: bool, replace: bool) -> Job | None:
        """``finish`` for a job of a batch with a cap of its own (see ``finish``)."""
        pk = job.claim.batch.pk
        if held:
            self._capped[pk] -= 1
            if not self._capped[pk]:
                del self._capped[pk]
        ready = self.ready.get(pk)
        if job.claim.standby and ready and job in ready:  # held ready, never started
            ready.remove(job)
        if not replace:
            return None
        starting = self._start(pk)
        if starting is None and self._prefetch:
            self._unreplaced[pk] += 1  # jobs held ready may be on their way
        return starting

    def start_ready(self, batch_pk: int) -> list[Job]:
        """Jobs held ready of a batch that start now, in place of ours that ended since
        the last round was sent (see ``_unreplaced``); they are noted for the next round."""
        starting: list[Job] = []
        while self._unreplaced[batch_pk] > 0 and (job := self._start(batch_pk)) is not None:
            self._unreplaced[batch_pk] -= 1
            starting.append(job)
        return starting

    def _start(self, batch_pk: int) -> Job | None:
        """The oldest job held ready of a batch that may start, taken out and noted for the
        next round; None if there is none (a stopped one goes back: see ``orphans``)."""
        ready = self.ready.get(batch_pk, ())
        job = next((job for job in ready if job.cancel_reason is None), None)
        if job is not None:
            self.ready[batch_pk].remove(job)
            self.started.append((job.claim.item_id, job.claim.attempt))
        return job

    def standby(self, started: list[tuple[int, int]]) -> Standby:
        """What the next round says about jobs held ready: ``started`` (see
        ``take_started``), and how many more to hold, with how many jobs each batch has
        here counting against its cap."""
        ready = self.ready
        want = self._prefetch - sum(len(jobs) for jobs in ready.values())
        if want <= 0:
            return Standby(0, {}, started)
        holding = {pk: n - len(ready.get(pk, ())) for pk, n in self._capped.items()}
        return Standby(want, holding, started)

    def take_started(self) -> list[tuple[int, int]]:
        """Empty the list of started jobs held ready: the caller sends it (or puts it
        back with ``put_back``)."""
        started, self.started = self.started, []
        return started

    def take_ready(self, batch_pk: int | None = None) -> list[Job]:
        """Let go of the jobs held ready (of one batch, or all), to give them back."""
        pks = list(self.ready) if batch_pk is None else [batch_pk]
        taken = [job for pk in pks for job in self.ready.pop(pk, ())]
        for job in taken:
            self.finish(job, None)
        return taken

    def orphans(self) -> list[Job]:
        """Let go of the jobs held ready that cannot start here, to give them back: those
        stopped (their batch cancelled, say), and those of a batch of which this worker
        holds nothing else (nothing of ours will end to start them)."""
        if not any(self.ready.values()):
            return []
        found = [
            job
            for pk, ready in self.ready.items()
            for job in ready
            if job.cancel_reason is not None or self._capped[pk] == len(ready)
        ]
        for job in found:
            self.finish(job, None)
        return found

    def take_outcomes(self) -> list[Outcome]:
        """Empty the buffer: the caller records what it returns (or ``put_back`` it)."""
        outcomes, self.outcomes = self.outcomes, []
        self._unreplaced = Counter()  # the claim of the round that commits them sees them
        return outcomes

    def put_back(self, outcomes: list[Outcome], started: list[tuple[int, int]]) -> None:
        """Outcomes and starts not recorded (or not known to be): they go first in the
        next commit."""
        self.outcomes[:0] = outcomes
        self.started[:0] = started

    def free(self) -> int:
        """How many more items to claim now (none while a suspect runs alone)."""
        if self.alone is not None:
            return 0
        self._prefetch = self.prefetch()
        return self._config.concurrency + self._prefetch - len(self.jobs)

    def prefetch(self) -> int:
        """How many items to hold beyond ``concurrency``, so lanes never wait a round trip
        for work. Only while items are short: a long item's prefetched neighbours would sit
        leased here while another worker could run them. Short items: one per lane; very
        short ones, as many as the lanes start within PREFETCH_HORIZON (up to a claim
        chunk), so that each round trip to the store carries a full chunk. None while items
        wait for a rate limiter."""
        cfg = self._config
        if cfg.prefetch is not None:
            return cfg.prefetch
        if self._waits is not None and len(self._waits):
            # A rate limit, not the lanes, sets the pace: extra items would only wait,
            # leased here, shown as held, and kept from other workers.
            return 0
        mean = self.mean_duration
        if mean is None or mean >= SHORT_ITEM:
            return 0
        soon = cfg.concurrency * PREFETCH_HORIZON / max(mean, 1e-9)
        return min(cfg.claim_chunk, max(cfg.concurrency, int(soon)))

    def waits(self) -> bool:
        """Whether items wait on something as they run (or nothing is known yet)."""
        return self.mean_duration is None or self.mean_duration >= WAITING_ITEM

    def should_commit(self, waiting: int) -> bool:
        """Whether to commit and claim at once, with ``waiting`` jobs not yet started.

        Group commit with a bounded delay: while prefetched work keeps every lane busy,
        outcomes wait (at most flush_interval, the claim loop's timeout) to be committed
        together; once the queue runs low, or a chunk of them has gathered, commit and
        claim at once so no lane goes idle."""
        return waiting <= self._prefetch // 2 or len(self.outcomes) >= self._config.claim_chunk

    def room(self, spec: TaskSpec, free: int) -> int:
        """How many items of ``spec``'s task fit in ``free`` places, within its concurrency."""
        if spec.concurrency is None:
            return free
        return min(free, spec.concurrency - self.by_task[spec.name])

    def batch_pks(self) -> set[int]:
        return {job.claim.batch.pk for job in self.jobs.values()}

    def first_pause(self, batch_pk: int) -> bool:
        """True the first time a job of this batch asks to pause it (until it is claimed
        again after a resume)."""
        first = batch_pk not in self._paused
        self._paused.add(batch_pk)
        return first
