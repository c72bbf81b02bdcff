"""Rate limits as users write them, and the limiter's options."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from batchyard.errors import ConfigError
from batchyard.ratelimit import RateLimit, SharedLimiter, parse_rate
from batchyard.store.limits import Grant, Rate
from batchyard.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("text", "amount", "per"),
    [
        ("25/min", 25, 60),
        ("600/m", 600, 60),
        ("10/s", 10, 1),
        ("5000/h", 5000, 3600),
        ("5000/hour", 5000, 3600),
        (" 2.5 / 10 seconds ", 2.5, 10),
        ("100 per minute", 100, 60),
        ("1000/day", 1000, 86400),
        ("30/5min", 30, 300),
    ],
)
def test_rates_parse(text: str, amount: float, per: float) -> None:
    rate = RateLimit.parse(text)
    assert (rate.amount, rate.per, rate.burst) == (amount, per, None)
    assert rate.capacity == amount
    assert rate.per_second == pytest.approx(amount / per)


def test_a_rate_prints_as_written_and_reads_back() -> None:
    assert str(RateLimit.parse("25/min")) == "25/min"
    assert str(RateLimit.parse("30/5min")) == "30/300s"
    assert RateLimit.parse(str(RateLimit.parse("30/5min"))) == RateLimit.parse("30/5min")
    assert RateLimit.parse("10/s").per_minute == 600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25", "write it as AMOUNT/PERIOD"),
        ("fast", "write it as AMOUNT/PERIOD"),
        ("-5/min", "write it as AMOUNT/PERIOD"),
        ("25/fortnight", "unknown period 'fortnight'"),
        ("0/min", "must be above 0"),
        ("5/0s", "must be above 0"),
    ],
)
def test_bad_rates_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RateLimit.parse(text)
    assert repr(text) in str(caught.value)


def test_parse_rate_takes_strings_rates_and_numbers_per_minute() -> None:
    assert parse_rate(None) is None
    assert parse_rate(120) == RateLimit(120.0, 60.0)
    assert parse_rate(Rate(5, 1.0, burst=2)) == RateLimit(5, 1.0, 2)
    with pytest.raises(ConfigError, match="above 0"):
        parse_rate(0)
    with pytest.raises(ConfigError, match="a string such as"):
        parse_rate(True)
    assert RateLimit.parse("60/min", burst=5).capacity == 5
    with pytest.raises(ConfigError, match="burst must be at least 1"):
        RateLimit.parse("60/min", burst=0)


def test_limiter_options_are_checked(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    try:
        with pytest.raises(ConfigError, match="key"):
            SharedLimiter(store, "")
        with pytest.raises(ConfigError, match="concurrency"):
            SharedLimiter(store, "k", concurrency=0)
        with pytest.raises(ConfigError, match="burst needs"):
            SharedLimiter(store, "k", burst=3)
        limiter = SharedLimiter(store, "k", rpm="60/min", tpm=6000, concurrency=2, burst=3)
        assert limiter.limits.requests == RateLimit(60, 60.0, 3)
        assert limiter.limits.tokens == RateLimit(6000, 60.0)
    finally:
        store.close()


def test_a_slot_settles_and_releases_when_it_ends(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    now = [1_700_000_000.0]
    limiter = SharedLimiter(
        store, "k", tpm="600/min", concurrency=1, jitter=0.0, clock=lambda: now[0]
    )

    async def scenario() -> Grant:
        async with limiter.slot(500) as slot:
            state = store.limit_state("k", now[0])
            assert state is not None and state.in_flight == 1 and state.tokens == 100
            slot.settle(20)
        return slot.grant

    try:
        grant = asyncio.run(scenario())
        assert grant.tokens == 500
        state = store.limit_state("k", now[0])
        assert state is not None and state.in_flight == 0 and state.tokens == pytest.approx(580)
    finally:
        store.close()


def test_a_waiting_call_sleeps_what_the_store_says(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    limiter = SharedLimiter(store, "k", rpm="10/s", burst=1, jitter=0.0)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with limiter.slot():
            pass
        began = loop.time()
        async with limiter.slot():
            pass
        return loop.time() - began

    try:
        waited = asyncio.run(scenario())
        assert 0.05 < waited < 0.5
    finally:
        store.close()


def test_a_waiting_call_is_told_once_it_waits_and_once_it_stops(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    heard: list[tuple[str, str | None]] = []
    limiter = SharedLimiter(
        store,
        "k",
        rpm="10/s",
        burst=1,
        jitter=0.0,
        on_wait=lambda lim, wait: heard.append((lim.key, None if wait is None else wait.reason)),
    )

    async def scenario() -> None:
        async with limiter.slot():
            pass
        assert heard == []  # admitted at once: nothing to tell
        async with limiter.slot():
            pass

    try:
        asyncio.run(scenario())
        assert heard[0] == ("k", "requests") and heard[-1] == ("k", None)
        assert heard.count(("k", None)) == 1
    finally:
        store.close()


def test_a_call_stopped_while_the_store_admits_it_gives_the_slot_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    limiter = SharedLimiter(store, "k", concurrency=1)
    asked, go = threading.Event(), threading.Event()
    acquire = store.limit_acquire

    def slow_acquire(*args: Any) -> Any:
        asked.set()
        go.wait(5)
        return acquire(*args)

    async def scenario() -> None:
        store.limit_acquire = slow_acquire  # type: ignore[method-assign,assignment]  # held mid-call
        call = asyncio.create_task(limiter.acquire())
        await asyncio.to_thread(asked.wait, 5)
        call.cancel()
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        store.limit_acquire = acquire  # type: ignore[method-assign]
        # The grant the store gave the stopped call is released: the one slot is free.
        grant = await asyncio.wait_for(limiter.acquire(), 5)
        await limiter.release(grant)

    try:
        asyncio.run(scenario())
    finally:
        store.close()
