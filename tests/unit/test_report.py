"""Report figures on real batches: items run on a SQLite yard with a fake clock that each
task moves by a known amount, so every duration, rate and sum is known exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchyard import FakeClock, Retry, TaskContext, Yard
from batchyard.report import build_report, comparison, last_line, percentile
from tests.conftest import FAST

ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "KeyError": KeyError}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def yard(tmp_path: Path, clock: FakeClock) -> Iterator[Yard]:
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}", clock=clock) as y:

        @y.task(name="scripted", concurrency=1, max_attempts=2, retry_backoff=0)
        def scripted(item: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
            """Moves the clock by ``took`` (``retry_first`` first, then asks for a retry),
            records ``metrics`` and ``usage``, then raises ``raise`` or returns."""
            if ctx.attempt == 1 and "retry_first" in item:
                clock.advance(item["retry_first"])
                raise Retry(after=0)
            clock.advance(item["took"])
            for name, value in item.get("metrics", {}).items():
                ctx.metric(name, value)
            if "usage" in item:
                ctx.usage(*item["usage"])
            if "raise" in item:
                raise ERRORS[item["raise"]](item["id"])
            return {"took": item["took"]}

        yield y


def run(yard: Yard, items: list[dict[str, Any]], **submit: Any) -> Any:
    batch = yard.submit("scripted", items, **submit)
    yard.run_until_idle(concurrency=1, **FAST)
    return batch


#: Seven items: four succeed (one after a retry), three fail twice with known classes.
MIXED: list[dict[str, Any]] = [
    {"id": "a", "took": 1, "metrics": {"confidence": 0.9, "changes": 3}, "usage": [100, 10, 0.01]},
    {"id": "b", "took": 2, "metrics": {"confidence": 0.5}, "usage": [200, 20, 0.02]},
    {"id": "c", "took": 3, "retry_first": 0.5, "metrics": {"changes": 5}, "usage": [300, 30, 0.03]},
    {"id": "d", "took": 4, "metrics": {"confidence": 0.1}, "raise": "ValueError"},
    {"id": "e", "took": 5, "raise": "KeyError"},
    {"id": "f", "took": 6, "raise": "ValueError"},
    {"id": "g", "took": 7, "metrics": {"confidence": 0.7, "changes": 0}, "usage": [400, 40, 0.04]},
]


def test_counts_success_rate_and_throughput(yard: Yard) -> None:
    report = build_report(run(yard, MIXED))

    counts = report.as_dict()["counts"]
    assert (counts["succeeded"], counts["failed"], counts["total"], counts["finished"]) == (
        4,
        3,
        7,
        7,
    )
    assert report.success_rate == pytest.approx(4 / 7)
    # The clock moved only inside tasks: 1 + 2 + (0.5 + 3) + 2*4 + 2*5 + 2*6 + 7 seconds.
    assert report.elapsed == pytest.approx(43.5)
    assert report.throughput == pytest.approx(7 / 43.5)


def test_durations_are_the_last_attempts_with_interpolated_percentiles(yard: Yard) -> None:
    durations = build_report(run(yard, MIXED)).durations

    assert durations.count == 7
    assert durations.mean == pytest.approx(4.0)
    assert durations.p50 == pytest.approx(4.0)
    assert durations.p95 == pytest.approx(6.7)  # 6 + 0.7 * (7 - 6): rank 5.7 of 0..6
    assert durations.max == pytest.approx(7.0)


def test_attempts_and_error_classes(yard: Yard) -> None:
    report = build_report(run(yard, MIXED))

    assert report.attempts.total == 11  # c, d, e and f took two each
    assert report.attempts.mean == pytest.approx(11 / 7)
    assert report.attempts.retried == 4
    assert report.errors == {"ValueError": 2, "KeyError": 1}
    assert list(report.errors) == ["ValueError", "KeyError"]  # most frequent first


def test_every_metric_over_the_items_that_recorded_it(yard: Yard) -> None:
    metrics = build_report(run(yard, MIXED)).as_dict()["metrics"]

    assert list(metrics) == ["changes", "confidence"]
    confidence = metrics["confidence"]
    assert confidence["count"] == 4  # a, b, d (failed, still recorded) and g
    assert confidence["sum"] == pytest.approx(2.2)
    assert confidence["mean"] == pytest.approx(0.55)
    assert (confidence["min"], confidence["max"]) == (pytest.approx(0.1), pytest.approx(0.9))
    assert metrics["changes"] == {
        "count": 3,
        "sum": 8.0,
        "mean": pytest.approx(8 / 3),
        "min": 0.0,
        "max": 5.0,
    }


def test_usage_totals_and_mean_per_item(yard: Yard) -> None:
    usage = build_report(run(yard, MIXED)).as_dict()["usage"]

    assert (usage["tokens_in"], usage["tokens_out"]) == (1000, 100)
    assert usage["cost"] == pytest.approx(0.10)
    assert usage["items_run"] == 7
    assert usage["per_item"] == {
        "tokens_in": pytest.approx(1000 / 7),
        "tokens_out": pytest.approx(100 / 7),
        "cost": pytest.approx(0.10 / 7),
    }


def test_failed_items_with_their_errors_in_submission_order(yard: Yard) -> None:
    failed = build_report(run(yard, MIXED)).as_dict()["failed"]

    assert failed == {
        "count": 3,
        "items": [
            {"key": "d", "error_type": "ValueError", "error": "ValueError: d", "attempts": 2},
            {"key": "e", "error_type": "KeyError", "error": "KeyError: 'e'", "attempts": 2},
            {"key": "f", "error_type": "ValueError", "error": "ValueError: f", "attempts": 2},
        ],
        "more": 0,
    }


def test_the_failed_list_is_capped_and_says_how_many_more(yard: Yard) -> None:
    items = [{"id": f"x{n}", "took": 1, "raise": "ValueError"} for n in range(5)]
    report = build_report(run(yard, items, max_attempts=1), max_failed=2)

    assert [item.key for item in report.failed] == ["x0", "x1"]
    assert (report.failed_total, report.as_dict()["failed"]["more"]) == (5, 3)
    assert report.errors == {"ValueError": 5}


def test_a_batch_cancelled_before_anything_ran(yard: Yard) -> None:
    batch = yard.submit("scripted", [{"id": "a", "took": 1}, {"id": "b", "took": 1}])
    batch.cancel()
    data = build_report(batch).as_dict()

    assert data["counts"]["cancelled"] == 2
    assert data["success_rate"] == 0.0
    assert (data["elapsed"], data["throughput"]) == (0.0, 0.0)
    assert data["durations"] == {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    assert data["attempts"] == {"total": 0, "mean": None, "retried": 0}
    assert data["usage"]["per_item"] is None
    assert (data["errors"], data["metrics"]) == ({}, {})
    assert data["failed"] == {"count": 0, "items": [], "more": 0}


def test_figures_span_many_pages_of_items(yard: Yard) -> None:
    # 1,500 items: two pages. Durations 1..10 s, 150 items each.
    items = [{"id": n, "took": n % 10 + 1, "metrics": {"size": n}} for n in range(1500)]
    report = build_report(run(yard, items))

    assert report.durations.count == 1500
    assert report.durations.mean == pytest.approx(5.5)
    assert report.durations.p50 == pytest.approx(5.5)  # between ranks 749 (5) and 750 (6)
    assert report.durations.p95 == pytest.approx(10.0)
    assert report.metrics["size"].count == 1500
    assert report.metrics["size"].sum == sum(range(1500))
    assert report.elapsed == pytest.approx(1500 * 5.5)


def test_as_dict_has_the_documented_keys_and_is_json(yard: Yard) -> None:
    data = build_report(run(yard, MIXED), now=123.0).as_dict()

    assert set(data) == {
        "batch",
        "generated_at",
        "counts",
        "success_rate",
        "elapsed",
        "throughput",
        "durations",
        "attempts",
        "errors",
        "error_clusters",
        "usage",
        "metrics",
        "failed",
    }
    assert set(data["batch"]) == {
        "id",
        "name",
        "task",
        "state",
        "created_at",
        "started_at",
        "finished_at",
        "template",
        "rerun_of",
    }
    assert data["batch"]["state"] == "partially_completed"
    assert (data["batch"]["template"], data["batch"]["rerun_of"]) == (None, None)
    assert data["generated_at"] == 123.0
    assert orjson.loads(orjson.dumps(data))["durations"]["p95"] == pytest.approx(6.7)


def test_comparison_puts_batches_side_by_side(yard: Yard) -> None:
    first = build_report(run(yard, MIXED[:2]))
    second = build_report(run(yard, [{"id": "z", "took": 2, "metrics": {"score": 1.0}}]))
    view = comparison([first, second])

    assert [row["id"] for row in view["batches"]] == [first.status.id, second.status.id]
    assert view["metrics"] == ["changes", "confidence", "score"]
    row = view["batches"][0]
    assert set(row) == {
        "id",
        "name",
        "task",
        "template",
        "rerun_of",
        "state",
        "counts",
        "success_rate",
        "elapsed",
        "throughput",
        "durations",
        "attempts",
        "usage",
        "metrics",
    }
    assert row["usage"] == {
        "tokens_in": 300,
        "tokens_out": 30,
        "cost": pytest.approx(0.03),
        "tokens_cached": 0,
        "tokens_reasoning": 0,
        "calls": 0,
        "cache_hits": 0,
        "saved_cost": 0.0,
        "unpriced_calls": 0,
        "cost_note": None,
        "budget": None,
        "per_item": {
            "tokens_in": 150.0,
            "tokens_out": 15.0,
            "cost": pytest.approx(0.015),
        },
    }
    assert view["batches"][1]["metrics"] == {
        "score": {"count": 1, "mean": 1.0, "min": 1.0, "max": 1.0, "sum": 1.0}
    }


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 1.0), (0.5, 2.5), (0.95, 3.85), (1.0, 4.0)],
)
def test_percentile_interpolates_between_ranks(q: float, expected: float) -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], q) == pytest.approx(expected)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_last_line_keeps_the_exception_of_a_traceback() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad\n\n'
    assert last_line(trace) == "ValueError: bad"
    assert last_line("plain") == "plain"
    assert last_line(None) is None


def test_str_is_the_text_report_line_by_line(yard: Yard) -> None:
    batch = run(yard, MIXED, name="mixed")
    text = str(batch.report())

    def row(label: str, value: str) -> str:  # labels padded to the longest, then 2 spaces
        return f"{label:<17}  {value}"

    lines = text.splitlines()
    assert lines[:3] == [
        row("batch", f"{batch.id}  'mixed'"),
        row("task", "scripted"),
        row("items", "7: 4 succeeded, 3 failed, 0 cancelled  (partially_completed)"),
    ]
    assert row("success", "57.1%") in lines
    assert row("elapsed", "43.5 s  (0.16 items/s)") in lines
    durations = "mean 4.0 s  p50 4.0 s  p95 6.7 s  max 7.0 s  (last attempt of 7 items)"
    assert row("duration", durations) in lines
    assert row("attempts", "11 in all, 1.57 per item, 4 items ran again") in lines
    assert row("errors", "ValueError 2  KeyError 1") in lines
    assert row("metric confidence", "mean 0.55  min 0.1  max 0.9  sum 2.2  (4 items)") in lines
    assert row("failed", "3 items:") in lines
    assert lines[-1] == row("", "f: ValueError: f")
    assert all(line == line.rstrip() for line in lines)
    assert "\x1b[" not in text


def test_the_report_shows_the_top_error_clusters(yard: Yard) -> None:
    batch = run(yard, MIXED)
    report = batch.report()
    at = " @ test_report.py:scripted"
    assert {c.text: (c.items, c.attempts) for c in report.clusters} == {
        f"ValueError: d{at}": (1, 2),  # a bare word is no id: d and f are two failures
        f"ValueError: f{at}": (1, 2),
        f"KeyError: 'e'{at}": (1, 2),  # a quoted word alone reads as a field name: kept
        f"Retry: retry requested{at}": (0, 1),  # c's first attempt; c then succeeded
    }
    assert list(report.clusters) == batch.error_clusters()
    top = report.clusters[0]
    assert top.share == pytest.approx(1 / 3)
    assert top.sample is not None and top.sample_key in top.sample  # "ValueError: d", ...
    with pytest.raises(dataclasses.FrozenInstanceError):
        top.items = 5
    assert report.as_dict()["error_clusters"][0] == top.as_dict()
    lines = str(report).splitlines()
    first = f"{top.id}  1 item (33%), 2 attempts  {top.text}"
    assert f"{'clusters':<17}  {first}" in lines
    assert lines[lines.index(f"{'clusters':<17}  {first}") - 1].startswith("errors")
    assert len(batch.error_clusters(limit=2)) == 2


def test_the_ending_of_run_names_the_commands_to_look_further(yard: Yard) -> None:
    from batchyard.report_text import ending

    batch = run(yard, MIXED)
    text = ending(batch.report(), "batchyard --db x.db")

    assert text.startswith(str(batch.report()))
    assert text.endswith(
        f"\n\nlook further: batchyard --db x.db report {batch.id}\n"
        f"              batchyard --db x.db items {batch.id} --state failed\n"
        f"              batchyard --db x.db errors {batch.id}\n"
        f"              batchyard --db x.db results {batch.id} -o results.jsonl"
    )


def test_a_cost_with_unpriced_calls_is_unknown_or_a_lower_bound(yard: Yard) -> None:
    from batchyard.live import _usage

    @yard.task(name="calls", concurrency=1, max_attempts=1)
    def calls(item: dict[str, Any], ctx: TaskContext) -> None:
        priced = item["priced"]
        ctx.usage(100, 10, 0.25 if priced else 0.0, calls=1, unpriced_calls=int(not priced))

    unknown = yard.submit("calls", [{"priced": False}] * 2, params={"model": "m-1"})
    partly = yard.submit("calls", [{"priced": True}, {"priced": False}, {"priced": False}])
    known = yard.submit("calls", [{"priced": True}])
    yard.run_until_idle(concurrency=1, **FAST)

    status = unknown.status()
    assert status.cost_text() == "cost unknown (no price for m-1)"
    assert status.projected_cost is None
    assert status.as_dict()["usage"]["cost"] is None
    assert status.as_dict()["usage"]["cost_note"] == "no price for m-1"
    assert "$0.0000" not in str(unknown.report())
    assert "out  cost unknown (no price for m-1)   per item 100.0 in  10.0 out\n" in str(
        unknown.report()
    )
    assert "cost unknown (no price for m-1)" in _usage(status)

    status = partly.status()
    assert status.cost_text() == "at least $0.2500 (2 of 3 calls had no price)"
    usage = partly.report().as_dict()["usage"]
    assert (usage["cost"], usage["cost_note"]) == (0.25, "2 of 3 calls had no price")
    assert usage["per_item"]["cost"] is None  # an average of a lower bound says nothing
    assert "at least $0.2500" in _usage(status)

    status = known.status()
    assert status.cost_text() == "$0.2500" and status.cost_note is None
    assert status.as_dict()["usage"]["cost_note"] is None


# -- why items ran again ----------------------------------------------------------------


def rendered(report: Any) -> list[str]:
    """The text report's lines, runs of spaces made one."""
    return [" ".join(line.split()) for line in str(report).splitlines()]


