"""The attempts one worker holds, from claim to recorded outcome, and the two heuristics
that follow from them: how much to prefetch, and when the buffered outcomes should be
committed."""

from __future__ import annotations

from collections import Counter

from batchyard.runner import Job
from batchyard.store.base import Outcome
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

    def add(self, job: Job) -> None:
        """Hold a freshly claimed job."""
        self._paused.discard(job.claim.batch.pk)  # claimable again: it was resumed
        if job.claim.alone:
            self.alone = job
        self.jobs[job.claim.item_id] = job
        self.by_task[job.spec.name] += 1

    def finish(self, job: Job, outcome: Outcome | None) -> None:
        """Let go of a job; its outcome (None: nothing to record) joins the buffer."""
        self.jobs.pop(job.claim.item_id, None)
        if self.alone is job:
            self.alone = None
        self.by_task[job.spec.name] -= 1
        if outcome is not None:
            self.outcomes.append(outcome)
            took = outcome.finished_at - outcome.started_at
            mean = self.mean_duration
            self.mean_duration = took if mean is None else 0.9 * mean + 0.1 * took

    def take_outcomes(self) -> list[Outcome]:
        """Empty the buffer: the caller records what it returns (or ``put_back`` it)."""
        outcomes, self.outcomes = self.outcomes, []
        return outcomes

    def put_back(self, outcomes: list[Outcome]) -> None:
        """Outcomes not recorded (or not known to be): they go first in the next commit."""
        self.outcomes[:0] = outcomes

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
