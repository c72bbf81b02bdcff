"""Schema migrations: a database made by the first schema version upgrades in place, keeps its
data, and ends with the same schema as a fresh one; a newer database is refused."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchyard.errors import SchemaTooNew
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Outcome
from batchyard.store.rows import migrations
from batchyard.store.sqlite import SqliteStore

T0 = 1_700_000_000.0


def item_id(batch_pk: int, position: int) -> int:
    """The rowid the SQLite store gives an item: its batch's pk in the high 32 bits, its
    position in the low ones (see SqliteStore._insert_items)."""
    return (batch_pk << 32) | position


def make_v1_database(path: Path) -> None:
    """What batchyard's first schema version left on disk: migration 1 only, recorded the
    way SqliteStore._migrate records it, with a batch of three items (one finished)."""
    first = migrations("sqlite")[0]
    assert first.version == 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in first.statements():
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) "
            "VALUES (?, ?, julianday('now'))",
            (first.version, first.name),
        )
        conn.execute("UPDATE feed SET seq = 2")
        conn.execute(
            "INSERT INTO batches (pk, id, name, task, state, sealed, max_attempts, "
            "n_pending, n_succeeded, created_at, started_at, updated_at) "
            "VALUES (1, 'batch_old', 'old', 't', 'processing', 1, 2, 2, 1, ?, ?, ?)",
            (T0, T0, T0),
        )
        for position in (1, 2, 3):
            done = position == 1
            conn.execute(
                "INSERT INTO items (id, batch_pk, key, position, state, payload, result, "
                "attempts, max_attempt, finished_at, seq) VALUES (?, 1, ?, ?, ?, ?, ?, ?, 2, ?, ?)",
                (
                    item_id(1, position),
                    f"k{position}",
                    position,
                    "succeeded" if done else "pending",
                    json.dumps({"n": position}),
                    json.dumps({"ok": position}) if done else None,
                    1 if done else 0,
                    T0 if done else None,
                    2 if done else 1,
                ),
            )
        conn.execute(
            "INSERT INTO events (seq, batch_id, kind, data, at) VALUES "
            "(1, 'batch_old', 'batch.state', ?, ?)",
            (json.dumps({"from": None, "to": "queued"}), T0),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def schema(path: Path) -> dict[str, Any]:
    """Tables, columns, indexes and their SQL as SQLite reports them."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        tables = [name for kind, name, _, _ in objects if kind == "table"]
        columns = {t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in tables}
        indexes = {
            t: sorted(row[1:] for row in conn.execute(f"PRAGMA index_list({t})")) for t in tables
        }
        index_columns = {
            name: conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
            for kind, name, _, _ in objects
            if kind == "index"
        }
        return {
            "objects": objects,
            "columns": columns,
            "indexes": indexes,
            "index_columns": index_columns,
        }
    finally:
        conn.close()


def versions(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    finally:
        conn.close()


def test_a_first_version_database_is_upgraded_and_keeps_working(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    make_v1_database(old)

    store = SqliteStore(old)
    try:
        assert store.schema_version() == len(migrations("sqlite"))
        status = store.get_batch("batch_old")
        assert status.state is BatchState.PROCESSING
        assert (status.counts.pending, status.counts.succeeded) == (2, 1)
        assert store.recount("batch_old") == status.counts
        assert store.item("batch_old", "k1").result == {"ok": 1}
        assert store.cursor() == 2
        assert [e.data["to"] for e in store.events("batch_old")] == ["queued"]

        first, second = store.claim("w", {"t": 5}, 5, T0 + 10, 30.0)
        assert [c.key for c in (first, second)] == ["k2", "k3"]
        done = store.record(
            [
                Outcome(first.item_id, first.batch.pk, "k2", 1, ItemState.SUCCEEDED, T0, T0 + 11),
                Outcome(
                    second.item_id,
                    second.batch.pk,
                    "k3",
                    1,
                    ItemState.FAILED,
                    T0,
                    T0 + 11,
                    error="boom",
                ),
            ],
            T0 + 11,
        )
        assert done.rejected == []
        assert done.ended == ["batch_old"]
        assert store.get_batch("batch_old").state is BatchState.PARTIALLY_COMPLETED
        # The table migration 2 added is in use.
        assert [line.message for line in store.item_logs("batch_old", "k3")] == [
            "on a worker",  # where the failed attempt ran (this outcome names no worker)
            "boom",
        ]
        assert store.cursor() > 2
    finally:
        store.close()

    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert schema(old) == schema(fresh)
    assert versions(old) == versions(fresh)
    assert [v for v, _ in versions(fresh)] == [m.version for m in migrations("sqlite")]


def test_opening_twice_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    SqliteStore(path).close()
    before = schema(path), versions(path)
    SqliteStore(path).close()
    assert (schema(path), versions(path)) == before


def test_a_database_from_a_newer_batchyard_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    known = len(migrations("sqlite"))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', 0)",
            (known + 1,),
        )
    conn.close()
    before = schema(path)
    with pytest.raises(SchemaTooNew, match=str(known + 1)):
        SqliteStore(path)
    assert schema(path) == before


def test_the_store_opens_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_an_upgraded_database_counts_its_old_attempts_as_runs(tmp_path: Path) -> None:
    """Version 6 (attempts that ran): items of an older database keep their attempts as
    runs (no lease of theirs is known to have gone unrun) and no re-run has a reason yet."""
    old = tmp_path / "old.db"
    make_v1_database(old)
    store = SqliteStore(old)
    try:
        done = store.item("batch_old", "k1")
        assert (done.attempts, done.runs) == (1, 1)
        assert store.get_batch("batch_old").reruns.total == 0
        (c, _) = store.claim("w", {"t": 5}, 5, T0 + 10, 30.0)
        store.release([(c.item_id, c.attempt)], T0 + 11)
        assert (store.item("batch_old", c.key).attempts, store.item("batch_old", c.key).runs) == (
            1,
            0,
        )
    finally:
        store.close()