def test_runs_again_by_reason_with_errors_that_ended_items(yard: Yard) -> None:
    report = build_report(run(yard, MIXED))

    # c retried once after its Retry; d, e and f ran twice before failing.
    assert report.as_dict()["attempts"] == {
        "total": 11,
        "mean": pytest.approx(11 / 7),
        "retried": 4,
        "again": {"error": 4},
    }
    text = rendered(report)
    assert "attempts 11 in all, 1.57 per item, 4 items ran again" in text
    assert "ran again 4 runs: retried after an error 4" in text
    assert "errors ValueError 2 KeyError 1" in text


def test_errors_that_were_retried_away_are_not_reported_as_none(yard: Yard) -> None:
    report = build_report(run(yard, [MIXED[2]]))

    assert report.attempts.again.error == 1
    assert "errors none at the end (1 retried after an error)" in rendered(report)


def test_given_back_leases_are_no_attempts_and_lost_ones_say_so(
    yard: Yard, clock: FakeClock
) -> None:
    batch = yard.submit("scripted", [{"id": n, "took": 1} for n in range(4)], concurrency=4)
    now = clock.now()
    lost, released, unrun = yard.store.claim("w", {"scripted": 4}, 3, now, 30.0)
    # A shutdown gives back one that ran and one that never started (prefetched).
    yard.store.release(
        [(c.item_id, c.attempt) for c in (released, unrun)], now, ran=[released.item_id]
    )
    yard.store.reclaim_expired(now + 31)  # the worker died holding ``lost``
    yard.run_until_idle(concurrency=1, **FAST)
    report = build_report(batch)

    assert {i.key: (i.runs, i.attempts) for i in batch.items()} == {
        lost.key: (2, 2),
        released.key: (2, 2),
        unrun.key: (1, 2),
        "3": (1, 1),
    }
    assert report.as_dict()["attempts"] == {
        "total": 6,
        "mean": 1.5,
        "retried": 2,
        "again": {"worker_lost": 1, "released": 1},
    }
    text = rendered(report)
    assert "attempts 6 in all, 1.50 per item, 2 items ran again" in text
    assert "ran again 2 runs: worker lost 1, released 1" in text
    assert "errors none" in text


def test_a_batch_with_no_failures_says_so_once(yard: Yard) -> None:
    text = str(run(yard, [{"id": "a", "took": 1}, {"id": "b", "took": 2}]).report())
    assert "errors" in text and "none" in text
    assert not [line for line in text.splitlines() if line.startswith("failed")], text
