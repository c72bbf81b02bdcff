"""Running one attempt of one item and turning whatever happened into an Outcome.

Async tasks run on the worker's event loop; sync tasks run in daemon threads (so a hung
sync task can never keep the process from exiting). A sync task cannot be interrupted:
when its batch is cancelled or its time is up it sees ``ctx.cancelled`` and the worker
stops waiting for it.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from batchyard import codec
from batchyard.clock import Clock
from batchyard.clusters import Signature, of_exception
from batchyard.context import TaskContext
from batchyard.errors import Cancelled, Fail, PauseBatch, Retry
from batchyard.models import NO_USAGE
from batchyard.services import Hub, Services
from batchyard.states import ItemState
from batchyard.store.base import Claim, Outcome
from batchyard.tasks import TaskSpec

if TYPE_CHECKING:
    from batchyard.ratelimit import SharedLimiter

MAX_ERROR = 8000
TIMEOUT = "timeout"
SHUTDOWN = "shutdown"
LEASE_LOST = "lease lost"
_ABANDON = frozenset({TIMEOUT, SHUTDOWN})
#: Stops after which an attempt records nothing and its item is given back (the release is
#: fenced: an item another worker took meanwhile stays theirs). A lost lease is no reason
#: to cancel an item: a heartbeat late on a busy machine must not end it cancelled.
GIVE_BACK = frozenset({SHUTDOWN, LEASE_LOST})


class Job:
    """An attempt in flight: its claim, its task, its context and why it may be stopped."""

    __slots__ = (
        "_ctx",
        "_hub",
        "cancel_reason",
        "claim",
        "deadline",
        "lane",
        "pause_reason",
        "ran",
        "renewed_at",
        "spec",
        "started_at",
    )

    def __init__(
        self, claim: Claim, spec: TaskSpec, claimed_at: float, hub: Hub | None = None
    ) -> None:
        self.claim = claim
        #: When (on ``Shared.timer``) this attempt times out; None for never. Set
        #: when it starts, like ``started_at``: a prefetched item waits without a clock.
        self.deadline: float | None = None
        self.spec = spec
        self.started_at = claimed_at
        self.renewed_at = claimed_at
        self._hub = hub
        self._ctx: TaskContext | None = None
        self.cancel_reason: str | None = None
        #: Set when the task raised PauseBatch: the worker pauses the batch and gives the
        #: item back.
        self.pause_reason: str | None = None
        #: Set once the task is called: given back after that, the attempt was a run.
        self.ran = False
        self.lane: asyncio.Task[None] | None = None

    @property
    def ctx(self) -> TaskContext:
        """The attempt's context, made the first time anyone asks for it: a task that takes
        none, and never fails, never needs one (made per item, it cost the event loop more
        than such a task)."""
        ctx = self._ctx
        if ctx is None:
            claim = self.claim
            services = None
            if self._hub is not None:
                services = partial(
                    Services, self._hub, claim.batch.pk, claim.item_id, claim.attempt
                )
            ctx = self._ctx = TaskContext(
                claim.batch.id,
                claim.key,
                claim.attempt,
                claim.max_attempt,
                claim.batch.params,
                services,
            )
            if self.cancel_reason is not None:
                ctx.cancel()
        return ctx

    def stop(self, reason: str) -> None:
        """Ask this attempt to stop: an async one is cancelled, a sync one told to through
        ``ctx.cancelled``. On a timeout or a shutdown the worker also stops waiting for a
        sync one (its thread runs on until the function returns)."""
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        if self._ctx is not None:  # one made later starts cancelled
            self._ctx.cancel()
        if self.lane is not None and (self.spec.is_async or reason in _ABANDON):
            self.lane.cancel()


class DaemonThreads:
    """A fixed set of daemon threads that run sync tasks and report to an event loop.

    Results are handed back in batches: a finished call joins a list, and only the first
    one into an empty list schedules the loop callback that settles them all. Waking the
    loop (a write to its self-pipe, then a wait for the GIL) costs more than a short task,
    so one wake-up serves every call that finished meanwhile."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: Finished calls not yet settled, per loop (a worker may run on more than one).
        self._finished: dict[asyncio.AbstractEventLoop, list[_Finished]] = {}

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        if len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._serve, args=(self._jobs,), name="batchyard-task", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _serve(self, jobs: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
        while (job := jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:
                result, error = None, exc
            self._report(loop, (future, result, error))

    def _report(self, loop: asyncio.AbstractEventLoop, finished: _Finished) -> None:
        with self._lock:
            waiting = self._finished.setdefault(loop, [])
            waiting.append(finished)
            if len(waiting) > 1:
                return  # a settle is already scheduled and will take this one too
        try:
            loop.call_soon_threadsafe(self._settle_all, loop)
        except RuntimeError:  # the loop closed while the task ran
            with self._lock:
                self._finished.pop(loop, None)

    def _settle_all(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            finished = self._finished.pop(loop, [])
        for future, result, error in finished:
            _settle(future, result, error)

    def shutdown(self) -> None:
        """Stop the threads once their calls return. A later ``submit`` starts new ones on
        a queue of their own (a thread stuck in a call never takes their jobs)."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads = []
        self._jobs = queue.SimpleQueue()


_Finished = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


def _result_limit(job: Job) -> int:
    """The largest result this attempt may record: its batch's limit, else its task's."""
    limits = job.claim.batch.limits
    if limits and "max_result_bytes" in limits:
        return int(limits["max_result_bytes"])
    return job.spec.max_result_bytes


def _cheap_bound(job: Job) -> int:
    """A length in characters below which a result is surely within its limit in bytes
    (UTF-8 takes at most 4 bytes a character): most results are never measured."""
    return _result_limit(job) // 4


def _result_too_big(job: Job, encoded: str) -> Fail | None:
    """A Fail for a result over its limit (the item fails; the result is not kept)."""
    limit = _result_limit(job)
    size = len(encoded) if len(encoded) > limit else len(encoded.encode())
    if size <= limit:
        return None
    return Fail(
        f"the result is {size:,} bytes as JSON; the limit is {limit:,} (max_result_bytes: "
        "set it on the task or the batch, or keep big outputs elsewhere and return a "
        "reference)"
    )


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Runner:
    """Runs attempts and builds their outcomes."""

    def __init__(
        self, clock: Clock, threads: DaemonThreads, hub: Hub | None = None, worker_id: str = ""
    ) -> None:
        self._clock = clock
        self._threads = threads
        self._hub = hub
        self._worker_id = worker_id
        self._limiters: dict[str, SharedLimiter] = {}

    async def run(self, job: Job) -> Outcome | None:
        """Run one attempt. None means it must be released, not recorded: it was stopped
        for the worker's own shutdown, or it asked for its batch to be paused
        (``job.pause_reason``). Raises nothing but CancelledError."""
        try:
            payload = codec.loads(job.claim.payload)
            result = await self._call(job, payload)
        except asyncio.CancelledError:
            if job.cancel_reason is None or job.cancel_reason in GIVE_BACK:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if job.cancel_reason == TIMEOUT:
                return self._failure(job, _timed_out(job))
            return self.stopped(job)
        except Cancelled as exc:
            return self._outcome(job, ItemState.CANCELLED, error=_describe(exc))
        except PauseBatch as exc:
            job.pause_reason = exc.reason
            return None
        except Exception as exc:
            return self._failure(job, exc)
        return self._succeeded(job, result)

    def _succeeded(self, job: Job, result: Any) -> Outcome:
        """The outcome of an attempt that returned ``result``: succeeded, with the result
        encoded; failed when it is not JSON or bigger than its limit."""
        try:
            encoded = None if result is None else codec.dumps(result)
        except (TypeError, ValueError) as exc:
            return self._failure(
                job, Fail(f"the task returned a result that is not JSON: {exc}"), trace=False
            )
        if encoded is not None and len(encoded) > _cheap_bound(job):
            too_big = _result_too_big(job, encoded)
            if too_big is not None:
                return self._failure(job, too_big, trace=False)
        return self._outcome(job, ItemState.SUCCEEDED, encoded)

    def _call(self, job: Job, payload: Any) -> Awaitable[Any]:
        # Without a limiter the task's own awaitable is returned as it is: no coroutine in
        # between, which costs per item.
        limiter = self._limiter(job)
        if limiter is None:
            return self._invoke(job, payload)
        return self._limited(job, payload, limiter)

    async def _limited(self, job: Job, payload: Any, limiter: SharedLimiter) -> Any:
        estimate = 0.0
        if limiter.limits.tokens is not None and job.spec.estimate_tokens is not None:
            estimate = float(job.spec.estimate_tokens(payload))
        waits = None if self._hub is None else self._hub.waits
        on_wait = None if waits is None else waits.observer(job.claim.batch.pk, job.claim.item_id)
        async with limiter.slot(estimate, on_wait=on_wait) as slot:
            try:
                return await self._invoke(job, payload)
            finally:
                usage = job.ctx.usage_total
                if limiter.limits.tokens is not None and not usage.is_zero:
                    slot.settle(usage.tokens_in + usage.tokens_out)

    def _invoke(self, job: Job, payload: Any) -> Awaitable[Any]:
        # No timer per call: the worker's watchdog stops attempts past their deadline.
        spec = job.spec
        job.ran = True
        args = (payload, job.ctx) if spec.takes_context else (payload,)
        if spec.is_async:
            return spec.fn(*args)  # type: ignore[no-any-return]  # an async task: a coroutine
        return self._threads.submit(asyncio.get_running_loop(), spec.fn, *args)

    def _limiter(self, job: Job) -> SharedLimiter | None:
        """The shared limiter an attempt waits on before its task is called: the batch's
        own limits (key ``batch:ID``) or else its task's (key ``task:NAME``). None for a
        task that takes no limits or applies them itself (the llm task)."""
        spec, batch = job.spec, job.claim.batch
        if self._hub is None or spec.manages_limits:
            return None
        if batch.limits and ("rate_limit" in batch.limits or "tokens_per_minute" in batch.limits):
            key = f"batch:{batch.id}"
            rpm, tpm = batch.limits.get("rate_limit"), batch.limits.get("tokens_per_minute")
        elif spec.rate_limit is not None or spec.tokens_per_minute is not None:
            key, rpm, tpm = f"task:{spec.name}", spec.rate_limit, spec.tokens_per_minute
        else:
            return None
        limiter = self._limiters.get(key)
        if limiter is None:
            from batchyard.ratelimit import SharedLimiter, window_safe

            limiter = SharedLimiter(
                self._hub.store, key, rpm=window_safe(rpm), tpm=window_safe(tpm)
            )
            self._limiters[key] = limiter
        return limiter

    def stopped(self, job: Job) -> Outcome:
        return self._outcome(
            job,
            ItemState.CANCELLED,
            error=f"Cancelled: {job.cancel_reason}",
            error_type="Cancelled",
        )

    def _failure(self, job: Job, exc: BaseException, *, trace: bool = True) -> Outcome:
        claim = job.claim
        delay = job.spec.retry.decide(exc, claim.attempt, claim.max_attempt, tries=claim.tries)
        text = _describe(exc)  # one line for the item; the whole traceback goes to its log
        if trace and not isinstance(exc, (Retry, Fail)):
            job.ctx.log_raw("traceback", _user_traceback(exc)[-MAX_ERROR:])
        state, run_after = ItemState.FAILED, None
        if delay is not None:
            state, run_after = ItemState.RETRY_WAIT, self._clock.now() + delay
        return self._outcome(
            job,
            state,
            error=text,
            error_type=type(exc).__name__,
            run_after=run_after,
            signature=of_exception(exc, _task_file(job.spec)),
        )

    def _outcome(
        self,
        job: Job,
        state: ItemState,
        result: str | None = None,
        *,
        error: str | None = None,
        error_type: str | None = None,
        run_after: float | None = None,
        signature: Signature | None = None,
    ) -> Outcome:
        ctx, claim = job._ctx, job.claim
        if ctx is None:  # nothing was reported: no context was made
            usage, metrics, progress, message, logs = NO_USAGE, None, None, None, []
        else:
            usage, progress, message, logs = (
                ctx.usage_total,
                ctx.progress_value,
                ctx.message,
                ctx.take_logs(),
            )
            metrics = codec.dumps(ctx.metrics) if ctx.metrics else None
        # Positional: made once per item on the event loop, where keywords cost.
        return Outcome(
            claim.item_id,
            claim.batch.pk,
            claim.key,
            claim.attempt,
            state,
            job.started_at,
            self._clock.now(),
            result,
            error,
            error_type,
            run_after,
            usage,
            metrics,
            progress,
            message,
            logs,
            self._worker_id,
            signature,
        )


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the task's own frames on (this module's frames say nothing)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _task_file(spec: TaskSpec) -> str | None:
    """The file the task function is defined in (its frames are the task's own)."""
    code = getattr(inspect.unwrap(spec.fn), "__code__", None)
    return None if code is None else str(code.co_filename)


def _timed_out(job: Job) -> TimeoutError:
    limit = job.claim.batch.timeout or 0.0
    if job.spec.is_async:
        return TimeoutError(f"timed out after {limit:g}s")
    return TimeoutError(
        f"timed out after {limit:g}s (a sync task runs on in its thread until it returns; "
        "check ctx.cancelled to stop early)"
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
