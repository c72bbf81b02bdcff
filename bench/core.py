"""The core benchmark: submit, end-to-end no-op throughput (beside Huey on SQLite), sleep
overhead at concurrency 100, and a million-item batch (worker peak RSS, status reads).

Run it by hand, not in the test suite::

    make bench                          # installs huey into the venv, then runs this
    .venv/bin/python bench/core.py      # everything (the million-item case takes a while)
    .venv/bin/python bench/core.py --quick          # the big batch at 100,000 items
    .venv/bin/python bench/core.py --only noop      # one section: submit, noop, huey,
                                                    # sleep or million

Huey is the peer to beat and is installed for the benchmark only
(``.venv/bin/pip install huey``); without it the Huey rows are skipped with that hint.
Every database lives in a temporary directory that is removed afterwards. The table goes
to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchyard import Yard

N_SUBMIT = 100_000
N_NOOP = 100_000
NOOP_CONCURRENCIES = (64, 256, 512, 1000)
N_HUEY = 10_000
#: (worker type, workers) tried for the Huey consumer; the best one is reported.
HUEY_SETTINGS = (("thread", 1), ("thread", 2), ("thread", 4), ("thread", 8), ("process", 2))
N_SLEEP = 2_000
SLEEP = 0.05
SLEEP_CONCURRENCY = 100
N_MILLION = 1_000_000
N_MILLION_QUICK = 100_000
MILLION_CONCURRENCY = 256
STATUS_READS = 200

TARGET_SUBMIT = 150_000.0  # items/s
TARGET_NOOP = 20_000.0  # items/s
TARGET_SLEEP_RATIO = 1.10
TARGET_RSS_MB = 150.0
TARGET_STATUS_MS = 5.0

HERE = Path(__file__).resolve()


# -- tasks --------------------------------------------------------------------------------


async def noop(item: dict[str, Any]) -> None:
    return None


async def nap(item: dict[str, Any]) -> None:
    await asyncio.sleep(SLEEP)


def open_yard(path: Path) -> Yard:
    """A Yard on ``path`` that knows the benchmark's tasks (the same in every process)."""
    yard = Yard(path)
    yard.task(name="bench.noop")(noop)
    yard.task(name="bench.nap")(nap)
    return yard


def make_item(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"lead-{i}", "email": f"lead{i}@example.com", "score": i % 97}


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        yield Path(tmp)


def say(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# -- the report ---------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"


@dataclass
class Report:
    """Rows of the table, plus raw figures sections hand to each other (the Huey ratio)."""

    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def info(self, figure: str, value: str, note: str = "-") -> None:
        self.rows.append(Row(figure, value, note))

    def at_least(self, figure: str, value: float, unit: str, target: float) -> None:
        ratio = value / target
        mark = "ok" if ratio >= 1 else "MISS"
        self.rows.append(
            Row(figure, _fmt(value, unit), f">= {_fmt(target, unit)}", f"{ratio:.2f}x {mark}")
        )

    def at_most(self, figure: str, value: float, unit: str, target: float) -> None:
        ratio = value / target
        mark = "ok" if ratio < 1 else "MISS"
        self.rows.append(
            Row(figure, _fmt(value, unit), f"< {_fmt(target, unit)}", f"{ratio:.2f}x {mark}")
        )

    def versus_ideal(self, figure: str, seconds: float, ideal: float, limit: float) -> None:
        ratio = seconds / ideal
        mark = "ok" if ratio <= limit else "MISS"
        baseline = f"ideal {_fmt(ideal, 's')}, target <= {limit:.2f}x"
        self.rows.append(Row(figure, _fmt(seconds, "s"), baseline, f"{ratio:.2f}x {mark}"))

    def print(self) -> None:
        header = Row("figure", "batchyard", "baseline/target", "ratio")
        rows = [header, *self.rows]
        widths = [max(len(getattr(r, col)) for r in rows) for col in _COLUMNS]
        for n, row in enumerate(rows):
            cells = [getattr(row, col).ljust(w) for col, w in zip(_COLUMNS, widths, strict=True)]
            print(" | ".join(cells).rstrip())
            if n == 0:
                print("-|-".join("-" * w for w in widths))


_COLUMNS = ("figure", "value", "baseline", "ratio")


def _fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.1f} {unit}"


# -- submit -------------------------------------------------------------------------------


def bench_submit(report: Report, args: argparse.Namespace) -> None:
    """``yard.submit`` of 100,000 small dicts into a fresh SQLite file."""
    items = [make_item(i) for i in range(N_SUBMIT)]  # built first: time submit, not dicts
    with scratch() as tmp:
        yard = open_yard(tmp / "submit.db")
        try:
            started = time.perf_counter()
            batch = yard.submit("bench.noop", items)
            seconds = time.perf_counter() - started
            _expect(batch.status().counts.pending == N_SUBMIT, "submit lost items")
        finally:
            yard.close()
    report.at_least(f"submit {N_SUBMIT:,} items", N_SUBMIT / seconds, "/s", TARGET_SUBMIT)


