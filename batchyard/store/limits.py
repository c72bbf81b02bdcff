"""Rate limits as values and rules, written once for every store: token buckets for requests
and tokens (refilled continuously, a reservation settled with the real usage later), leased
concurrency slots and a key-wide pause. A store keeps a ``LimitRow`` per key and applies
``limit_take`` / ``limit_correct`` to it inside one short transaction; ``ratelimit`` is the
async front that waits when told to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from batchyard.models import BatchStatus, Waiting


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``amount`` per ``per`` seconds, kept as a token bucket: it holds up to
    ``capacity`` (``burst``, or ``amount`` when no burst is given), refills continuously at
    ``amount / per`` a second, and starts full. Over any span of ``t`` seconds it admits at
    most ``capacity + amount * t / per``."""

    amount: float
    per: float
    burst: float | None = None

    @property
    def capacity(self) -> float:
        return self.amount if self.burst is None else self.burst

    @property
    def per_second(self) -> float:
        return self.amount / self.per


@dataclass(frozen=True, slots=True)
class Limits:
    """What one limiter key allows: requests and tokens (token buckets) and calls in flight
    at once. A slot of ``concurrency`` is leased for ``lease`` seconds: a worker that dies
    holding it gives it back when the lease ends. None means no limit of that kind."""

    requests: Rate | None = None
    tokens: Rate | None = None
    concurrency: int | None = None
    lease: float = 600.0


@dataclass(frozen=True, slots=True)
class Grant:
    """One admitted call: a request and ``tokens`` reserved, and a concurrency slot held
    until ``expires_at`` (or its release). ``at`` is the time the buckets were charged: the
    caller's ``now``, or the key's last update when a caller's clock read lags behind it
    (the buckets never run backwards). ``limits`` are those it was taken under, which
    ``limit_settle`` needs to bring the buckets up to date before correcting it."""

    key: str
    id: str
    tokens: float
    expires_at: float
    at: float
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class Wait:
    """A call not admitted: try again in ``seconds``. ``reason`` is ``requests``,
    ``tokens``, ``concurrency`` (then ``seconds`` is when the earliest lease ends; a release
    may free a slot sooner) or ``paused: <why>``."""

    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limiter key as stored: bucket levels at ``updated_at`` (None: full, never used),
    live leases, and its pause."""

    key: str
    requests: float | None
    tokens: float | None
    updated_at: float
    in_flight: int
    paused_until: float | None
    pause_reason: str | None


@dataclass(slots=True)
class LimitRow:
    """The mutable bucket levels of a key inside a store's transaction."""

    requests: float | None
    tokens: float | None
    updated_at: float
    paused_until: float | None
    pause_reason: str | None


def refill(level: float | None, rate: Rate | None, elapsed: float) -> float | None:
    """A bucket's level ``elapsed`` seconds later (None: full)."""
    if rate is None or level is None:
        return level
    return min(rate.capacity, level + rate.per_second * max(0.0, elapsed))


def _shortfall(level: float | None, rate: Rate | None, want: float) -> float:
    """Seconds until a bucket holds ``want`` (at most its capacity: a larger call waits
    for a full bucket and leaves it in debt)."""
    if rate is None:
        return 0.0
    have = rate.capacity if level is None else level
    need = min(want, rate.capacity)
    return 0.0 if have >= need else (need - have) / rate.per_second


def limit_take(
    row: LimitRow,
    limits: Limits,
    tokens: float,
    now: float,
    in_flight: int,
    next_expiry: float | None,
) -> Wait | None:
    """The one rule every store applies under its lock on the key: refill ``row`` to
    ``now``, then either charge it one request and ``tokens`` (returns None: admitted) or
    say how long to wait. A clock behind ``updated_at`` refills nothing."""
    if row.paused_until is not None and row.paused_until > now:
        return Wait(row.paused_until - now, f"paused: {row.pause_reason or 'no reason given'}")
    elapsed = now - row.updated_at
    row.requests = refill(row.requests, limits.requests, elapsed)
    row.tokens = refill(row.tokens, limits.tokens, elapsed)
    row.updated_at = max(row.updated_at, now)
    waits = [
        wait
        for wait in (
            Wait(_shortfall(row.requests, limits.requests, 1.0), "requests"),
            Wait(_shortfall(row.tokens, limits.tokens, tokens), "tokens"),
        )
        if wait.seconds > 0
    ]
    if limits.concurrency is not None and in_flight >= limits.concurrency:
        until = now + limits.lease if next_expiry is None else next_expiry
        waits.append(Wait(max(until - now, 0.0), "concurrency"))
    if waits:
        return max(waits, key=lambda w: w.seconds)
    if limits.requests is not None:
        row.requests = (limits.requests.capacity if row.requests is None else row.requests) - 1
    if limits.tokens is not None:
        row.tokens = (limits.tokens.capacity if row.tokens is None else row.tokens) - tokens
    return None


def limit_correct(row: LimitRow, limits: Limits, delta: float, now: float) -> None:
    """Charge ``delta`` more tokens (a refund when negative) to a key's token bucket, after
    refilling both buckets to ``now`` (they share one ``updated_at``)."""
    rate = limits.tokens
    if rate is None:
        return
    elapsed = now - row.updated_at
    row.requests = refill(row.requests, limits.requests, elapsed)
    row.tokens = refill(row.tokens, rate, elapsed)
    row.updated_at = max(row.updated_at, now)
    level = rate.capacity if row.tokens is None else row.tokens
    row.tokens = min(rate.capacity, level - delta)


@dataclass(frozen=True, slots=True)
class WaitRow:
    """What one worker says about the items of one batch it holds that wait for a limiter
    key (``Store.publish_waits``): how many, why, until when the last should be admitted,
    and the key's request rate per second (None when it has none)."""

    batch_pk: int
    key: str
    reason: str
    items: int
    until: float
    rate: float | None = None


def waiting_on(rows: Sequence[tuple[str, str, int, float, float | None]]) -> Waiting | None:
    """A batch's wait from the live rows every worker published for it, as ``(key, reason,
    items, until, rate)``: the key most of its items wait on, with the items of every key
    and the latest ``until`` (None when nothing waits)."""
    if not rows:
        return None
    items: dict[str, int] = {}
    for key, _, count, _, _ in rows:
        items[key] = items.get(key, 0) + int(count)
    main = max(items, key=lambda key: items[key])
    mine = [row for row in rows if row[0] == main]
    reason = max(mine, key=lambda row: row[3])[1]
    rates = [row[4] for row in mine if row[4] is not None]
    return Waiting(
        main,
        reason,
        sum(items.values()),
        max(float(row[3]) for row in rows),
        max(rates) if rates else None,
    )


def with_waiting(status: BatchStatus, waiting: Waiting | None) -> BatchStatus:
    """``status`` with the items that wait for a limiter counted as ``waiting``, not as
    ``running`` (items the store holds as running but are only waiting for admission)."""
    if waiting is None:
        return status
    items = min(waiting.items, status.counts.running)
    if items <= 0:
        return status
    counts = replace(status.counts, running=status.counts.running - items, waiting=items)
    return replace(status, counts=counts, waiting_on=replace(waiting, items=items))
