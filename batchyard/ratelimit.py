"""Rate limits shared by every worker of a store, written once over the store's atomic
limit primitives (``Store.limit_*``), so every backend has them.

A limiter key (for an LLM: provider + model + API key) has, each optional:

- a **request** bucket and a **token** bucket: token buckets that hold up to their capacity
  (the limit's amount, or its ``burst``), refill continuously at amount/period, and start
  full. Over any span of ``t`` seconds a key admits at most ``capacity + rate * t`` across
  all processes and machines sharing the store.
- a **concurrency** limit: calls in flight at once, each holding a leased slot; a worker
  that dies holding one gives it back when its lease (``lease`` seconds) ends.
- a **pause**: after a 429 the whole key admits nothing until the pause ends, for everyone.

Tokens are reserved from an estimate when a call is admitted and corrected with the real
usage afterwards (``grant.settle``). A call whose estimate exceeds the token bucket's
capacity waits for a full bucket and leaves it in debt, which later calls wait off.

::

    limiter = SharedLimiter(store, "openai:gpt-4o-mini", rpm="500/min", tpm="30000/min")
    async with limiter.slot(estimated_tokens=900) as slot:
        answer = await call_the_model()
        slot.settle(answer.usage.total_tokens)
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from batchyard.errors import ConfigError
from batchyard.store.base import Store
from batchyard.store.limits import Grant, Limits, Rate, Wait

__all__ = ["RateLimit", "SharedLimiter", "Slot", "WaitObserver", "parse_rate", "window_safe"]

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
R = TypeVar("R")
#: Told about a call that waits for admission: the limiter and what the store said each
#: time it said wait, then None once, when the call stops waiting (admitted or stopped).
WaitObserver = Callable[["SharedLimiter", Wait | None], None]
# An amount may have an exponent: str(RateLimit) writes 7.7181e+09/s for a big one.
_FORM = re.compile(
    r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(?:/|per\s+)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$"
)
#: The longest single sleep of a waiting call: it asks the store again at least this often.
MAX_SLEEP = 5.0
#: How often a call waiting for a concurrency slot held by another process asks again.
SLOT_POLL = 0.25
#: Releases of grants their callers stopped waiting for, still under way.
_RELEASING: set[asyncio.Future[None]] = set()


@dataclass(frozen=True, slots=True)
class RateLimit(Rate):
    """A rate as users write it: ``"25/min"``, ``"600/m"``, ``"10/s"``, ``"5000/h"``,
    ``"100 per 10 seconds"``. Its token bucket holds ``burst`` (default: the amount)."""

    @classmethod
    def parse(cls, text: str | RateLimit | Rate, *, burst: float | None = None) -> RateLimit:
        if isinstance(text, Rate):
            return cls(text.amount, text.per, text.burst if burst is None else burst)
        if not isinstance(text, str):
            raise ConfigError(f"a rate limit is a string such as '25/min', not {text!r}")
        match = _FORM.match(text.lower())
        if match is None:
            raise ConfigError(
                f"cannot read the rate limit {text!r}: write it as AMOUNT/PERIOD, "
                f"e.g. '25/min', '10/s', '5000/h'"
            )
        amount, count, unit = float(match[1]), float(match[2] or 1), match[3]
        if unit not in _PERIODS:
            raise ConfigError(
                f"rate limit {text!r}: unknown period {unit!r} (use s, min, h or day)"
            )
        if amount <= 0 or count <= 0:
            raise ConfigError(f"rate limit {text!r}: the amount and period must be above 0")
        if burst is not None and burst < 1:
            raise ConfigError(f"rate limit {text!r}: burst must be at least 1, not {burst}")
        return cls(amount, count * _PERIODS[unit], burst)

    @property
    def per_minute(self) -> float:
        return self.amount * 60.0 / self.per

    def __str__(self) -> str:
        per = f"{self.per:g}s" if self.per not in _NAMES else _NAMES[self.per]
        return f"{self.amount:g}/{per}"


_NAMES = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}


def parse_rate(value: str | Rate | float | None) -> RateLimit | None:
    """A rate from a string, a Rate, or a bare number (or a string of one) per minute
    (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return RateLimit.parse(value)
        return parse_rate(number)
    if isinstance(value, Rate):
        return RateLimit.parse(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"a rate limit is a string such as '25/min', not {value!r}")
    if value <= 0:
        raise ConfigError(f"a rate limit per minute must be above 0, not {value}")
    return RateLimit(float(value), 60.0)


#: Seconds a call may take from admission here to arrival at the provider: the window-safe
#: rate leaves room for it (see ``window_safe``).
TRANSIT = 1.0


def window_safe(value: str | Rate | float | None) -> RateLimit | None:
    """A limit as a provider enforces it, "at most N in any window of the period" (a sliding
    window), turned into a token bucket that never breaks it.

    A bucket that holds ``b`` and refills at ``r`` admits at most ``b + r * t`` over any
    span ``t``. So it holds a sixtieth of the limit (at least 1: a second's worth of a
    per-minute limit) and refills at ``(N - b) / (period + transit)``: over a period, even
    one stretched by the time calls take to reach the provider, it admits at most N. For
    600/min that is 97% of the limit; for 25/min, 94%. A limit with its own ``burst`` is
    taken as it is.
    """
    rate = parse_rate(value)
    if rate is None or rate.burst is not None:
        return rate
    burst = max(1.0, float(math.floor(rate.amount / 60)))
    period = rate.per + min(TRANSIT, rate.per / 60)
    if burst >= rate.amount:  # "1 per period": hold one, refill one per stretched period
        return RateLimit(rate.amount, period, rate.amount)
    return RateLimit(rate.amount - burst, period, burst)


@dataclass(slots=True)
class Slot:
    """An admitted call: its grant, and ``settle`` to correct its token reservation with
    the real usage."""

    grant: Grant
    _limiter: SharedLimiter
    _actual: float | None = field(default=None)
    _done: bool = field(default=False)

    def settle(self, actual_tokens: float) -> None:
        """Say how many tokens the call really used. It costs nothing here: the store is
        corrected when the slot ends (``await slot.settle_now(...)`` corrects it at once)."""
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        self._actual = float(actual_tokens)
        self._done = False

    async def settle_now(self, actual_tokens: float) -> None:
        """Correct the reservation in the store now."""
        self.settle(actual_tokens)
        await self._flush()

    async def _flush(self) -> None:
        if self._actual is not None and not self._done:
            await self._limiter._call(self._limiter._store.limit_settle, self.grant, self._actual)
            self._done = True


class SharedLimiter:
    """Requests per minute, tokens per minute and concurrency for one limiter key, shared
    through the store by every worker using the same key.

    ``rpm`` and ``tpm`` take a RateLimit, a string (``"25/min"``) or a number per minute;
    ``burst`` and ``token_burst`` set the buckets' capacity (default: the amount). Store
    calls are blocking and run in a thread; a call over a limit sleeps what the store says,
    at most ``MAX_SLEEP`` at a time, with a little jitter so waiting processes spread out.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        rpm: str | Rate | float | None = None,
        tpm: str | Rate | float | None = None,
        concurrency: int | None = None,
        *,
        burst: float | None = None,
        token_burst: float | None = None,
        lease: float = 600.0,
        jitter: float = 0.05,
        clock: Callable[[], float] | None = None,
        on_wait: WaitObserver | None = None,
    ) -> None:
        if not key:
            raise ConfigError("a limiter key must not be empty")
        requests = parse_rate(rpm)
        tokens = parse_rate(tpm)
        if burst is not None:
            if requests is None:
                raise ConfigError("burst needs a request rate (rpm)")
            requests = RateLimit.parse(requests, burst=burst)
        if token_burst is not None:
            if tokens is None:
                raise ConfigError("token_burst needs a token rate (tpm)")
            tokens = RateLimit.parse(tokens, burst=token_burst)
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if lease <= 0:
            raise ConfigError(f"lease must be above 0, not {lease}")
        self._store = store
        self.key = key
        self.limits = Limits(requests, tokens, concurrency, lease)
        self._jitter = jitter
        # The store's clock by default: every worker sharing the limit reads the same.
        self._clock = clock or store.clock().now
        #: Told when a call of this limiter waits (see ``WaitObserver``), unless the call
        #: names its own observer.
        self.on_wait = on_wait

    @property
    def rate(self) -> float | None:
        """Calls a second the key admits once its request bucket is empty (None: no
        request limit)."""
        requests = self.limits.requests
        return None if requests is None else requests.per_second

    async def _call(self, fn: Callable[..., R], *args: object) -> R:
        """Run a blocking store call in a thread, with the time appended as ``now``."""
        return await asyncio.to_thread(lambda: fn(*args, self._clock()))

    async def acquire(
        self, estimated_tokens: float = 0.0, *, on_wait: WaitObserver | None = None
    ) -> Grant:
        """Wait until the key admits one call with ``estimated_tokens``; returns its grant
        (release it with ``release``, or use ``slot``). ``on_wait`` (else the limiter's)
        hears each wait, then once that the call stopped waiting."""
        if estimated_tokens < 0:
            raise ValueError("estimated_tokens must not be negative")
        tell = on_wait or self.on_wait
        waited = False
        try:
            while True:
                got = await self._ask(float(estimated_tokens))
                if isinstance(got, Grant):
                    return got
                if tell is not None:
                    tell(self, got)
                    waited = True
                await asyncio.sleep(self._sleep(got))
        finally:
            if waited and tell is not None:
                tell(self, None)

    async def _ask(self, tokens: float) -> Grant | Wait:
        """One try at the store. A caller stopped meanwhile (a worker giving back a waiting
        item) must not leave a grant the store gave it held: it is released."""
        call = asyncio.ensure_future(
            self._call(self._store.limit_acquire, self.key, self.limits, tokens)
        )
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(self._release_unused)
            raise

    def _release_unused(self, call: asyncio.Future[Grant | Wait]) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        got = call.result()
        if isinstance(got, Grant):
            release = asyncio.ensure_future(self.release(got))
            _RELEASING.add(release)  # held until done: the loop keeps only weak references
            release.add_done_callback(_RELEASING.discard)

    def _sleep(self, wait: Wait) -> float:
        seconds = wait.seconds
        if wait.reason == "concurrency":
            seconds = min(seconds, SLOT_POLL)
        return min(seconds, MAX_SLEEP) + random.uniform(0.0, self._jitter)

    async def release(self, grant: Grant) -> None:
        await self._call(self._store.limit_release, grant)

    @asynccontextmanager
    async def slot(
        self, estimated_tokens: float = 0.0, *, on_wait: WaitObserver | None = None
    ) -> AsyncIterator[Slot]:
        """Hold one admitted call for the ``async with`` block; its concurrency slot is
        released when the block ends, however it ends. ``on_wait`` as for ``acquire``."""
        slot = Slot(await self.acquire(estimated_tokens, on_wait=on_wait), self)
        try:
            yield slot
        finally:
            await asyncio.shield(self._end(slot))

    async def _end(self, slot: Slot) -> None:
        try:
            await slot._flush()
        finally:
            await self.release(slot.grant)

    async def pause(self, seconds: float, reason: str) -> float:
        """Stop every worker of the key for ``seconds`` from now (say, on a 429 with its
        ``retry-after``); returns when the pause ends. A pause never shortens another."""
        if seconds < 0:
            raise ValueError("a pause must not be negative")
        return await asyncio.to_thread(
            lambda: self._store.limit_pause(
                self.key, self._clock() + seconds, reason, self._clock()
            )
        )
