"""One write transaction, whatever the database: statements with ``?`` placeholders, the
change-feed cursor that stamps what it changes, its events, and what it does to batch rows
(state changes by compare-and-set, counter moves, ending a batch that is done).

The SQL that differs between the dialects is named in ``Dialect``; everything else is
written once, here and in the store's modules.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from batchyard.clusters import TOP_CLUSTERS
from batchyard.deliveries import DeliveryState, event_for, new_delivery_id
from batchyard.errors import BatchNotFound, Conflict
from batchyard.models import JSON
from batchyard.states import BatchState, check_batch, ending_state
from batchyard.store.rows import BATCH_COLUMNS, BatchRow, clusters_of, clusters_query
from batchyard.store.rules import ENDABLE, B
from batchyard.views import status_view

Params = Sequence[Any]

_INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (id, batch_pk, batch_id, event, url, payload, state, "
    f"created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, '{DeliveryState.PENDING}', ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Dialect:
    """The fragments of SQL that differ between the databases."""

    name: str
    #: ``column {any_of}``: membership in a list given as one parameter made by ``array``.
    any_of: str
    #: Ends a SELECT of rows to take: PostgreSQL passes over rows others hold.
    skip_locked: str
    #: Ends a SELECT of a row the transaction will change: PostgreSQL locks it now.
    for_update: str
    #: A list as the one parameter ``any_of`` takes.
    array: Callable[[Collection[Any]], Any]
    #: The column of ``item_logs`` that orders its rows as they were written.
    log_order: str
    #: The type of a float column.
    real: str


class Tx(ABC):
    """A write transaction: run statements, stamp changes with its feed cursor (taken on
    first use, one per transaction), write events, and change batch rows."""

    dialect: ClassVar[Dialect]
    #: The driver's error for a broken unique constraint.
    UniqueViolation: ClassVar[type[Exception]]

    def __init__(self) -> None:
        self._seq: int | None = None
        #: Set it when items may have become claimable: workers elsewhere are woken.
        self.notify = False
        #: The batch rows this transaction holds (see ``lock_batches``).
        self.locked: set[int] = set()

    @abstractmethod
    def one(self, query: str, params: Params = ()) -> Any:
        """The first row of a statement's result, None if it has none."""

    @abstractmethod
    def all(self, query: str, params: Params = ()) -> list[Any]: ...

    @abstractmethod
    def run(self, query: str, params: Params = ()) -> int:
        """Execute a statement; returns how many rows it changed."""

    @abstractmethod
    def many(self, query: str, rows: Sequence[Params]) -> int:
        """Execute a statement once per row of parameters; returns the rows changed."""

    @abstractmethod
    def savepoint(self) -> AbstractContextManager[None]:
        """A savepoint: an error inside undoes only what was done inside, and the
        transaction stays usable."""

    @property
    def seq(self) -> int:
        """The feed cursor this transaction stamps its changes with (one per transaction,
        taken on first use)."""
        if self._seq is None:
            self._seq = self._take_seq()
        return self._seq

    def _take_seq(self) -> int:
        return int(self.one("UPDATE feed SET seq = seq + 1 RETURNING seq")[0])

    @property
    def stamped(self) -> bool:
        """Whether this transaction took a feed cursor (it changed something readers of the
        feed may want to hear about)."""
        return self._seq is not None

    def lock_batches(self, pks: Iterable[int], *, share: bool = False) -> None:
        """Hold these batch rows to the end of the transaction, waiting for them in pk
        order. Every transaction that changes a batch's items or counters holds its row
        first: writers of one batch take turns, writers of different batches never wait
        for each other, and nobody waits in a cycle. ``share`` only keeps others from
        changing them (a heartbeat). Raises RuntimeError if that would break pk order."""
        wanted = sorted(set(pks) - self.locked)
        if not wanted:
            return
        if self.locked and wanted[0] < max(self.locked):
            raise RuntimeError(f"batch {wanted[0]} locked after batch {max(self.locked)}")
        mode = " FOR SHARE" if share and self.dialect.for_update else self.dialect.for_update
        self.all(
            f"SELECT pk FROM batches WHERE pk {self.dialect.any_of} ORDER BY pk{mode}",
            (self.dialect.array(wanted),),
        )
        self.locked.update(wanted)

    def holds(self, pk: int) -> bool:
        """Whether this transaction holds the batch row already."""
        return pk in self.locked

    def try_hold(self, query: str, pk: int, *, wait: bool) -> Any:
        """Read batch ``pk``'s row with ``query`` (a SELECT taking the pk), holding it from
        now on: at once if no other transaction holds it, or with ``wait`` and if that keeps
        the pk order, once it is free. None when it was passed over (or is gone)."""
        in_order = not self.locked or pk > max(self.locked)
        mode = self.dialect.for_update if wait and in_order else self.dialect.skip_locked
        row = self.one(query + mode, (pk,))
        if row is not None:
            self.locked.add(pk)
        return row

    def event(self, batch_id: str | None, kind: str, data: dict[str, JSON], at: float) -> None:
        self.run(
            "INSERT INTO events (seq, batch_id, kind, data, at) VALUES (?, ?, ?, ?, ?)",
            (self.seq, batch_id, kind, json.dumps(data), at),
        )

    def batch(self, batch_id: str) -> BatchRow:
        """The batch's row, locked for this transaction where the database locks rows."""
        row = self.one(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?{self.dialect.for_update}",
            (batch_id,),
        )
        if row is None:
            raise BatchNotFound(batch_id)
        batch = BatchRow._make(row)
        self.locked.add(batch.pk)
        return batch

    def batch_at(self, pk: int) -> BatchRow | None:
        row = self.one(f"SELECT {BATCH_COLUMNS} FROM batches WHERE pk = ?", (pk,))
        return None if row is None else BatchRow._make(row)

    def set_state(
        self, pk: int, batch_id: str, old: BatchState, new: BatchState, now: float, **extra: Any
    ) -> None:
        """Move a batch from ``old`` to ``new`` (compare-and-set on ``old``) and say so in
        the feed. Raises InvalidTransition for a move the lifecycle forbids, Conflict when
        the batch is no longer in ``old``."""
        check_batch(old, new)
        fields = {"state": new.value, "updated_at": now, **extra}
        if new.is_terminal:
            fields["finished_at"] = now
        sets = ", ".join(f"{name} = ?" for name in fields)
        ended = ", ended_round = ended_round + 1" if new.is_terminal else ""
        changed = self.run(
            f"UPDATE batches SET {sets}{ended} WHERE pk = ? AND state = ?",
            (*fields.values(), pk, old.value),
        )
        if changed != 1:
            raise Conflict(batch_id, f"changed state concurrently (it was {old.value})")
        data: dict[str, JSON] = {"from": old.value, "to": new.value}
        if extra.get("pause_reason"):
            data["reason"] = extra["pause_reason"]
        self.event(batch_id, "batch.state", data, now)
        announced = event_for(new, extra.get("pause_reason"))
        if announced is not None:
            self.announce(pk, batch_id, announced, now)

    def announce(self, pk: int, batch_id: str, event: str, now: float) -> None:
        """Write a webhook delivery of ``event``, due now, for each URL the batch names; its
        body is the batch's status as this transaction leaves it, as ``batchyard status
        --json`` shows it (its top error clusters too). In the transaction of the change it
        reports: it is sent if and only if the change commits."""
        urls = self.all(
            "SELECT url FROM batch_webhooks WHERE batch_pk = ? ORDER BY position", (pk,)
        )
        row = self.batch_at(pk) if urls else None
        if row is None:
            return
        clusters = clusters_of(self.all(clusters_query(TOP_CLUSTERS), (batch_id,)))
        view = {**status_view(row.status(), now), "error_clusters": [c.as_dict() for c in clusters]}
        body = json.dumps(view, separators=(",", ":"))
        self.many(
            _INSERT_DELIVERY,
            [(new_delivery_id(), pk, batch_id, event, url, body, now, now) for (url,) in urls],
        )

    def end_if_done(self, pk: int, now: float) -> str | None:
        """End a sealed batch none of whose items is left to run; returns its id if so."""
        row = self.batch_at(pk)
        if row is None or not row.sealed or row.counts.remaining != 0:
            return None
        state = row.batch_state
        if state not in ENDABLE:
            return None
        if state is B.QUEUED:  # an open batch sealed before it got any item
            self.set_state(pk, row.id, state, B.PROCESSING, now, started_at=now)
            state = B.PROCESSING
        ending = ending_state(row.n_succeeded, row.n_failed, row.n_cancelled)
        self.set_state(pk, row.id, state, ending, now)
        return row.id

    def move_counts(self, pk: int, deltas: Mapping[str, float], now: float) -> None:
        """Add to a batch's kept counters (and usage sums) in this transaction."""
        sets = ", ".join(f"{column} = {column} + ?" for column in deltas)
        self.run(
            f"UPDATE batches SET {sets}, updated_at = ? WHERE pk = ?", (*deltas.values(), now, pk)
        )
