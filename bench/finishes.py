"""``Store.finishes`` on a 100,000-item batch, half of it finished, on SQLite and
PostgreSQL: how long one read takes (p50 / p95 of 50, after one to warm up) and the plan each
database picks for it (an index, never a scan of the batch). Run it by hand:
``.venv/bin/python bench/finishes.py [--items N]``. PostgreSQL is a throwaway database on
the test server (``tests.procs.pgdb``)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from batchyard.models import BatchOptions
from batchyard.states import ItemState
from batchyard.store.base import NewItem, Outcome, Store
from batchyard.store.reading import FIRST_LAST
from batchyard.store.rules import span, spread
from batchyard.store.sqlite import SqliteStore
from tests.procs.pgdb import Databases

T0 = 1_700_000_000.0
TARGET = 0.050  # seconds: well inside a page's 300 ms


def fill(store: Store, items: int) -> None:
    chunk = [NewItem(f"k{n}", n, json.dumps({"n": n, "pad": "x" * 200})) for n in range(items)]
    store.create_batch("big", BatchOptions(task="t", max_attempts=1), [chunk], T0)
    done = 0
    while done < items // 2:
        now = T0 + done / 100
        claims = store.claim("w", {"t": 5000}, 5000, now, 30.0)
        outcomes = [
            Outcome(
                c.item_id,
                c.batch.pk,
                c.key,
                c.attempt,
                ItemState.SUCCEEDED,
                started_at=now,
                finished_at=now + 1,
                result="{}",
            )
            for c in claims
        ]
        store.record(outcomes, now + 1)
        done += len(claims)


def timed(store: Store) -> tuple[float, float]:
    store.finishes("big")
    took = []
    for _ in range(50):
        start = time.perf_counter()
        store.finishes("big")
        took.append(time.perf_counter() - start)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1]


def plans(store: Store) -> list[str]:
    pk = int(store._read("SELECT pk FROM batches WHERE id = 'big'")[0][0])  # type: ignore[attr-defined]  # a bench looks inside
    first, last = store._read(FIRST_LAST, (*span(pk), *span(pk)))[0]  # type: ignore[attr-defined]
    member, listed = store._any("id", spread(first, last, 1000))  # type: ignore[attr-defined]
    explain = "EXPLAIN QUERY PLAN " if isinstance(store, SqliteStore) else "EXPLAIN "
    out = []
    for query, params in (
        (f"SELECT finished_at FROM items WHERE {member}", (listed,)),
        (
            "SELECT finished_at FROM items WHERE batch_pk = ? AND seq > 0 "
            "ORDER BY seq DESC LIMIT 100",
            (pk,),
        ),
        (FIRST_LAST, (*span(pk), *span(pk))),
    ):
        out += [" ".join(str(c) for c in row) for row in store._read(explain + query, params)]  # type: ignore[attr-defined]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    items = parser.parse_args().items
    with tempfile.TemporaryDirectory() as scratch:
        databases = Databases()
        try:
            from batchyard.store.postgres import PostgresStore

            for name, store in (
                ("sqlite", SqliteStore(Path(scratch) / "f.db")),
                ("postgres", PostgresStore(databases.create())),
            ):
                fill(store, items)
                p50, p95 = timed(store)
                verdict = "ok" if p95 < TARGET else "SLOW"
                print(
                    f"{name}: finishes() p50 {p50 * 1000:.1f} ms, "
                    f"p95 {p95 * 1000:.1f} ms ({verdict})"
                )
                for line in plans(store):
                    print(f"  {line[:110]}")
                store.close()
        finally:
            databases.close()


if __name__ == "__main__":
    main()
