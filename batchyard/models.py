"""The values batchyard passes around: batches, items, usage, events. Pure data, no I/O."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from batchyard.states import BatchState, ItemState

T = TypeVar("T")
JSON = Any  # a value json.dumps accepts: dict, list, str, int, float, bool or None


class _Unset:
    def __repr__(self) -> str:
        return "<task default>"


#: An argument not given: the task's default applies, or nothing changes.
UNSET: Any = _Unset()


#: The longest batch id the server takes in a URL (``web/paths.py``): ``new_batch_id`` makes
#: 25 characters (26 from the year 2286), so no batch has a longer one; the room above that
#: is for ids made by hand (the store itself takes any text).
MAX_BATCH_ID = 64


def new_batch_id(now: float | None = None) -> str:
    """A batch id such as ``batch_1728556800_a1b2c3d4``: unix seconds, then 8 random hex."""
    seconds = int(time.time() if now is None else now)
    return f"batch_{seconds}_{os.urandom(4).hex()}"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and money an item (or a batch, summed) has used.

    ``tokens_in`` counts every prompt token, ``tokens_cached`` the part of them the provider
    served from its prompt cache (billed cheaper); ``tokens_reasoning`` the part of
    ``tokens_out`` a reasoning model spent thinking. ``calls`` counts calls billed by a
    provider; ``cache_hits`` the answers batchyard's response cache gave instead, and
    ``saved_cost`` what those would have cost. ``unpriced_calls`` counts the calls whose
    cost is not in ``cost`` because their model has no price: while it is not zero, ``cost``
    is unknown (no call was priced) or a lower bound (some were).
    """

    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    tokens_cached: int = 0
    tokens_reasoning: int = 0
    calls: int = 0
    cache_hits: int = 0
    saved_cost: float = 0.0
    unpriced_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.cost + other.cost,
            self.tokens_cached + other.tokens_cached,
            self.tokens_reasoning + other.tokens_reasoning,
            self.calls + other.calls,
            self.cache_hits + other.cache_hits,
            self.saved_cost + other.saved_cost,
            self.unpriced_calls + other.unpriced_calls,
        )

    def values(self) -> tuple[float, ...]:
        """The fields in USAGE_FIELDS order (the order of the store's columns)."""
        return (
            self.tokens_in,
            self.tokens_out,
            self.cost,
            self.tokens_cached,
            self.tokens_reasoning,
            self.calls,
            self.cache_hits,
            self.saved_cost,
            self.unpriced_calls,
        )

    @property
    def is_zero(self) -> bool:
        # Every attempt without usage holds NO_USAGE itself: the common case costs no tuple.
        return self is NO_USAGE or not any(self.values())

    @property
    def cost_is_known(self) -> bool:
        """Every call's cost is in ``cost`` (none lacked a price)."""
        return not self.unpriced_calls

    @property
    def cost_is_unknown(self) -> bool:
        """No call was priced, though some were made: ``cost`` says nothing."""
        return self.unpriced_calls > 0 and self.unpriced_calls >= self.calls

    def as_dict(self) -> dict[str, JSON]:
        return dict(zip(USAGE_FIELDS, self.values(), strict=True))


#: No usage at all: what an attempt starts with (Usage is immutable, so one is shared).
NO_USAGE = Usage()

#: Usage's fields, which are also the names of the store's usage columns.
USAGE_FIELDS = (
    "tokens_in",
    "tokens_out",
    "cost",
    "tokens_cached",
    "tokens_reasoning",
    "calls",
    "cache_hits",
    "saved_cost",
    "unpriced_calls",
)


def cost_note(usage: Usage, model: str | None = None) -> str | None:
    """Why ``usage.cost`` is not the whole cost: ``no price for MODEL`` when no call was
    priced, ``3 of 10 calls had no price for MODEL`` when some were not; None when every
    call was priced."""
    if usage.cost_is_known:
        return None
    why = f"no price for {model}" if model else "no price"
    if usage.cost_is_unknown:
        return why
    return f"{usage.unpriced_calls:,} of {usage.calls:,} calls had {why}"


def usage_cost_text(usage: Usage, model: str | None = None, digits: int = 4) -> str:
    """``cost_text`` of a usage (an item's, say)."""
    cost = None if usage.cost_is_unknown else usage.cost
    return cost_text(cost, cost_note(usage, model), digits)


