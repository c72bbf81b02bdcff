"""The floor: a bare prototype of what batchyard must do for a batch of no-op items, and
nothing else. It is the speed limit the core benchmark holds batchyard to (bench/core.py).

One SQLite file in WAL mode with ``synchronous = NORMAL`` (batchyard's default) and an items
table with batchyard's essential columns. The items go in with one INSERT from a JSON array
(``json_each``). Then one asyncio loop claims up to 512 pending items per ``UPDATE ...
RETURNING`` inside ``BEGIN IMMEDIATE``, runs a no-op coroutine per item (all of a round at
once, as tasks, so slow ones would overlap), and records the round's outcomes with one
``executemany`` in the transaction that also claims the next chunk, then commits: what a
durable queue has to do at least, with every outcome fenced by its attempt.

Run by bench/core.py in a fresh process::

    .venv/bin/python bench/floor.py DB ITEMS.json    # prints {"seconds": ...} on stdout

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


async def noop(item: dict[str, Any]) -> None:
    return None


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # transactions are spelled out
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)
    return conn


def submit(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> int:
    """All items in one transaction, one statement."""
    conn.execute("BEGIN IMMEDIATE")
    done = conn.execute(
        "INSERT INTO items (state, payload) SELECT 'pending', value FROM json_each(?)",
        (orjson.dumps(items).decode(),),
    )
    conn.execute("COMMIT")
    return done.rowcount


def claim(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
    return conn.execute(CLAIM, (time.time() + LEASE, WORKER, CHUNK)).fetchall()


async def drain(conn: sqlite3.Connection) -> int:
    """Run every pending item; returns how many succeeded."""
    conn.execute("BEGIN IMMEDIATE")
    claimed = claim(conn)
    conn.execute("COMMIT")
    done = 0
    while claimed:
        results = await asyncio.gather(*(noop(orjson.loads(p)) for _, p, _ in claimed))
        outcomes = [
            (orjson.dumps(result).decode(), item_id, attempt)
            for (item_id, _, attempt), result in zip(claimed, results, strict=True)
        ]
        conn.execute("BEGIN IMMEDIATE")
        done += conn.executemany(RECORD, outcomes).rowcount
        claimed = claim(conn)
        conn.execute("COMMIT")
    return done


def run(path: Path, items: list[dict[str, Any]]) -> float:
    """Submit ``items`` and drain them; the wall-clock seconds from submit to drained."""
    conn = connect(path)
    try:
        started = time.perf_counter()
        submitted = submit(conn, items)
        done = asyncio.run(drain(conn))
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if submitted != len(items) or done != len(items):
        raise RuntimeError(f"floor: {submitted} submitted, {done} done of {len(items)}")
    return seconds


def main(argv: list[str]) -> int:
    db, items_file = argv
    items = json.loads(Path(items_file).read_text())
    print(json.dumps({"seconds": run(Path(db), items)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
