"""Connections and transactions of the SQLite store: one connection per thread, every write
in ``BEGIN IMMEDIATE`` (writers queue on SQLite's lock with a busy timeout instead of failing
half-way), the schema migrations, and the helpers a transaction uses on the batch row."""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchyard.errors import (
    BatchNotFound,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from batchyard.models import (
    JSON,
    BatchStatus,
)
from batchyard.states import BatchState, check_batch, ending_state
from batchyard.store.rows import (
    BATCH_COLUMNS,
    batch_from_row,
    migrations,
)

# The dialect-neutral rules, re-exported for this store's modules.
from batchyard.store.rules import CLAIMABLE as CLAIMABLE
from batchyard.store.rules import ENDABLE as ENDABLE
from batchyard.store.rules import MAX_POSITION as MAX_POSITION
from batchyard.store.rules import POSITION_BITS as POSITION_BITS
from batchyard.store.rules import B as B
from batchyard.store.rules import S as S
from batchyard.store.rules import span as span

LOG_INSERT = "INSERT INTO item_logs (item_id, attempt, at, kind, message) VALUES (?, ?, ?, ?, ?)"
#: UPDATE ... RETURNING arrived in SQLite 3.35 (2021).
MIN_SQLITE = (3, 35, 0)


def _nothing() -> None:
    return None


class _Owned:
    """A thread's connection; closed when its thread (and so its thread-local) goes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class Tx:
    """One write transaction: its connection, its feed cursor (taken on first use) and
    helpers for the batch row it changes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._seq: int | None = None

    @property
    def seq(self) -> int:
        if self._seq is None:
            row = self.conn.execute("UPDATE feed SET seq = seq + 1 RETURNING seq").fetchone()
            self._seq = int(row[0])
        return self._seq

    def event(self, batch_id: str | None, kind: str, data: dict[str, JSON], at: float) -> None:
        self.conn.execute(
            "INSERT INTO events (seq, batch_id, kind, data, at) VALUES (?, ?, ?, ?, ?)",
            (self.seq, batch_id, kind, json.dumps(data), at),
        )

    def batch_row(self, batch_id: str) -> tuple[Any, ...]:
        row = self.conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        if row is None:
            raise BatchNotFound(batch_id)
        return tuple(row)

    def set_state(
        self, pk: int, batch_id: str, old: BatchState, new: BatchState, now: float, **extra: Any
    ) -> None:
        check_batch(old, new)
        fields = {"state": new.value, "updated_at": now, **extra}
        if new.is_terminal:
            fields["finished_at"] = now
        sets = ", ".join(f"{name} = ?" for name in fields)
        changed = self.conn.execute(
            f"UPDATE batches SET {sets}"
            f"{', ended_round = ended_round + 1' if new.is_terminal else ''}"
            " WHERE pk = ? AND state = ?",
            (*fields.values(), pk, old.value),
        ).rowcount
        if changed != 1:
            raise StoreError(f"batch {batch_id} changed state concurrently")
        data: dict[str, JSON] = {"from": old.value, "to": new.value}
        if extra.get("pause_reason"):
            data["reason"] = extra["pause_reason"]
        self.event(batch_id, "batch.state", data, now)

    def end_if_done(self, pk: int, now: float) -> str | None:
        """End a sealed batch none of whose items is left to run; returns its id if so."""
        row = self.conn.execute(
            "SELECT id, state, sealed, n_pending + n_running + n_retry_wait, "
            "n_succeeded, n_failed, n_cancelled FROM batches WHERE pk = ?",
            (pk,),
        ).fetchone()
        if row is None or not row[2] or row[3] != 0:
            return None
        state = B(row[1])
        if state not in ENDABLE:
            return None
        if state is B.QUEUED:  # an open batch sealed before it got any item
            self.set_state(pk, row[0], state, B.PROCESSING, now, started_at=now)
            state = B.PROCESSING
        self.set_state(pk, row[0], state, ending_state(row[4], row[5], row[6]), now)
        return str(row[0])

    def move_counts(self, pk: int, deltas: Mapping[str, float], now: float) -> None:
        sets = ", ".join(f"{column} = {column} + ?" for column in deltas)
        self.conn.execute(
            f"UPDATE batches SET {sets}, updated_at = ? WHERE pk = ?",
            (*deltas.values(), now, pk),
        )


class SqliteBase:
    """What every part of the store stands on: the file, its connections, reads and writes."""

    dialect = "sqlite"

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout: float = 60.0
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        # Weak: a thread's connection lives in its thread-local and closes with the thread.
        self._conns: weakref.WeakSet[_Owned] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreUnavailable(
                f"batchyard needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python "
                f"has {sqlite3.sqlite_version}"
            )
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreUnavailable(f"cannot create {self.path}: folder {parent} does not exist")
        self._migrate(self._conn())

    def _conn(self) -> sqlite3.Connection:
        owned: _Owned | None = getattr(self._local, "conn", None)
        if owned is not None:
            return owned.conn
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA cache_size = -16000")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        owned = _Owned(conn)
        self._local.conn = owned
        with self._lock:
            self._conns.add(owned)
        return conn

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"{self.path} is locked or unreadable: {exc}") from exc
        tx = Tx(conn)
        try:
            yield tx
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"commit failed on {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        scripts = migrations("sqlite")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            version = int(current.fetchone()[0])
            if version > len(scripts):
                raise SchemaTooNew(
                    f"{self.path} has schema version {version}; this batchyard knows up to "
                    f"{len(scripts)}. Upgrade batchyard to open it."
                )
            for migration in scripts[version:]:
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) "
                    "VALUES (?, ?, julianday('now'))",
                    (migration.version, migration.name),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """SQLite has no notifications across processes: workers poll. A no-op."""
        return _nothing

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for owned in list(self._conns):
                owned.conn.close()
            self._conns.clear()
        self._local = threading.local()

    def get_batch(self, batch_id: str) -> BatchStatus:
        rows = self._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return batch_from_row(rows[0])

    def _pk(self, batch_id: str) -> int:
        rows = self._read("SELECT pk FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return int(rows[0][0])

    def _next_due(self, pk: int) -> float:
        row = (
            self._conn()
            .execute(
                "SELECT MIN(run_after) FROM items WHERE batch_pk = ? AND state = 'retry_wait'",
                (pk,),
            )
            .fetchone()
        )
        return float("inf") if row[0] is None else float(row[0])


def delete_rows(tx: Tx, pk: int) -> None:
    tx.conn.execute("DELETE FROM item_logs WHERE item_id >= ? AND item_id < ?", span(pk))
    tx.conn.execute("DELETE FROM items WHERE id >= ? AND id < ?", span(pk))
    tx.conn.execute("DELETE FROM budget_holds WHERE batch_pk = ?", (pk,))
    tx.conn.execute(
        "DELETE FROM events WHERE batch_id = (SELECT id FROM batches WHERE pk = ?)", (pk,)
    )
    tx.conn.execute("DELETE FROM batches WHERE pk = ?", (pk,))
