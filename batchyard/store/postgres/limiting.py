"""Limiting: the rate-limit primitives of the PostgreSQL store.

Each is one short transaction of its own that locks the ``limits`` row of its key (``FOR
UPDATE``) and then touches only that key's leases. None takes the ``feed`` row lock
(``_write(feed=False)``): they change no batch, item or feed row, and wait for no lock but
their key's row, which no feed-locking transaction takes, so the two kinds of transaction
cannot wait for each other, and limit calls never queue behind claims and group commits.
"""

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
from batchyard.store.postgres.connection import PostgresBase, Tx

_ROW = "SELECT requests, tokens, updated_at, paused_until, pause_reason FROM limits WHERE key = %s"


def _row(tx: Tx, key: str, now: float) -> LimitRow:
    tx.run(
        "INSERT INTO limits (key, updated_at) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
        (key, now),
    )
    return LimitRow(*tx.one(_ROW + " FOR UPDATE", (key,)))


def _save(tx: Tx, key: str, row: LimitRow) -> None:
    tx.run(
        "UPDATE limits SET requests = %s, tokens = %s, updated_at = %s WHERE key = %s",
        (row.requests, row.tokens, row.updated_at, key),
    )


class Limiting(PostgresBase):
    """Token buckets, leased concurrency slots and pauses per limiter key."""

    def limit_acquire(self, key: str, limits: Limits, tokens: float, now: float) -> Grant | Wait:
        with self._write(feed=False) as tx:
            row = _row(tx, key, now)
            tx.run("DELETE FROM limit_leases WHERE key = %s AND expires_at <= %s", (key, now))
            in_flight, next_expiry = tx.one(
                "SELECT COUNT(*), MIN(expires_at) FROM limit_leases WHERE key = %s", (key,)
            )
            wait = limit_take(row, limits, tokens, now, int(in_flight), next_expiry)
            if wait is not None:
                return wait
            _save(tx, key, row)
            grant = Grant(key, uuid.uuid4().hex, tokens, now + limits.lease, row.updated_at, limits)
            tx.run(
                "INSERT INTO limit_leases (key, grant_id, tokens, expires_at) "
                "VALUES (%s, %s, %s, %s)",
                (key, grant.id, tokens, grant.expires_at),
            )
            return grant

    def limit_settle(self, grant: Grant, actual_tokens: float, now: float) -> None:
        with self._write(feed=False) as tx:
            row = _row(tx, grant.key, now)
            held = tx.one(
                "SELECT tokens FROM limit_leases WHERE key = %s AND grant_id = %s",
                (grant.key, grant.id),
            )
            before = grant.tokens if held is None else float(held[0])
            tx.run(
                "UPDATE limit_leases SET tokens = %s WHERE key = %s AND grant_id = %s",
                (actual_tokens, grant.key, grant.id),
            )
            limit_correct(row, grant.limits, actual_tokens - before, now)
            _save(tx, grant.key, row)

    def limit_release(self, grant: Grant, now: float) -> bool:
        with self._write(feed=False) as tx:
            gone = tx.one(
                "DELETE FROM limit_leases WHERE key = %s AND grant_id = %s RETURNING expires_at",
                (grant.key, grant.id),
            )
            return gone is not None and float(gone[0]) > now

    def limit_pause(self, key: str, until: float, reason: str, now: float) -> float:
        with self._write(feed=False) as tx:
            _row(tx, key, now)
            paused = tx.one(
                "UPDATE limits SET pause_reason = CASE WHEN COALESCE(paused_until, 0) < %s "
                "THEN %s ELSE pause_reason END, "
                "paused_until = GREATEST(COALESCE(paused_until, 0), %s) "
                "WHERE key = %s RETURNING paused_until",
                (until, reason, until, key),
            )
            return float(paused[0])

    def limit_state(self, key: str, now: float) -> LimitState | None:
        rows = self._read(_ROW, (key,))
        if not rows:
            return None
        in_flight = self._read(
            "SELECT COUNT(*) FROM limit_leases WHERE key = %s AND expires_at > %s", (key, now)
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
