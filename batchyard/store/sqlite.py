"""SqliteStore: the embedded store, one file in WAL mode shared by the processes of a machine.

Every write runs in ``BEGIN IMMEDIATE``, so writers queue on SQLite's lock (with a busy
timeout) instead of failing half-way. Readers never block writers under WAL. Each thread
gets its own connection; the worker does all its writes from one thread.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

from batchyard.errors import (
    BatchNotFound,
    ConfigError,
    Conflict,
    DuplicateKey,
    ItemNotFound,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from batchyard.models import (
    JSON,
    BatchOptions,
    BatchStatus,
    Counts,
    Event,
    Item,
    LogLine,
    Page,
)
from batchyard.states import BatchState, ItemState, check_batch, check_item, ending_state
from batchyard.store.base import (
    UPLOAD_LEASE,
    Chunk,
    Claim,
    ClaimedBatch,
    LeaseUpdate,
    NewItem,
    Outcome,
    Outlook,
    Recorded,
)
from batchyard.store.rows import (
    BATCH_COLUMNS,
    COUNTER_OF,
    ITEM_COLUMNS,
    batch_from_row,
    item_from_row,
    migrations,
)

B = BatchState
S = ItemState
_CLAIMABLE = "('queued', 'processing', 'retrying')"
_ENDABLE = frozenset({B.QUEUED, B.PROCESSING, B.RETRYING})
_LOG_INSERT = "INSERT INTO item_logs (item_id, attempt, at, kind, message) VALUES (?, ?, ?, ?, ?)"
# A page of the feed holds whole transactions: everything up to the cursor of the
# limit-th row, so a page never ends half-way through the rows of one cursor value.
_WHOLE_GROUPS = (
    "COALESCE((SELECT seq FROM {table} WHERE {where} ORDER BY seq LIMIT 1 OFFSET ?), "
    "9223372036854775807)"
)
#: At most this many items go in one transaction of an upload.
COMMIT_ITEMS = 50_000
#: UPDATE ... RETURNING arrived in SQLite 3.35 (2021).
MIN_SQLITE = (3, 35, 0)
_POSITION_BITS = 32
MAX_POSITION = (1 << _POSITION_BITS) - 1


def _span(pk: int) -> tuple[int, int]:
    """The rowids a batch's items may have: [low, high)."""
    return pk << _POSITION_BITS, (pk + 1) << _POSITION_BITS


