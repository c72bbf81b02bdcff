"""Elapsed time, throughput and ETA: one rule, read by the CLI, the live view and reports."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from batchyard import BatchState, Counts, Yard
from batchyard.live import Snapshot, plain_line
from batchyard.models import BatchStatus, Waiting
from batchyard.progress import Meter, pace
from batchyard.views import status_view


async def noop(item: dict[str, Any]) -> None:
    return None


def a_status(yard: Yard, **fields: Any) -> BatchStatus:
    return replace(yard.submit(noop, [{"id": 1}]).status(), **fields)


def test_a_running_batch_goes_at_its_throughput_unless_told_a_recent_rate(yard: Yard) -> None:
    status = a_status(
        yard, state=BatchState.PROCESSING, started_at=100.0, counts=Counts(pending=30, succeeded=10)
    )
    going = pace(status, now=120.0)
    assert (going.elapsed, going.throughput, going.rate, going.eta) == (20.0, 0.5, 0.5, 60.0)
    assert pace(status, now=120.0, recent=3.0).eta == pytest.approx(10.0)
    view = status_view(status, 120.0)
    assert (view["elapsed"], view["throughput"], view["eta"]) == (20.0, 0.5, 60.0)


def test_before_the_first_claim_nothing_is_known(yard: Yard) -> None:
    going = pace(a_status(yard, started_at=None), now=5.0)
    assert (going.elapsed, going.throughput, going.eta) == (0.0, 0.0, None)


def test_an_ended_batch_stops_its_clock_and_has_nothing_left(yard: Yard) -> None:
    status = a_status(
        yard,
        state=BatchState.COMPLETED,
        started_at=100.0,
        finished_at=110.0,
        counts=Counts(succeeded=40),
    )
    going = pace(status, now=999.0, recent=100.0)
    assert (going.elapsed, going.throughput, going.rate, going.eta) == (10.0, 4.0, 4.0, 0.0)
    assert status_view(status, 999.0)["eta"] is None  # the JSON says null, as it always has


def test_the_meter_needs_two_samples_a_moment_apart() -> None:
    meter = Meter(window=10.0)
    meter.add(0.0, 0)
    assert meter.rate is None
    meter.add(0.1, 5)
    assert meter.rate is None
    meter.add(2.0, 20)
    assert meter.rate == pytest.approx(10.0)


def test_a_batch_waiting_on_a_limit_says_so_in_the_live_line_and_json(yard: Yard) -> None:
    now = time.time()
    status = a_status(
        yard,
        state=BatchState.PROCESSING,
        started_at=now - 2,
        counts=Counts(pending=10, running=1, succeeded=2, waiting=5),
        waiting_on=Waiting("task:x", "requests", 5, now + 8.0, 0.5),
    )
    going = pace(status, now)
    line = plain_line(Snapshot(status, [], [], going.rate, going.eta, going.elapsed))
    assert "running 1" in line and "waiting 5" in line
    assert "5 items wait for rate limit task:x (requests), the last ~8.0 s" in line
    view = status_view(status, now)
    assert view["counts"]["waiting"] == 5 and view["counts"]["total"] == 18
    assert view["waiting_on"]["key"] == "task:x"
    assert view["waiting_on"]["seconds"] == pytest.approx(8.0, abs=0.01)
    # 1 item a second so far would say 16 s; the 16 items left at the limit take 32 s.
    assert view["eta"] == pytest.approx(16 / 0.5, abs=0.01)
