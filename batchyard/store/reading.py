"""Reading: batches, items, logs and the change feed, and what workers ask about batches.
Reads take no lock."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from batchyard.errors import ItemNotFound
from batchyard.models import (
    USAGE_FIELDS,
    Again,
    BatchStatus,
    Counts,
    Event,
    Finishes,
    Item,
    LogLine,
    Page,
    Totals,
    Usage,
)
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Outlook
from batchyard.store.clustering import resolve
from batchyard.store.rows import (
    BATCH_COLUMNS,
    ITEM_COLUMNS,
    BatchRow,
    ItemRow,
    held_ready,
    item_columns,
    shown_state,
)
from batchyard.store.rules import CLAIMABLE, B, S, page_key, span, spread
from batchyard.store.sqlbase import SqlBase

# A page of the feed holds whole transactions: everything up to the cursor of the
# limit-th row, so a page never ends half-way through the rows of one cursor value. And it
# stops below the horizon: cursors a transaction still in progress may yet write.
_WHOLE_GROUPS = (
    "{horizon} > seq AND seq <= COALESCE((SELECT seq FROM {table} WHERE {where} "
    "ORDER BY seq LIMIT 1 OFFSET ?), 9223372036854775807)"
)
#: Item states with a partial index of their own (see the schema).
_INDEXED_STATES = frozenset({S.RUNNING, S.RETRY_WAIT, S.FAILED})
#: Filters by a state that items held ready beyond a cap (standby) read as or hide.
_STATE_IS = {
    S.PENDING: f" AND (state = ? OR ({held_ready()}))",
    S.RUNNING: " AND state = ? AND standby = 0",
}
#: A batch's first and last item ids. NOTE: two subqueries, not MIN and MAX in one: SQLite
#: answers a lone MIN or MAX from the primary key, both together by a scan of the batch.
FIRST_LAST = (
    "SELECT (SELECT MIN(id) FROM items WHERE id >= ? AND id < ?), "
    "(SELECT MAX(id) FROM items WHERE id >= ? AND id < ?)"
)
#: Item states an item ends in.
_ENDED_STATES = frozenset({S.SUCCEEDED.value, S.FAILED.value, S.CANCELLED.value})
_ENDED = "(" + ", ".join(f"'{state}'" for state in sorted(_ENDED_STATES)) + ")"
#: When a batch's earliest retry comes due (a correlated subquery on ``batches b``).
NEXT_DUE = f"(SELECT MIN(run_after) FROM items WHERE batch_pk = b.pk AND state = '{S.RETRY_WAIT}')"


class Reading(SqlBase):
    """Batches, items, logs and the change feed."""

    def list_batches(
        self,
        *,
        state: BatchState | None = None,
        task: str | None = None,
        limit: int = 50,
        after: str | None = None,
        owner: str | None = None,
        template: str | None = None,
        text: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> Page[BatchStatus]:
        where, params = ["1 = 1"], list[Any]()
        for column, value in (
            ("state", None if state is None else state.value),
            ("task", task),
            ("owner", owner),
            ("template_name", template),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if text:
            # Case-blind in both databases; the pattern's own wildcards are taken literally.
            where.append(
                "(LOWER(COALESCE(name, '')) LIKE ? ESCAPE '!' OR LOWER(id) LIKE ? ESCAPE '!')"
            )
            pattern = (
                "%" + text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
            )
            params += (pattern, pattern)
        if created_after is not None:
            where.append("created_at >= ?")
            params.append(created_after)
        if created_before is not None:
            where.append("created_at < ?")
            params.append(created_before)
        if after is not None:
            # The cursor is the last row's key, so it holds even if that batch is deleted.
            where.append("pk < ?")
            params.append(page_key(after))
        rows = [
            BatchRow._make(row)
            for row in self._read(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE {' AND '.join(where)} "
                "ORDER BY pk DESC LIMIT ?",
                (*params, limit + 1),
            )
        ]
        page = [row.status() for row in rows[:limit]]
        return Page(page, f"p{rows[limit - 1].pk}" if len(rows) > limit else None)

    def totals(self, now: float) -> Totals:
        counters = ", ".join(f"SUM(n_{state.value})" for state in ItemState)
        usage = ", ".join(f"SUM({name})" for name in USAGE_FIELDS)
        again = ", ".join(f"SUM(again_{why.value})" for why in Again)
        rows = self._read(
            f"SELECT state, COUNT(*), {counters}, {again}, {usage}, SUM(n_standby) "
            "FROM batches GROUP BY state"
        )
        batches, items = {}, dict.fromkeys((s.value for s in ItemState), 0)
        reruns, used = dict.fromkeys((why.value for why in Again), 0), []
        for state, count, *sums, standby in rows:
            batches[str(state)] = int(count)
            # Items held ready beyond their batches' caps count as pending.
            items[S.PENDING.value] += int(standby or 0)
            items[S.RUNNING.value] -= int(standby or 0)
            for item_state, value in zip(ItemState, sums, strict=False):
                items[item_state.value] += int(value or 0)
            for why, value in zip(Again, sums[len(ItemState) :], strict=False):
                reruns[why.value] += int(value or 0)
            used.append([0 if v is None else v for v in sums[len(ItemState) + len(Again) :]])
        waiting = self._read("SELECT SUM(items) FROM limit_waits WHERE expires_at > ?", (now,))
        usage_sums = [sum(column) for column in zip(*used, strict=True)] if used else []
        return Totals(
            batches=batches,
            items=items,
            reruns=reruns,
            usage=Usage(*usage_sums) if usage_sums else Usage(),
            waiting=int(waiting[0][0] or 0),
        )

    def items(
        self,
        batch_id: str,
        *,
        state: ItemState | None = None,
        after: int = 0,
        limit: int = 1000,
        payloads: bool = True,
        results: bool = True,
        cluster: str | None = None,
    ) -> list[Item]:
        pk = self._pk(batch_id)
        low, high = span(pk)
        where, params = "id > ? AND id < ?", list[object]([low + max(0, after), high])
        if state is not None:
            # As items read (``shown_state``): one held ready beyond its cap is pending.
            where += _STATE_IS.get(state, " AND state = ?")
            params.append(state.value)
        if cluster is not None:
            where += " AND error_sig = ?"
            params.append(resolve(self._read, pk, batch_id, cluster))
        if state in _INDEXED_STATES:
            # Naming the batch lets the database use the state's partial index instead of
            # walking the whole batch for a few running, waiting or failed items.
            where += " AND batch_pk = ?"
            params.append(pk)
        rows = self._read(
            f"SELECT {item_columns(payloads, results)} FROM items "
            f"WHERE {where} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [ItemRow._make(row).item(batch_id) for row in rows]

    def item(self, batch_id: str, key: str) -> Item:
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE batch_pk = ? AND key = ?",
            (self._pk(batch_id), key),
        )
        if not rows:
            raise ItemNotFound(batch_id, key)
        return ItemRow._make(rows[0]).item(batch_id)

    def item_logs(self, batch_id: str, key: str) -> list[LogLine]:
        rows = self._read(
            "SELECT l.attempt, l.at, l.kind, l.message FROM item_logs l "
            "JOIN items i ON i.id = l.item_id WHERE i.batch_pk = ? AND i.key = ? "
            f"ORDER BY l.at, l.{self.dialect.log_order}",
            (self._pk(batch_id), key),
        )
        if not rows:
            self.item(batch_id, key)  # raises ItemNotFound for an unknown key
        return [LogLine(*row) for row in rows]

    def events(self, batch_id: str | None = None, since: int = 0, limit: int = 1000) -> list[Event]:
        where, params = (
            ("seq > ?", (since,))
            if batch_id is None
            else ("batch_id = ? AND seq > ?", (batch_id, since))
        )
        rows = self._read(
            f"SELECT seq, batch_id, kind, data, at FROM events WHERE {where} "
            f"AND {self._whole_groups('events', where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [Event(s, batch, kind, json.loads(data), at) for s, batch, kind, data, at in rows]

    def item_changes(
        self,
        batch_id: str,
        since: int = 0,
        limit: int = 1000,
        *,
        payloads: bool = True,
        results: bool = True,
    ) -> list[Item]:
        where = "batch_pk = ? AND seq > 0 AND seq > ?"
        params = (self._pk(batch_id), since)
        rows = self._read(
            f"SELECT {item_columns(payloads, results)} FROM items WHERE {where} "
            f"AND {self._whole_groups('items', where)} ORDER BY seq, id",
            (*params, *params, max(1, limit) - 1),
        )
        return [ItemRow._make(row).item(batch_id) for row in rows]

    def finishes(self, batch_id: str, sample: int = 1000, recent: int = 100) -> Finishes:
        pk = self._pk(batch_id)
        first, last = self._read(FIRST_LAST, (*span(pk), *span(pk)))[0]
        ids = [] if first is None or sample < 1 else spread(int(first), int(last), sample)
        member, listed = self._any("id", ids)
        # One statement: the sample by primary key, and the last changed items by the
        # feed's index (items_seq), newest first. Both are bounded by their limits.
        rows = self._read(
            f"SELECT 0, state, started_at, finished_at, duration FROM items "
            f"WHERE {member} AND state IN {_ENDED} AND finished_at IS NOT NULL "
            "UNION ALL SELECT 1, state, started_at, finished_at, duration FROM ("
            "SELECT state, started_at, finished_at, duration, seq FROM items "
            "WHERE batch_pk = ? AND seq > 0 ORDER BY seq DESC LIMIT ?) r",
            (listed, pk, max(0, recent)),
        )
        sampled = sorted(float(row[3]) for row in rows if row[0] == 0)
        latest = [row for row in rows if row[0] == 1]
        ended = [row for row in latest if row[1] in _ENDED_STATES and row[3] is not None]
        times = [float(t) for row in latest for t in (row[2], row[3]) if t is not None]
        return Finishes(
            sampled=tuple(sampled),
            scale=(int(last) - int(first) + 1) / len(ids) if ids else 1.0,
            recent=tuple(sorted((float(row[3]) for row in ended), reverse=True)),
            durations=tuple(float(row[4]) for row in ended if row[4] is not None),
            last_activity=max(times, default=None),
        )

    def _whole_groups(self, table: str, where: str) -> str:
        return _WHOLE_GROUPS.format(horizon=self._feed_horizon(), table=table, where=where)

    def recount(self, batch_id: str) -> Counts:
        # An item held ready beyond its batch's cap counts as pending, as in the counters.
        rows = self._read(
            f"SELECT {shown_state()} AS counted, COUNT(*) FROM items WHERE id >= ? AND id < ? "
            "GROUP BY counted",
            span(self._pk(batch_id)),
        )
        return Counts(**{state: int(n) for state, n in rows})

    def outcome_matrix(
        self, first_id: str, second_id: str
    ) -> dict[tuple[ItemState, ItemState], int]:
        first, second = self._pk(first_id), self._pk(second_id)
        rows = self._read(
            f"SELECT {shown_state('a')}, {shown_state('b')}, COUNT(*) FROM items a "
            "JOIN items b ON b.batch_pk = ? AND b.key = a.key "
            "WHERE a.id >= ? AND a.id < ? GROUP BY 1, 2",
            (second, *span(first)),
        )
        return {(S(a), S(b)): int(n) for a, b, n in rows}

    def active_tasks(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT task FROM batches WHERE state IN {CLAIMABLE}")
        return {task for (task,) in rows}

    def batch_states(self, batch_pks: Collection[int]) -> dict[int, BatchState]:
        if not batch_pks:
            return {}
        where, pks = self._any("pk", batch_pks)
        rows = self._read(f"SELECT pk, state FROM batches WHERE {where}", (pks,))
        return {pk: B(state) for pk, state in rows}

    def outlook(
        self, tasks: Collection[str], now: float, only: Collection[str] | None = None
    ) -> Outlook:
        if not tasks:
            return Outlook(0, None, 0)
        where, names = self._any("task", tasks)
        rows = [
            (left, due)
            for left, due, batch_id in self._read(
                "SELECT n_pending + n_running + n_retry_wait, "
                f"CASE WHEN n_retry_wait > 0 THEN {NEXT_DUE} END, id "
                f"FROM batches b WHERE state IN {CLAIMABLE} AND {where}",
                (names,),
            )
            if only is None or batch_id in only
        ]
        dues = [float(due) for _, due in rows if due is not None]
        callbacks = sum(
            1
            for (batch_id,) in self._read(
                "SELECT id FROM batches WHERE ended_round > callbacks_round "
                f"AND {where} AND (callback_lease IS NULL OR callback_lease < ?)",
                (names, now),
            )
            if only is None or batch_id in only
        )
        return Outlook(sum(int(left) for left, _ in rows), min(dues) if dues else None, callbacks)
