"""The worker's parts on their own: how much it prefetches, how sync task threads hand
their results back to the loop, and how lanes start a wave of jobs."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from batchyard import Yard
from batchyard.clock import SystemClock
from batchyard.models import NO_USAGE, Usage
from batchyard.runner import DaemonThreads, Job, Runner
from batchyard.states import ItemState
from batchyard.store.base import Claim, ClaimedBatch, Outcome
from batchyard.store.limits import Limits, Rate, Wait, WaitRow
from batchyard.tasks import TaskRegistry
from batchyard.waits import Waits
from batchyard.worker import collector
from batchyard.worker.config import WorkerConfig
from batchyard.worker.inflight import InFlight
from batchyard.worker.lanes import Lanes


def _noop(item: Any) -> None:
    return None


def _finish_one(inflight: InFlight, took: float) -> None:
    """Hold one job and finish it after ``took`` seconds."""
    spec = TaskRegistry().resolve(_noop)
    batch = ClaimedBatch(1, "b", spec.name, None, {})
    job = Job(Claim(len(inflight.jobs) + 1, batch, "k", "{}", 1, 3), spec, 0.0)
    inflight.add(job)
    outcome = Outcome(1, 1, "k", 1, ItemState.SUCCEEDED, started_at=0.0, finished_at=took)
    inflight.finish(job, outcome)


def test_prefetch_follows_how_soon_the_lanes_would_start_the_items() -> None:
    # NOTE: fresh InFlight per case: the mean duration is an exponential average.
    config = WorkerConfig(concurrency=4, claim_chunk=512)
    cases = {1e-5: 512, 0.001: 200, 0.1: 4, 0.3: 0}  # mean duration -> prefetch
    for took, expected in cases.items():
        inflight = InFlight(config)
        assert inflight.prefetch() == 0  # nothing known yet: no prefetch
        _finish_one(inflight, took)
        assert inflight.prefetch() == expected, took
        assert inflight.free() == 4 + expected


def test_a_fixed_prefetch_is_kept() -> None:
    inflight = InFlight(WorkerConfig(concurrency=4, prefetch=7))
    _finish_one(inflight, 1e-5)
    assert inflight.prefetch() == 7


def test_an_attempt_without_usage_shares_the_zero() -> None:
    assert NO_USAGE.is_zero and Usage().is_zero and not Usage(calls=1).is_zero


def test_sync_results_that_gather_while_the_loop_is_busy_wake_it_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakeups: list[object] = []
        real = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any) -> Any:
            wakeups.append(callback)
            return real(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign, assignment]  # counting the wake-ups
        threads = DaemonThreads(1)
        last = threading.Event()

        def work(i: int) -> int:
            if i == 7:
                last.set()
            if i == 3:
                raise ValueError("three")
            return i * 10

        futures = [threads.submit(loop, work, i) for i in range(8)]
        # The loop thread is held here (no await) while the thread runs every call, so
        # the results gather; only the last one may race the first settle.
        assert last.wait(5)
        results = await asyncio.gather(*futures, return_exceptions=True)
        threads.shutdown()
        assert [r if isinstance(r, int) else str(r) for r in results] == [
            0,
            10,
            20,
            "three",
            40,
            50,
            60,
            70,
        ]
        assert 1 <= len(wakeups) <= 2  # not one per result

    asyncio.run(main())


class _Limiter:
    """What Waits reads of a SharedLimiter: its key, rate and limits."""

    def __init__(self, key: str, rate: float | None) -> None:
        self.key = key
        self.rate = rate
        self.limits = Limits(requests=None if rate is None else Rate(rate * 60, 60.0))


def test_waits_group_items_per_batch_and_key_and_log_each_wait_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    waits = Waits(lambda: now[0])
    limiter: Any = _Limiter("task:t", 0.5)
    caplog.set_level(logging.INFO, logger="batchyard.worker")
    for item_id in range(1, 5):
        waits.observer(7, item_id)(limiter, Wait(2.0, "requests"))
    paused: Any = _Limiter("llm:x", None)
    waits.observer(8, 9)(paused, Wait(30.0, "paused: 429"))
    assert waits.changed and len(waits) == 5 and waits.is_waiting(3)

    rows = {row.key: row for row in waits.rows(1000.0)}
    assert not waits.changed
    # The first try in 2 s, then one call every 2 s for the three others.
    assert rows["task:t"] == WaitRow(7, "task:t", "requests", 4, 1000.0 + 2.0 + 3 / 0.5, 0.5)
    assert rows["llm:x"] == WaitRow(8, "llm:x", "paused: 429", 1, 1030.0, None)
    logged = [r.getMessage() for r in caplog.records if "wait for rate limit" in r.getMessage()]
    assert len(logged) == 2, logged  # once per key, not once per item

    waits.observer(7, 1)(limiter, None)  # admitted
    assert waits.changed and not waits.is_waiting(1)
    assert {row.key: row.items for row in waits.rows(1000.0)} == {"task:t": 3, "llm:x": 1}


def test_no_prefetch_while_items_wait_for_a_limit() -> None:
    waits = Waits(lambda: 0.0)
    inflight = InFlight(WorkerConfig(concurrency=4, claim_chunk=100), waits)
    inflight.mean_duration = 0.001
    assert inflight.prefetch() == 100
    waits.observer(1, 1)(_Limiter("k", 1.0), Wait(1.0, "requests"))  # type: ignore[arg-type]
    assert inflight.prefetch() == 0


class _Wave:
    """What the wave's task saw: the keys it started, and the event it waits on."""

    started: ClassVar[list[str]] = []
    release: ClassVar[asyncio.Event | None] = None


