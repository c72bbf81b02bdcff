"""Recording: outcomes written in group commits, fenced by the attempt number, and the
batch counters, logs and endings that go with them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from batchyard.models import USAGE_FIELDS
from batchyard.states import check_item
from batchyard.store.base import Outcome, Recorded
from batchyard.store.postgres.connection import LOG_INSERT, PostgresBase, S, Tx, log_rows
from batchyard.store.rows import COUNTER_OF

# One statement for a whole group commit: the outcomes go in as column arrays. The WHERE
# clause is the fence: the item must still be running the attempt the outcome is for. A
# later attempt clears what an earlier one may have left (error, metrics, the suspect mark)
# unless it carries its own; see the SQLite store's _OPTIONAL_SETS for the same rules.
_RECORD = """
UPDATE items i SET
    state = u.state,
    seq = %(seq)s,
    duration = u.duration,
    finished_at = CASE WHEN u.terminal THEN u.finished_at ELSE i.finished_at END,
    result = COALESCE(u.result, i.result),
    error = CASE WHEN u.error IS NOT NULL THEN u.error WHEN u.later THEN NULL ELSE i.error END,
    error_type = CASE WHEN u.error IS NOT NULL THEN u.error_type
        WHEN u.later THEN NULL ELSE i.error_type END,
    run_after = COALESCE(u.run_after, i.run_after),
    tokens_in = i.tokens_in + u.tokens_in,
    tokens_out = i.tokens_out + u.tokens_out,
    cost = i.cost + u.cost,
    tokens_cached = i.tokens_cached + u.tokens_cached,
    tokens_reasoning = i.tokens_reasoning + u.tokens_reasoning,
    calls = i.calls + u.calls,
    cache_hits = i.cache_hits + u.cache_hits,
    saved_cost = i.saved_cost + u.saved_cost,
    metrics = CASE WHEN u.metrics IS NOT NULL THEN u.metrics
        WHEN u.later THEN NULL ELSE i.metrics END,
    progress = COALESCE(u.progress, i.progress),
    message = COALESCE(u.message, i.message),
    suspect = CASE WHEN u.later THEN 0 ELSE i.suspect END
FROM unnest(
    %(id)s::bigint[], %(attempt)s::int[], %(state)s::text[], %(duration)s::float8[],
    %(terminal)s::bool[], %(finished_at)s::float8[], %(result)s::text[], %(error)s::text[],
    %(error_type)s::text[], %(run_after)s::float8[], %(tokens_in)s::bigint[],
    %(tokens_out)s::bigint[], %(cost)s::float8[], %(metrics)s::text[], %(progress)s::float8[],
    %(message)s::text[], %(later)s::bool[], %(tokens_cached)s::bigint[],
    %(tokens_reasoning)s::bigint[], %(calls)s::bigint[], %(cache_hits)s::bigint[],
    %(saved_cost)s::float8[]
) AS u(id, attempt, state, duration, terminal, finished_at, result, error, error_type,
    run_after, tokens_in, tokens_out, cost, metrics, progress, message, later, tokens_cached,
    tokens_reasoning, calls, cache_hits, saved_cost)
WHERE i.id = u.id AND i.attempts = u.attempt AND i.state = 'running'
RETURNING i.id, i.attempts
"""


_MONEY = frozenset({"cost", "saved_cost"})


class Recording(PostgresBase):
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
        # Of two outcomes for one attempt only the first can apply.
        first: dict[tuple[int, int], Outcome] = {}
        rejected: list[Outcome] = []
        for o in outcomes:
            if (o.item_id, o.attempt) in first:
                rejected.append(o)
            else:
                first[(o.item_id, o.attempt)] = o
        candidates = list(first.values())
        applied = {(row[0], row[1]) for row in tx.all(_RECORD, _columns(candidates, tx.seq))}
        accepted: list[Outcome] = []
        for o in candidates:
            if (o.item_id, o.attempt) in applied:
                accepted.append(o)
            else:
                rejected.append(o)
        order = {id(o): n for n, o in enumerate(outcomes)}
        rejected.sort(key=lambda o: order[id(o)])
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
        cancelled = {
            row[0]
            for row in tx.all(
                "SELECT pk FROM batches WHERE pk = ANY(%s) AND state = 'cancelled'",
                (list(waiting),),
            )
        }
        return [
            replace(o, state=S.CANCELLED, run_after=None)
            if o.state is S.RETRY_WAIT and o.batch_pk in cancelled
            else o
            for o in outcomes
        ]

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
            tx.run(LOG_INSERT, log_rows(logs))
        ended = []
        # In pk order: two transactions never wait for each other's batch rows in a cycle.
        for pk in sorted(deltas):
            tx.move_counts(pk, deltas[pk], now)
            batch_id = tx.end_if_done(pk, now)
            if batch_id is not None:
                ended.append(batch_id)
        return ended


def _columns(outcomes: Sequence[Outcome], seq: int) -> dict[str, Any]:
    """The outcomes as the column arrays _RECORD takes."""
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "id attempt state duration terminal finished_at result error error_type run_after "
            "metrics progress message later"
        ).split()
        + list(USAGE_FIELDS)
    }
    for o in outcomes:
        cols["id"].append(o.item_id)
        cols["attempt"].append(o.attempt)
        cols["state"].append(o.state.value)
        cols["duration"].append(float(o.finished_at - o.started_at))
        cols["terminal"].append(o.state.is_terminal)
        cols["finished_at"].append(float(o.finished_at))
        cols["result"].append(o.result)
        cols["error"].append(o.error)
        cols["error_type"].append(o.error_type)
        cols["run_after"].append(None if o.run_after is None else float(o.run_after))
        for column, value in zip(USAGE_FIELDS, o.usage.values(), strict=True):
            cols[column].append(float(value) if column in _MONEY else int(value))
        cols["metrics"].append(o.metrics)
        cols["progress"].append(None if o.progress is None else float(o.progress))
        cols["message"].append(o.message)
        cols["later"].append(o.attempt > 1)
    return {"seq": seq, **cols}
