"""The worker and the Python API on a real SQLite file, in one process."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchyard import (
    BatchState,
    Cancelled,
    Fail,
    FakeClock,
    ItemState,
    Retry,
    TaskContext,
    Yard,
)
from batchyard.retry import RetryPolicy
from batchyard.store.base import Claim, ClaimedBatch
from batchyard.worker import Worker, WorkerConfig
from tests.conftest import FAST


def run(yard: Yard, **options: Any) -> None:
    yard.run_until_idle(**{**FAST, **options})


def test_results_usage_metrics_and_progress_are_recorded(yard: Yard) -> None:
    @yard.task(concurrency=8, max_attempts=4, timeout=60)
    async def enrich(item: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(0.5, "fetched")
        ctx.usage(tokens_in=812, tokens_out=190, cost=0.0031)
        ctx.metric("confidence", 0.93)
        ctx.log(f"hello {item['name']}")
        return {"company": item["name"].upper(), "score": len(item["name"])}

    batch = yard.submit(enrich, [{"id": f"k{i}", "name": f"n{i}"} for i in range(50)], name="Q3")
    assert batch.status().state is BatchState.QUEUED
    run(yard)
    status = batch.status()
    assert status.state is BatchState.COMPLETED
    assert status.counts.succeeded == 50 and status.counts.remaining == 0
    assert status.progress == 1.0
    assert status.usage.tokens_in == 50 * 812 and status.usage.tokens_out == 50 * 190
    assert status.usage.cost == pytest.approx(50 * 0.0031)
    assert status.name == "Q3" and status.started_at and status.finished_at
    results = list(batch.results())
    assert [r.key for r in results] == [f"k{i}" for i in range(50)]
    for r in results:
        assert r.result == {"company": r.payload["name"].upper(), "score": len(r.payload["name"])}
        assert r.metrics == {"confidence": 0.93}
        assert (r.progress, r.message, r.attempts) == (0.5, "fetched", 1)
    lines = batch.logs("k3")
    assert [(line.kind, line.message) for line in lines] == [
        ("progress", "fetched"),
        ("log", "hello n3"),
    ]


def test_sync_tasks_run_in_threads(yard: Yard) -> None:
    seen: set[str] = set()

    @yard.task
    def square(item: dict[str, Any]) -> int:
        seen.add(threading.current_thread().name)
        return int(item["x"]) ** 2

    batch = yard.submit(square, [{"x": i} for i in range(20)])
    run(yard)
    assert [r.result for r in batch.results()] == [i * i for i in range(20)]
    assert seen and all(name.startswith("batchyard-task") for name in seen)


def test_failures_are_retried_until_they_succeed(yard: Yard) -> None:
    @yard.task(max_attempts=3, retry_backoff=0.01)
    async def flaky(item: dict[str, Any], ctx: TaskContext) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return ctx.attempt

    batch = yard.submit(flaky, [{"id": "a"}])
    run(yard)
    item = batch.item("a")
    assert (item.state, item.result, item.attempts, item.error) == (ItemState.SUCCEEDED, 3, 3, None)
    errors = [line.message for line in batch.logs("a") if line.kind == "error"]
    assert len(errors) == 2 and "boom 1" in errors[0] and "boom 2" in errors[1]


def test_attempts_run_out_and_the_batch_ends_by_the_rules(yard: Yard) -> None:
    @yard.task(max_attempts=2, retry_backoff=0.01)
    async def half(item: dict[str, Any]) -> int:
        if item["n"] % 2:
            raise ValueError("odd")
        return 1

    mixed = yard.submit(half, [{"n": n} for n in range(6)])
    all_bad = yard.submit(half, [{"n": 1}, {"n": 3}])
    run(yard)
    assert mixed.status().state is BatchState.PARTIALLY_COMPLETED
    assert all_bad.status().state is BatchState.FAILED
    failed = list(mixed.items(ItemState.FAILED))
    assert [f.key for f in failed] == ["2", "4", "6"]
    assert all(f.attempts == 2 and f.error_type == "ValueError" for f in failed)
    assert all("ValueError: odd" in (f.error or "") for f in failed)


def test_fail_is_not_retried_and_retry_after_waits(yard: Yard) -> None:
    starts: dict[str, list[float]] = {"fail": [], "later": []}

    @yard.task(max_attempts=5)
    async def signals(item: dict[str, Any], ctx: TaskContext) -> str:
        starts[item["id"]].append(time.monotonic())
        if item["id"] == "fail":
            raise Fail("bad row")
        if ctx.attempt == 1:
            raise Retry(after=0.3)
        return "ok"

    batch = yard.submit(signals, [{"id": "fail"}, {"id": "later"}])
    run(yard)
    assert batch.item("fail").state is ItemState.FAILED
    assert batch.item("fail").attempts == 1
    assert batch.item("fail").error == "Fail: bad row"
    assert batch.item("later").state is ItemState.SUCCEEDED
    first, second = starts["later"]
    assert second - first >= 0.3


def test_timeouts_fail_async_and_sync_attempts(yard: Yard) -> None:
    release = threading.Event()

    @yard.task(timeout=0.1, max_attempts=2, retry_backoff=0.01)
    async def hangs(item: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    @yard.task(timeout=0.1, max_attempts=1)
    def blocks(item: dict[str, Any], ctx: TaskContext) -> str:
        while not ctx.cancelled:
            release.wait(0.01)
        return "noticed"

    a = yard.submit(hangs, [{"id": "x"}])
    s = yard.submit(blocks, [{"id": "y"}])
    run(yard)
    item = a.item("x")
    assert (item.state, item.attempts, item.error_type) == (ItemState.FAILED, 2, "TimeoutError")
    assert "timed out after 0.1s" in (item.error or "")
    assert s.item("y").state is ItemState.FAILED
    assert "ctx.cancelled" in (s.item("y").error or "")


def test_a_bad_result_fails_its_item_not_the_worker(yard: Yard) -> None:
    @yard.task
    async def weird(item: dict[str, Any]) -> Any:
        return object() if item["n"] == 2 else {"n": item["n"]}

    batch = yard.submit(weird, [{"n": n} for n in range(4)])
    run(yard)
    assert batch.status().counts.succeeded == 3
    bad = batch.item("3")
    assert bad.state is ItemState.FAILED and bad.attempts == 1
    assert "not JSON" in (bad.error or "")


def test_cancel_stops_running_and_pending_items(yard: Yard) -> None:
    started = asyncio.Event()
    interrupted: list[str] = []

    @yard.task(concurrency=2)
    async def slow(item: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.append(item["id"])
            raise

    batch = yard.submit(slow, [{"id": f"i{n}"} for n in range(10)])

    async def scenario() -> None:
        worker = yard.worker(concurrency=2, **FAST)
        running = asyncio.create_task(worker.run(until_idle=True))
        await started.wait()
        batch.cancel()
        await asyncio.wait_for(running, 10)

    asyncio.run(scenario())
    status = batch.status()
    assert status.state is BatchState.CANCELLED
    assert status.counts.cancelled == 10 and status.counts.remaining == 0
    assert sorted(interrupted) == ["i0", "i1"]
    assert yard.store.recount(batch.id) == status.counts


def test_cancel_tells_sync_items_through_the_context(yard: Yard) -> None:
    started = threading.Event()

    @yard.task
    def careful(item: dict[str, Any], ctx: TaskContext) -> str:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.005)
        raise Cancelled("saw it")

    batch = yard.submit(careful, [{"id": "only"}])

    async def scenario() -> None:
        running = asyncio.create_task(yard.worker(**FAST).run(until_idle=True))
        await asyncio.to_thread(started.wait)
        batch.cancel()
        await asyncio.wait_for(running, 10)

    asyncio.run(scenario())
    item = batch.item("only")
    assert item.state is ItemState.CANCELLED and item.error == "Cancelled: saw it"


def test_pause_stops_claims_and_resume_continues(yard: Yard) -> None:
    gate = asyncio.Event()
    done: list[int] = []

    @yard.task(concurrency=1)
    async def step(item: dict[str, Any]) -> None:
        if item["n"] == 0:
            await gate.wait()
        done.append(item["n"])

    batch = yard.submit(step, [{"n": n} for n in range(5)], concurrency=1)

    async def scenario() -> None:
        running = asyncio.create_task(yard.worker(**FAST).run(until_idle=True))
        while batch.status().counts.running == 0:
            await asyncio.sleep(0.01)
        batch.pause()
        gate.set()
        await asyncio.wait_for(running, 10)  # idle: the batch is paused

    asyncio.run(scenario())
    assert done == [0]
    assert batch.status().state is BatchState.PAUSED
    assert batch.status().counts.pending == 4
    batch.resume()
    run(yard)
    assert done == [0, 1, 2, 3, 4]
    assert batch.status().state is BatchState.COMPLETED


def test_retry_failed_sends_back_only_failures_and_callbacks_run_per_ending(yard: Yard) -> None:
    broken = {"on": True}
    endings: list[tuple[str, str]] = []

    def on_complete(status: Any) -> None:
        endings.append(("complete", status.state.value))

    async def on_success(status: Any) -> None:
        endings.append(("success", status.state.value))

    def on_failure(status: Any) -> None:
        endings.append(("failure", status.state.value))

    @yard.task(
        max_attempts=1, on_complete=on_complete, on_success=on_success, on_failure=on_failure
    )
    async def sometimes(item: dict[str, Any], ctx: TaskContext) -> int:
        if item["n"] == 1 and broken["on"]:
            raise RuntimeError("down")
        return ctx.attempt

    batch = yard.submit(sometimes, [{"n": n} for n in range(3)])
    run(yard)
    assert batch.status().state is BatchState.PARTIALLY_COMPLETED
    assert endings == [("complete", "partially_completed"), ("failure", "partially_completed")]
    broken["on"] = False
    assert batch.retry_failed() == 1
    assert batch.status().state is BatchState.RETRYING
    run(yard)
    status = batch.status()
    assert status.state is BatchState.COMPLETED and status.round == 1
    assert batch.item("2").attempts == 2 and batch.item("2").result == 2
    assert batch.item("1").attempts == 1
    assert endings[2:] == [("complete", "completed"), ("success", "completed")]
    run(yard)  # nothing new ended: callbacks do not run again
    assert len(endings) == 4


def test_open_batch_takes_items_until_sealed(yard: Yard) -> None:
    @yard.task
    async def echo(item: dict[str, Any]) -> Any:
        return item["v"]

    batch = yard.submit(echo, [], open=True)
    assert batch.add([{"v": 1}, {"v": 2}]) == 2
    run(yard)
    assert batch.status().state is BatchState.PROCESSING  # open: more may come
    assert batch.add([{"v": 3}]) == 1
    batch.seal()
    run(yard)
    assert batch.status().state is BatchState.COMPLETED
    assert [r.result for r in batch.results()] == [1, 2, 3]
    assert [r.key for r in batch.results()] == ["1", "2", "3"]


def test_batch_concurrency_is_a_cap_and_priority_orders_batches(yard: Yard) -> None:
    running = 0
    peak = 0
    order: list[str] = []

    @yard.task
    async def count(item: dict[str, Any]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(item["b"])
        await asyncio.sleep(0.005)
        running -= 1

    low = yard.submit(count, [{"b": "low"} for _ in range(4)], concurrency=3)
    high = yard.submit(count, [{"b": "high"} for _ in range(4)], priority=5, concurrency=3)
    run(yard, concurrency=50)
    assert peak <= 3 + 3
    assert order[:3] == ["high"] * 3
    assert low.status().state is high.status().state is BatchState.COMPLETED

    peak = 0
    capped = yard.submit(count, [{"b": "c"} for _ in range(12)], concurrency=2)
    run(yard, concurrency=50)
    assert peak == 2
    assert capped.status().counts.succeeded == 12


def test_tasks_named_by_module_path_run(yard: Yard) -> None:
    batch = yard.submit("json:dumps", [{"a": 1}])
    run(yard)
    assert batch.item("1").result == '{"a": 1}'


def test_a_stopped_worker_lets_items_finish_or_gives_them_back(yard: Yard) -> None:
    entered = asyncio.Event()

    @yard.task
    async def long(item: dict[str, Any]) -> str:
        entered.set()
        await asyncio.sleep(0.05 if item["id"] == "quick" else 30)
        return "done"

    batch = yard.submit(long, [{"id": "quick"}, {"id": "slow"}])

    async def scenario() -> None:
        worker = yard.worker(grace=0.5, **FAST)
        running = asyncio.create_task(worker.run())
        await entered.wait()
        worker.stop()
        stats = await asyncio.wait_for(running, 10)
        assert stats.released == 1

    asyncio.run(scenario())
    assert batch.item("quick").state is ItemState.SUCCEEDED
    slow = batch.item("slow")
    assert slow.state is ItemState.PENDING and slow.attempts == 1
    assert batch.status().counts.pending == 1


def test_events_and_changes_follow_a_growing_cursor(yard: Yard) -> None:
    @yard.task
    async def noop(item: dict[str, Any]) -> None:
        return None

    before = yard.store.cursor()
    batch = yard.submit(noop, [{"n": n} for n in range(5)])
    run(yard)
    events = batch.events()
    assert [e.data["to"] for e in events] == ["queued", "processing", "completed"]
    assert all(e.seq > before for e in events)
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    changes = batch.changes()
    assert {c.key for c in changes} == {"1", "2", "3", "4", "5"}
    assert batch.changes(since=max(c.seq for c in changes)) == []
    assert batch.events(since=events[-1].seq) == []


def test_a_worker_can_serve_only_some_batches(yard: Yard) -> None:
    @yard.task
    async def echo(item: dict[str, Any]) -> Any:
        return item["v"]

    mine = yard.submit(echo, [{"v": 1}, {"v": 2}])
    other = yard.submit(echo, [{"v": 3}])
    run(yard, batches=(mine.id,))  # idle once its own batch is done
    assert mine.status().state is BatchState.COMPLETED
    assert other.status().state is BatchState.QUEUED and other.status().counts.pending == 1


def test_a_timeout_follows_the_injected_clock(tmp_path: Path) -> None:
    # An hour's limit fires as soon as the test moves the clock past it: nobody waits.
    clock = FakeClock()
    started = asyncio.Event()
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}", clock=clock) as yard:

        @yard.task(timeout=3600, max_attempts=1)
        async def hang(item: dict[str, Any]) -> None:
            started.set()
            await asyncio.Event().wait()

        batch = yard.submit(hang, [{"id": "a"}])

        async def main() -> None:
            worker = yard.worker(**FAST, lease=7200)
            running = asyncio.create_task(worker.run(until_idle=True))
            await started.wait()
            clock.advance(3600.5)
            await running

        began = time.monotonic()
        asyncio.run(main())
        assert time.monotonic() - began < 30
        item = batch.item("a")
        assert item.state is ItemState.FAILED
        assert item.error == "TimeoutError: timed out after 3600s"


def test_one_worker_runs_sync_tasks_again_after_a_run(yard: Yard) -> None:
    # A worker's threads for sync tasks stop when a run ends; a second run of the same
    # worker must start its own, not queue jobs for threads that are gone.
    @yard.task
    def double(item: dict[str, Any]) -> int:
        return int(item["n"]) * 2

    worker = yard.worker(**{**FAST, "concurrency": 2})
    first = yard.submit(double, [{"n": n} for n in range(5)])
    asyncio.run(worker.run(until_idle=True))
    second = yard.submit(double, [{"n": n} for n in range(5, 10)])
    asyncio.run(asyncio.wait_for(worker.run(until_idle=True), 30))
    for batch, start in ((first, 0), (second, 5)):
        assert [item.result for item in batch.results()] == [2 * n for n in range(start, start + 5)]


def test_a_retry_round_starts_its_backoff_again() -> None:
    # Round 1 spent attempts 1-3 (max_attempts 3); retry_failed set max_attempt to 3 + 3.
    batch = ClaimedBatch(1, "b", "t", None, {}, max_attempts=3)
    first_of_round_two = Claim(1, batch, "k", "{}", attempt=4, max_attempt=6)
    assert first_of_round_two.tries == 1
    # A lease given back unspent raised max_attempt by one: that run was not a try.
    after_a_release = Claim(1, batch, "k", "{}", attempt=2, max_attempt=4)
    assert after_a_release.tries == 1
    policy = RetryPolicy(base=1.0)
    fresh = policy.decide(ValueError("no"), 4, 6, draw=0.0, tries=first_of_round_two.tries)
    carried_on = policy.decide(ValueError("no"), 4, 6, draw=0.0)
    assert (fresh, carried_on) == (0.5, 4.0)


def test_an_item_stopped_mid_run_counts_as_run_and_runs_again_released(yard: Yard) -> None:
    entered = asyncio.Event()

    @yard.task
    async def long(item: dict[str, Any], ctx: Any) -> str:
        if ctx.attempt == 1:
            entered.set()
            await asyncio.sleep(30)
        return "done"

    batch = yard.submit(long, [{"id": "slow"}])

    async def scenario() -> None:
        worker = yard.worker(grace=0.05, **FAST)
        running = asyncio.create_task(worker.run())
        await entered.wait()
        worker.stop()
        assert (await asyncio.wait_for(running, 10)).released == 1

    asyncio.run(scenario())
    assert batch.item("slow").runs == 1
    run(yard)
    item = batch.item("slow")
    assert (item.state, item.runs, item.attempts) == (ItemState.SUCCEEDED, 2, 2)
    assert batch.status().reruns.released == 1


def test_a_short_claim_waits_for_a_finished_item_before_asking_again(yard: Yard) -> None:
    """A claim that came back short (here: the batch at its cap) is not followed at once by
    another: it would find nothing and hold up the next commit. Every round after the first
    carries the outcomes it makes room with."""
    rounds: list[tuple[int, int]] = []
    store = yard.store
    record_and_claim = store.record_and_claim

    def counted(outcomes: Any, *args: Any, **kwargs: Any) -> Any:
        done, claims = record_and_claim(outcomes, *args, **kwargs)
        rounds.append((len(outcomes), len(claims)))
        return done, claims

    store.record_and_claim = counted  # type: ignore[method-assign]

    @yard.task
    async def nap(item: dict[str, Any]) -> None:
        await asyncio.sleep(0.005)

    batch = yard.submit(nap, [{} for _ in range(12)], concurrency=3)
    run(yard, concurrency=10, poll_interval=0.5)  # no round for want of news, only for outcomes
    assert batch.status().counts.succeeded == 12
    assert rounds[0] == (0, 3)
    assert all(outcomes > 0 for outcomes, _ in rounds[1:]), rounds
    assert sum(claimed for _, claimed in rounds) == 12


def test_how_long_a_worker_was_quiet_is_not_moved_by_a_clock_step(
    yard: Yard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker polls often just after work stops, then backs off to poll_interval.
    Its quiet time is a length of time: a wall clock stepped back two hours must not make it
    poll at its fastest for two hours."""
    clock, steady = FakeClock(), [1000.0]
    monkeypatch.setattr("batchyard.worker.shared.time.monotonic", lambda: steady[0])
    worker = Worker(yard.store, yard.registry, WorkerConfig(poll_interval=0.5), clock=clock)
    worker._shared.steady = True  # lengths of time on the monotonic clock, as by default
    waits: list[float] = []
    idle_wait = worker._claims._idle_wait

    def watched(next_due: float | None, quiet_since: float) -> float:
        waits.append(idle_wait(next_due, quiet_since))
        steady[0] += 40.0  # quiet for 40 s more,
        clock.advance(-2 * 3600)  # and the wall clock steps back two hours
        if len(waits) == 2:
            worker.stop()
        return 0.0

    monkeypatch.setattr(worker._claims, "_idle_wait", watched)
    asyncio.run(worker.run())
    assert waits == [0.01, 0.5]  # just quiet: poll soon; quiet for 40 s: back off
