"""Recording: outcomes written in group commits, fenced by the attempt number, and the
batch counters, logs and endings that go with them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from batchyard.models import NO_USAGE, USAGE_FIELDS
from batchyard.states import check_item
from batchyard.store.base import Outcome, Recorded
from batchyard.store.clustering import count_failures, hits_of, with_signatures
from batchyard.store.rows import COUNTER_OF
from batchyard.store.rules import B, S, first_per_attempt
from batchyard.store.sqlbase import LOG_INSERT, SqlBase
from batchyard.store.tx import Tx


class Recording(SqlBase):
    """Outcomes, fenced by the attempt number, with the counters that go with them."""

    def record(self, outcomes: Sequence[Outcome], now: float) -> Recorded:
        if not outcomes:
            return Recorded([], [])
        with self._write() as tx:
            return self._record_in(tx, outcomes, now)

    def _record_in(self, tx: Tx, outcomes: Sequence[Outcome], now: float) -> Recorded:
        for state in {o.state for o in outcomes}:
            check_item(S.RUNNING, state)
        tx.lock_batches({o.batch_pk for o in outcomes})
        outcomes = with_signatures(self._no_retry_when_cancelled(tx, outcomes))
        firsts, _ = first_per_attempt(outcomes)
        applied = self._apply_outcomes(tx, firsts, tx.seq)
        if len(applied) == len(outcomes):  # the usual case: every one of them applied
            return Recorded([], self._count_outcomes(tx, outcomes, now))
        accepted = [o for o in firsts if (o.item_id, o.attempt) in applied]
        taken = {id(o) for o in accepted}
        rejected = [o for o in outcomes if id(o) not in taken]
        if rejected:
            self._say_rejected(tx, rejected, now)
        return Recorded(rejected, self._count_outcomes(tx, accepted, now))

    def _no_retry_when_cancelled(self, tx: Tx, outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
        """An attempt that failed in a batch cancelled meanwhile ends cancelled: nothing
        would ever run its retry."""
        waiting = {o.batch_pk for o in outcomes if o.state is S.RETRY_WAIT}
        if not waiting:
            return outcomes
        where, pks = self._any("pk", waiting)
        cancelled = {
            pk
            for (pk,) in tx.all(
                f"SELECT pk FROM batches WHERE {where} AND state = '{B.CANCELLED}'", (pks,)
            )
        }
        return [
            replace(o, state=S.CANCELLED, run_after=None)
            if o.state is S.RETRY_WAIT and o.batch_pk in cancelled
            else o
            for o in outcomes
        ]

    def _say_rejected(self, tx: Tx, rejected: Sequence[Outcome], now: float) -> None:
        where, pks = self._any("pk", {o.batch_pk for o in rejected})
        batch_ids = dict(tx.all(f"SELECT pk, id FROM batches WHERE {where}", (pks,)))
        for o in rejected:
            tx.event(
                batch_ids.get(o.batch_pk),
                "item.outcome_rejected",
                {"item_id": o.item_id, "key": o.key, "attempt": o.attempt, "state": o.state},
                now,
            )

    @staticmethod
    def _count_outcomes(tx: Tx, accepted: Sequence[Outcome], now: float) -> list[str]:
        """Move the counters and usage sums of the outcomes' batches, write their logs and
        end the batches they finish; returns the ids of those."""
        deltas: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(int))
        # Counted per (batch, state) first: one pass over plain outcomes, in C.
        for (pk, state), n in Counter([(o.batch_pk, o.state) for o in accepted]).items():
            d = deltas[pk]
            d["n_running"] -= n
            d[COUNTER_OF[state]] += n
        logs: list[tuple[Any, ...]] = []
        # Most outcomes carry none of these: picked out in one comprehension first.
        for o in [o for o in accepted if o.logs or o.error is not None or o.usage is not NO_USAGE]:
            if not o.usage.is_zero:
                d = deltas[o.batch_pk]
                for column, value in zip(USAGE_FIELDS, o.usage.values(), strict=True):
                    d[column] += value
            logs.extend((o.item_id, o.attempt, *line) for line in o.logs)
            if o.error is not None:
                # When and where an attempt that failed ran: the item row keeps only the
                # latest attempt's (a success writes no such line: the row has it).
                where = f"on worker {o.worker}" if o.worker else "on a worker"
                logs.append((o.item_id, o.attempt, o.started_at, "started", where))
                logs.append((o.item_id, o.attempt, o.finished_at, "error", o.error))
        if logs:
            tx.many(LOG_INSERT, logs)
        count_failures(tx, hits_of(accepted))
        ended = []
        # In pk order: two transactions never wait for each other's batch rows in a cycle.
        for pk in sorted(deltas):
            tx.move_counts(pk, deltas[pk], now)
            batch_id = tx.end_if_done(pk, now)
            if batch_id is not None:
                ended.append(batch_id)
        return ended
