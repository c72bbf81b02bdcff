"""Controlling: pause, resume, cancel, retry, delete and prune batches, and batch-ending
callbacks."""

from __future__ import annotations

from collections.abc import Collection

from batchyard.errors import Conflict
from batchyard.models import BatchStatus
from batchyard.store.postgres.connection import B, PostgresBase, delete_rows, span
from batchyard.store.rows import BATCH_COLUMNS, batch_from_row


class Controlling(PostgresBase):
    """State changes users ask for, and the leases on batch-ending callbacks."""

    def pause(self, batch_id: str, now: float, reason: str | None = None) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state is not B.PAUSED:
                tx.set_state(
                    row[0],
                    batch_id,
                    state,
                    B.PAUSED,
                    now,
                    resume_state=state.value,
                    pause_reason=reason,
                )
            elif reason is not None and row[27] is None:
                tx.run("UPDATE batches SET pause_reason = %s WHERE pk = %s", (reason, row[0]))
        return self.get_batch(batch_id)

    def resume(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            if B(row[4]) is B.PAUSED:
                back = tx.one("SELECT resume_state FROM batches WHERE pk = %s", (row[0],))[0]
                tx.set_state(
                    row[0], batch_id, B.PAUSED, B(back), now, resume_state=None, pause_reason=None
                )
                tx.end_if_done(row[0], now)
                tx.notify = True
            elif not B(row[4]).is_active:
                raise Conflict(batch_id, f"is {row[4]}, not paused")
        return self.get_batch(batch_id)

    def cancel(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state is B.CANCELLED:
                return batch_from_row(row)
            if state.is_terminal:
                raise Conflict(batch_id, f"has already ended ({state.value})")
            stopped = 0
            cursor = tx.one("SELECT claim_cursor FROM batches WHERE pk = %s", (row[0],))[0]
            low, high = span(row[0])
            cancel = "UPDATE items SET state = 'cancelled', finished_at = %s, seq = %s WHERE "
            for where, params in (
                ("id >= %s AND id < %s AND state = 'pending'", (max(low, cursor), high)),
                ("batch_pk = %s AND state = 'pending' AND attempts > 0", (row[0],)),
                ("batch_pk = %s AND state = 'retry_wait'", (row[0],)),
            ):
                stopped += tx.run(cancel + where, (now, tx.seq, *params))
            tx.run(
                "UPDATE batches SET n_cancelled = n_cancelled + %s, n_pending = 0, "
                "n_retry_wait = 0 WHERE pk = %s",
                (stopped, row[0]),
            )
            tx.set_state(row[0], batch_id, state, B.CANCELLED, now)
        return self.get_batch(batch_id)

    def retry_failed(self, batch_id: str, now: float) -> int:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if state not in (B.FAILED, B.PARTIALLY_COMPLETED):
                raise Conflict(
                    batch_id,
                    f"is {state.value}; only a failed or partially completed batch retries",
                )
            sent = tx.run(
                "UPDATE items SET state = 'pending', priority = priority + 1, "
                "max_attempt = attempts + %s, error = NULL, error_type = NULL, "
                "finished_at = NULL, progress = NULL, message = NULL, seq = %s "
                "WHERE batch_pk = %s AND state = 'failed'",
                (row[7], tx.seq, row[0]),
            )
            if sent == 0:
                raise Conflict(batch_id, "has no failed items to retry")
            tx.run(
                "UPDATE batches SET n_failed = n_failed - %s, n_pending = n_pending + %s, "
                "round = round + 1 WHERE pk = %s",
                (sent, sent, row[0]),
            )
            tx.set_state(row[0], batch_id, state, B.RETRYING, now, finished_at=None)
            tx.event(batch_id, "batch.retry", {"items": sent, "round": row[12] + 1}, now)
            tx.notify = True
        return sent

    def delete_batch(self, batch_id: str, now: float) -> None:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            state = B(row[4])
            if not state.is_terminal:
                raise Conflict(batch_id, f"is {state.value}; cancel it before deleting it")
            delete_rows(tx, row[0])
            tx.event(None, "batch.deleted", {"batch_id": batch_id}, now)

    def prune(self, finished_before: float, now: float) -> int:
        rows = self._read(
            "SELECT id FROM batches WHERE state IN "
            "('completed', 'partially_completed', 'failed', 'cancelled') AND finished_at < %s",
            (finished_before,),
        )
        for (batch_id,) in rows:
            self.delete_batch(batch_id, now)
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
        due = [
            (pk, round_)
            for pk, round_, batch_id in self._read(
                "SELECT pk, ended_round, id FROM batches WHERE ended_round > callbacks_round "
                "AND task = ANY(%s) AND (callback_lease IS NULL OR callback_lease < %s)",
                (list(tasks), now),
            )
            if only is None or batch_id in only
        ]
        claimed: list[tuple[BatchStatus, int]] = []
        for pk, round_ in due:
            # No feed change here: a callback lease is not part of the feed.
            with self._write(feed=False) as tx:
                won = tx.one(
                    "UPDATE batches SET callback_lease = %s WHERE pk = %s AND ended_round = %s "
                    "AND ended_round > callbacks_round "
                    "AND (callback_lease IS NULL OR callback_lease < %s) "
                    f"RETURNING {BATCH_COLUMNS}",
                    (now + lease, pk, round_, now),
                )
            if won is not None:
                claimed.append((batch_from_row(won), round_))
        return claimed

    def finish_callbacks(self, batch_id: str, round_: int) -> None:
        with self._write(feed=False) as tx:
            tx.run(
                "UPDATE batches SET callbacks_round = GREATEST(callbacks_round, %s), "
                "callback_lease = NULL WHERE id = %s",
                (round_, batch_id),
            )
