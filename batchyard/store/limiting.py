"""Limiting: the rate-limit primitives. Each is one short transaction on the ``limits`` row
of its key (locked, where the database locks rows) and that key's leases. None touches
batches, items or the change feed, so limit calls never queue behind claims and group
commits, and the two kinds of transaction never wait for each other."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from batchyard.store.limits import (
    Grant,
    LimitRow,
    Limits,
    LimitState,
    Wait,
    WaitRow,
    limit_correct,
    limit_take,
)
from batchyard.store.sqlbase import SqlBase
from batchyard.store.tx import Tx

_ROW = "SELECT requests, tokens, updated_at, paused_until, pause_reason FROM limits WHERE key = ?"


def _row(tx: Tx, key: str, now: float) -> LimitRow:
    tx.run(
        "INSERT INTO limits (key, updated_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, now),
    )
    requests, tokens, updated_at, until, reason = tx.one(_ROW + tx.dialect.for_update, (key,))
    return LimitRow(requests, tokens, updated_at, until, reason)


def _save(tx: Tx, key: str, row: LimitRow) -> None:
    tx.run(
        "UPDATE limits SET requests = ?, tokens = ?, updated_at = ? WHERE key = ?",
        (row.requests, row.tokens, row.updated_at, key),
    )


class Limiting(SqlBase):
    """Token buckets, leased concurrency slots and pauses per limiter key."""

    def limit_acquire(self, key: str, limits: Limits, tokens: float, now: float) -> Grant | Wait:
        with self._write() as tx:
            row = _row(tx, key, now)
            tx.run("DELETE FROM limit_leases WHERE key = ? AND expires_at <= ?", (key, now))
            in_flight, next_expiry = tx.one(
                "SELECT COUNT(*), MIN(expires_at) FROM limit_leases WHERE key = ?", (key,)
            )
            wait = limit_take(row, limits, tokens, now, int(in_flight), next_expiry)
            if wait is not None:
                return wait
            _save(tx, key, row)
            grant = Grant(key, uuid.uuid4().hex, tokens, now + limits.lease, row.updated_at, limits)
            tx.run(
                "INSERT INTO limit_leases (key, grant_id, tokens, expires_at) VALUES (?, ?, ?, ?)",
                (key, grant.id, tokens, grant.expires_at),
            )
            return grant

    def limit_settle(self, grant: Grant, actual_tokens: float, now: float) -> None:
        with self._write() as tx:
            row = _row(tx, grant.key, now)
            held = tx.one(
                "SELECT tokens FROM limit_leases WHERE key = ? AND grant_id = ?",
                (grant.key, grant.id),
            )
            before = grant.tokens if held is None else float(held[0])
            tx.run(
                "UPDATE limit_leases SET tokens = ? WHERE key = ? AND grant_id = ?",
                (actual_tokens, grant.key, grant.id),
            )
            limit_correct(row, grant.limits, actual_tokens - before, now)
            _save(tx, grant.key, row)

    def limit_release(self, grant: Grant, now: float) -> bool:
        with self._write() as tx:
            gone = tx.one(
                "DELETE FROM limit_leases WHERE key = ? AND grant_id = ? RETURNING expires_at",
                (grant.key, grant.id),
            )
            return gone is not None and float(gone[0]) > now

    def limit_pause(self, key: str, until: float, reason: str, now: float) -> float:
        with self._write() as tx:
            _row(tx, key, now)
            paused = tx.one(
                "UPDATE limits SET pause_reason = CASE WHEN COALESCE(paused_until, 0) < ? "
                "THEN ? ELSE pause_reason END, paused_until = CASE WHEN "
                "COALESCE(paused_until, 0) < ? THEN ? ELSE paused_until END "
                "WHERE key = ? RETURNING paused_until",
                (until, reason, until, until, key),
            )
            return float(paused[0])

    def limit_state(self, key: str, now: float) -> LimitState | None:
        rows = self._read(_ROW, (key,))
        if not rows:
            return None
        in_flight = self._read(
            "SELECT COUNT(*) FROM limit_leases WHERE key = ? AND expires_at > ?", (key, now)
        )[0][0]
        requests, tokens, updated_at, paused_until, reason = rows[0]
        return LimitState(key, requests, tokens, updated_at, int(in_flight), paused_until, reason)

    def publish_waits(
        self, worker: str, waits: Sequence[WaitRow], now: float, expires_at: float
    ) -> None:
        # The worker's rows are replaced as a whole: it knows all of them, and a row it
        # leaves out is no longer true. Rows of workers that stopped answering go too.
        with self._write() as tx:
            tx.run("DELETE FROM limit_waits WHERE worker = ? OR expires_at <= ?", (worker, now))
            if waits:
                tx.many(
                    "INSERT INTO limit_waits (worker, batch_pk, key, reason, items, "
                    "wait_until, rate, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (worker, w.batch_pk, w.key, w.reason, w.items, w.until, w.rate, expires_at)
                        for w in waits
                    ],
                )
