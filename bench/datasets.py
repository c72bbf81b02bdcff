"""The datasets benchmark (issue 12): a 100,000-row dataset of sales leads on SQLite and on
PostgreSQL, its filtered pages beside the 300 ms target, and batches made from it beside a
batch submitted from a file of the same rows.

Run it by hand, not in the test suite::

    .venv/bin/python bench/datasets.py                  # both stores
    .venv/bin/python bench/datasets.py --only sqlite    # one store (sqlite or postgres)
    .venv/bin/python bench/datasets.py --rows 20000 --repeat 3

PostgreSQL comes from $BATCHYARD_BENCH_PG or postgresql://postgres@127.0.0.1:5432/postgres;
each run gets a fresh database, dropped after. Figures, per store:

``load``          ``yard.datasets.add`` of the rows from a JSONL file (information).
``first page``    a filtered first page of 50 rows, sorted, with its match count
                  (``industry=SaaS``, ``employees>=100``, ``name~acme``, ``--sort
                  employees:desc``): the median of ``--repeat`` reads. Target: 300 ms.
``plain page``    the first 50 rows of ``industry=SaaS`` in dataset order, with the count.
``next page``     the page after the sorted first page (its cursor).
``from dataset``  a batch of every row (``employees>=0`` matches all), copied inside the
                  store: rows per second, beside a batch submitted from the JSONL file of
                  the same rows (the baseline; target: at least its rate).
``count``         a generation batch of as many items (``submit(count=N)``) (information).

The machine's load moves every figure: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchyard import Yard
from batchyard.inputs import open_input
from bench.table import Row, Table, mark, per_second

SERVER = os.environ.get("BATCHYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_MS = 300.0
INDUSTRIES = ("SaaS", "Retail", "Health", "Finance", "Energy", "Logistics")
WHERE = ["industry=SaaS", "employees>=100", "name~acme"]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def leads(n: int) -> Iterator[dict[str, Any]]:
    pick = random.Random(12)
    for i in range(n):
        yield {
            "id": f"lead-{i:06d}",
            "name": f"{pick.choice(['Acme', 'Globex', 'Initech', 'Umbrella'])} {i}",
            "industry": pick.choice(INDUSTRIES),
            "employees": pick.randint(1, 5000),
            "country": pick.choice(["US", "DE", "FR", "JP", "BR"]),
            "score": round(pick.random(), 3),
            "notes": "met at the fair; wants a demo of the reporting module",
        }


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextmanager
def postgres_url() -> Iterator[str]:
    import psycopg

    name = f"batchyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(SERVER)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    run()  # warm: the first read after a load also pays for the cache
    return statistics.median(timed(run) for _ in range(repeat)) * 1000


def bench_store(kind: str, url: str, path: Path, args: argparse.Namespace, table: Table) -> None:
    n = args.rows
    with Yard(url) as yard:
        say(f"{kind}: loading {n:,} rows")
        with open_input(str(path)) as rows:
            seconds = timed(lambda: yard.datasets.add("leads", rows))
        table.info(f"{kind}: load {n:,} rows", per_second(n / seconds), f"{seconds:.2f} s")
        for figure, where, sort in (
            ("first page (sorted)", WHERE, "employees:desc"),
            ("plain page", ["industry=SaaS"], None),
        ):
            page_ms = median_ms(partial(yard.datasets.rows, "leads", where, sort=sort), args.repeat)
            count = yard.datasets.rows("leads", where, sort=sort).count
            table.rows.append(
                Row(
                    f"{kind}: {figure}, 50 of {count:,}",
                    f"{page_ms:.0f} ms",
                    f"<= {TARGET_MS:.0f} ms",
                    f"{page_ms / TARGET_MS:.2f}x {mark(page_ms <= TARGET_MS)}",
                )
            )
        first = yard.datasets.rows("leads", WHERE, sort="employees:desc")
        next_ms = median_ms(
            lambda: yard.datasets.rows("leads", WHERE, sort="employees:desc", cursor=first.next),
            args.repeat,
        )
        table.info(f"{kind}: next page (cursor)", f"{next_ms:.0f} ms", f"<= {TARGET_MS:.0f} ms")
        bench_batches(kind, yard, path, n, table)


def bench_batches(kind: str, yard: Yard, path: Path, n: int, table: Table) -> None:
    say(f"{kind}: batches of {n:,}")
    with open_input(str(path)) as rows:
        from_file = timed(lambda: yard.submit("json:dumps", rows))
    from_dataset = timed(
        lambda: yard.datasets.submit("json:dumps", "leads", where=["employees>=0"])
    )
    counted = timed(lambda: yard.submit("json:dumps", count=n))
    file_rate, dataset_rate = n / from_file, n / from_dataset
    table.rows.append(Row(f"{kind}: batch from a file", per_second(file_rate), "baseline"))
    table.rows.append(
        Row(
            f"{kind}: batch from the dataset",
            per_second(dataset_rate),
            ">= the file's rate",
            f"{dataset_rate / file_rate:.2f}x {mark(dataset_rate >= file_rate)}",
        )
    )
    table.info(f"{kind}: batch of --count {n:,}", per_second(n / counted))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", action="append", choices=("sqlite", "postgres"))
    args = parser.parse_args(argv)
    table = Table()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leads.jsonl"
        with path.open("w") as file:
            for row in leads(args.rows):
                file.write(json.dumps(row) + "\n")
        for kind, opener in (("sqlite", sqlite_url), ("postgres", postgres_url)):
            if args.only and kind not in args.only:
                continue
            with opener() as url:
                bench_store(kind, url, path, args, table)
    say(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
