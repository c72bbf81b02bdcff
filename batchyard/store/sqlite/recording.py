"""Recording: outcomes written in group commits, fenced by the attempt number, and the
batch counters, logs and endings that go with them."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from batchyard.models import USAGE_FIELDS
from batchyard.states import check_item
from batchyard.store.base import (
    Outcome,
    Recorded,
)
from batchyard.store.rows import (
    COUNTER_OF,
)
from batchyard.store.sqlite.connection import (
    LOG_INSERT,
    S,
    SqliteBase,
    Tx,
)


class Recording(SqliteBase):
    """Outcomes, fenced by the attempt number, with the counters that go with them."""

    def record(self, outcomes: Sequence[Outcome], now: float) -> Recorded:
        if not outcomes:
            return Recorded([], [])
        with self._write() as tx:
            return self._record_in(tx, outcomes, now)

    def _record_in(self, tx: Tx, outcomes: Sequence[Outcome], now: float) -> Recorded:
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
    def _no_retry_when_cancelled(tx: Tx, outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
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
        tx: Tx, outcomes: Sequence[Outcome], seq: int
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

    def _apply_outcomes(self, tx: Tx, accepted: Sequence[Outcome], now: float) -> list[str]:
        deltas: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(int))
        logs: list[tuple[Any, ...]] = []
        for o in accepted:
            d = deltas[o.batch_pk]
            d["n_running"] -= 1
            d[COUNTER_OF[o.state]] += 1
            if not o.usage.is_zero:
                for column, value in zip(USAGE_FIELDS, o.usage.values(), strict=True):
                    d[column] += value
            logs.extend((o.item_id, o.attempt, *line) for line in o.logs)
            if o.error is not None:
                logs.append((o.item_id, o.attempt, o.finished_at, "error", o.error))
        if logs:
            tx.conn.executemany(LOG_INSERT, logs)
        ended = []
        for pk, d in deltas.items():
            tx.move_counts(pk, d, now)
            batch_id = tx.end_if_done(pk, now)
            if batch_id is not None:
                ended.append(batch_id)
        return ended


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
            params += o.usage.values()
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
    (", ".join(f"{column} = {column} + ?" for column in USAGE_FIELDS), None),
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
