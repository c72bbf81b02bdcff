"""Connections and transactions of the PostgreSQL store: a bounded pool, every write in one
transaction that takes the change-feed row lock first, the schema migrations, and the
helpers a transaction uses on the batch row.

Lock order: a write transaction that may change anything locks the ``feed`` row before any
other row and keeps it to its commit. Writers therefore commit in cursor order (a reader
never sees cursor N+1 before cursor N) and can never deadlock on batch or item rows. Only a
heartbeat that changes no progress skips it: it touches nothing but its own running items
and waits for no other lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from batchyard.errors import (
    BatchNotFound,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from batchyard.models import JSON, BatchStatus
from batchyard.states import BatchState, check_batch, ending_state
from batchyard.store.postgres.listening import Listener
from batchyard.store.rows import BATCH_COLUMNS, batch_from_row, migrations

# The dialect-neutral rules, re-exported for this store's modules.
from batchyard.store.rules import CLAIMABLE as CLAIMABLE
from batchyard.store.rules import ENDABLE as ENDABLE
from batchyard.store.rules import MAX_POSITION as MAX_POSITION
from batchyard.store.rules import POSITION_BITS as POSITION_BITS
from batchyard.store.rules import B as B
from batchyard.store.rules import S as S
from batchyard.store.rules import span as span

LOG_INSERT = (
    "INSERT INTO item_logs (item_id, attempt, at, kind, message) "
    "SELECT * FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[], %s::text[])"
)
#: The channel workers LISTEN on; NOTIFY is sent when items may have become claimable.
CHANNEL = "batchyard"
#: Serializes first opens of one database (pg_advisory_xact_lock key: "batchyard" in ASCII).
MIGRATION_LOCK = 0x62617463687961
#: Connections one store keeps at most in its pool (a worker uses one; see docs/scale-out.md).
POOL_SIZE = 4
#: How long a call waits for a pooled connection (or for the server) before StoreUnavailable.
CONNECT_TIMEOUT = 10.0
#: Seconds a session may sit inside a transaction doing nothing before the server ends it.
IDLE_IN_TRANSACTION = 60


def redact(url: str) -> str:
    """A URL fit for a message: without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL URL"
    user = f"{info['user']}@" if info.get("user") else ""
    where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
    return f"postgresql://{user}{where}/{info.get('dbname', '')}"


