"""Reading: batches, items, logs and the change feed, and what workers ask about batches."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from batchyard.errors import ItemNotFound
from batchyard.models import BatchStatus, Counts, Event, Item, LogLine, Page
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Outlook
from batchyard.store.postgres.connection import CLAIMABLE, B, PostgresBase, span
from batchyard.store.rows import BATCH_COLUMNS, ITEM_COLUMNS, batch_from_row, item_from_row
from batchyard.store.rules import page_key

# A page of the feed holds whole transactions: everything up to the cursor of the
# ``limit``-th row, all rows sharing that cursor included.
_WHOLE_GROUPS = (
    "COALESCE((SELECT seq FROM {table} WHERE {where} ORDER BY seq LIMIT 1 OFFSET %s), "
    "9223372036854775807)"
)


class Reading(PostgresBase):
    """Batches, items, logs and the change feed; reads take no lock."""

    def list_batches(
        self,
        *,
        state: BatchState | None = None,
        task: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[BatchStatus]:
        where, params = ["TRUE"], list[Any]()
        if state is not None:
            where.append("state = %s")
            params.append(state.value)
        if task is not None:
            where.append("task = %s")
            params.append(task)
        if after is not None:
            # The cursor is the last row's key, so it holds even if that batch is deleted.
            where.append("pk < %s")
            params.append(page_key(after))
        rows = self._read(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE {' AND '.join(where)} "
            "ORDER BY pk DESC LIMIT %s",
            (*params, limit + 1),
        )
        page = [batch_from_row(row) for row in rows[:limit]]
        return Page(page, f"p{rows[limit - 1][0]}" if len(rows) > limit else None)

    def items(
        self, batch_id: str, *, state: ItemState | None = None, after: int = 0, limit: int = 1000
    ) -> list[Item]:
        low, high = span(self._pk(batch_id))
        where = "" if state is None else " AND state = %s"
        extra = () if state is None else (state.value,)
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE id > %s AND id < %s{where} "
            "ORDER BY id LIMIT %s",
            (low + max(0, after), high, *extra, limit),
        )
        return [item_from_row(batch_id, row) for row in rows]

    def item(self, batch_id: str, key: str) -> Item:
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE batch_pk = %s AND key = %s",
            (self._pk(batch_id), key),
        )
        if not rows:
            raise ItemNotFound(batch_id, key)
        return item_from_row(batch_id, rows[0])

    def item_logs(self, batch_id: str, key: str) -> list[LogLine]:
        rows = self._read(
            "SELECT l.attempt, l.at, l.kind, l.message FROM item_logs l "
            "JOIN items i ON i.id = l.item_id WHERE i.batch_pk = %s AND i.key = %s "
            "ORDER BY l.at, l.id",
            (self._pk(batch_id), key),
        )
        if not rows:
            self.item(batch_id, key)  # raises ItemNotFound for an unknown key
        return [LogLine(*row) for row in rows]

    def events(self, batch_id: str | None = None, since: int = 0, limit: int = 1000) -> list[Event]:
        where, params = (
            ("seq > %s", (since,))
            if batch_id is None
            else ("batch_id = %s AND seq > %s", (batch_id, since))
        )
        rows = self._read(
            f"SELECT seq, batch_id, kind, data, at FROM events WHERE {where} "
            f"AND seq <= {_WHOLE_GROUPS.format(table='events', where=where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [Event(row[0], row[1], row[2], json.loads(row[3]), row[4]) for row in rows]

    def item_changes(self, batch_id: str, since: int = 0, limit: int = 1000) -> list[Item]:
        where = "batch_pk = %s AND seq > 0 AND seq > %s"
        params = (self._pk(batch_id), since)
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {where} "
            f"AND seq <= {_WHOLE_GROUPS.format(table='items', where=where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [item_from_row(batch_id, row) for row in rows]

    def cursor(self) -> int:
        return int(self._read("SELECT seq FROM feed WHERE id = 1")[0][0])

    def recount(self, batch_id: str) -> Counts:
        rows = self._read(
            "SELECT state, COUNT(*) FROM items WHERE id >= %s AND id < %s GROUP BY state",
            span(self._pk(batch_id)),
        )
        return Counts(**{state: int(n) for state, n in rows})

    def active_tasks(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT task FROM batches WHERE state IN {CLAIMABLE}")
        return {row[0] for row in rows}

    def batch_states(self, batch_pks: Collection[int]) -> dict[int, BatchState]:
        if not batch_pks:
            return {}
        rows = self._read("SELECT pk, state FROM batches WHERE pk = ANY(%s)", (list(batch_pks),))
        return {pk: B(state) for pk, state in rows}

    def outlook(
        self, tasks: Collection[str], now: float, only: Collection[str] | None = None
    ) -> Outlook:
        if not tasks:
            return Outlook(0, None, 0)
        tasks = list(tasks)
        rows = [
            row
            for row in self._read(
                "SELECT n_pending + n_running + n_retry_wait, id, CASE WHEN n_retry_wait > 0 "
                "THEN (SELECT MIN(run_after) FROM items WHERE batch_pk = b.pk "
                f"AND state = 'retry_wait') END FROM batches b WHERE state IN {CLAIMABLE} "
                "AND task = ANY(%s)",
                (tasks,),
            )
            if only is None or row[1] in only
        ]
        remaining = sum(int(r[0]) for r in rows)
        dues = [float(r[2]) for r in rows if r[2] is not None]
        callbacks = sum(
            1
            for (batch_id,) in self._read(
                "SELECT id FROM batches WHERE ended_round > callbacks_round "
                "AND task = ANY(%s) AND (callback_lease IS NULL OR callback_lease < %s)",
                (tasks, now),
            )
            if only is None or batch_id in only
        )
        return Outlook(remaining, min(dues) if dues else None, callbacks)
