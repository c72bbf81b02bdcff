"""Controlling: pause, resume, cancel, retry, delete and prune batches, and batch-ending
callbacks."""

from __future__ import annotations

from collections.abc import Collection

from batchyard.errors import ConfigError, Conflict, ItemNotFound
from batchyard.models import Again, BatchStatus
from batchyard.states import ItemState, check_item
from batchyard.store.clustering import resolve, uncount_failed
from batchyard.store.rows import BATCH_COLUMNS, COUNTER_OF, BatchRow, batch_from_row, held_ready
from batchyard.store.rules import FINISHED, B, S, span
from batchyard.store.sqlbase import SqlBase
from batchyard.store.submitting import delete_rows
from batchyard.store.tx import Tx

_CANCEL = f"UPDATE items SET state = '{S.CANCELLED}', finished_at = ?, seq = ? WHERE "
_CANCEL_READY = (
    f"UPDATE items SET state = '{S.CANCELLED}', finished_at = ?, seq = ?, worker = NULL, "
    f"lease_expires = NULL WHERE batch_pk = ? AND {held_ready()}"
)


def _not_finished(row: BatchRow, doing: str) -> None:
    """Raise Conflict when a batch has ended: one error for every control on it."""
    if row.batch_state.is_terminal:
        raise Conflict(row.id, f"has already ended ({row.state}); it cannot be {doing}")


