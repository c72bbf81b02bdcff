"""Working: claims, heartbeats, releases and the lease sweep; recording outcomes is in
``recording``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from batchyard.states import ItemState, check_item
from batchyard.store.base import (
    Claim,
    ClaimedBatch,
    LeaseUpdate,
    Outcome,
    Recorded,
)
from batchyard.store.rows import (
    COUNTER_OF,
)
from batchyard.store.rules import expiry
from batchyard.store.sqlite.connection import (
    CLAIMABLE,
    LOG_INSERT,
    B,
    S,
    Tx,
    span,
)
from batchyard.store.sqlite.recording import Recording


class Working(Recording):
    """What workers do to items: claim, heartbeat, release; and the lease sweep."""

    def _claimable(
        self, capacity: Mapping[str, int], now: float, only: Collection[str] | None = None
    ) -> list[Any]:
        """Claimable batches of the given tasks (and ids, if ``only``) with something
        runnable now, best first."""
        rows = self._read(
            "SELECT pk, id, task, state, concurrency, n_running, n_pending, n_retry_wait, "
            f"timeout, params, claim_cursor, limits FROM batches WHERE state IN {CLAIMABLE} "
            "AND (n_pending > 0 OR n_retry_wait > 0) "
            "ORDER BY priority DESC, state = 'retrying' DESC, pk"
        )
        out = []
        for row in rows:
            if capacity.get(row[2], 0) <= 0 or (only is not None and row[1] not in only):
                continue
            if row[4] is not None and row[5] >= row[4]:
                continue
            if row[6] == 0 and self._next_due(row[0]) > now:
                continue
            out.append(row)
        return out

    def claim(
        self,
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
        only: Collection[str] | None = None,
    ) -> list[Claim]:
        return self.record_and_claim(
            [], worker_id, capacity, limit, now, lease, alone=alone, only=only
        )[1]

    def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool = False,
        only: Collection[str] | None = None,
    ) -> tuple[Recorded, list[Claim]]:
        # Outcomes free slots under batch caps, so with outcomes the claim always looks
        # inside the transaction; without, a read first spares idle polls the write lock.
        want = (
            limit > 0
            and bool(capacity)
            and (bool(outcomes) or bool(self._claimable(capacity, now, only)))
        )
        if not outcomes and not want:
            return Recorded([], []), []
        with self._write() as tx:
            done = self._record_in(tx, outcomes, now) if outcomes else Recorded([], [])
            claims = (
                self._claim_in(tx, worker_id, capacity, limit, now, lease, alone, only)
                if want
                else []
            )
        return done, claims

    def _claim_in(
        self,
        tx: Tx,
        worker_id: str,
        capacity: Mapping[str, int],
        limit: int,
        now: float,
        lease: float,
        alone: bool,
        only: Collection[str] | None,
    ) -> list[Claim]:
        rows = self._claimable(capacity, now, only)
        if alone:
            for row in rows:
                if row[4] is None or row[5] < row[4]:
                    suspect = self._claim_from(tx, row, worker_id, 1, now, lease, suspect=True)
                    if suspect:
                        return suspect
        left = dict(capacity)
        claims: list[Claim] = []
        for row in rows:
            room = min(limit - len(claims), left.get(row[2], 0))
            if row[4] is not None:
                room = min(room, row[4] - row[5])
            if room <= 0:
                continue
            got = self._claim_from(tx, row, worker_id, room, now, lease)
            left[row[2]] -= len(got)
            claims.extend(got)
            if len(claims) >= limit:
                break
        return claims

    def _claim_from(
        self,
        tx: Tx,
        row: Any,
        worker_id: str,
        room: int,
        now: float,
        lease: float,
        *,
        suspect: bool = False,
    ) -> list[Claim]:
        pk, batch_id, state = row[0], row[1], B(row[3])
        if row[7]:
            due = tx.conn.execute(
                "UPDATE items SET state = 'pending', seq = ? WHERE batch_pk = ? "
                "AND state = 'retry_wait' AND run_after <= ?",
                (tx.seq, pk, now),
            ).rowcount
            if due:
                tx.move_counts(pk, {"n_pending": due, "n_retry_wait": -due}, now)
        take = (
            "UPDATE items SET state = 'running', attempts = attempts + 1, worker = ?, "
            "lease_expires = ?, started_at = ?, seq = ?{} "
            "WHERE id IN (SELECT id FROM items WHERE {} LIMIT ?) "
            "RETURNING id, key, payload, attempts, max_attempt"
        )
        lease_args = (worker_id, now + lease, now, tx.seq)
        # Items that came back (retries, leases taken back) go first, then fresh ones.
        got = tx.conn.execute(
            take.format(
                ", progress = NULL, message = NULL",  # a fresh item has neither yet
                "batch_pk = ? AND state = 'pending' AND attempts > 0 AND suspect = ? "
                "ORDER BY priority DESC, id",
            ),
            (*lease_args, pk, int(suspect), room),
        ).fetchall()
        if len(got) < room and not suspect:
            low, high = span(pk)
            fresh = tx.conn.execute(
                take.format(
                    "", "id >= ? AND id < ? AND state = 'pending' AND attempts = 0 ORDER BY id"
                ),
                (*lease_args, max(low, row[10]), high, room - len(got)),
            ).fetchall()
            if fresh:
                tx.conn.execute(
                    "UPDATE batches SET claim_cursor = ? WHERE pk = ?",
                    (max(r[0] for r in fresh) + 1, pk),
                )
                got += fresh
        if not got:
            return []
        tx.move_counts(pk, {"n_pending": -len(got), "n_running": len(got)}, now)
        if state is B.QUEUED:
            tx.set_state(pk, batch_id, B.QUEUED, B.PROCESSING, now, started_at=now)
        batch = ClaimedBatch(
            pk, batch_id, row[2], row[8], json.loads(row[9]), row[11] and json.loads(row[11])
        )
        return [Claim(r[0], batch, r[1], r[2], r[3], r[4], suspect) for r in got]

    def heartbeat(self, leases: Sequence[LeaseUpdate], now: float, lease: float) -> set[int]:
        if not leases:
            return set()
        with self._write() as tx:
            seq = tx.seq if any(update.changed for update in leases) else None
            cur = tx.conn.executemany(
                "UPDATE items SET lease_expires = ?, progress = COALESCE(?, progress), "
                "message = COALESCE(?, message), seq = COALESCE(?, seq) "
                "WHERE id = ? AND attempts = ? AND state = 'running'",
                [
                    (
                        now + lease,
                        u.progress,
                        u.message,
                        seq if u.changed else None,
                        u.item_id,
                        u.attempt,
                    )
                    for u in leases
                ],
            )
            lost: set[int] = set()
            if cur.rowcount != len(leases):
                lost = self._not_holding(tx, [(u.item_id, u.attempt) for u in leases])
            logs = [
                (u.item_id, u.attempt, *line)
                for u in leases
                if u.item_id not in lost
                for line in u.logs
            ]
            if logs:
                tx.conn.executemany(LOG_INSERT, logs)
        return lost

    @staticmethod
    def _not_holding(tx: Tx, leases: Sequence[tuple[int, int]]) -> set[int]:
        """Which of these (item id, attempt) leases are no longer held."""
        wanted = dict(leases)
        marks = ",".join("?" * len(wanted))
        held = {
            row[0]
            for row in tx.conn.execute(
                f"SELECT id, attempts FROM items WHERE id IN ({marks}) AND state = 'running'",
                tuple(wanted),
            )
            if wanted[row[0]] == row[1]
        }
        return set(wanted) - held

    def release(self, leases: Sequence[tuple[int, int]], now: float) -> int:
        if not leases:
            return 0
        with self._write() as tx:
            marks = ",".join("?" * len(leases))
            rows = tx.conn.execute(
                f"SELECT i.id, i.batch_pk, b.state FROM items i JOIN batches b "
                f"ON b.pk = i.batch_pk WHERE i.id IN ({marks})",
                tuple(item_id for item_id, _ in leases),
            ).fetchall()
            where = dict((item_id, (pk, B(state))) for item_id, pk, state in rows)
            moved = 0
            for item_id, attempt in leases:
                if item_id not in where:
                    continue
                pk, batch_state = where[item_id]
                target = S.CANCELLED if batch_state is B.CANCELLED else S.PENDING
                moved += self._unlease(tx, pk, item_id, attempt, target, now, spend=False)
        return moved

    def _unlease(
        self,
        tx: Tx,
        pk: int,
        item_id: int,
        attempt: int,
        target: ItemState,
        now: float,
        *,
        spend: bool,
        suspect: bool | None = None,
        error: str | None = None,
        extra_where: str = "",
        extra_params: tuple[Any, ...] = (),
    ) -> int:
        """Move one running item off its lease to ``target``; 1 if it moved, else 0."""
        check_item(S.RUNNING, target)
        changed = tx.conn.execute(
            "UPDATE items SET state = ?, worker = NULL, lease_expires = NULL, "
            "max_attempt = max_attempt + ?, error = COALESCE(?, error), "
            "error_type = CASE WHEN ? IS NULL THEN error_type ELSE 'LeaseExpired' END, "
            "suspect = COALESCE(?, suspect), finished_at = ?, seq = ? "
            f"WHERE id = ? AND attempts = ? AND state = 'running'{extra_where}",
            (
                target.value,
                0 if spend else 1,
                error,
                error,
                None if suspect is None else int(suspect),
                now if target.is_terminal else None,
                tx.seq,
                item_id,
                attempt,
                *extra_params,
            ),
        ).rowcount
        if changed:
            tx.move_counts(pk, {"n_running": -1, COUNTER_OF[target]: 1}, now)
            if error is not None:
                tx.conn.execute(LOG_INSERT, (item_id, attempt, now, "error", error))
            tx.end_if_done(pk, now)
        return int(changed)

    def _reclaim_leases(self, now: float) -> int:
        expired = self._read(
            "SELECT i.id, i.batch_pk, i.attempts, i.max_attempt, b.state, i.worker, i.suspect "
            "FROM batches b JOIN items i ON i.batch_pk = b.pk WHERE b.n_running > 0 "
            "AND i.state = 'running' AND i.lease_expires < ?",
            (now,),
        )
        moved = 0
        if expired:
            with self._write() as tx:
                held = dict(
                    tx.conn.execute(
                        "SELECT worker, COUNT(*) FROM items WHERE state = 'running' GROUP BY worker"
                    ).fetchall()
                )
                for item_id, pk, attempts, max_attempt, batch_state, worker, suspect in expired:
                    others = held.get(worker, 1) - 1
                    target, spend, error = expiry(
                        B(batch_state), attempts, max_attempt, others, bool(suspect)
                    )
                    moved += self._unlease(
                        tx,
                        pk,
                        item_id,
                        attempts,
                        target,
                        now,
                        spend=spend,
                        suspect=True,
                        error=error,
                        extra_where=" AND lease_expires < ?",
                        extra_params=(now,),
                    )
        return moved
