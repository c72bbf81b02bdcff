"""Limiting: the rate-limit primitives of the SQLite store. Each is one short ``BEGIN
IMMEDIATE`` transaction on the ``limits`` row of its key (and that key's leases), so the
processes sharing the file take turns on it; none touches the change feed."""

from __future__ import annotations

import uuid

from batchyard.store.limits import (
    Grant,
    LimitRow,
    Limits,
    LimitState,
    Wait,
    limit_correct,
    limit_take,
)
from batchyard.store.sqlite.connection import SqliteBase, Tx

_ROW = "SELECT requests, tokens, updated_at, paused_until, pause_reason FROM limits WHERE key = ?"


def _row(tx: Tx, key: str, now: float) -> LimitRow:
    tx.conn.execute(
        "INSERT INTO limits (key, updated_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, now),
    )
    return LimitRow(*tx.conn.execute(_ROW, (key,)).fetchone())


def _save(tx: Tx, key: str, row: LimitRow) -> None:
    tx.conn.execute(
        "UPDATE limits SET requests = ?, tokens = ?, updated_at = ? WHERE key = ?",
        (row.requests, row.tokens, row.updated_at, key),
    )


class Limiting(SqliteBase):
    """Token buckets, leased concurrency slots and pauses per limiter key."""

    def limit_acquire(self, key: str, limits: Limits, tokens: float, now: float) -> Grant | Wait:
        with self._write() as tx:
            row = _row(tx, key, now)
            tx.conn.execute(
                "DELETE FROM limit_leases WHERE key = ? AND expires_at <= ?", (key, now)
            )
            in_flight, next_expiry = tx.conn.execute(
                "SELECT COUNT(*), MIN(expires_at) FROM limit_leases WHERE key = ?", (key,)
            ).fetchone()
            wait = limit_take(row, limits, tokens, now, int(in_flight), next_expiry)
            if wait is not None:
                return wait
            _save(tx, key, row)
            grant = Grant(key, uuid.uuid4().hex, tokens, now + limits.lease, row.updated_at, limits)
            tx.conn.execute(
                "INSERT INTO limit_leases (key, grant_id, tokens, expires_at) VALUES (?, ?, ?, ?)",
                (key, grant.id, tokens, grant.expires_at),
            )
            return grant

    def limit_settle(self, grant: Grant, actual_tokens: float, now: float) -> None:
        with self._write() as tx:
            row = _row(tx, grant.key, now)
            held = tx.conn.execute(
                "SELECT tokens FROM limit_leases WHERE key = ? AND grant_id = ?",
                (grant.key, grant.id),
            ).fetchone()
            before = grant.tokens if held is None else float(held[0])
            tx.conn.execute(
                "UPDATE limit_leases SET tokens = ? WHERE key = ? AND grant_id = ?",
                (actual_tokens, grant.key, grant.id),
            )
            limit_correct(row, grant.limits, actual_tokens - before, now)
            _save(tx, grant.key, row)

    def limit_release(self, grant: Grant, now: float) -> bool:
        with self._write() as tx:
            gone = tx.conn.execute(
                "DELETE FROM limit_leases WHERE key = ? AND grant_id = ? RETURNING expires_at",
                (grant.key, grant.id),
            ).fetchone()
            return gone is not None and float(gone[0]) > now

    def limit_pause(self, key: str, until: float, reason: str, now: float) -> float:
        with self._write() as tx:
            _row(tx, key, now)
            paused = tx.conn.execute(
                "UPDATE limits SET pause_reason = CASE WHEN COALESCE(paused_until, 0) < ? "
                "THEN ? ELSE pause_reason END, paused_until = MAX(COALESCE(paused_until, 0), ?) "
                "WHERE key = ? RETURNING paused_until",
                (until, reason, until, key),
            ).fetchone()
            return float(paused[0])

    def limit_state(self, key: str, now: float) -> LimitState | None:
        rows = self._read(_ROW, (key,))
        if not rows:
            return None
        in_flight = self._read(
            "SELECT COUNT(*) FROM limit_leases WHERE key = ? AND expires_at > ?", (key, now)
        )[0][0]
        row = LimitRow(*rows[0])
        return LimitState(
            key,
            row.requests,
            row.tokens,
            row.updated_at,
            int(in_flight),
            row.paused_until,
            row.pause_reason,
        )
