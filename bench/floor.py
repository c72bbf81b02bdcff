"""The floor: a bare prototype of what batchyard must do for a batch of no-op items, and
nothing else. It is the speed limit the core benchmark holds batchyard to (bench/core.py).

One SQLite file in WAL mode with ``synchronous = NORMAL`` (batchyard's default) and an items
table with batchyard's essential columns. The items go in with one INSERT from a JSON array
(``json_each``). Then one asyncio loop claims up to 512 pending items per ``UPDATE ...
RETURNING`` inside ``BEGIN IMMEDIATE``, runs a no-op coroutine per item (all of a round at
once, as tasks, so slow ones would overlap), and records the round's outcomes with one
``executemany`` in the transaction that also claims the next chunk, then commits: what a
durable queue has to do at least, with every outcome fenced by its attempt.

``--guarded`` adds, still in one thread, what batchyard's guarantees cost at least (the
guarded floor): items keyed and unique per batch (an index), a lease-expiry index to find
the items of a dead worker, the change feed (a cursor bumped once per transaction, every
changed item stamped with it, an index over the stamps) and batch counters moved once per
transaction. It is what an implementation that keeps those promises cannot undercut; the
columns and rules batchyard keeps beyond them (usage, progress, attempts' logs, retries,
limits, callbacks) are not in it.

Run by bench/core.py in a fresh process::

    .venv/bin/python bench/floor.py DB ITEMS.json    # prints {"seconds": ...} on stdout
    .venv/bin/python bench/floor.py DB ITEMS.json --guarded

ITEMS.json holds the items as a JSON array (read before the clock starts); the time is wall
clock from before the submission to the last commit.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson

CHUNK = 512
LEASE = 30.0
WORKER = "floor"

SCHEMA = """
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    lease_expires REAL,
    worker TEXT
);
CREATE INDEX items_pending ON items (id) WHERE state = 'pending';
"""

CLAIM = """
UPDATE items SET state = 'running', attempts = attempts + 1, lease_expires = ?, worker = ?
WHERE id IN (SELECT id FROM items WHERE state = 'pending' ORDER BY id LIMIT ?)
RETURNING id, payload, attempts
"""

RECORD = """
UPDATE items SET state = 'succeeded', result = ?, lease_expires = NULL, worker = NULL
WHERE id = ? AND state = 'running' AND attempts = ?
"""

GUARDED_SCHEMA = """
CREATE TABLE feed (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT INTO feed (id, seq) VALUES (1, 0);
CREATE TABLE batches (
    pk INTEGER PRIMARY KEY,
    n_pending INTEGER NOT NULL,
    n_running INTEGER NOT NULL,
    n_succeeded INTEGER NOT NULL
);
INSERT INTO batches VALUES (1, 0, 0, 0);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    batch_pk INTEGER NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    lease_expires REAL,
    worker TEXT,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX items_key ON items (batch_pk, key);
CREATE INDEX items_pending ON items (id) WHERE state = 'pending';
CREATE INDEX items_running ON items (batch_pk, lease_expires) WHERE state = 'running';
CREATE INDEX items_seq ON items (batch_pk, seq) WHERE seq > 0;
"""

GUARDED_CLAIM = """
UPDATE items SET state = 'running', attempts = attempts + 1, lease_expires = ?, worker = ?,
    seq = ?
WHERE id IN (SELECT id FROM items WHERE state = 'pending' ORDER BY id LIMIT ?)
RETURNING id, payload, attempts
"""

GUARDED_RECORD = """
UPDATE items SET state = 'succeeded', result = ?, lease_expires = NULL, worker = NULL, seq = ?
WHERE id = ? AND state = 'running' AND attempts = ?
"""

COUNT = """
UPDATE batches SET n_pending = n_pending + ?, n_running = n_running + ?,
    n_succeeded = n_succeeded + ?
WHERE pk = 1
"""


async def noop(item: dict[str, Any]) -> None:
    return None


def connect(path: Path, *, guarded: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # transactions are spelled out
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(GUARDED_SCHEMA if guarded else SCHEMA)
    return conn


class Floor:
    """One run's statements: bare, or with the guarantees (see the module's docstring)."""

    def __init__(self, conn: sqlite3.Connection, *, guarded: bool) -> None:
        self.conn = conn
        self.guarded = guarded

    def submit(self, items: list[dict[str, Any]]) -> int:
        """All items in one transaction, one statement."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        if self.guarded:  # keyed by position, as batchyard does without a key field
            done = conn.execute(
                "INSERT INTO items (id, batch_pk, key, state, payload) "
                "SELECT key + 1, 1, key + 1, 'pending', value FROM json_each(?)",
                (orjson.dumps(items).decode(),),
            )
            conn.execute(COUNT, (done.rowcount, 0, 0))
        else:
            done = conn.execute(
                "INSERT INTO items (state, payload) SELECT 'pending', value FROM json_each(?)",
                (orjson.dumps(items).decode(),),
            )
        conn.execute("COMMIT")
        return done.rowcount

    def begin(self) -> int | None:
        """Open a write transaction; with guarantees, its feed cursor."""
        self.conn.execute("BEGIN IMMEDIATE")
        if not self.guarded:
            return None
        return int(self.conn.execute("UPDATE feed SET seq = seq + 1 RETURNING seq").fetchone()[0])

    def claim(self, seq: int | None) -> list[tuple[int, str, int]]:
        lease = (time.time() + LEASE, WORKER)
        if not self.guarded:
            return self.conn.execute(CLAIM, (*lease, CHUNK)).fetchall()
        claimed = self.conn.execute(GUARDED_CLAIM, (*lease, seq, CHUNK)).fetchall()
        self.conn.execute(COUNT, (-len(claimed), len(claimed), 0))
        return claimed

    def record(self, seq: int | None, outcomes: list[tuple[str, int, int]]) -> int:
        if not self.guarded:
            return self.conn.executemany(RECORD, outcomes).rowcount
        rows = [(result, seq, item_id, attempt) for result, item_id, attempt in outcomes]
        done = self.conn.executemany(GUARDED_RECORD, rows).rowcount
        self.conn.execute(COUNT, (0, -done, done))
        return done

    async def drain(self) -> int:
        """Run every pending item; returns how many succeeded."""
        seq = self.begin()
        claimed = self.claim(seq)
        self.conn.execute("COMMIT")
        done = 0
        while claimed:
            results = await asyncio.gather(*(noop(orjson.loads(p)) for _, p, _ in claimed))
            outcomes = [
                (orjson.dumps(result).decode(), item_id, attempt)
                for (item_id, _, attempt), result in zip(claimed, results, strict=True)
            ]
            seq = self.begin()
            done += self.record(seq, outcomes)
            claimed = self.claim(seq)
            self.conn.execute("COMMIT")
        return done


def run(path: Path, items: list[dict[str, Any]], *, guarded: bool = False) -> float:
    """Submit ``items`` and drain them; the wall-clock seconds from submit to drained."""
    conn = connect(path, guarded=guarded)
    floor = Floor(conn, guarded=guarded)
    try:
        started = time.perf_counter()
        submitted = floor.submit(items)
        done = asyncio.run(floor.drain())
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if submitted != len(items) or done != len(items):
        raise RuntimeError(f"floor: {submitted} submitted, {done} done of {len(items)}")
    return seconds


def main(argv: list[str]) -> int:
    db, items_file, *flags = argv
    items = json.loads(Path(items_file).read_text())
    print(json.dumps({"seconds": run(Path(db), items, guarded="--guarded" in flags)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
