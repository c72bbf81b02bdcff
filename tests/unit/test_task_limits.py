"""Rate limits a task or a batch declares are applied by the worker, shared through the
store; PauseBatch pauses a batch with its reason and gives the item back unspent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from batchyard import ConfigError, Yard
from batchyard.errors import PauseBatch
from batchyard.models import BatchStatus, Counts, Waiting
from batchyard.progress import pace
from batchyard.ratelimit import window_safe
from batchyard.states import BatchState
from batchyard.worker import WorkerStats


def most_in_any_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    most, start = 0, 0
    for end, at in enumerate(stamps):
        while at - stamps[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_a_task_rate_limit_holds_over_any_window(yard: Yard) -> None:
    calls: list[float] = []

    @yard.task(rate_limit="10/s")
    async def limited(item: dict[str, Any]) -> None:
        calls.append(time.monotonic())

    yard.submit(limited, [{"n": n} for n in range(25)])
    yard.run_until_idle(concurrency=20)
    assert len(calls) == 25
    assert most_in_any_window(calls, 1.0) <= 10


def test_a_batch_limit_overrides_an_unlimited_task(yard: Yard) -> None:
    calls: list[float] = []

    @yard.task
    async def free(item: dict[str, Any]) -> None:
        calls.append(time.monotonic())

    batch = yard.submit(free, [{"n": n} for n in range(12)], rate_limit="5/s")
    assert batch.status().limits == {"rate_limit": "5/s"}
    yard.run_until_idle(concurrency=12)
    assert most_in_any_window(calls, 1.0) <= 5
    # Without the batch limit the same task is not held back.
    calls.clear()
    yard.submit(free, [{"n": n} for n in range(12)])
    yard.run_until_idle(concurrency=12)
    assert most_in_any_window(calls, 1.0) == 12


def test_tokens_are_reserved_from_the_estimate_and_settled_with_usage(yard: Yard) -> None:
    seen: list[float] = []

    @yard.task(tokens_per_minute="6000/min", estimate_tokens=lambda item: item["tokens"])
    def spend(item: dict[str, Any], ctx: Any) -> None:
        seen.append(time.monotonic())
        ctx.usage(tokens_in=item["tokens"] // 10)

    yard.submit(spend, [{"tokens": 50} for _ in range(3)])
    yard.run_until_idle(concurrency=3)
    state = yard.store.limit_state(f"task:{spend.__module__}:{spend.__qualname__}", time.time())
    assert state is not None
    # Each call reserved 50 and was corrected to the 5 it reported: the bucket, which holds
    # 100, lost 15. Uncorrected, the three reservations (150) would have left it in debt.
    limit = window_safe("6000/min")
    assert limit is not None and limit.burst == 100
    assert len(seen) == 3
    assert state.tokens is not None and state.tokens >= limit.burst - 20


def test_bad_limits_are_refused_when_declared_or_submitted(yard: Yard) -> None:
    with pytest.raises(ConfigError, match="rate_limit"):

        @yard.task(rate_limit="lots")
        def nope(item: Any) -> None: ...

    with pytest.raises(ConfigError, match="tokens_per_minute"):
        yard.submit("json:dumps", [{}], tokens_per_minute="many/min")
    assert yard.batches().rows == []


def test_pause_batch_pauses_with_the_reason_and_spends_no_attempt(yard: Yard) -> None:
    pauses = 3

    @yard.task(max_attempts=1)
    def needs_money(item: dict[str, Any]) -> str:
        nonlocal pauses
        if pauses:
            pauses -= 1
            raise PauseBatch("the provider says the quota is spent")
        return "paid"

    batch = yard.submit(needs_money, [{"n": 1}])
    for left in (2, 1, 0):
        yard.run_until_idle(concurrency=1)
        status = batch.status()
        assert status.state is BatchState.PAUSED
        assert status.pause_reason == "the provider says the quota is spent"
        assert status.counts.pending == 1 and pauses == left
        assert batch.item("1").error is None
        resumed = batch.resume()
        assert resumed.state.is_active and resumed.pause_reason is None
    # Three pauses spent none of its single attempt.
    yard.run_until_idle(concurrency=1)
    assert batch.status().state is BatchState.COMPLETED
    assert batch.item("1").result == "paid"


def test_resume_with_a_budget_sets_it_first(yard: Yard) -> None:
    batch = yard.submit("json:dumps", [{}], budget=1.0)
    assert batch.status().budget == 1.0
    batch.pause()
    assert batch.resume(budget=2.5).budget == 2.5
    with pytest.raises(ConfigError, match="budget"):
        batch.set_budget(-1)


def test_items_a_paused_batch_gives_back_did_not_run(yard: Yard) -> None:
    paused = False

    @yard.task(max_attempts=1, concurrency=4)
    def needs_money(item: dict[str, Any]) -> str:
        nonlocal paused
        if not paused:
            paused = True
            raise PauseBatch("budget reached")
        return "paid"

    batch = yard.submit(needs_money, [{"n": n} for n in range(3)])
    yard.run_until_idle(concurrency=4)
    assert batch.status().state is BatchState.PAUSED
    batch.resume()
    yard.run_until_idle(concurrency=4)
    assert batch.status().state is BatchState.COMPLETED
    # The item whose task paused the batch, and any claimed beside it, ran once each.
    assert [item.runs for item in batch.items()] == [1, 1, 1]
    assert batch.status().reruns.total == 0


def test_items_waiting_for_a_limit_are_waiting_not_running_and_go_back_at_once(
    yard: Yard,
) -> None:
    # About 9 calls a second (10/s, window-safe), 16 lanes: most held items wait.
    @yard.task(rate_limit="10/s")
    async def limited(item: dict[str, Any]) -> int:
        return int(item["n"])

    batch = yard.submit(limited, [{"n": n} for n in range(40)], max_attempts=1)
    key = f"task:{limited.__module__}:{limited.__qualname__}"
    seen: list[BatchStatus] = []

    async def scenario() -> tuple[WorkerStats, float]:
        worker = yard.worker(concurrency=16, grace=30.0)
        running = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 10
        while not (seen and seen[-1].counts.waiting >= 8):
            assert time.monotonic() < deadline, seen[-1:]
            seen.append(await asyncio.to_thread(batch.status))
            await asyncio.sleep(0.02)
        stopped = time.monotonic()
        worker.stop()
        stats = await asyncio.wait_for(running, 10)
        return stats, time.monotonic() - stopped

    stats, took = asyncio.run(scenario())
    waiting = seen[-1]
    assert waiting.waiting_on is not None and waiting.waiting_on.key == key
    assert waiting.waiting_on.reason == "requests"
    # Executing: about what the limiter admits at once, not the 16 held (nor more, fetched
    # ahead), in every look after the first wait was published.
    shown = [status.counts.running for status in seen if status.waiting_on is not None]
    assert max(shown) <= 3, shown
    assert waiting.counts.total == 40
    # The waiting items went back at once, not after the 30 s grace, and unspent.
    assert took < 5
    assert stats.released >= 8
    after = batch.status()
    assert (after.counts.running, after.counts.waiting, after.waiting_on) == (0, 0, None)
    assert after.counts.pending == 40 - after.counts.succeeded
    yard.run_until_idle(concurrency=16)
    assert batch.status().counts.succeeded == 40  # max_attempts=1: none was charged


def test_the_eta_counts_the_limit_a_batch_waits_on(yard: Yard) -> None:
    @yard.task
    async def free(item: dict[str, Any]) -> None:
        return None

    status = yard.submit(free, [{"n": n} for n in range(10)]).status()
    now = time.time()
    waiting = replace(
        status,
        started_at=now - 10,
        counts=Counts(pending=6, running=1, waiting=3),
        waiting_on=Waiting("task:x", "paused: 429", 3, now + 4.0 + 2 / 0.5, 0.5),
    )
    # Seen lately: 10 items a second, which would say 1 s; the limit says a 4 s pause, then
    # the 10 items left at 0.5 a second.
    assert pace(waiting, now, recent=10.0).eta == pytest.approx(4.0 + 10 / 0.5, abs=0.01)
    assert pace(replace(waiting, waiting_on=None), now, recent=10.0).eta == pytest.approx(1.0)
