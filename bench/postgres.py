"""The PostgreSQL benchmark: end-to-end no-op throughput with 1, 2 and 4 worker processes on
one database, beside the same run on SQLite and beside procrastinate, in one run.

Run it by hand, not in the test suite::

    .venv/bin/pip install procrastinate         # the peer; for the benchmark only
    .venv/bin/python bench/postgres.py          # PostgreSQL from $BATCHYARD_BENCH_PG or
                                                # postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/postgres.py --items 20000 --processes 1,2,4,8

How a figure is taken: the worker processes start and open the store first (each creates a
ready file), then one batch of N no-op items is submitted, and the rate is N over the time
from the batch's first claim to its end, as the store recorded them. Process start-up and
submission are outside it. Each run gets a fresh database (or SQLite file), removed after.
procrastinate gets the same N no-op jobs deferred in bulk, then ``run_worker(wait=False)``
with its default concurrency and with concurrency 50; its rate is N over the worker's run.
Without procrastinate installed its rows are skipped with that hint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from batchyard import Yard

SERVER = os.environ.get("BATCHYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
N_ITEMS = 20_000
N_PROCRASTINATE = 3_000
PROCESSES = (1, 2, 4)
CONCURRENCY = 256
TARGET_ONE = 5_000.0  # items/s with one worker process
HERE = Path(__file__).resolve()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def noop(item: dict[str, Any]) -> None:
    return None


def url_of(database: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path=f"/{database}"))


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"batchyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- batchyard ------------------------------------------------------------------------------


def worker_main(url: str, ready: str, concurrency: int) -> None:
    """A worker subprocess: works on ``bench.noop`` until SIGTERM."""
    with Yard(url) as yard:
        yard.task(name="bench.noop")(noop)
        Path(ready).touch()
        yard.work(concurrency=concurrency, tasks=("bench.noop",), poll_interval=0.05)


def batchyard_rate(url: str, processes: int, n: int, concurrency: int) -> float:
    with Yard(url) as yard, tempfile.TemporaryDirectory() as tmp:
        yard.task(name="bench.noop")(noop)
        ready = [Path(tmp) / f"ready{i}" for i in range(processes)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE), "--worker", url, str(path), str(concurrency)],
                stdout=subprocess.DEVNULL,
            )
            for path in ready
        ]
        try:
            deadline = time.monotonic() + 60
            while not all(path.exists() for path in ready):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker process failed to start")
                time.sleep(0.02)
            batch = yard.submit("bench.noop", ({"id": i} for i in range(n)))
            status = batch.wait(timeout=600, poll=0.05)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
        if status.started_at is None or status.finished_at is None:
            raise RuntimeError(f"the batch did not finish: {status}")
        return n / (status.finished_at - status.started_at)


# -- procrastinate ----------------------------------------------------------------------------


async def procrastinate_noop() -> None:
    return None


def procrastinate_rate(url: str, n: int, concurrency: int | None) -> float:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    # Called, not used as a decorator: without procrastinate installed mypy sees Any here.
    job = app.task(name="noop", queue="bench")(procrastinate_noop)

    async def run() -> float:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for start in range(0, n, 1000):
                await job.batch_defer_async(*[{} for _ in range(min(1000, n - start))])
            began = time.perf_counter()
            options: dict[str, Any] = {"queues": ["bench"], "wait": False}
            if concurrency is not None:
                options["concurrency"] = concurrency
            await app.run_worker_async(**options)
            return n / (time.perf_counter() - began)

    return asyncio.run(run())


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=N_ITEMS)
    parser.add_argument("--procrastinate-items", type=int, default=N_PROCRASTINATE)
    parser.add_argument("--processes", default=",".join(map(str, PROCESSES)))
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []
    n, conc = args.items, args.concurrency

    with tempfile.TemporaryDirectory() as tmp:
        rate = batchyard_rate(f"sqlite:///{tmp}/bench.db", 1, n, conc)
    say(f"sqlite, 1 worker process: {rate:,.0f} items/s")
    rows.append((f"batchyard on SQLite, 1 worker process ({n:,} no-ops)", rate))

    for processes in (int(p) for p in args.processes.split(",")):
        with fresh_database() as url:
            rate = batchyard_rate(url, processes, n, conc)
        say(f"postgres, {processes} worker process(es): {rate:,.0f} items/s")
        rows.append((f"batchyard on PostgreSQL, {processes} worker process(es) ({n:,})", rate))

    try:
        import procrastinate  # noqa: F401
    except ImportError:
        say("procrastinate is not installed: .venv/bin/pip install procrastinate")
    else:
        m = args.procrastinate_items
        for concurrency in (None, 50):
            with fresh_database() as url:
                rate = procrastinate_rate(url, m, concurrency)
            label = "default concurrency" if concurrency is None else f"concurrency {concurrency}"
            say(f"procrastinate, {label}: {rate:,.0f} jobs/s")
            rows.append((f"procrastinate on PostgreSQL, 1 worker, {label} ({m:,})", rate))

    width = max(len(label) for label, _ in rows)
    print(f"{'run':<{width}}  items/s")
    for label, rate in rows:
        print(f"{label:<{width}}  {rate:>9,.0f}")
    one = next(rate for label, rate in rows if "PostgreSQL, 1 worker process" in label)
    verdict = "meets" if one >= TARGET_ONE else "MISSES"
    print(f"target: >= {TARGET_ONE:,.0f} items/s with one PostgreSQL worker process: {verdict}")


if __name__ == "__main__":
    main()
