"""Throughput over time, the ETA range and the "stalled" rule (``batchyard.progress``), read
from what a real worker left in a SQLite store, with time moved only by a ``FakeClock``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchyard import BatchState, FakeClock, TaskContext, Yard
from batchyard.errors import PauseBatch
from batchyard.live import Watch, plain_line
from batchyard.live import clock as clock_text
from batchyard.models import Waiting
from batchyard.progress import (
    BUCKETS,
    STALL_FLOOR,
    History,
    eta_range,
    history,
    stall,
)
from batchyard.views import status_view
from tests.conftest import FAST


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def yard(tmp_path: Path, clock: FakeClock) -> Iterator[Yard]:
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}", clock=clock) as y:

        @y.task(name="timed", concurrency=1, max_attempts=1)
        def timed(item: dict[str, Any], ctx: TaskContext) -> None:
            """Takes ``took`` seconds of the fake clock; ``stop`` pauses the batch instead."""
            if item.get("stop"):
                raise PauseBatch("stop here")
            clock.advance(item["took"])

        yield y


def half_done(yard: Yard, took: list[float], left: int) -> str:
    """A batch that ran ``took`` and has ``left`` items still pending, running again."""
    items = [{"id": f"a{n}", "took": t} for n, t in enumerate(took)]
    items += [{"id": f"b{n}", "took": 1.0, "stop": n == 0} for n in range(left)]
    batch = yard.submit("timed", items)
    yard.run_until_idle(concurrency=1, **FAST)
    assert batch.status().state is BatchState.PAUSED
    batch.resume()
    return batch.id


def test_the_history_counts_finishes_over_the_batchs_life(yard: Yard, clock: FakeClock) -> None:
    batch = half_done(yard, [2.0] * 30, 10)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    going = history(status, finishes, clock.now())
    assert going is not None and going.start == status.started_at
    # 30 items in 60 s: buckets of 6 s, three items each (narrower would draw the gaps
    # between single items), at most BUCKETS of them.
    assert sum(going.counts) == 30 and going.width == 6.0
    assert going.counts == (2.0, *[3.0] * 8, 4.0)
    # Live updates extend it; past BUCKETS buckets, neighbours merge, nothing is lost.
    later = going.added(clock.now() + 200, 5)
    assert sum(later.counts) == pytest.approx(35) and later.width == 2 * going.width
    assert len(later.counts) <= BUCKETS


def test_a_history_read_from_a_sample_stands_for_every_item(yard: Yard, clock: FakeClock) -> None:
    batch = half_done(yard, [1.0] * 40, 5)
    status = yard.store.get_batch(batch)
    sampled = history(status, yard.store.finishes(batch, sample=9), clock.now())
    assert sampled is not None
    assert sum(sampled.counts) == pytest.approx(40, abs=5)  # 45 items, 9 read, 5 each


def test_the_eta_is_a_range_around_the_recent_pace_once_it_means_something(
    yard: Yard, clock: FakeClock
) -> None:
    batch = half_done(yard, [2.0] * 30, 10)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    now = clock.now()
    low, high = eta_range(status, history(status, finishes, now), now) or (0, 0)
    assert low <= 20.0 <= high  # 10 items left at one per 2 s
    assert high <= 3 * low
    view = status_view(status, now, finishes)
    assert view["eta_range"] == [round(low, 1), round(high, 1)]
    # Too few items, or too short a run: no range.
    few = replace(status, counts=replace(status.counts, succeeded=19))
    assert eta_range(few, history(few, finishes, now), now) is None
    young = replace(status, started_at=now - 29)
    assert eta_range(young, history(young, finishes, now), now) is None
    assert status_view(status, now)["eta_range"] is None  # not read: not known
    assert status_view(status, now)["stalled"] is None
    paused = replace(status, state=BatchState.PAUSED)
    assert eta_range(paused, history(paused, finishes, now), now) is None
    assert status_view(paused, now)["stalled"] is False  # read or not: it cannot stall
    assert status_view(paused, now, finishes)["stalled"] is False


def test_a_range_never_promises_less_than_the_rate_limit_allows(
    yard: Yard, clock: FakeClock
) -> None:
    batch = half_done(yard, [2.0] * 30, 10)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    now = clock.now()
    limited = replace(status, waiting_on=Waiting("task:x", "requests", 1, now + 1, 0.05))
    assert eta_range(limited, history(limited, finishes, now), now) == (
        201.0,
        201.0,
    )  # its pause, then 10 at 0.05/s


def test_a_running_batch_quiet_for_longer_than_its_items_take_is_stalled(
    yard: Yard, clock: FakeClock
) -> None:
    batch = half_done(yard, [2.0] * 30, 10)
    finishes = yard.store.finishes(batch)
    assert finishes.durations and max(finishes.durations) == 2.0
    status = yard.store.get_batch(batch)
    # Items take 2 s: three times that is under the floor, so the floor decides.
    clock.advance(STALL_FLOOR - 1)
    quiet = stall(status, finishes, clock.now())
    assert quiet is not None and not quiet.is_stalled and quiet.patience == STALL_FLOOR
    assert status_view(status, clock.now(), finishes)["stalled"] is False
    clock.advance(2)
    quiet = stall(status, finishes, clock.now())
    assert quiet is not None and quiet.is_stalled and quiet.quiet == pytest.approx(61)
    view = status_view(status, clock.now(), finishes)
    assert view["stalled"] is True and view["quiet"] == 61.0
    # A worker taking an item is activity: quiet again, no stall.
    assert yard.store.claim("w", {"timed": 1}, 1, clock.now(), 30.0)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    quiet = stall(status, finishes, clock.now() + 1)
    assert quiet is not None and quiet.quiet == 1.0 and not quiet.is_stalled


def test_slow_items_give_a_batch_more_patience(yard: Yard, clock: FakeClock) -> None:
    batch = half_done(yard, [1.0, 40.0, 2.0], 3)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    clock.advance(100)
    quiet = stall(status, finishes, clock.now())
    assert quiet is not None and quiet.patience == 120.0 and not quiet.is_stalled


def test_waits_a_pause_and_an_end_explain_quiet(yard: Yard, clock: FakeClock) -> None:
    batch = half_done(yard, [2.0] * 3, 3)
    status, finishes = yard.store.get_batch(batch), yard.store.finishes(batch)
    clock.advance(3600)
    now = clock.now()
    quiet = stall(status, finishes, now)
    assert quiet is not None and quiet.is_stalled
    waiting = replace(status, waiting_on=Waiting("task:x", "requests", 1, now + 60, 0.1))
    assert stall(waiting, finishes, now) is None
    assert stall(replace(status, state=BatchState.PAUSED), finishes, now) is None
    assert stall(replace(status, state=BatchState.COMPLETED), finishes, now) is None
    assert stall(replace(status, state=BatchState.QUEUED), finishes, now) is None
    # Only retries waiting their delay: nothing to run yet, so not a stall either.
    backing_off = replace(status, counts=replace(status.counts, pending=0, retry_wait=3))
    assert stall(backing_off, finishes, now) is None


def test_a_partial_last_bucket_has_a_rate_only_once_half_covered() -> None:
    going = History(start=0.0, width=10.0, counts=(10.0, 4.0), until=14.0)
    assert going.rates() == [1.0]
    assert History(0.0, 10.0, (10.0, 4.0), 16.0).rates() == [1.0, 4.0 / 6.0]


def test_a_live_update_spreads_its_items_over_the_time_since_the_last() -> None:
    going = History(start=0.0, width=1.0, counts=(1.0, 1.0), until=2.0)
    later = going.added(6.0, 8)
    assert later.counts == (1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0)
    assert later.until == 6.0 and later.rates()[2:6] == [2.0, 2.0, 2.0, 2.0]
    assert going.added(2.0, 3).counts == (1.0, 1.0, 3.0)  # no time passed: the bucket of now


def test_even_a_steady_pace_gives_a_range_a_tenth_either_side(yard: Yard, clock: FakeClock) -> None:
    batch = half_done(yard, [2.0] * 30, 10)
    status = yard.store.get_batch(batch)
    assert status.started_at is not None
    steady = History(status.started_at, 6.0, (3.0,) * 10, status.started_at + 60)
    span = eta_range(status, steady, status.started_at + 60)
    assert span == pytest.approx((10 / 0.55, 10 / 0.45))  # 0.5 items/s, plus or minus 0.05


def test_the_live_view_says_a_batch_has_stalled(yard: Yard, clock: FakeClock) -> None:
    # Items took 2 s, the last ended an hour before the real now: the live view reads the
    # real time, so its batch ran under a fake clock set in the past.
    clock.advance(time.time() - clock.now() - 3600 - 60)
    batch = half_done(yard, [2.0] * 30, 3)
    snap = Watch(yard.store, batch).read()
    assert snap.stalled is not None and 3590 < snap.stalled < 3700
    assert f"STALLED: nothing started or ended for {clock_text(snap.stalled)}" in plain_line(snap)
    # A batch that moves is not: a claim now.
    assert yard.store.claim("w", {"timed": 1}, 1, time.time(), 30.0)
    assert Watch(yard.store, batch).read().stalled is None