def log_rows(logs: Sequence[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """(item_id, attempt, at, kind, message) rows as the column arrays LOG_INSERT takes."""
    return tuple(list(column) for column in zip(*logs, strict=True))


class Tx:
    """One write transaction: its cursor, its feed cursor (taken on first use) and helpers
    for the batch row it changes."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self._seq: int | None = None
        self.notify = False

    def one(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        self.cur.execute(query, params)
        return self.cur.fetchone()

    def all(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        self.cur.execute(query, params)
        return self.cur.fetchall()

    def run(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """Execute a statement; returns the rows it changed."""
        self.cur.execute(query, params)
        return self.cur.rowcount

    @property
    def seq(self) -> int:
        if self._seq is None:
            row = self.one("UPDATE feed SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            self._seq = int(row[0])
        return self._seq

    def event(self, batch_id: str | None, kind: str, data: dict[str, JSON], at: float) -> None:
        self.run(
            "INSERT INTO events (seq, batch_id, kind, data, at) VALUES (%s, %s, %s, %s, %s)",
            (self.seq, batch_id, kind, json.dumps(data), at),
        )

    def batch_row(self, batch_id: str) -> tuple[Any, ...]:
        row = self.one(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,))
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
        sets = ", ".join(f"{name} = %s" for name in fields)
        changed = self.run(
            f"UPDATE batches SET {sets}"
            f"{', ended_round = ended_round + 1' if new.is_terminal else ''}"
            " WHERE pk = %s AND state = %s",
            (*fields.values(), pk, old.value),
        )
        if changed != 1:
            raise StoreError(f"batch {batch_id} changed state concurrently")
        data: dict[str, JSON] = {"from": old.value, "to": new.value}
        if extra.get("pause_reason"):
            data["reason"] = extra["pause_reason"]
        self.event(batch_id, "batch.state", data, now)

    def end_if_done(self, pk: int, now: float) -> str | None:
        """End a sealed batch none of whose items is left to run; returns its id if so."""
        row = self.one(
            "SELECT id, state, sealed, n_pending + n_running + n_retry_wait, "
            "n_succeeded, n_failed, n_cancelled FROM batches WHERE pk = %s",
            (pk,),
        )
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
        sets = ", ".join(f"{column} = {column} + %s" for column in deltas)
        self.run(
            f"UPDATE batches SET {sets}, updated_at = %s WHERE pk = %s",
            (*deltas.values(), now, pk),
        )


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A process frozen inside a transaction (SIGSTOP, a debugger) would hold the feed lock and
    # stall every writer; the server ends such a session after this long.
    conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}s'")


def _unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {reason}")


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Turn driver errors into the store's: unreachable → StoreUnavailable, else StoreError."""
    try:
        yield
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            raise StoreError(f"PostgreSQL refused the statement: {exc}") from exc
        raise _unavailable(url, exc) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL failed: {exc}") from exc


class PostgresBase:
    """What every part of the store stands on: the pool, reads, writes and the listener."""

    dialect = "postgres"

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url
        self._conninfo = url
        with translated(url):
            first = psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT), autocommit=True)
        try:
            with translated(url):
                self._migrate(first)
        finally:
            first.close()
        # min_size=1 keeps one warm connection; the pool grows only when threads of this
        # process wait for one at the same moment, to ``pool_size``.
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
            timeout=CONNECT_TIMEOUT,
            reconnect_timeout=0,
            name="batchyard",
            configure=_configure,
            open=True,
        )
        # Wait for the first connection: a call made while it is still opening would make the
        # pool open a second one, and a worker would hold two where one does.
        try:
            with translated(url):
                self._pool.wait(CONNECT_TIMEOUT)
        except BaseException:
            self._pool.close()
            raise
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def _write(self, *, feed: bool = True) -> Iterator[Tx]:
        """A write transaction. With ``feed`` (the default) it locks the feed row first."""
        if self._closed:
            raise StoreError("the store is closed")
        with translated(self.url), self._pool.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                tx = Tx(cur)
                if feed:
                    cur.execute("SELECT seq FROM feed WHERE id = 1 FOR UPDATE")
                yield tx
                if tx.notify:
                    cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        with translated(self.url), self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        scripts = migrations("postgres")
        with conn.transaction():
            # Concurrent first opens of one database wait here for each other.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if version > len(scripts):
                raise SchemaTooNew(
                    f"{redact(self.url)} has schema version {version}; this batchyard knows up "
                    f"to {len(scripts)}. Upgrade batchyard to open it."
                )
            for migration in scripts[version:]:
                for statement in migration.statements():
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) "
                    "VALUES (%s, %s, extract(epoch FROM now()))",
                    (migration.version, migration.name),
                )

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on every NOTIFY of the store's channel, from a listener thread on a
        connection of its own (outside the pool), reconnecting after an outage."""
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            if self._listener is None:
                self._listener = Listener(self._conninfo, CHANNEL)
            listener = self._listener
        return listener.add(wake)

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._pool.close()

    def get_batch(self, batch_id: str) -> BatchStatus:
        rows = self._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return batch_from_row(rows[0])

    def _pk(self, batch_id: str) -> int:
        rows = self._read("SELECT pk FROM batches WHERE id = %s", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return int(rows[0][0])


def delete_rows(tx: Tx, pk: int) -> None:
    low, high = span(pk)
    tx.run("DELETE FROM item_logs WHERE item_id >= %s AND item_id < %s", (low, high))
    # The batch row first: hold_budget locks it before its holds, so this never waits in a
    # cycle with a worker holding budget for a straggler of the batch.
    tx.run("SELECT 1 FROM batches WHERE pk = %s FOR UPDATE", (pk,))
    tx.run("DELETE FROM items WHERE id >= %s AND id < %s", (low, high))
    tx.run("DELETE FROM budget_holds WHERE batch_pk = %s", (pk,))
    tx.run("DELETE FROM events WHERE batch_id = (SELECT id FROM batches WHERE pk = %s)", (pk,))
    tx.run("DELETE FROM batches WHERE pk = %s", (pk,))