def cost_text(cost: float | None, note: str | None, digits: int = 4) -> str:
    """A cost for people from a usage view's ``cost`` and ``cost_note``: ``$0.0123``;
    ``cost unknown (no price for MODEL)`` when no call was priced (``cost`` None); ``at
    least $0.0123 (3 of 10 calls had no price for MODEL)`` when some were not."""
    if cost is None:
        return f"cost unknown ({note or 'no price'})"
    if note is None:
        return f"${cost:,.{digits}f}"
    return f"at least ${cost:,.{digits}f} ({note})"


@dataclass(frozen=True, slots=True)
class Counts:
    """How many items of a batch are in each state; kept by the store with every change.

    ``waiting`` counts items a worker holds (their state is ``running``) that wait for a
    rate limiter to admit them: a status counts them there and not in ``running``, which
    then counts only items really executing (see ``Waiting``)."""

    pending: int = 0
    running: int = 0
    retry_wait: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.remaining + self.finished

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def remaining(self) -> int:
        return self.pending + self.running + self.retry_wait + self.waiting

    def as_dict(self) -> dict[str, int]:
        counts = {state.value: getattr(self, state.value) for state in ItemState}
        counts["waiting"] = self.waiting
        return counts


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a batch's held items wait on: a rate limiter ``key`` that does not admit them
    yet. ``items`` wait across every worker; ``reason`` is the limiter's (``requests``,
    ``tokens``, ``concurrency`` or ``paused: <why>``); ``until`` is when the last of them
    should be admitted (the key's pause, then ``items`` at its request ``rate`` per second,
    when known)."""

    key: str
    reason: str
    items: int
    until: float
    rate: float | None = None

    def seconds(self, now: float) -> float:
        """How long from ``now`` until the last waiting item should be admitted."""
        return max(0.0, self.until - now)

    def describe(self, now: float) -> str:
        """One line: ``48 items wait for rate limit task:x (requests), the last ~24.0 s``."""
        items = f"{self.items:,} item" + ("s wait" if self.items != 1 else " waits")
        return (
            f"{items} for rate limit {self.key} ({self.reason}), "
            f"the last ~{self.seconds(now):.1f} s"
        )

    def as_dict(self) -> dict[str, JSON]:
        return {
            "key": self.key,
            "reason": self.reason,
            "items": self.items,
            "until": self.until,
            "rate": self.rate,
        }


class Again(StrEnum):
    """Why an item ran again: what ended the run before it. An attempt given back before
    its task was called is no run, and needs no reason."""

    #: Its lease expired: the worker died or stopped answering.
    WORKER_LOST = "worker_lost"
    #: Its worker stopped (shutdown) while it ran, and gave it back.
    RELEASED = "released"
    #: Its run failed and the retry policy tried again.
    ERROR = "error"
    #: It was sent back by a retry of the batch (``retry``, ``Batch.retry_failed``).
    RETRY = "retry"

    @property
    def label(self) -> str:
        """How reports say it."""
        return _AGAIN_LABELS[self]


_AGAIN_LABELS = {
    Again.WORKER_LOST: "worker lost",
    Again.RELEASED: "released",
    Again.ERROR: "retried after an error",
    Again.RETRY: "sent back by retry",
}


@dataclass(frozen=True, slots=True)
class Reruns:
    """How many times a batch's items ran again, by why (``Again``). Kept on the batch
    row by the claims that start those runs, so reading it is O(1)."""

    worker_lost: int = 0
    released: int = 0
    error: int = 0
    retry: int = 0

    @property
    def total(self) -> int:
        return self.worker_lost + self.released + self.error + self.retry

    def as_dict(self) -> dict[str, int]:
        return {reason.value: getattr(self, reason.value) for reason in Again}

    def describe(self) -> str:
        """The re-runs and their reasons, most first: ``64 runs: worker lost 60, released
        4``."""
        counts = [(getattr(self, reason.value), reason.label) for reason in Again]
        ranked = sorted((pair for pair in counts if pair[0]), key=lambda pair: -pair[0])
        total = self.total
        reasons = ", ".join(f"{label} {n:,}" for n, label in ranked)
        return f"{total:,} run{'s' * (total != 1)}: {reasons}"


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A template version: ``lead-report@3``. ``version`` None means the latest one not
    archived (what ``TemplateRef.parse("lead-report")`` gives)."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> TemplateRef:
        """``NAME`` or ``NAME@N``; ValueError for anything else (an empty name, a version
        that is not a whole number of at least 1)."""
        name, sep, version = text.strip().partition("@")
        if not name or (sep and not (version.isdigit() and int(version) >= 1)):
            raise ValueError(f"{text!r} is not a template: write NAME or NAME@VERSION")
        return cls(name, int(version) if sep else None)


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """What a submission asks for; the store keeps it with the batch."""

    task: str
    name: str | None = None
    concurrency: int | None = None
    max_attempts: int = 3
    timeout: float | None = None
    priority: int = 0
    metadata: dict[str, JSON] = field(default_factory=dict)
    params: dict[str, JSON] = field(default_factory=dict)
    sealed: bool = True
    #: A cap on the batch's cost (in the price table's currency); None: no cap.
    budget: float | None = None
    #: Rate limits for the batch's calls, overriding its task's: ``rate_limit`` (requests,
    #: e.g. "25/min") and ``tokens_per_minute``, shared by every worker of the store.
    limits: dict[str, JSON] | None = None
    #: The template version the batch runs with (its ``params`` are that version's,
    #: merged with the submission's own), if any.
    template: TemplateRef | None = None
    #: The id of the batch this one re-runs, if it is a re-run.
    rerun_of: str | None = None
    #: URLs to call when the batch ends or pauses (``batchyard.deliveries``).
    webhooks: tuple[str, ...] = ()
    #: Who owns it: the owner of the server token that submitted it (None from the CLI or
    #: Python: only an admin sees it through the server).
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A batch as the store last saw it. Reading it is O(1) whatever the batch's size."""

    id: str
    name: str | None
    task: str
    state: BatchState
    counts: Counts
    usage: Usage
    sealed: bool
    concurrency: int | None
    max_attempts: int
    timeout: float | None
    priority: int
    metadata: dict[str, JSON]
    params: dict[str, JSON]
    round: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    #: The cap on the batch's cost, if any (``submit(budget=)``, ``--budget``).
    budget: float | None = None
    #: Why the batch was paused when batchyard paused it (a budget, a provider's quota).
    pause_reason: str | None = None
    #: The batch's own rate limits, if it set any.
    limits: dict[str, JSON] | None = None
    #: Runs that were re-runs of an item, by why.
    reruns: Reruns = field(default_factory=Reruns)
    #: The rate limiter its held items wait on, if any (``counts.waiting`` of them).
    waiting_on: Waiting | None = None
    #: The template version it runs with, if any (``lead-report@3``).
    template: TemplateRef | None = None
    #: The id of the batch it re-runs, if it is a re-run.
    rerun_of: str | None = None
    #: Its owner (``BatchOptions.owner``).
    owner: str | None = None

    @property
    def progress(self) -> float:
        """The share of items that are finished, from 0.0 to 1.0 (1.0 for no items)."""
        total = self.counts.total
        return self.counts.finished / total if total else 1.0

    @property
    def is_finished(self) -> bool:
        return self.state.is_terminal

    @property
    def projected_cost(self) -> float | None:
        """What the items still to do will cost at the average cost of those done so far
        (None before any item has run, and while some calls had no price)."""
        return self.cost_of(self.counts.remaining)

    def cost_of(self, items: int) -> float | None:
        """What ``items`` more runs would cost at the average cost of the items done so
        far (a retry's estimate; None as for ``projected_cost``)."""
        ran = self.counts.succeeded + self.counts.failed
        if ran == 0 or not self.usage.cost_is_known:
            return None
        return self.usage.cost / ran * items

    @property
    def cost_note(self) -> str | None:
        """Why ``usage.cost`` is not the whole cost (``no price for MODEL``, or how many
        calls had none), or None when every call was priced. The model is the batch's
        ``model`` parameter when it has one."""
        model = self.params.get("model")
        return cost_note(self.usage, model if isinstance(model, str) else None)

    def cost_text(self, digits: int = 4) -> str:
        """The cost for people (see ``cost_text``, the function)."""
        return cost_text(self.usage_dict()["cost"], self.cost_note, digits)

    def usage_dict(self) -> dict[str, JSON]:
        """``usage.as_dict()`` with ``cost`` null when no call was priced, and
        ``cost_note`` (see ``cost_note``; null when every call was priced)."""
        view = self.usage.as_dict()
        if self.usage.cost_is_unknown:
            view["cost"] = None
        view["cost_note"] = self.cost_note
        return view

    def as_dict(self) -> dict[str, JSON]:
        """A JSON-ready view (the shape ``--json`` prints)."""
        return {
            "id": self.id,
            "name": self.name,
            "task": self.task,
            "state": self.state.value,
            "counts": {**self.counts.as_dict(), "total": self.counts.total},
            "progress": round(self.progress, 6),
            "usage": self.usage_dict(),
            "sealed": self.sealed,
            "concurrency": self.concurrency,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "priority": self.priority,
            "metadata": self.metadata,
            "params": self.params,
            "round": self.round,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "updated_at": self.updated_at,
            "budget": self.budget,
            "pause_reason": self.pause_reason,
            "limits": self.limits,
            "waiting_on": None if self.waiting_on is None else self.waiting_on.as_dict(),
            "projected_cost": self.projected_cost,
            "template": None if self.template is None else str(self.template),
            "rerun_of": self.rerun_of,
            "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a batch and everything recorded about it."""

    batch_id: str
    key: str
    position: int
    state: ItemState
    payload: JSON
    result: JSON
    error: str | None
    error_type: str | None
    #: Leases the item was given: the current lease's fencing token (``ctx.attempt``).
    #: A lease given back before its task was called counts here, not in ``runs``.
    attempts: int
    usage: Usage
    metrics: dict[str, float]
    progress: float | None
    message: str | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    seq: int
    #: Attempts that ran: its task was called, or its worker was lost while it held the
    #: item. What reports, ``items`` and ``max_attempts`` count.
    runs: int = 0
    #: The worker that holds the item or ran its latest attempt (None when not known).
    worker: str | None = None

    def as_dict(self) -> dict[str, JSON]:
        return {
            "batch_id": self.batch_id,
            "key": self.key,
            "position": self.position,
            "state": self.state.value,
            "payload": self.payload,
            "result": self.result,
            "error": self.error,
            "error_type": self.error_type,
            "attempts": self.attempts,
            "usage": self.usage.as_dict(),
            "metrics": self.metrics,
            "progress": self.progress,
            "message": self.message,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "seq": self.seq,
            "runs": self.runs,
            "worker": self.worker,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the change feed. ``seq`` is the cursor: it only ever grows."""

    seq: int
    batch_id: str | None
    kind: str
    data: dict[str, JSON]
    at: float


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line an item's task logged, a progress message, or an attempt's error."""

    attempt: int
    at: float
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next`` back as ``after`` for the following page."""

    rows: list[T]
    next: str | None


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over every batch of a store, from the kept counters (no item is read): what
    ``/metrics`` shows."""

    #: Batches per state (states with none left out).
    batches: dict[str, int]
    #: Items per state, summed over batches.
    items: dict[str, int]
    #: Runs of an item after its first, by why (``Again``: a retry after an error, a lost
    #: worker, a release at shutdown, a retry of the batch).
    reruns: dict[str, int]
    usage: Usage
    #: Items that wait for a rate limiter now.
    waiting: int


@dataclass(frozen=True, slots=True)
class Finishes:
    """What a batch's item rows say of its pace, read in one bounded pass whatever its size
    (``Store.finishes``): when a sample of its items finished, and what its most recently
    changed items did (the rules that read it are in ``batchyard.progress``)."""

    #: Finish times of the finished items among evenly spaced ones, oldest first.
    sampled: tuple[float, ...]
    #: How many of the batch's items each sampled item stands for (1.0: every item read).
    scale: float
    #: Finish times of the most recently changed items that ended, newest first.
    recent: tuple[float, ...] = ()
    #: Run times (s) of those items, newest first.
    durations: tuple[float, ...] = ()
    #: The latest time an item of those started or ended an attempt (None: none has).
    last_activity: float | None = None