# -- end-to-end no-op ---------------------------------------------------------------------


def bench_noop(report: Report, args: argparse.Namespace) -> None:
    """100,000 no-op items through one in-process worker, at a few concurrencies."""
    rates: dict[int, float] = {}
    for concurrency in NOOP_CONCURRENCIES:
        rates[concurrency] = noop_trial(N_NOOP, concurrency)
        say(f"no-op at concurrency {concurrency}: {rates[concurrency]:,.0f} items/s")
    for concurrency, rate in rates.items():
        report.info(f"  no-op, worker concurrency={concurrency}", _fmt(rate, "/s"))
    best = max(rates, key=rates.__getitem__)
    report.figures["noop"] = rates[best]
    report.at_least(
        f"end-to-end no-op {N_NOOP:,} (best: concurrency={best})",
        rates[best],
        "/s",
        TARGET_NOOP,
    )


def noop_trial(n: int, concurrency: int) -> float:
    with scratch() as tmp:
        yard = open_yard(tmp / "noop.db")
        try:
            batch = yard.submit("bench.noop", (make_item(i) for i in range(n)))
            started = time.perf_counter()
            yard.run_until_idle(concurrency=concurrency)
            seconds = time.perf_counter() - started
            _expect(batch.status().counts.succeeded == n, "not every no-op item succeeded")
        finally:
            yard.close()
    return n / seconds


# -- huey, the peer -----------------------------------------------------------------------


def bench_huey(report: Report, args: argparse.Namespace) -> None:
    """Huey's SqliteHuey: 10,000 no-op jobs enqueued, then consumed by its consumer."""
    try:
        import huey  # noqa: F401
    except ImportError:
        print(
            "huey is not installed: run `.venv/bin/pip install huey` (or `make bench`) "
            "to compare with it",
            file=sys.stderr,
        )
        report.info("huey (SqliteHuey)", "skipped", "pip install huey")
        return
    results = {}
    for worker_type, workers in HUEY_SETTINGS:
        results[worker_type, workers] = huey_trial(N_HUEY, worker_type, workers)
        enqueue, consume = results[worker_type, workers]
        say(f"huey, {workers} {worker_type} worker(s): {enqueue:,.0f}/s in, {consume:,.0f}/s run")
    best = max(results, key=lambda setting: results[setting][1])
    enqueue, consume = results[best]
    report.figures["huey"] = consume
    setting = f"{best[1]} {best[0]} worker(s)"
    report.info(f"huey enqueue {N_HUEY:,} jobs", _fmt(enqueue, "/s"), "(peer)")
    report.info(f"huey end-to-end no-op {N_HUEY:,} ({setting})", _fmt(consume, "/s"), "(peer)")


def huey_trial(n: int, worker_type: str, workers: int) -> tuple[float, float]:
    """Enqueue ``n`` jobs here, consume them in a child process; both rates in jobs/s."""
    with scratch() as tmp:
        path = tmp / "huey.db"
        queue, job = make_huey(path)
        started = time.perf_counter()
        for i in range(n):
            job(i)
        enqueue_rate = n / (time.perf_counter() - started)
        queue.storage.close()
        child = _child("huey-consumer", str(path), str(n), worker_type, str(workers))
        return enqueue_rate, n / child["seconds"]


def make_huey(path: Path) -> tuple[Any, Any]:
    """A SqliteHuey on ``path`` and its no-op task (calling the task enqueues a job)."""
    from huey import SqliteHuey

    queue = SqliteHuey("bench", filename=str(path))
    return queue, queue.task(name="noop")(huey_noop)


def huey_noop(i: int) -> int:
    return i  # a result, so "all results stored" marks the end


def huey_consumer_child(path: str, n: str, worker_type: str, workers: str) -> dict[str, float]:
    """In the child: run a Huey consumer from a standing start until every result is in."""
    queue, _ = make_huey(Path(path))
    consumer = queue.create_consumer(
        workers=int(workers), worker_type=worker_type, periodic=False, check_worker_health=False
    )
    started = time.perf_counter()
    consumer.start()
    while queue.result_count() < int(n):
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    consumer.stop(graceful=True)
    return {"seconds": seconds}


# -- sleep overhead -----------------------------------------------------------------------


def bench_sleep(report: Report, args: argparse.Namespace) -> None:
    """2,000 items of ``asyncio.sleep(0.05)`` at concurrency 100: ideal 1.0 s. Twice: a
    worker that runs 100 at once (it may prefetch the next wave), and a batch capped at 100
    across all workers (each wave must be recorded before the next can be claimed)."""
    ideal = N_SLEEP / SLEEP_CONCURRENCY * SLEEP
    for label, cap in (("worker concurrency", None), ("batch capped at", SLEEP_CONCURRENCY)):
        with scratch() as tmp:
            yard = open_yard(tmp / "sleep.db")
            try:
                batch = yard.submit(
                    "bench.nap", (make_item(i) for i in range(N_SLEEP)), concurrency=cap
                )
                started = time.perf_counter()
                yard.run_until_idle(concurrency=SLEEP_CONCURRENCY)
                seconds = time.perf_counter() - started
                done = batch.status().counts.succeeded == N_SLEEP
                _expect(done, "not every sleep item succeeded")
            finally:
                yard.close()
        report.versus_ideal(
            f"sleep {SLEEP}s x {N_SLEEP:,}, {label} {SLEEP_CONCURRENCY}: wall time",
            seconds,
            ideal,
            TARGET_SLEEP_RATIO,
        )