async def _waits(item: dict[str, Any]) -> None:
    _Wave.started.append(item["k"])
    assert _Wave.release is not None
    await _Wave.release.wait()


@pytest.mark.parametrize("together", [True, False])
def test_jobs_pushed_together_all_start_in_one_pass_of_the_loop(together: bool) -> None:
    """Items that wait on something start together (a wave of sleeps ends together and is
    recorded in one commit); short ones are taken one lane after another."""

    async def main() -> None:
        _Wave.started, _Wave.release = [], asyncio.Event()
        spec = TaskRegistry().resolve(_waits)
        batch = ClaimedBatch(1, "b", spec.name, None, {})
        clock = SystemClock()
        settled: list[Job] = []

        async def no_pause(job: Job) -> None:
            raise AssertionError("no job pauses here")

        def settle(job: Job, outcome: Outcome | None) -> None:
            settled.append(job)

        lanes = Lanes(4, Runner(clock, DaemonThreads(1)), clock, clock.now, settle, no_pause)
        tasks = lanes.start()
        await asyncio.sleep(0)  # the lanes wait for work
        claims = [Claim(i, batch, f"k{i}", f'{{"k": "k{i}"}}', 1, 3) for i in range(3)]
        lanes.push([Job(claim, spec, 0.0) for claim in claims], together=together)
        await asyncio.sleep(0)  # one pass of the loop
        first_pass = len(_Wave.started)
        _Wave.release.set()
        while len(settled) < 3:
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert first_pass == (3 if together else 1)
        assert sorted(_Wave.started) == ["k0", "k1", "k2"]

    asyncio.run(main())


def test_workers_raise_the_young_threshold_while_any_runs_then_give_it_back() -> None:
    # NOTE: from the thresholds as found (CPython's 700 unless a worker runs in this
    # process), so the checks hold either way.
    before = gc.get_threshold()
    try:
        with collector.larger_young_generation():
            assert gc.get_threshold()[0] >= collector.YOUNG_THRESHOLD
            with collector.larger_young_generation():  # a second worker, on another thread
                assert gc.get_threshold()[0] >= collector.YOUNG_THRESHOLD
            assert gc.get_threshold()[0] >= collector.YOUNG_THRESHOLD  # the first still runs
        assert gc.get_threshold() == before
        gc.set_threshold(50_000, before[1], before[2])  # higher already: never lowered
        with collector.larger_young_generation():
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.set_threshold(*before)


def test_a_worker_run_tunes_the_collector_and_restores_it(tmp_path: Path) -> None:
    seen: list[int] = []

    def look(item: Any) -> None:
        seen.append(gc.get_threshold()[0])

    before = gc.get_threshold()
    yard = Yard(tmp_path / "gc.db")
    try:
        yard.submit(yard.task(name="look")(look), [{"id": 1}])
        yard.run_until_idle()
    finally:
        yard.close()
    assert seen == [collector.YOUNG_THRESHOLD]
    assert gc.get_threshold() == before
