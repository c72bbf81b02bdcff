"""Lanes: ``concurrency`` long-lived coroutines that run a worker's jobs from one queue,
which costs far less per item than a task each."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from batchyard.clock import Clock
from batchyard.runner import GIVE_BACK, Job, Runner
from batchyard.store.base import Outcome

#: What a lane hands a finished job to, with its outcome (None: nothing to record).
Settle = Callable[[Job, Outcome | None], None]
#: What a lane awaits first when the job's task asked to pause its batch.
Pause = Callable[[Job], Awaitable[None]]


class Lanes:
    """The queue of claimed jobs waiting to start, and the lanes that run them."""

    def __init__(
        self,
        count: int,
        runner: Runner,
        clock: Clock,
        timer: Callable[[], float],
        settle: Settle,
        pause: Pause,
    ) -> None:
        self._count = count
        self._runner = runner
        self._clock = clock
        self._timer = timer  # deadlines (see Shared.timer)
        self._settle = settle
        self._pause = pause
        #: Claimed jobs not started yet, oldest first.
        self.waiting: deque[Job] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._waking = 0

    def start(self) -> list[asyncio.Task[None]]:
        """Start the lanes on the running loop; the caller cancels them when done (the
        lanes of an earlier run, and their idle futures, are gone)."""
        self._idle = []
        self._waking = 0
        return [asyncio.create_task(self._lane()) for _ in range(self._count)]

    def push(self, jobs: Iterable[Job], *, together: bool = False) -> None:
        """Queue jobs to run, oldest first. ``together``: wake a lane for each now, for
        jobs that wait on something (a timer, a socket): woken one after another, one
        loop pass apart, a hundred of them would start (and end) milliseconds apart."""
        self.waiting.extend(jobs)
        if together:
            while self.waiting and self._idle and self._waking < len(self.waiting):
                self._idle.pop().set_result(None)
                self._waking += 1
        self._wake_one()

    def push_first(self, job: Job) -> None:
        """Queue a job to run before any other (one held ready, in place of one ended)."""
        self.waiting.appendleft(job)
        self._wake_one()

    def take_waiting(self, batch_pk: int | None = None) -> list[Job]:
        """Remove the jobs not started yet (of one batch, or all) from the queue."""
        taken = [job for job in self.waiting if batch_pk in (None, job.claim.batch.pk)]
        for job in taken:
            self.waiting.remove(job)
        return taken

    def _wake_one(self) -> None:
        # Unless jobs come ``together``, one lane at a time is woken; a lane that takes a job
        # wakes the next. Jobs that never suspend run back to back in one lane without
        # waking any other.
        if self.waiting and self._idle and not self._waking:
            self._idle.pop().set_result(None)
            self._waking += 1

    async def _lane(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # a lane is always a task (see start)
        while True:
            while self.waiting:
                job = self.waiting.popleft()
                self._wake_one()
                await self._run(job, task)
            idle = loop.create_future()
            self._idle.append(idle)
            await idle
            self._waking -= 1

    async def _run(self, job: Job, task: asyncio.Task[None]) -> None:
        if job.cancel_reason is not None:  # stopped before it started
            given_back = job.cancel_reason in GIVE_BACK
            self._settle(job, None if given_back else self._runner.stopped(job))
            return
        job.lane = task
        job.started_at = self._clock.now()
        limit = job.claim.batch.timeout
        if limit is not None:
            job.deadline = self._timer() + limit
        outcome: Outcome | None = None
        try:
            outcome = await self._runner.run(job)
        except asyncio.CancelledError:
            if job.cancel_reason not in GIVE_BACK:
                raise
            task.uncancel()
        finally:
            job.lane = None
        if job.cancel_reason is not None and task.cancelling():
            await _absorb_cancel(task)
        if job.pause_reason is not None:
            await self._pause(job)
        self._settle(job, outcome)


async def _absorb_cancel(task: asyncio.Task[None]) -> None:
    """Swallow a cancel that arrived after its job had already finished."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        task.uncancel()
