"""Connections and transactions of the SQLite store: one connection per thread, every write
in ``BEGIN IMMEDIATE`` (writers queue on SQLite's lock with a busy timeout instead of failing
half-way), and the schema migrations."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from batchyard.errors import DiskFull, StoreError, StoreUnavailable
from batchyard.store.schema import migrate
from batchyard.store.tx import Dialect, Params, Tx

#: UPDATE ... RETURNING arrived in SQLite 3.35 (2021).
MIN_SQLITE = (3, 35, 0)

SQLITE = Dialect(
    name="sqlite",
    any_of="IN (SELECT value FROM json_each(?))",
    skip_locked="",  # one writer at a time: nothing to pass over
    for_update="",  # BEGIN IMMEDIATE holds the whole file already
    array=lambda values: orjson.dumps(list(values)).decode(),
    log_order="rowid",
    real="REAL",
)


class SqliteTx(Tx):
    """A transaction on one connection, inside ``BEGIN IMMEDIATE``."""

    dialect = SQLITE
    UniqueViolation = sqlite3.IntegrityError

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.conn = conn

    def one(self, query: str, params: Params = ()) -> Any:
        return self.conn.execute(query, params).fetchone()

    def all(self, query: str, params: Params = ()) -> list[Any]:
        return self.conn.execute(query, params).fetchall()

    def run(self, query: str, params: Params = ()) -> int:
        return self.conn.execute(query, params).rowcount

    def many(self, query: str, rows: Sequence[Params]) -> int:
        return self.conn.executemany(query, rows).rowcount

    def lock_batches(self, pks: Iterable[int], *, share: bool = False) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` holds the whole file already."""

    def holds(self, pk: int) -> bool:
        return True

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self.conn.execute("SAVEPOINT batchyard")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO batchyard")
            self.conn.execute("RELEASE batchyard")
            raise
        self.conn.execute("RELEASE batchyard")


def _roll_back(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction. SQLite may have rolled it back
    itself (a full disk during COMMIT does): then there is nothing to do, and the error
    that made it fail is the one to raise, not "no transaction is active"."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way; the first error is raised


class _Owned:
    """A thread's connection; closed when its thread (and so its thread-local) goes. Its
    thread holds ``busy`` while it uses it: ``Connections.close`` (from any thread) waits
    for that, since closing a connection in the middle of a statement crashes the process
    (seen: a server thread still reading the feed while a test closed its yard)."""

    __slots__ = ("__weakref__", "busy", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.busy = threading.RLock()

    def __del__(self) -> None:
        self.conn.close()


class Connections:
    """The connections of one SQLite file: one per thread, opened on first use."""

    def __init__(self, path: str, synchronous: str, busy_timeout: float) -> None:
        self.path = path
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
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreUnavailable(f"cannot create {path}: folder {parent} does not exist")

    def get(self) -> sqlite3.Connection:
        return self._owned().conn

    def _owned(self) -> _Owned:
        owned: _Owned | None = getattr(self._local, "conn", None)
        if owned is not None:
            return owned
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
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
        return owned

    @contextmanager
    def write(self) -> Iterator[SqliteTx]:
        owned = self._owned()
        conn = owned.conn
        with owned.busy:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"{self.path} is locked or unreadable: {exc}") from exc
            try:
                yield SqliteTx(conn)
            except BaseException as exc:
                _roll_back(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._fault(exc, "write") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _roll_back(conn)
                raise self._fault(exc, "commit") from exc

    def _fault(self, exc: sqlite3.Error, doing: str) -> StoreError:
        """The store error for a failed write: a full disk is an outage (DiskFull)."""
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return DiskFull(
                f"the disk is full: cannot write to {self.path} ({exc}); nothing was "
                "written, and writes carry on once there is room"
            )
        return StoreError(f"{doing} failed on {self.path}: {exc}")

    def read(self, query: str, params: Params = ()) -> list[Any]:
        owned = self._owned()
        try:
            with owned.busy:
                return owned.conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {self.path}: {exc}") from exc

    def migrate(self) -> None:
        """Bring the file's schema to this version's, in one transaction."""
        with self.write() as tx:
            migrate(tx, self.path)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for owned in list(self._conns):
                with owned.busy:  # not in the middle of another thread's statement
                    owned.conn.close()
            self._conns.clear()
        self._local = threading.local()