class Controlling(SqlBase):
    """State changes users ask for, and the leases on batch-ending callbacks."""

    def pause(self, batch_id: str, now: float, reason: str | None = None) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch(batch_id)
            state = row.batch_state
            if state is B.PAUSED:
                if reason is not None and row.pause_reason is None:
                    tx.run("UPDATE batches SET pause_reason = ? WHERE pk = ?", (reason, row.pk))
            else:
                _not_finished(row, "paused")
                tx.set_state(
                    row.pk,
                    batch_id,
                    state,
                    B.PAUSED,
                    now,
                    resume_state=state.value,
                    pause_reason=reason,
                )
        return self.get_batch(batch_id)

    def resume(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch(batch_id)
            if row.batch_state is B.PAUSED:
                back = B(row.resume_state or B.QUEUED)
                tx.set_state(
                    row.pk, batch_id, B.PAUSED, back, now, resume_state=None, pause_reason=None
                )
                tx.end_if_done(row.pk, now)
                tx.notify = True
            else:
                _not_finished(row, "resumed")
                if not row.batch_state.is_active:
                    raise Conflict(batch_id, f"is {row.state}, not paused")
        return self.get_batch(batch_id)

    def cancel(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch(batch_id)
            state = row.batch_state
            if state is B.CANCELLED:
                return row.status()
            _not_finished(row, "cancelled")
            low, high = span(row.pk)
            stopped = 0
            fresh = (max(low, row.claim_cursor), high)
            for where, params in (
                (f"id >= ? AND id < ? AND state = '{S.PENDING}'", fresh),
                (f"batch_pk = ? AND state = '{S.PENDING}' AND attempts > 0", (row.pk,)),
                (f"batch_pk = ? AND state = '{S.RETRY_WAIT}'", (row.pk,)),
            ):
                stopped += tx.run(_CANCEL + where, (now, tx.seq, *params))
            # Items held ready beyond the cap never started: they end here too (a worker
            # that starts one meanwhile has its outcome refused, as for an item cancelled).
            ready = tx.run(_CANCEL_READY, (now, tx.seq, row.pk))
            tx.run(
                "UPDATE batches SET n_cancelled = n_cancelled + ?, n_pending = 0, "
                "n_retry_wait = 0, n_running = n_running - ?, n_standby = 0 WHERE pk = ?",
                (stopped + ready, ready, row.pk),
            )
            tx.set_state(row.pk, batch_id, state, B.CANCELLED, now)
        return self.get_batch(batch_id)

    def retry_failed(
        self,
        batch_id: str,
        now: float,
        *,
        keys: Collection[str] | None = None,
        states: Collection[ItemState] = (S.FAILED,),
        cluster: str | None = None,
    ) -> int:
        wanted = _retryable(states)
        if cluster is not None and (keys is not None or wanted != [S.FAILED]):
            raise ConfigError("a retry of an error cluster takes its failed items only")
        with self._write() as tx:
            row = tx.batch(batch_id)
            state = row.batch_state
            if state not in (B.FAILED, B.PARTIALLY_COMPLETED):
                raise Conflict(
                    batch_id,
                    f"is {state.value}; only a failed or partially completed batch retries",
                )
            if keys is not None:
                self._check_keys(tx, row.pk, batch_id, keys, wanted)
            sig = None if cluster is None else resolve(tx.all, row.pk, batch_id, cluster)
            sent = {
                item_state: self._send_back(tx, row, item_state, keys, sig) for item_state in wanted
            }
            total = sum(sent.values())
            if total == 0:
                names = " or ".join(item_state.value for item_state in wanted)
                where = "" if sig is None else f" in error cluster {sig}"
                raise Conflict(batch_id, f"has no {names} items{where} to retry")
            moved = {COUNTER_OF[item_state]: -n for item_state, n in sent.items()}
            tx.move_counts(row.pk, {**moved, "n_pending": total}, now)
            tx.run("UPDATE batches SET round = round + 1 WHERE pk = ?", (row.pk,))
            tx.set_state(row.pk, batch_id, state, B.RETRYING, now, finished_at=None)
            tx.event(batch_id, "batch.retry", {"items": total, "round": row.round + 1}, now)
            tx.notify = True
        return total

    def _check_keys(
        self, tx: Tx, pk: int, batch_id: str, keys: Collection[str], wanted: list[ItemState]
    ) -> None:
        where, names = self._any("key", keys)
        found = dict(
            tx.all(f"SELECT key, state FROM items WHERE batch_pk = ? AND {where}", (pk, names))
        )
        for key in keys:
            if key not in found:
                raise ItemNotFound(batch_id, key)
            if ItemState(found[key]) not in wanted:
                names = " or ".join(item_state.value for item_state in wanted)
                raise Conflict(batch_id, f"item {key} is {found[key]}; only {names} items retry")

    def _send_back(
        self,
        tx: Tx,
        row: BatchRow,
        state: ItemState,
        keys: Collection[str] | None,
        sig: str | None = None,
    ) -> int:
        """Items of one state (those of error cluster ``sig`` only, if given) back to
        pending, ahead of fresh work, with a fresh round of attempts; returns how many.
        Failed ones leave their clusters' counts of failed items."""
        check_item(state, S.PENDING)
        where, params = "batch_pk = ? AND state = ?", [row.pk, state.value]
        if keys is not None:
            fragment, names = self._any("key", keys)
            where += f" AND {fragment}"
            params.append(names)
        if sig is not None:
            where += " AND error_sig = ?"
            params.append(sig)
        if state is S.FAILED:
            uncount_failed(tx, row.pk, where, params)
        return tx.run(
            f"UPDATE items SET state = '{S.PENDING}', priority = priority + 1, "
            "max_attempt = attempts + ?, "
            # Only an item that ran runs again; a cancelled one that never ran runs first.
            f"again = CASE WHEN attempts > unrun THEN '{Again.RETRY}' ELSE again END, "
            "error = NULL, error_sig = NULL, "
            "error_type = NULL, finished_at = NULL, progress = NULL, message = NULL, "
            f"seq = ? WHERE {where}",
            (row.max_attempts, tx.seq, *params),
        )

    def delete_batch(self, batch_id: str, now: float) -> None:
        with self._write() as tx:
            row = tx.batch(batch_id)
            if not row.batch_state.is_terminal:
                raise Conflict(batch_id, f"is {row.state}; cancel it before deleting it")
            delete_rows(tx, row.pk)
            tx.event(None, "batch.deleted", {"batch_id": batch_id}, now)

    def prune(self, finished_before: float, now: float) -> int:
        rows = self._read(
            f"SELECT id FROM batches WHERE state IN {FINISHED} AND finished_at < ?",
            (finished_before,),
        )
        for (batch_id,) in rows:
            self.delete_batch(batch_id, now)
        with self._write() as tx:
            tx.run("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
        return len(rows)

    def claim_callbacks(
        self,
        tasks: Collection[str],
        now: float,
        lease: float,
        only: Collection[str] | None = None,
    ) -> list[tuple[BatchStatus, int]]:
        if not tasks:
            return []
        where, names = self._any("task", tasks)
        due = [
            (pk, round_)
            for pk, round_, batch_id in self._read(
                "SELECT pk, ended_round, id FROM batches WHERE ended_round > callbacks_round "
                f"AND {where} AND (callback_lease IS NULL OR callback_lease < ?)",
                (names, now),
            )
            if only is None or batch_id in only
        ]
        claimed: list[tuple[BatchStatus, int]] = []
        for pk, round_ in due:
            # No feed change here: a callback lease is not part of the feed.
            with self._write() as tx:
                won = tx.one(
                    "UPDATE batches SET callback_lease = ? WHERE pk = ? AND ended_round = ? "
                    "AND ended_round > callbacks_round "
                    "AND (callback_lease IS NULL OR callback_lease < ?) "
                    f"RETURNING {BATCH_COLUMNS}",
                    (now + lease, pk, round_, now),
                )
            if won is not None:
                claimed.append((batch_from_row(won), round_))
        return claimed

    def finish_callbacks(self, batch_id: str, round_: int) -> None:
        with self._write() as tx:
            tx.run(
                "UPDATE batches SET callbacks_round = CASE WHEN callbacks_round > ? "
                "THEN callbacks_round ELSE ? END, callback_lease = NULL WHERE id = ?",
                (round_, round_, batch_id),
            )


def _retryable(states: Collection[ItemState]) -> list[ItemState]:
    """The item states a retry takes, checked: failed and/or cancelled."""
    wanted = sorted(set(states), key=list(ItemState).index)
    if not wanted or any(state not in (S.FAILED, S.CANCELLED) for state in wanted):
        raise ConfigError(
            "a retry takes failed and/or cancelled items, not "
            + ", ".join(state.value for state in wanted)
        )
    return wanted