class _Owned:
    """A thread's connection; closed when its thread (and so its thread-local) goes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class _Tx:
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
        self.event(batch_id, "batch.state", {"from": old.value, "to": new.value}, now)

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
        if state not in _ENDABLE:
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


class SqliteStore:
    """The embedded store. ``path`` is a file, created with its schema on first use."""

    dialect = "sqlite"

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout: float = 60.0
    ):
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

    # -- connections and transactions ------------------------------------------------

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
    def _write(self) -> Iterator[_Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"{self.path} is locked or unreadable: {exc}") from exc
        tx = _Tx(conn)
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

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for owned in list(self._conns):
                owned.conn.close()
            self._conns.clear()
        self._local = threading.local()

    # -- submitting -------------------------------------------------------------------

    def create_batch(
        self, batch_id: str, options: BatchOptions, chunks: Iterable[list[NewItem]], now: float
    ) -> BatchStatus:
        it = iter(chunks)
        first = next(it, [])
        second = next(it, None)
        if second is None:
            # Small batch: one transaction, never visible half-made.
            with self._write() as tx:
                pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now)
                self._insert_items(tx, pk, first, options.max_attempts, now)
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
                tx.end_if_done(pk, now)
            return self.get_batch(batch_id)
        with self._write() as tx:
            pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now)
        try:
            self._upload(pk, chain([first, second], it), _readiness(chunks), options, now)
            with self._write() as tx:
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
        except BaseException:
            self._discard(pk)
            raise
        return self.get_batch(batch_id)

    def _upload(
        self,
        pk: int,
        chunks: Iterator[list[NewItem]],
        ready: Callable[[], bool],
        options: BatchOptions,
        now: float,
    ) -> None:
        """Insert chunks, one transaction for as many as are ready without waiting (up to
        COMMIT_ITEMS): never hold the write lock while the source is slow."""
        for chunk in chunks:
            with self._write() as tx:
                written = 0
                while True:
                    self._insert_items(tx, pk, chunk, options.max_attempts, now)
                    written += len(chunk)
                    if written >= COMMIT_ITEMS or not ready():
                        break
                    following = next(chunks, None)
                    if following is None:
                        break
                    chunk = following
                tx.conn.execute(
                    "UPDATE batches SET upload_expires = ? WHERE pk = ?", (now + UPLOAD_LEASE, pk)
                )

    def _insert_batch(
        self, tx: _Tx, batch_id: str, options: BatchOptions, state: BatchState, now: float
    ) -> int:
        row = tx.conn.execute(
            "INSERT INTO batches (id, name, task, state, sealed, priority, concurrency, "
            "max_attempts, timeout, params, metadata, upload_expires, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk",
            (
                batch_id,
                options.name,
                options.task,
                state.value,
                int(options.sealed),
                options.priority,
                options.concurrency,
                options.max_attempts,
                options.timeout,
                json.dumps(options.params),
                json.dumps(options.metadata),
                now + UPLOAD_LEASE if state is B.UPLOADING else None,
                now,
                now,
            ),
        ).fetchone()
        return int(row[0])

    def _insert_items(
        self, tx: _Tx, pk: int, chunk: list[NewItem], max_attempts: int, now: float
    ) -> None:
        if not chunk:
            return
        if chunk[-1].position > MAX_POSITION:
            raise StoreError(f"a batch holds at most {MAX_POSITION:,} items")
        start = chunk[0].position
        if chunk[-1].position - start != len(chunk) - 1:
            raise StoreError("a chunk's positions must follow each other")  # pragma: no cover
        # One statement per chunk over a JSON array: SQLite inserts the whole chunk without
        # the GIL (the caller encodes the next chunk meanwhile) and without binding each row.
        # A duplicate key fails the statement, and with it the whole submission.
        rows = chunk.rows_json if isinstance(chunk, Chunk) else Chunk(chunk).rows_json
        try:
            tx.conn.execute(
                "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, "
                "seq) SELECT ?1 + key, ?2, json_extract(value, '$[0]'), ?3 + key, 'pending', "
                "json_extract(value, '$[1]'), ?4, 0 FROM json_each(?5)",
                ((pk << _POSITION_BITS) + start, pk, start, max_attempts, rows),
            )
        except sqlite3.IntegrityError:
            self._raise_duplicate(tx, pk, chunk)
        tx.move_counts(pk, {"n_pending": len(chunk)}, now)

    @staticmethod
    def _raise_duplicate(tx: _Tx, pk: int, chunk: list[NewItem]) -> None:
        seen: dict[str, int] = {}
        for it in chunk:
            if it.key in seen:
                raise DuplicateKey(
                    f"duplicate key (first used by item {seen[it.key]})",
                    position=it.position,
                    key=it.key,
                )
            seen[it.key] = it.position
        for it in chunk:
            row = tx.conn.execute(
                "SELECT position FROM items WHERE batch_pk = ? AND key = ?", (pk, it.key)
            ).fetchone()
            if row is not None:
                raise DuplicateKey(
                    f"duplicate key (first used by item {row[0]})", position=it.position, key=it.key
                )
        raise StoreError("an item insert was ignored for no reason found")  # pragma: no cover

    def _discard(self, pk: int) -> None:
        with self._write() as tx:
            self._delete_rows(tx, pk)

    @staticmethod
    def _delete_rows(tx: _Tx, pk: int) -> None:
        tx.conn.execute("DELETE FROM item_logs WHERE item_id >= ? AND item_id < ?", _span(pk))
        tx.conn.execute("DELETE FROM items WHERE id >= ? AND id < ?", _span(pk))
        tx.conn.execute(
            "DELETE FROM events WHERE batch_id = (SELECT id FROM batches WHERE pk = ?)", (pk,)
        )
        tx.conn.execute("DELETE FROM batches WHERE pk = ?", (pk,))

    def append_items(
        self, batch_id: str, chunks: Callable[[int], Iterable[list[NewItem]]], now: float
    ) -> int:
        added = 0
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            pk, state, sealed = row[0], B(row[4]), bool(row[5])
            if sealed or state.is_terminal:
                raise Conflict(
                    batch_id, f"is {'sealed' if sealed else state.value}; it takes no items"
                )
            # Positions are taken under the write lock, so concurrent appends never clash.
            start = sum(row[13:19]) + 1
            for chunk in chunks(start):
                self._insert_items(tx, pk, chunk, row[7], now)
                added += len(chunk)
            if added:
                tx.event(batch_id, "batch.items_added", {"count": added}, now)
        return added

    def seal(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            if not row[5]:
                tx.conn.execute(
                    "UPDATE batches SET sealed = 1, updated_at = ? WHERE pk = ?", (now, row[0])
                )
                tx.event(batch_id, "batch.sealed", {}, now)
                tx.end_if_done(row[0], now)
        return self.get_batch(batch_id)

    # -- reading ----------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> BatchStatus:
        rows = self._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return batch_from_row(rows[0])

    def list_batches(
        self,
        *,
        state: BatchState | None = None,
        task: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[BatchStatus]:
        where, params = ["1 = 1"], list[Any]()
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if after is not None:
            # The cursor is the last row's key, so it holds even if that batch is deleted.
            where.append("pk < ?")
            params.append(_page_key(after))
        rows = self._read(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE {' AND '.join(where)} "
            "ORDER BY pk DESC LIMIT ?",
            (*params, limit + 1),
        )
        page = [batch_from_row(row) for row in rows[:limit]]
        return Page(page, f"p{rows[limit - 1][0]}" if len(rows) > limit else None)

    def _pk(self, batch_id: str) -> int:
        rows = self._read("SELECT pk FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return int(rows[0][0])

    def items(
        self, batch_id: str, *, state: ItemState | None = None, after: int = 0, limit: int = 1000
    ) -> list[Item]:
        low, high = _span(self._pk(batch_id))
        where = "" if state is None else f" AND state = '{state.value}'"
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE id > ? AND id < ?{where} ORDER BY id LIMIT ?",
            (low + max(0, after), high, limit),
        )
        return [item_from_row(batch_id, row) for row in rows]

    def item(self, batch_id: str, key: str) -> Item:
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE batch_pk = ? AND key = ?",
            (self._pk(batch_id), key),
        )
        if not rows:
            raise ItemNotFound(batch_id, key)
        return item_from_row(batch_id, rows[0])

    def item_logs(self, batch_id: str, key: str) -> list[LogLine]:
        rows = self._read(
            "SELECT l.attempt, l.at, l.kind, l.message FROM item_logs l "
            "JOIN items i ON i.id = l.item_id WHERE i.batch_pk = ? AND i.key = ? "
            "ORDER BY l.at, l.rowid",
            (self._pk(batch_id), key),
        )
        if not rows:
            self.item(batch_id, key)  # raises ItemNotFound for an unknown key
        return [LogLine(*row) for row in rows]

    def events(self, batch_id: str | None = None, since: int = 0, limit: int = 1000) -> list[Event]:
        where, params = (
            ("seq > ?", (since,))
            if batch_id is None
            else (
                "batch_id = ? AND seq > ?",
                (batch_id, since),
            )
        )
        rows = self._read(
            f"SELECT seq, batch_id, kind, data, at FROM events WHERE {where} "
            f"AND seq <= {_WHOLE_GROUPS.format(table='events', where=where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [Event(row[0], row[1], row[2], json.loads(row[3]), row[4]) for row in rows]

    def item_changes(self, batch_id: str, since: int = 0, limit: int = 1000) -> list[Item]:
        where = "batch_pk = ? AND seq > 0 AND seq > ?"
        params = (self._pk(batch_id), since)
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {where} "
            f"AND seq <= {_WHOLE_GROUPS.format(table='items', where=where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [item_from_row(batch_id, row) for row in rows]

    def cursor(self) -> int:
        return int(self._read("SELECT seq FROM feed")[0][0])

    def recount(self, batch_id: str) -> Counts:
        rows = self._read(
            "SELECT state, COUNT(*) FROM items WHERE id >= ? AND id < ? GROUP BY state",
            _span(self._pk(batch_id)),
        )
        return Counts(**{state: n for state, n in rows})

    # -- controlling ------------------------------------------------------------------

    def pause(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state is not B.PAUSED:
                tx.set_state(row[0], batch_id, state, B.PAUSED, now, resume_state=state.value)
        return self.get_batch(batch_id)

    def resume(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            if B(row[4]) is B.PAUSED:
                back = tx.conn.execute(
                    "SELECT resume_state FROM batches WHERE pk = ?", (row[0],)
                ).fetchone()[0]
                tx.set_state(row[0], batch_id, B.PAUSED, B(back), now, resume_state=None)
                tx.end_if_done(row[0], now)
            elif not B(row[4]).is_active:
                raise Conflict(batch_id, f"is {row[4]}, not paused")
        return self.get_batch(batch_id)

    def cancel(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state is B.CANCELLED:
                return batch_from_row(row)
            if state.is_terminal:
                raise Conflict(batch_id, f"has already ended ({state.value})")
            stopped = 0
            cursor = tx.conn.execute(
                "SELECT claim_cursor FROM batches WHERE pk = ?", (row[0],)
            ).fetchone()[0]
            low, high = _span(row[0])
            cancel = "UPDATE items SET state = 'cancelled', finished_at = ?, seq = ? WHERE "
            for where, params in (
                ("id >= ? AND id < ? AND state = 'pending'", (max(low, cursor), high)),
                ("batch_pk = ? AND state = 'pending' AND attempts > 0", (row[0],)),
                ("batch_pk = ? AND state = 'retry_wait'", (row[0],)),
            ):
                stopped += tx.conn.execute(cancel + where, (now, tx.seq, *params)).rowcount
            tx.conn.execute(
                "UPDATE batches SET n_cancelled = n_cancelled + ?, n_pending = 0, "
                "n_retry_wait = 0 WHERE pk = ?",
                (stopped, row[0]),
            )
            tx.set_state(row[0], batch_id, state, B.CANCELLED, now)
        return self.get_batch(batch_id)

    def retry_failed(self, batch_id: str, now: float) -> int:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state not in (B.FAILED, B.PARTIALLY_COMPLETED):
                raise Conflict(
                    batch_id,
                    f"is {state.value}; only a failed or partially completed batch retries",
                )
            sent = tx.conn.execute(
                "UPDATE items SET state = 'pending', priority = priority + 1, "
                "max_attempt = attempts + ?, error = NULL, error_type = NULL, "
                "finished_at = NULL, progress = NULL, message = NULL, seq = ? "
                "WHERE batch_pk = ? AND state = 'failed'",
                (row[7], tx.seq, row[0]),
            ).rowcount
            if sent == 0:
                raise Conflict(batch_id, "has no failed items to retry")
            tx.conn.execute(
                "UPDATE batches SET n_failed = n_failed - ?, n_pending = n_pending + ?, "
                "round = round + 1 WHERE pk = ?",
                (sent, sent, row[0]),
            )
            tx.set_state(row[0], batch_id, state, B.RETRYING, now, finished_at=None)
            tx.event(batch_id, "batch.retry", {"items": sent, "round": row[12] + 1}, now)
        return sent

    def delete_batch(self, batch_id: str, now: float) -> None:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if not state.is_terminal:
                raise Conflict(batch_id, f"is {state.value}; cancel it before deleting it")
            self._delete_rows(tx, row[0])
            tx.event(None, "batch.deleted", {"batch_id": batch_id}, now)

    def prune(self, finished_before: float, now: float) -> int:
        rows = self._read(
            "SELECT id FROM batches WHERE state IN "
            "('completed', 'partially_completed', 'failed', 'cancelled') AND finished_at < ?",
            (finished_before,),
        )
        for (batch_id,) in rows:
            self.delete_batch(batch_id, now)
        return len(rows)

    # -- working ----------------------------------------------------------------------

    def _claimable(self, capacity: Mapping[str, int], now: float) -> list[Any]:
        """Claimable batches of the given tasks with something runnable now, best first."""
        rows = self._read(
            "SELECT pk, id, task, state, concurrency, n_running, n_pending, n_retry_wait, "
            f"timeout, params, claim_cursor FROM batches WHERE state IN {_CLAIMABLE} "
            "AND (n_pending > 0 OR n_retry_wait > 0) "
            "ORDER BY priority DESC, state = 'retrying' DESC, pk"
        )
        out = []
        for row in rows:
            if capacity.get(row[2], 0) <= 0:
                continue
            if row[4] is not None and row[5] >= row[4]:
                continue
            if row[6] == 0 and self._next_due(row[0]) > now:
                continue
            out.append(row)
        return out

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

    def claim(
        self,
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
    ) -> list[Claim]:
        return self.record_and_claim([], worker_id, capacity, limit, now, lease, alone)[1]

    def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
    ) -> tuple[Recorded, list[Claim]]:
        # Outcomes free slots under batch caps, so with outcomes the claim always looks
        # inside the transaction; without, a read first spares idle polls the write lock.
        want = (
            limit > 0
            and bool(capacity)
            and (bool(outcomes) or bool(self._claimable(capacity, now)))
        )
        if not outcomes and not want:
            return Recorded([], []), []
        with self._write() as tx:
            done = self._record_in(tx, outcomes, now) if outcomes else Recorded([], [])
            claims = (
                self._claim_in(tx, worker_id, capacity, limit, now, lease, alone) if want else []
            )
        return done, claims

    def _claim_in(
        self,
        tx: _Tx,
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool,
    ) -> list[Claim]:
        rows = self._claimable(capacity, now)
        if alone:
            for row in rows:
                if row[4] is None or row[5] < row[4]:
                    suspect = self._claim_from(tx, row, worker_id, 1, now, lease, suspect=True)
                    if suspect:
                        return suspect
        left = dict(capacity)
        claims: list[Claim] = []
        for row in rows:
            room = min(limit - len(claims), left.get(row[2], 0))
            if row[4] is not None:
                room = min(room, row[4] - row[5])
            if room <= 0:
                continue
            got = self._claim_from(tx, row, worker_id, room, now, lease)
            left[row[2]] -= len(got)
            claims.extend(got)
            if len(claims) >= limit:
                break
        return claims

    def _claim_from(
        self,
        tx: _Tx,
        row: Any,
        worker_id: str,
        room: int,
        now: float,
        lease: float,
        *,
        suspect: bool = False,
    ) -> list[Claim]:
        pk, batch_id, state = row[0], row[1], B(row[3])
        if row[7]:
            due = tx.conn.execute(
                "UPDATE items SET state = 'pending', seq = ? WHERE batch_pk = ? "
                "AND state = 'retry_wait' AND run_after <= ?",
                (tx.seq, pk, now),
            ).rowcount
            if due:
                tx.move_counts(pk, {"n_pending": due, "n_retry_wait": -due}, now)
        take = (
            "UPDATE items SET state = 'running', attempts = attempts + 1, worker = ?, "
            "lease_expires = ?, started_at = ?, seq = ?{} "
            "WHERE id IN (SELECT id FROM items WHERE {} LIMIT ?) "
            "RETURNING id, key, payload, attempts, max_attempt"
        )
        lease_args = (worker_id, now + lease, now, tx.seq)
        # Items that came back (retries, leases taken back) go first, then fresh ones.
        got = tx.conn.execute(
            take.format(
                ", progress = NULL, message = NULL",  # a fresh item has neither yet
                "batch_pk = ? AND state = 'pending' AND attempts > 0 AND suspect = ? "
                "ORDER BY priority DESC, id",
            ),
            (*lease_args, pk, int(suspect), room),
        ).fetchall()
        if len(got) < room and not suspect:
            low, high = _span(pk)
            fresh = tx.conn.execute(
                take.format(
                    "", "id >= ? AND id < ? AND state = 'pending' AND attempts = 0 ORDER BY id"
                ),
                (*lease_args, max(low, row[10]), high, room - len(got)),
            ).fetchall()
            if fresh:
                tx.conn.execute(
                    "UPDATE batches SET claim_cursor = ? WHERE pk = ?",
                    (max(r[0] for r in fresh) + 1, pk),
                )
                got += fresh
        if not got:
            return []
        tx.move_counts(pk, {"n_pending": -len(got), "n_running": len(got)}, now)
        if state is B.QUEUED:
            tx.set_state(pk, batch_id, B.QUEUED, B.PROCESSING, now, started_at=now)
        batch = ClaimedBatch(pk, batch_id, row[2], row[8], json.loads(row[9]))
        return [Claim(r[0], batch, r[1], r[2], r[3], r[4], suspect) for r in got]

    def heartbeat(self, leases: Sequence[LeaseUpdate], now: float, lease: float) -> set[int]:
        if not leases:
            return set()
        with self._write() as tx:
            seq = tx.seq if any(update.changed for update in leases) else None
            cur = tx.conn.executemany(
                "UPDATE items SET lease_expires = ?, progress = COALESCE(?, progress), "
                "message = COALESCE(?, message), seq = COALESCE(?, seq) "
                "WHERE id = ? AND attempts = ? AND state = 'running'",
                [
                    (
                        now + lease,
                        u.progress,
                        u.message,
                        seq if u.changed else None,
                        u.item_id,
                        u.attempt,
                    )
                    for u in leases
                ],
            )
            lost: set[int] = set()
            if cur.rowcount != len(leases):
                lost = self._not_holding(tx, [(u.item_id, u.attempt) for u in leases])
            logs = [
                (u.item_id, u.attempt, *line)
                for u in leases
                if u.item_id not in lost
                for line in u.logs
            ]
            if logs:
                tx.conn.executemany(_LOG_INSERT, logs)
        return lost

    @staticmethod
    def _not_holding(tx: _Tx, leases: Sequence[tuple[int, int]]) -> set[int]:
        """Which of these (item id, attempt) leases are no longer held."""
        wanted = dict(leases)
        marks = ",".join("?" * len(wanted))
        held = {
            row[0]
            for row in tx.conn.execute(
                f"SELECT id, attempts FROM items WHERE id IN ({marks}) AND state = 'running'",
                tuple(wanted),
            )
            if wanted[row[0]] == row[1]
        }
        return set(wanted) - held

    def record(self, outcomes: Sequence[Outcome], now: float) -> Recorded:
        if not outcomes:
            return Recorded([], [])
        with self._write() as tx:
            return self._record_in(tx, outcomes, now)

    def _record_in(self, tx: _Tx, outcomes: Sequence[Outcome], now: float) -> Recorded:
        for o in outcomes:
            check_item(S.RUNNING, o.state)
        outcomes = self._no_retry_when_cancelled(tx, outcomes)
        seq = tx.seq
        changed = 0
        for sql, params in _outcome_updates(outcomes, seq):
            changed += tx.conn.executemany(sql, params).rowcount
        accepted, rejected = list(outcomes), list[Outcome]()
        if changed != len(outcomes):
            accepted, rejected = self._split_by_seq(tx, outcomes, seq)
        for o in rejected:
            tx.event(
                None,
                "item.outcome_rejected",
                {"item_id": o.item_id, "key": o.key, "attempt": o.attempt, "state": o.state},
                now,
            )
        ended = self._apply_outcomes(tx, accepted, now)
        return Recorded(rejected, ended)

    @staticmethod
    def _no_retry_when_cancelled(tx: _Tx, outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
        """An attempt that failed in a batch cancelled meanwhile ends cancelled: nothing
        would ever run its retry."""
        waiting = {o.batch_pk for o in outcomes if o.state is S.RETRY_WAIT}
        if not waiting:
            return outcomes
        marks = ",".join("?" * len(waiting))
        cancelled = {
            row[0]
            for row in tx.conn.execute(
                f"SELECT pk FROM batches WHERE pk IN ({marks}) AND state = 'cancelled'",
                tuple(waiting),
            )
        }
        return [
            replace(o, state=S.CANCELLED, run_after=None)
            if o.state is S.RETRY_WAIT and o.batch_pk in cancelled
            else o
            for o in outcomes
        ]

    @staticmethod
    def _split_by_seq(
        tx: _Tx, outcomes: Sequence[Outcome], seq: int
    ) -> tuple[list[Outcome], list[Outcome]]:
        """Which outcomes this commit applied: the rows it stamped with its cursor, at the
        attempt the outcome was for. Of two outcomes for one attempt only the first applied."""
        marks = ",".join("?" * len(outcomes))
        stamped = {
            (row[0], row[1])
            for row in tx.conn.execute(
                f"SELECT id, attempts FROM items WHERE id IN ({marks}) AND seq = ?",
                (*(o.item_id for o in outcomes), seq),
            )
        }
        accepted, rejected = [], []
        for o in outcomes:
            if (o.item_id, o.attempt) in stamped:
                stamped.discard((o.item_id, o.attempt))
                accepted.append(o)
            else:
                rejected.append(o)
        return accepted, rejected

    def _apply_outcomes(self, tx: _Tx, accepted: Sequence[Outcome], now: float) -> list[str]:
        deltas: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(int))
        logs: list[tuple[Any, ...]] = []
        for o in accepted:
            d = deltas[o.batch_pk]
            d["n_running"] -= 1
            d[COUNTER_OF[o.state]] += 1
            if not o.usage.is_zero:
                d["tokens_in"] += o.usage.tokens_in
                d["tokens_out"] += o.usage.tokens_out
                d["cost"] += o.usage.cost
            logs.extend((o.item_id, o.attempt, *line) for line in o.logs)
            if o.error is not None:
                logs.append((o.item_id, o.attempt, o.finished_at, "error", o.error))
        if logs:
            tx.conn.executemany(_LOG_INSERT, logs)
        ended = []
        for pk, d in deltas.items():
            tx.move_counts(pk, d, now)
            batch_id = tx.end_if_done(pk, now)
            if batch_id is not None:
                ended.append(batch_id)
        return ended

    def release(self, leases: Sequence[tuple[int, int]], now: float) -> int:
        if not leases:
            return 0
        with self._write() as tx:
            marks = ",".join("?" * len(leases))
            rows = tx.conn.execute(
                f"SELECT i.id, i.batch_pk, b.state FROM items i JOIN batches b "
                f"ON b.pk = i.batch_pk WHERE i.id IN ({marks})",
                tuple(item_id for item_id, _ in leases),
            ).fetchall()
            where = dict((item_id, (pk, B(state))) for item_id, pk, state in rows)
            moved = 0
            for item_id, attempt in leases:
                if item_id not in where:
                    continue
                pk, batch_state = where[item_id]
                target = S.CANCELLED if batch_state is B.CANCELLED else S.PENDING
                moved += self._unlease(tx, pk, item_id, attempt, target, now, spend=False)
        return moved

    def _unlease(
        self,
        tx: _Tx,
        pk: int,
        item_id: int,
        attempt: int,
        target: ItemState,
        now: float,
        *,
        spend: bool,
        suspect: bool | None = None,
        error: str | None = None,
        extra_where: str = "",
        extra_params: tuple[Any, ...] = (),
    ) -> int:
        """Move one running item off its lease to ``target``; 1 if it moved, else 0."""
        check_item(S.RUNNING, target)
        changed = tx.conn.execute(
            "UPDATE items SET state = ?, worker = NULL, lease_expires = NULL, "
            "max_attempt = max_attempt + ?, error = COALESCE(?, error), "
            "error_type = CASE WHEN ? IS NULL THEN error_type ELSE 'LeaseExpired' END, "
            "suspect = COALESCE(?, suspect), finished_at = ?, seq = ? "
            f"WHERE id = ? AND attempts = ? AND state = 'running'{extra_where}",
            (
                target.value,
                0 if spend else 1,
                error,
                error,
                None if suspect is None else int(suspect),
                now if target.is_terminal else None,
                tx.seq,
                item_id,
                attempt,
                *extra_params,
            ),
        ).rowcount
        if changed:
            tx.move_counts(pk, {"n_running": -1, COUNTER_OF[target]: 1}, now)
            if error is not None:
                tx.conn.execute(_LOG_INSERT, (item_id, attempt, now, "error", error))
            tx.end_if_done(pk, now)
        return int(changed)

    def reclaim_expired(self, now: float) -> int:
        expired = self._read(
            "SELECT i.id, i.batch_pk, i.attempts, i.max_attempt, b.state, i.worker, i.suspect "
            "FROM batches b JOIN items i ON i.batch_pk = b.pk WHERE b.n_running > 0 "
            "AND i.state = 'running' AND i.lease_expires < ?",
            (now,),
        )
        moved = 0
        if expired:
            with self._write() as tx:
                held = dict(
                    tx.conn.execute(
                        "SELECT worker, COUNT(*) FROM items WHERE state = 'running' GROUP BY worker"
                    ).fetchall()
                )
                for item_id, pk, attempts, max_attempt, batch_state, worker, suspect in expired:
                    others = held.get(worker, 1) - 1
                    target, spend, error = _expiry(
                        B(batch_state), attempts, max_attempt, others, bool(suspect)
                    )
                    moved += self._unlease(
                        tx,
                        pk,
                        item_id,
                        attempts,
                        target,
                        now,
                        spend=spend,
                        suspect=True,
                        error=error,
                        extra_where=" AND lease_expires < ?",
                        extra_params=(now,),
                    )
        self._drop_abandoned_uploads(now)
        return moved

    def _drop_abandoned_uploads(self, now: float) -> None:
        rows = self._read(
            "SELECT pk FROM batches WHERE state = 'uploading' AND upload_expires < ?", (now,)
        )
        for (pk,) in rows:
            with self._write() as tx:
                still = tx.conn.execute(
                    "SELECT 1 FROM batches WHERE pk = ? AND state = 'uploading' "
                    "AND upload_expires < ?",
                    (pk, now),
                ).fetchone()
                if still:
                    self._delete_rows(tx, pk)

    def active_tasks(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT task FROM batches WHERE state IN {_CLAIMABLE}")
        return {row[0] for row in rows}

    def batch_states(self, batch_pks: Collection[int]) -> dict[int, BatchState]:
        if not batch_pks:
            return {}
        marks = ",".join("?" * len(batch_pks))
        rows = self._read(f"SELECT pk, state FROM batches WHERE pk IN ({marks})", tuple(batch_pks))
        return {pk: B(state) for pk, state in rows}

    def outlook(self, tasks: Collection[str], now: float) -> Outlook:
        if not tasks:
            return Outlook(0, None, 0)
        marks = ",".join("?" * len(tasks))
        rows = self._read(
            "SELECT pk, n_pending + n_running + n_retry_wait, n_retry_wait FROM batches "
            f"WHERE state IN {_CLAIMABLE} AND task IN ({marks})",
            tuple(tasks),
        )
        remaining = sum(row[1] for row in rows)
        dues = [self._next_due(row[0]) for row in rows if row[2]]
        callbacks = self._read(
            "SELECT COUNT(*) FROM batches WHERE ended_round > callbacks_round "
            f"AND task IN ({marks}) AND (callback_lease IS NULL OR callback_lease < ?)",
            (*tasks, now),
        )[0][0]
        return Outlook(remaining, min(dues) if dues else None, int(callbacks))

    def claim_callbacks(
        self, tasks: Collection[str], now: float, lease: float
    ) -> list[tuple[BatchStatus, int]]:
        if not tasks:
            return []
        marks = ",".join("?" * len(tasks))
        due = self._read(
            "SELECT pk, ended_round FROM batches WHERE ended_round > callbacks_round "
            f"AND task IN ({marks}) AND (callback_lease IS NULL OR callback_lease < ?)",
            (*tasks, now),
        )
        claimed: list[tuple[BatchStatus, int]] = []
        for pk, round_ in due:
            with self._write() as tx:
                won = tx.conn.execute(
                    "UPDATE batches SET callback_lease = ? WHERE pk = ? AND ended_round = ? "
                    "AND ended_round > callbacks_round "
                    "AND (callback_lease IS NULL OR callback_lease < ?) "
                    f"RETURNING {BATCH_COLUMNS}",
                    (now + lease, pk, round_, now),
                ).fetchone()
            if won is not None:
                claimed.append((batch_from_row(won), round_))
        return claimed

    def finish_callbacks(self, batch_id: str, round_: int) -> None:
        with self._write() as tx:
            tx.conn.execute(
                "UPDATE batches SET callbacks_round = MAX(callbacks_round, ?), "
                "callback_lease = NULL WHERE id = ?",
                (round_, batch_id),
            )


def _readiness(chunks: Iterable[Any]) -> Callable[[], bool]:
    """Whether the next chunk is at hand, if the iterable can tell (see items._Feed)."""
    ready = getattr(chunks, "ready", None)
    return ready if callable(ready) else lambda: False


def _expiry(
    batch_state: BatchState, attempt: int, max_attempt: int, others: int, suspect: bool
) -> tuple[ItemState, bool, str]:
    """Where an item whose lease expired goes, whether that spends the attempt, and why."""
    if batch_state is B.CANCELLED:
        return S.CANCELLED, True, f"lease expired on attempt {attempt} in a cancelled batch"
    if suspect or others == 0:
        target = S.FAILED if attempt >= max_attempt else S.PENDING
        return (
            target,
            True,
            (
                f"lease expired on attempt {attempt} while it ran alone: its worker died or "
                "stopped answering"
            ),
        )
    return (
        S.PENDING,
        False,
        (
            f"lease expired on attempt {attempt} while its worker held {others} other item(s): "
            "not counted against it; it runs alone next"
        ),
    )


def _page_key(after: str) -> int:
    if not after.startswith("p") or not after[1:].isdigit():
        raise ConfigError(f"{after!r} is not a page cursor (use the `next` of a previous page)")
    return int(after[1:])


def _outcome_updates(outcomes: Sequence[Outcome], seq: int) -> list[tuple[str, list[Any]]]:
    """UPDATE statements for outcomes, one per shape: each sets only the columns its
    outcomes carry (every column set costs SQLite time on every row). The WHERE clause is
    the fence: the item must still be running this attempt."""
    groups: dict[tuple[bool, ...], list[Any]] = {}
    for o in outcomes:
        later = o.attempt > 1  # an earlier attempt may have left an error, metrics, a flag
        shape = (
            o.state.is_terminal,
            o.result is not None,
            o.error is not None,
            o.run_after is not None,
            not o.usage.is_zero,
            o.metrics is not None,
            o.progress is not None or o.message is not None,
            later,
        )
        params: list[Any] = [o.state.value, seq, o.finished_at - o.started_at]
        if shape[0]:
            params.append(o.finished_at)
        if shape[1]:
            params.append(o.result)
        if shape[2]:
            params += (o.error, o.error_type)
        if shape[3]:
            params.append(o.run_after)
        if shape[4]:
            params += (o.usage.tokens_in, o.usage.tokens_out, o.usage.cost)
        if shape[5]:
            params.append(o.metrics)
        if shape[6]:
            params += (o.progress, o.message)
        params += (o.item_id, o.attempt)
        groups.setdefault(shape, []).append(params)
    return [(_update_sql(shape), rows) for shape, rows in groups.items()]


# Per optional part of an outcome, in _outcome_updates' shape order: what to set when the
# outcome carries it, and what to set when it does not but an earlier attempt may have.
_OPTIONAL_SETS: tuple[tuple[str, str | None], ...] = (
    ("finished_at = ?", None),
    ("result = ?", None),
    ("error = ?, error_type = ?", "error = NULL, error_type = NULL"),
    ("run_after = ?", None),
    ("tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost = cost + ?", None),
    ("metrics = ?", "metrics = NULL"),
    ("progress = COALESCE(?, progress), message = COALESCE(?, message)", None),
)


@functools.cache
def _update_sql(shape: tuple[bool, ...]) -> str:
    *carried, later = shape
    sets = ["state = ?", "seq = ?", "duration = ?"]
    for has, (present, cleared) in zip(carried, _OPTIONAL_SETS, strict=True):
        if has:
            sets.append(present)
        elif later and cleared:
            sets.append(cleared)
    if later:
        sets.append("suspect = 0")
    return f"UPDATE items SET {', '.join(sets)} WHERE id = ? AND attempts = ? AND state = 'running'"
