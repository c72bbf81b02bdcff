"""Delivering: webhook deliveries leased to the process that sends them, their outcomes, their
log, and the settings every process shares (the signing secret). The deliveries themselves
are written by ``Tx.announce``, in the transaction of the change they report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchyard.deliveries import Attempt, Delivery, DeliveryState
from batchyard.store.sqlbase import SqlBase

P = DeliveryState.PENDING
_COLUMNS = (
    "pk, id, batch_id, event, url, state, attempts, created_at, next_at, last_status, "
    "last_error, last_duration, delivered_at, payload"
)
_DUE = f"state = '{P}' AND next_at <= ?"
#: The longest error message kept for a try.
_ERROR_CHARS = 500


def _delivery(row: Any) -> Delivery:
    values = list(row)
    values[5] = DeliveryState(values[5])
    return Delivery(*values)


class Delivering(SqlBase):
    """Webhook deliveries and shared settings."""

    def claim_deliveries(self, now: float, lease: float, limit: int = 20) -> list[Delivery]:
        # A read first: most polls find nothing due and take no write lock.
        if not self._read(f"SELECT 1 FROM webhook_deliveries WHERE {_DUE} LIMIT 1", (now,)):
            return []
        with self._write() as tx:
            pks = [
                pk
                for (pk,) in tx.all(
                    f"SELECT pk FROM webhook_deliveries WHERE {_DUE} ORDER BY next_at "
                    f"LIMIT ?{self.dialect.skip_locked}",
                    (now, limit),
                )
            ]
            if not pks:
                return []
            where, values = self._any("pk", pks)
            rows = tx.all(
                f"UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ? "
                f"WHERE {where} AND {_DUE} RETURNING {_COLUMNS}",
                (now + lease, values, now),
            )
        return sorted((_delivery(row) for row in rows), key=lambda d: d.pk)

    def finish_delivery(
        self, delivery: Delivery, attempt: Attempt, now: float, retry_at: float | None
    ) -> bool:
        ok = attempt.is_ok
        if ok:
            state = DeliveryState.DELIVERED
        else:
            state = P if retry_at is not None else DeliveryState.FAILED
        error = None if attempt.error is None else attempt.error[:_ERROR_CHARS]
        with self._write() as tx:
            changed = tx.run(
                "UPDATE webhook_deliveries SET state = ?, next_at = ?, last_status = ?, "
                "last_error = ?, last_duration = ?, delivered_at = ? "
                f"WHERE pk = ? AND attempts = ? AND state = '{P}'",
                (
                    state.value,
                    retry_at if state is P else None,
                    attempt.status,
                    error,
                    attempt.duration,
                    now if ok else None,
                    delivery.pk,
                    delivery.attempts,
                ),
            )
        return changed == 1

    def webhook_deliveries(self, batch_id: str) -> list[Delivery]:
        pk = self._pk(batch_id)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE batch_pk = ? ORDER BY pk", (pk,)
        )
        return [_delivery(row) for row in rows]

    def webhook_urls(self, batch_id: str) -> list[str]:
        rows = self._read(
            "SELECT url FROM batch_webhooks WHERE batch_pk = ? ORDER BY position",
            (self._pk(batch_id),),
        )
        return [str(url) for (url,) in rows]

    def delivery_counts(self) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        for state, n in self._read("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state"):
            counts[DeliveryState(state)] = int(n)
        return counts

    def setting(self, name: str, make: Callable[[], str]) -> str:
        rows = self._read("SELECT value FROM store_settings WHERE name = ?", (name,))
        if rows:
            return str(rows[0][0])
        with self._write() as tx:
            # Of processes racing here, the first insert wins and every one reads it.
            tx.run(
                "INSERT INTO store_settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, make()),
            )
            return str(tx.one("SELECT value FROM store_settings WHERE name = ?", (name,))[0])