# -- the million-item batch ---------------------------------------------------------------


def bench_million(report: Report, args: argparse.Namespace) -> None:
    """Submit a big batch, process it in a worker subprocess (its peak RSS), and time
    ``batch.status()`` while it runs and once it is done."""
    n = N_MILLION_QUICK if args.quick else N_MILLION
    with scratch() as tmp:
        path = tmp / "million.db"
        yard = open_yard(path)
        try:
            started = time.perf_counter()
            batch = yard.submit("bench.noop", (make_item(i) for i in range(n)))
            submit_rate = n / (time.perf_counter() - started)
            say(f"{n:,} items submitted at {submit_rate:,.0f}/s; running the worker")
            busy_reads, child = _status_reads_during(batch.status, lambda: _child("worker", path))
            idle_reads = _time_calls(batch.status, STATUS_READS)
            _expect(batch.status().counts.succeeded == n, "not every item of the batch succeeded")
        finally:
            yard.close()
    size = f"{n:,}"
    report.at_least(f"submit {size} items (streamed)", submit_rate, "/s", TARGET_SUBMIT)
    report.info(
        f"  process {size} (1 worker subprocess, concurrency={MILLION_CONCURRENCY})",
        _fmt(n / child["seconds"], "/s"),
    )
    report.at_most(f"worker peak RSS, {size}-item batch", child["maxrss_mb"], "MB", TARGET_RSS_MB)
    report.at_most(
        f"batch.status(), {size} items, median of {len(idle_reads)}",
        statistics.median(idle_reads) * 1000,
        "ms",
        TARGET_STATUS_MS,
    )
    if busy_reads:
        report.at_most(
            f"  same, while the worker runs (median of {len(busy_reads)})",
            statistics.median(busy_reads) * 1000,
            "ms",
            TARGET_STATUS_MS,
        )


def _status_reads_during(
    read: Callable[[], object], work: Callable[[], dict[str, float]]
) -> tuple[list[float], dict[str, float]]:
    """Run ``work`` on a thread and time ``read`` every 10 ms (up to 200 times) meanwhile."""
    out: list[dict[str, float]] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    times: list[float] = []
    time.sleep(0.5)  # let the worker start up and begin writing
    while thread.is_alive() and len(times) < STATUS_READS:
        times.extend(_time_calls(read, 1))
        time.sleep(0.01)
    thread.join()
    _expect(bool(out), "the worker subprocess failed")
    return times, out[0]


def _time_calls(call: Callable[[], object], times: int) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


def worker_child(path: str) -> dict[str, float]:
    """In the child: one worker until idle; its wall time and peak RSS."""
    yard = open_yard(Path(path))
    try:
        started = time.perf_counter()
        yard.run_until_idle(concurrency=MILLION_CONCURRENCY)
        seconds = time.perf_counter() - started
    finally:
        yard.close()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # NOTE: ru_maxrss is in KiB on Linux and in bytes on macOS.
    maxrss_mb = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10
    return {"seconds": seconds, "maxrss_mb": maxrss_mb}


# -- plumbing -----------------------------------------------------------------------------


def _child(role: str, *argv: object) -> dict[str, float]:
    """Run this script as a child in ``role``; it prints one JSON line as its last line."""
    cmd = [sys.executable, str(HERE), "--child", role, *map(str, argv)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {role} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


CHILDREN: dict[str, Callable[..., dict[str, float]]] = {
    "worker": worker_child,
    "huey-consumer": huey_consumer_child,
}


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


SECTIONS: dict[str, Callable[[Report, argparse.Namespace], None]] = {
    "submit": bench_submit,
    "noop": bench_noop,
    "huey": bench_huey,
    "sleep": bench_sleep,
    "million": bench_million,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the big batch at 100,000 items")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="a section")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, *rest = args.child
        print(json.dumps(CHILDREN[role](*rest)))
        return 0
    report = Report()
    for name, section in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        section(report, args)
        if name == "huey" and "noop" in report.figures and "huey" in report.figures:
            ratio = report.figures["noop"] / report.figures["huey"]
            report.rows.append(
                Row(
                    "end-to-end no-op: batchyard / huey",
                    _fmt(report.figures["noop"], "/s"),
                    f"huey {_fmt(report.figures['huey'], '/s')}",
                    f"{ratio:.2f}x",
                )
            )
    print(f"\nbatchyard core benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
