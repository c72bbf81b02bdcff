"""What every part of the SQL store stands on: reads, write transactions, and the few
operations each database does its own way (declared here, defined by ``SqliteStore`` and
``PostgresStore``). Everything else about the store is written once, over these."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from batchyard.clock import Clock, SystemClock
from batchyard.errors import BatchNotFound
from batchyard.models import BatchStatus
from batchyard.store.base import LeaseUpdate, Outcome
from batchyard.store.limits import waiting_on, with_waiting
from batchyard.store.rows import BATCH_COLUMNS, BatchRow
from batchyard.store.rules import S
from batchyard.store.tx import Dialect, Params, Tx

LOG_INSERT = "INSERT INTO item_logs (item_id, attempt, at, kind, message) VALUES (?, ?, ?, ?, ?)"


class SqlBase(ABC):
    """Reads, transactions and the per-database operations the store's rules use."""

    dialect: ClassVar[Dialect]
    #: Inserts one chunk of items from its JSON object (``Chunk.json``). Parameters: the
    #: first item's id, the batch pk, the first position, max_attempt, the object.
    INSERT_CHUNK: ClassVar[str]
    url: str
    _clock: Clock | None = None

    def clock(self) -> Clock:
        """The machine's clock; PostgreSQL's store reads its server's."""
        if self._clock is None:
            self._clock = SystemClock()
        return self._clock

    @abstractmethod
    def _write(self) -> AbstractContextManager[Tx]:
        """A write transaction."""

    @abstractmethod
    def _read(self, query: str, params: Params = ()) -> list[Any]:
        """Rows of a query outside any write transaction."""

    @abstractmethod
    def _apply_outcomes(
        self, tx: Tx, outcomes: Sequence[Outcome], seq: int
    ) -> set[tuple[int, int]]:
        """Write outcomes to their items, each only if its item still runs the attempt it
        is for (the fence); returns the (item id, attempt) pairs written. At most one
        outcome per attempt is given."""

    @abstractmethod
    def _renew_leases(
        self, tx: Tx, leases: Sequence[LeaseUpdate], expires: float, seq: int | None
    ) -> set[int]:
        """Extend the leases still held and save their progress (stamped ``seq`` where it
        changed); returns the ids of the items whose lease is lost."""

    @abstractmethod
    def _feed_horizon(self) -> str:
        """An SQL expression, for the next read: every feed cursor below it is final (no
        transaction in progress can still write one), so readers of the feed stop there."""

    @abstractmethod
    def cursor(self) -> int:
        """The newest final cursor: no change made later has a cursor at or below it."""

    @abstractmethod
    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]: ...

    @abstractmethod
    def on_feed(self, wake: Callable[[], None]) -> Callable[[], None] | None: ...

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def _after_insert(self, added: int) -> None:
        """Called once a submission or an append of ``added`` items has committed: the
        database may want its planner statistics renewed."""

    @abstractmethod
    def close(self) -> None: ...

    def _any(self, column: str, values: Collection[Any]) -> tuple[str, Any]:
        """``column`` is one of ``values``: the SQL and its one parameter."""
        return f"{column} {self.dialect.any_of}", self.dialect.array(list(values))

    def _batch(self, batch_id: str) -> BatchRow:
        rows = self._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return BatchRow._make(rows[0])

    def get_batch(self, batch_id: str) -> BatchStatus:
        row = self._batch(batch_id)
        status = row.status()
        if not status.counts.running:
            return status
        # NOTE: the store's clock, not a caller's: these rows only expire when their
        # worker died, and a status read has no ``now`` of its own.
        waits = self._read(
            "SELECT key, reason, items, wait_until, rate FROM limit_waits "
            "WHERE batch_pk = ? AND expires_at > ?",
            (row.pk, self.clock().now()),
        )
        return with_waiting(status, waiting_on(waits))

    def _pk(self, batch_id: str) -> int:
        rows = self._read("SELECT pk FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return int(rows[0][0])

    def _not_holding(self, tx: Tx, leases: Sequence[tuple[int, int]]) -> set[int]:
        """Which of these (item id, attempt) leases are no longer held."""
        wanted = dict(leases)
        where, ids = self._any("id", wanted)
        held = {
            item_id
            for item_id, attempts in tx.all(
                f"SELECT id, attempts FROM items WHERE {where} AND state = '{S.RUNNING}'", (ids,)
            )
            if wanted[item_id] == attempts
        }
        return set(wanted) - held
