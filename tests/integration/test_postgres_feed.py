"""The PostgreSQL change feed without a common lock: writers commit in any order, and a
reader following the feed sees every change exactly once, in cursor order, never skipping
one that commits late; writers of different batches do not wait for each other; a
transaction in another database of the server does not hold the feed back."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator

import pytest

from batchyard.models import BatchOptions, Event
from batchyard.store.base import NewItem
from tests.procs.pgdb import url_of

psycopg = pytest.importorskip("psycopg")
from batchyard.store.postgres import PostgresStore  # noqa: E402

T0 = 1_700_000_000.0
WAIT = 30.0  # seconds a step may take before the test fails instead of hanging


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_url, pool_size=8)
    try:
        yield opened
    finally:
        opened.close()


def write_event(store: PostgresStore, kind: str) -> None:
    with store._write() as tx:
        tx.event(None, kind, {}, T0)


class HeldOpen:
    """A write transaction in a thread of its own that has taken its cursor and waits to
    be told to commit."""

    def __init__(self, store: PostgresStore, kind: str) -> None:
        self.ready = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(store, kind))
        self.thread.start()
        assert self.ready.wait(WAIT)

    def _run(self, store: PostgresStore, kind: str) -> None:
        with store._write() as tx:
            tx.event(None, kind, {}, T0)
            self.ready.set()
            self.go.wait(WAIT)

    def commit(self) -> None:
        self.go.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events if e.kind.startswith("test.")]


def test_a_late_commit_is_read_in_its_turn_never_skipped(store: PostgresStore) -> None:
    start = store.cursor()
    early = HeldOpen(store, "test.early")  # takes the lower cursor, commits last
    write_event(store, "test.late")
    # The later transaction has committed, but a reader must not pass the earlier one.
    assert kinds(store.events(since=start)) == []
    assert store.cursor() == start
    early.commit()
    seen = store.events(since=start)
    assert kinds(seen) == ["test.early", "test.late"]
    assert seen[0].seq < seen[1].seq
    assert store.cursor() == seen[1].seq


def test_writers_in_any_order_each_change_is_read_exactly_once(store: PostgresStore) -> None:
    writers, per_writer = 6, 25
    start = store.cursor()
    rng = random.Random(7)
    pauses = [[rng.random() * 0.004 for _ in range(per_writer)] for _ in range(writers)]

    def write(n: int) -> None:
        for m, pause in enumerate(pauses[n]):
            with store._write() as tx:
                tx.event(None, f"test.{n}.{m}", {}, T0)
                time.sleep(pause)  # the workload: commits land out of cursor order

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[Event] = []
    cursor = start
    deadline = time.monotonic() + WAIT
    while len(seen) < writers * per_writer and time.monotonic() < deadline:
        page = store.events(since=cursor, limit=7)
        if page:
            seen.extend(page)
            cursor = page[-1].seq
    for thread in threads:
        thread.join(WAIT)
    seen.extend(store.events(since=cursor, limit=100_000))
    names = kinds(seen)
    assert sorted(names) == sorted(
        f"test.{n}.{m}" for n in range(writers) for m in range(per_writer)
    )
    assert len(set(names)) == len(names)  # exactly once
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)  # in cursor order


def test_writers_of_different_batches_do_not_wait_for_each_other(store: PostgresStore) -> None:
    options = BatchOptions(task="t")
    for batch_id in ("b1", "b2"):
        store.create_batch(batch_id, options, [[NewItem("1", 1, json.dumps({}))]], T0)
    pk1 = store._pk("b1")
    holding = threading.Event()
    release = threading.Event()

    def hold_b1() -> None:
        with store._write() as tx:
            tx.lock_batches([pk1])
            tx.event("b1", "test.holding", {}, T0)
            holding.set()
            release.wait(WAIT)

    holder = threading.Thread(target=hold_b1)
    holder.start()
    assert holding.wait(WAIT)
    try:
        # A claim on b2 goes through while b1's writer is still open (it used to queue
        # behind one lock every writer took); b1 is passed over, not waited for.
        claims = store.claim("w", {"t": 10}, 10, T0 + 1, 30.0, only=["b1", "b2"])
        assert [c.batch.id for c in claims] == ["b2"]
        store.pause("b2", T0 + 2)
    finally:
        release.set()
        holder.join(WAIT)
    assert [c.batch.id for c in store.claim("w", {"t": 10}, 10, T0 + 3, 30.0)] == ["b1"]


def test_a_transaction_in_another_database_does_not_hold_the_feed_back(
    store: PostgresStore,
) -> None:
    with psycopg.connect(url_of("postgres"), autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_current_xact_id()")  # holds a transaction id, open
        try:
            start = store.cursor()
            write_event(store, "test.after")
            assert kinds(store.events(since=start)) == ["test.after"]
            assert store.cursor() > start
        finally:
            other.execute("ROLLBACK")
