"""Connections and transactions of the PostgreSQL store: a bounded pool, transactions that
take no common lock, the change feed by transaction id, and the schema migrations.

The feed: a transaction stamps what it changes with its own transaction id (plus a fixed
offset, see migration 5), so no writer waits for another to take a cursor. Transactions
commit in any order, so a reader of the feed stops below the oldest transaction of this
database still in progress (``PostgresStore._feed_horizon``): every cursor below it is
final, and a change that commits late is read when its turn comes, never skipped. Writers
of one batch take turns on its row (``Tx.lock_batches``); writers of other batches never
wait for them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from batchyard.errors import DiskFull, StoreError, StoreUnavailable
from batchyard.store.schema import migrate
from batchyard.store.tx import Dialect, Params, Tx

#: The channel workers LISTEN on; NOTIFY is sent when items may have become claimable.
CHANNEL = "batchyard"
#: The channel feed followers (the server's streams) LISTEN on; NOTIFY is sent after every
#: commit that took a feed cursor, while a follower holds FEED_PRESENCE.
FEED_CHANNEL = "batchyard_feed"
#: The advisory lock (shared) a feed follower's listening connection holds: writers send
#: feed notifications only while one does ("byfeed" in ASCII).
FEED_PRESENCE = 0x627966656564
#: Seconds a writer trusts what it last read of FEED_PRESENCE.
PRESENCE_TTL = 1.0
_PRESENCE = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objid = %s AND objsubid = 1)"
)
#: Serializes first opens of one database (pg_advisory_xact_lock key: "batchyard" in ASCII).
MIGRATION_LOCK = 0x62617463687961
#: Connections one store keeps at most in its pool (a worker uses one; see docs/scale-out.md).
POOL_SIZE = 4
#: How long a call waits for a pooled connection (or for the server) before StoreUnavailable.
CONNECT_TIMEOUT = 10.0
#: Seconds a session may sit inside a transaction doing nothing before the server ends it.
IDLE_IN_TRANSACTION = 60

POSTGRES = Dialect(
    name="postgres",
    any_of="= ANY(?)",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    for_update=" FOR UPDATE",
    array=list,
    log_order="id",
    real="DOUBLE PRECISION",
)


log = logging.getLogger("batchyard.store")


class _PoolLog(logging.Handler):
    """psycopg_pool's records ("discarding closed connection", reconnect attempts) told
    through batchyard's logger at DEBUG: an outage is said once, by the worker, and a
    program that configured no logging does not get the pool's warnings on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("connection pool: %s", record.getMessage())


def _route_pool_log() -> None:
    pool_log = logging.getLogger("psycopg.pool")
    if not any(isinstance(handler, _PoolLog) for handler in pool_log.handlers):
        pool_log.addHandler(_PoolLog())
        pool_log.propagate = False


_route_pool_log()


@functools.lru_cache(maxsize=512)
def pg(query: str) -> bytes:
    """A statement written with ``?`` placeholders in psycopg's ``%s`` form."""
    return query.replace("%", "%%").replace("?", "%s").encode()


class PgTx(Tx):
    """A transaction on one pooled connection."""

    dialect = POSTGRES
    UniqueViolation = psycopg.errors.UniqueViolation

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        super().__init__()
        self.cur = cur

    def one(self, query: str, params: Params = ()) -> Any:
        return self.cur.execute(pg(query), params).fetchone()

    def all(self, query: str, params: Params = ()) -> list[Any]:
        return self.cur.execute(pg(query), params).fetchall()

    def run(self, query: str, params: Params = ()) -> int:
        return self.cur.execute(pg(query), params).rowcount

    def many(self, query: str, rows: Sequence[Params]) -> int:
        self.cur.executemany(pg(query), rows)
        return self.cur.rowcount

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.cur.connection.transaction():
            yield

    def _take_seq(self) -> int:
        return int(self.one("SELECT pg_current_xact_id()::text::bigint + seq FROM feed")[0])


def redact(url: str) -> str:
    """A URL fit for a message: without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL URL"
    user = f"{info['user']}@" if info.get("user") else ""
    where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
    return f"postgresql://{user}{where}/{info.get('dbname', '')}"


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A process frozen inside a transaction (SIGSTOP, a debugger) would hold its batch rows
    # and the feed's horizon back; the server ends such a session after this long.
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
        if isinstance(exc, psycopg.errors.DiskFull):
            reason = str(exc).strip().splitlines()[0]
            raise DiskFull(
                f"the disk is full on the database server ({redact(url)}: {reason}); nothing was "
                "written, and writes carry on once there is room"
            ) from exc
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            raise StoreError(f"PostgreSQL refused the statement: {exc}") from exc
        raise _unavailable(url, exc) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL failed: {exc}") from exc


class Pool:
    """The pooled connections of one database, its transactions and its migrations."""

    def __init__(self, url: str, pool_size: int) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url
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
        self.closed = False
        self._followed = False
        self._presence_read = -PRESENCE_TTL

    @contextmanager
    def write(self) -> Iterator[PgTx]:
        if self.closed:
            raise StoreError("the store is closed")
        with translated(self.url), self._pool.connection() as conn:
            with conn.transaction(), conn.cursor() as cur:
                tx = PgTx(cur)
                yield tx
                if tx.notify:
                    cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            if tx.stamped:
                self._tell_followers(conn)

    def _tell_followers(self, conn: psycopg.Connection[Any]) -> None:
        """NOTIFY FEED_CHANNEL after a commit that changed the feed, if a follower listens.

        After the commit, in a statement of its own, not inside the writer's transaction:
        a transaction that notifies holds a server-wide lock from its commit's start to its
        end (so notifications keep commit order), which would queue every writer's WAL
        flush behind the others'. Still a round trip (~0.2 ms), so only while a follower
        holds FEED_PRESENCE (read at most every PRESENCE_TTL: a follower that has just
        started polls meanwhile). The write has committed: a failure here must not look
        like its failure, and costs only a late wake."""
        with contextlib.suppress(psycopg.Error):
            now = time.monotonic()
            if now >= self._presence_read + PRESENCE_TTL:
                row = conn.execute(_PRESENCE, (FEED_PRESENCE >> 32, FEED_PRESENCE & 0xFFFFFFFF))
                self._followed = bool(row.fetchone()[0])  # type: ignore[index]  # EXISTS: one row
                self._presence_read = now
            if self._followed:
                conn.execute("SELECT pg_notify(%s, '')", (FEED_CHANNEL,))

    def read(self, query: str, params: Params = ()) -> list[Any]:
        if self.closed:
            raise StoreError("the store is closed")
        with translated(self.url), self._pool.connection() as conn:
            return conn.execute(pg(query), params).fetchall()

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            # Concurrent first opens of one database wait here for each other.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            migrate(PgTx(cur), redact(self.url))

    def close(self) -> None:
        self.closed = True
        self._pool.close()
