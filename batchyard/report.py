"""Reports: how a batch went, in figures, read by streaming its items once.

Only what the figures need stays in memory: one float per finished item for the duration
percentiles, a counter of error classes, running sums per task metric and the first failed
items. ``Report.as_dict()`` is the shape of ``batchyard report --format json``; where a
report is saved (``report_path``) and its CSV form (``write_csv``) are here too.
"""

from __future__ import annotations

import csv
import io
import math
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from batchyard import report_text
from batchyard.clusters import TOP_CLUSTERS, ErrorCluster
from batchyard.models import JSON, BatchStatus, Item, Reruns
from batchyard.progress import elapsed, pace
from batchyard.states import ItemState
from batchyard.store import sqlite_path

if TYPE_CHECKING:
    from batchyard.batch import Batch

#: How many failed items a report lists; it says how many more there are.
MAX_FAILED = 100


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds the last attempt of each finished item took (None when no item ran).
    Percentiles interpolate linearly between the nearest ranks (numpy's default)."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: array[float]) -> Durations:
        if not values:
            return cls(0, None, None, None, None)
        # NOTE: sorting makes a list of the durations (about 32 bytes per item); a selection
        # in place over the array would not, but in Python it is many times slower.
        ordered = sorted(values)
        mean = math.fsum(ordered) / len(ordered)
        return cls(
            len(ordered), mean, percentile(ordered, 0.5), percentile(ordered, 0.95), ordered[-1]
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of sorted values, linearly interpolated."""
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Attempts:
    """Attempts that ran (``Item.runs``; a lease given back before its task was called is
    none) on the finished items: in all, per item that ran, how many items ran more than
    once, and why the batch's items ran again (``again``, from the batch's counters)."""

    total: int
    mean: float | None
    retried: int
    again: Reruns = field(default_factory=Reruns)

    def as_dict(self) -> dict[str, JSON]:
        data = _fields(self, ("total", "mean", "retried"))
        if self.again.total:
            data["again"] = {k: v for k, v in self.again.as_dict().items() if v}
        return data


@dataclass(frozen=True, slots=True)
class MetricStats:
    """One task metric over the items that recorded it (``ctx.metric(name, value)``)."""

    count: int
    mean: float
    min: float
    max: float
    sum: float

    def as_dict(self) -> dict[str, JSON]:
        return _fields(self, ("count", "mean", "min", "max", "sum"))


@dataclass(slots=True)
class _MetricTally:
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def stats(self) -> MetricStats:
        return MetricStats(self.count, self.sum / self.count, self.min, self.max, self.sum)


@dataclass(frozen=True, slots=True)
class FailedItem:
    """A failed item: its key, error class, the last line of its error, and attempts that
    ran."""

    key: str
    error_type: str | None
    error: str | None
    attempts: int

    def as_dict(self) -> dict[str, JSON]:
        return {
            "key": self.key,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one batch at ``generated_at``.

    Counts, usage totals and times come from the batch's status; every per-item figure
    (durations, attempts, error classes, metrics, failed items) covers its finished
    items: succeeded, failed or cancelled.
    """

    status: BatchStatus
    generated_at: float
    durations: Durations
    attempts: Attempts
    #: Items that ran at least once: what per-item usage is averaged over.
    items_run: int
    #: Error class (the exception's name) to the number of finished items it ended.
    errors: dict[str, int]
    metrics: dict[str, MetricStats]
    failed: tuple[FailedItem, ...]
    failed_total: int
    #: The top error clusters (``Batch.error_clusters``), most failed items first.
    clusters: tuple[ErrorCluster, ...] = ()

    @property
    def elapsed(self) -> float:
        """Seconds from the first claim to the end (or to ``generated_at`` if running)."""
        return elapsed(self.status, self.generated_at)

    @property
    def throughput(self) -> float:
        """Finished items per second of ``elapsed``."""
        return pace(self.status, self.generated_at).throughput

    @property
    def success_rate(self) -> float | None:
        """Succeeded items over finished ones; None while none has finished."""
        counts = self.status.counts
        return counts.succeeded / counts.finished if counts.finished else None

    @property
    def usage_per_item(self) -> dict[str, float | None] | None:
        """Mean ``tokens_in``, ``tokens_out`` and ``cost`` per item that ran (``cost`` None
        while some calls had no price); None while none has."""
        if not self.items_run:
            return None
        usage, n = self.status.usage, self.items_run
        return {
            "tokens_in": usage.tokens_in / n,
            "tokens_out": usage.tokens_out / n,
            "cost": usage.cost / n if usage.cost_is_known else None,
        }

    def __str__(self) -> str:
        """The text report, exactly as ``batchyard report`` prints it."""
        return report_text.render(self)

    def as_dict(self) -> dict[str, JSON]:
        """The JSON report::

        {"batch": {"id", "name", "task", "state", "created_at", "started_at",
                   "finished_at", "template" (NAME@N or null), "rerun_of" (or null)},
         "generated_at": unix seconds,
         "counts": {"pending", "running", "retry_wait", "succeeded", "failed",
                    "cancelled", "total", "finished"},
         "success_rate": succeeded / finished, or null,
         "elapsed": seconds, "throughput": finished items per second,
         "durations": {"count", "mean", "p50", "p95", "max"} (seconds or null),
         "attempts": {"total", "mean" (or null), "retried" (items that ran more than
                      once), and only when an item ran again "again": {reason: runs}
                      with reasons "worker_lost", "released", "error", "retry"},
         "errors": {error class: finished items it ended, most frequent first},
         "error_clusters": [the top 5 error clusters: {"id", "text", "attempts", "items",
                            "share", "first_seen", "last_seen", "sample", "sample_key"}],
         "usage": {"tokens_in", "tokens_out", "cost" (null when no call was priced),
                   "tokens_cached", "tokens_reasoning", "calls", "cache_hits",
                   "saved_cost", "unpriced_calls", "cost_note" (why cost is unknown or a
                   lower bound, or null), "budget", "items_run",
                   "per_item": {"tokens_in", "tokens_out", "cost"} or null},
         "metrics": {name: {"count", "mean", "min", "max", "sum"}},
         "failed": {"count", "items": [{"key", "error_type", "error",
                    "attempts"}], "more": failed items not listed}}
        """
        status, per_item = self.status, self.usage_per_item
        return {
            "batch": {
                "id": status.id,
                "name": status.name,
                "task": status.task,
                "state": status.state.value,
                "created_at": status.created_at,
                "started_at": status.started_at,
                "finished_at": status.finished_at,
                "template": None if status.template is None else str(status.template),
                "rerun_of": status.rerun_of,
            },
            "generated_at": self.generated_at,
            "counts": {
                **status.counts.as_dict(),
                "total": status.counts.total,
                "finished": status.counts.finished,
            },
            "success_rate": self.success_rate,
            "elapsed": self.elapsed,
            "throughput": self.throughput,
            "durations": _fields(self.durations, ("count", "mean", "p50", "p95", "max")),
            "attempts": self.attempts.as_dict(),
            "errors": dict(self.errors),
            "error_clusters": [cluster.as_dict() for cluster in self.clusters],
            "usage": {
                **status.usage_dict(),
                "budget": status.budget,
                "items_run": self.items_run,
                "per_item": per_item,
            },
            "metrics": {name: stats.as_dict() for name, stats in self.metrics.items()},
            "failed": {
                "count": self.failed_total,
                "items": [item.as_dict() for item in self.failed],
                "more": self.failed_total - len(self.failed),
            },
        }


def _fields(value: Any, names: Iterable[str]) -> dict[str, JSON]:
    return {name: getattr(value, name) for name in names}


@dataclass(slots=True)
class _Tally:
    """Running figures over a stream of items."""

    max_failed: int
    durations: array[float] = field(default_factory=lambda: array("d"))
    attempts: int = 0
    items_run: int = 0
    finished_run: int = 0
    retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, _MetricTally] = field(default_factory=dict)
    failed: list[FailedItem] = field(default_factory=list)
    failed_total: int = 0

    def add(self, item: Item) -> None:
        if item.runs:
            self.items_run += 1
        if not item.state.is_terminal:
            return
        self.finished_run += item.runs > 0
        if item.duration is not None:
            self.durations.append(item.duration)
        self.attempts += item.runs
        self.retried += item.runs > 1
        if item.error_type is not None:
            self.errors[item.error_type] += 1
        for name, value in item.metrics.items():
            stats = self.metrics.get(name)
            if stats is None:
                stats = self.metrics[name] = _MetricTally()
            stats.add(value)
        if item.state is ItemState.FAILED:
            self.failed_total += 1
            if len(self.failed) < self.max_failed:
                self.failed.append(
                    FailedItem(item.key, item.error_type, last_line(item.error), item.runs)
                )

    def report(
        self, status: BatchStatus, now: float, clusters: Sequence[ErrorCluster] = ()
    ) -> Report:
        ran = self.finished_run
        return Report(
            status=status,
            generated_at=now,
            durations=Durations.of(self.durations),
            attempts=Attempts(
                self.attempts, self.attempts / ran if ran else None, self.retried, status.reruns
            ),
            items_run=self.items_run,
            errors=dict(sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
            metrics={name: self.metrics[name].stats() for name in sorted(self.metrics)},
            failed=tuple(self.failed),
            failed_total=self.failed_total,
            clusters=tuple(clusters),
        )


def last_line(error: str | None) -> str | None:
    """The last non-blank line of an error: the exception and its message, for a
    traceback."""
    if error is None:
        return None
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else error


def build_report(batch: Batch, *, now: float | None = None, max_failed: int = MAX_FAILED) -> Report:
    """Read a batch's status, then stream its items once to make its report.

    Raises BatchNotFound (from the store) for an unknown batch."""
    status = batch.status()
    tally = _Tally(max_failed)
    for item in batch.items():
        tally.add(item)
    clusters = batch.error_clusters(TOP_CLUSTERS)
    return tally.report(status, time.time() if now is None else now, clusters)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The items two batches share (the same key), counted by their state in the first and
    in the second: what a re-run or a new template version changed, item by item (12 failed
    there succeeded here, 2 succeeded there failed here)."""

    first: str
    second: str
    cells: Mapping[tuple[ItemState, ItemState], int]

    @property
    def shared(self) -> int:
        return sum(self.cells.values())

    def count(self, first: ItemState, second: ItemState) -> int:
        return self.cells.get((first, second), 0)

    def states(self) -> tuple[list[ItemState], list[ItemState]]:
        """The states that occur in the first batch and in the second, in lifecycle order."""
        return (
            [s for s in ItemState if any(a is s for a, _ in self.cells)],
            [s for s in ItemState if any(b is s for _, b in self.cells)],
        )

    def as_dict(self) -> dict[str, JSON]:
        rows, columns = self.states()
        return {
            "first": self.first,
            "second": self.second,
            "shared": self.shared,
            "cells": [
                {"first": a.value, "second": b.value, "items": self.cells[a, b]}
                for a in rows
                for b in columns
                if (a, b) in self.cells
            ],
        }


def outcome_grid(matrix: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[int]]]]:
    """An ``Outcomes.as_dict()`` as a table: the states in the second batch (the columns),
    and a row per state in the first with a count under each column."""
    cells = {(c["first"], c["second"]): c["items"] for c in matrix["cells"]}
    columns = list(dict.fromkeys(c["second"] for c in matrix["cells"]))
    rows = [
        (state, [cells.get((state, column), 0) for column in columns])
        for state in dict.fromkeys(c["first"] for c in matrix["cells"])
    ]
    return columns, rows


_COMPARED = ("counts", "success_rate", "elapsed", "throughput", "durations", "attempts")


def compare(batches: Sequence[Batch]) -> tuple[list[Report], dict[str, JSON]]:
    """The reports of ``batches`` and their ``comparison``, with the outcomes of the items
    each later batch shares with the first."""
    reports = [build_report(batch, max_failed=0) for batch in batches]
    first = batches[0]
    return reports, comparison(reports, [first.outcomes(other.id) for other in batches[1:]])


def comparison(reports: Sequence[Report], outcomes: Sequence[Outcomes] = ()) -> dict[str, JSON]:
    """Batches side by side (``batchyard compare --json``)::

        {"batches": [{"id", "name", "task", "template", "rerun_of", "state", "counts",
                      "success_rate",
                      "elapsed", "throughput", "durations", "attempts",
                      "usage": the report's usage without "items_run",
                      "metrics": {name: {"count", "mean", "min", "max", "sum"}}}],
         "metrics": every metric name any of them recorded, sorted,
         "outcomes": [{"first", "second", "shared",
                       "cells": [{"first": state, "second": state, "items"}]}]}

    Each entry's figures have the shapes of the same keys in ``Report.as_dict()``;
    ``outcomes`` holds ``Outcomes.as_dict()`` of each later batch against the first (none
    shared: ``shared`` 0 and no cells).
    """
    rows: list[JSON] = []
    names: set[str] = set()
    for report in reports:
        full = report.as_dict()
        usage = dict(full["usage"])
        del usage["items_run"]
        rows.append(
            {
                **{
                    k: full["batch"][k]
                    for k in ("id", "name", "task", "template", "rerun_of", "state")
                },
                **{k: full[k] for k in _COMPARED},
                "usage": usage,
                "metrics": full["metrics"],
            }
        )
        names.update(report.metrics)
    return {
        "batches": rows,
        "metrics": sorted(names),
        "outcomes": [matrix.as_dict() for matrix in outcomes],
    }


# -- as files -----------------------------------------------------------------------------


def report_path(url: str, batch_id: str) -> Path:
    """Where the report of a batch is saved: ``reports/ID.json`` beside the SQLite file of
    ``url``, or in the current folder for any other store."""
    path = sqlite_path(url)
    return (Path(path).parent if path else Path.cwd()) / "reports" / f"{batch_id}.json"


def write_csv(document: dict[str, Any], out: IO[bytes]) -> None:
    """The JSON report as ``field,value`` rows (UTF-8) on ``out``, left open; a field is its
    path in the JSON report with dots (``durations.p95``, ``metrics.score.mean``,
    ``failed.items.0.key``) and null is empty."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(("field", "value"))
    writer.writerows(flatten(document))
    text.flush()
    text.detach()


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, leaf)`` for every leaf of a JSON value, None as ``""``."""
    if isinstance(value, dict):
        children: Any = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        yield prefix, "" if value is None else value
        return
    for key, child in children:
        yield from flatten(child, f"{prefix}.{key}" if prefix else str(key))
