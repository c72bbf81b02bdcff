"""Working: claims (``FOR UPDATE SKIP LOCKED``, in chunks), heartbeats, releases and the
lease sweep; recording outcomes is in ``recording``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from batchyard.states import ItemState, check_item
from batchyard.store.base import Claim, ClaimedBatch, LeaseUpdate, Outcome, Recorded
from batchyard.store.postgres.connection import (
    CLAIMABLE,
    LOG_INSERT,
    B,
    S,
    Tx,
    log_rows,
    span,
)
from batchyard.store.postgres.recording import Recording
from batchyard.store.rows import COUNTER_OF
from batchyard.store.rules import expiry

_CLAIMABLE_BATCHES = (
    "SELECT pk, id, task, state, concurrency, n_running, n_pending, n_retry_wait, "
    "timeout, params, claim_cursor, CASE WHEN n_pending = 0 THEN (SELECT MIN(run_after) "
    "FROM items WHERE batch_pk = b.pk AND state = 'retry_wait') END, limits "
    f"FROM batches b WHERE state IN {CLAIMABLE} AND (n_pending > 0 OR n_retry_wait > 0) "
    "AND task = ANY(%s) ORDER BY priority DESC, state = 'retrying' DESC, pk"
)

# Lease up to N items of one batch. SKIP LOCKED: rows another transaction holds are passed
# over, never waited for. ``{where}`` picks requeued or fresh items.
_TAKE = (
    "WITH picked AS (SELECT id FROM items WHERE {where} LIMIT %(room)s FOR UPDATE SKIP LOCKED) "
    "UPDATE items i SET state = 'running', attempts = i.attempts + 1, worker = %(worker)s, "
    "lease_expires = %(expires)s, started_at = %(now)s, seq = %(seq)s{clear} FROM picked "
    "WHERE i.id = picked.id RETURNING i.id, i.key, i.payload, i.attempts, i.max_attempt, "
    "i.priority"
)
_TAKE_REQUEUED = _TAKE.format(
    where="batch_pk = %(pk)s AND state = 'pending' AND attempts > 0 AND suspect = %(suspect)s "
    "ORDER BY priority DESC, id",
    clear=", progress = NULL, message = NULL",  # a fresh item has neither yet
)
_TAKE_FRESH = _TAKE.format(
    where="id >= %(low)s AND id < %(high)s AND state = 'pending' AND attempts = 0 ORDER BY id",
    clear="",
)

_HEARTBEAT = (
    "UPDATE items i SET lease_expires = %s, progress = COALESCE(u.progress, i.progress), "
    "message = COALESCE(u.message, i.message), seq = COALESCE(u.seq, i.seq) "
    "FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[], %s::bigint[]) "
    "AS u(id, attempt, progress, message, seq) "
    "WHERE i.id = u.id AND i.attempts = u.attempt AND i.state = 'running' RETURNING i.id"
)


class Working(Recording):
    """What workers do to items: claim, heartbeat, release; and the lease sweep."""

    def _claimable(
        self,
        capacity: Mapping[str, int],
        now: float,
        only: Collection[str] | None = None,
        tx: Tx | None = None,
    ) -> list[Any]:
        """Claimable batches of the given tasks (and ids, if ``only``) with something
        runnable now, best first."""
        tasks = [name for name, free in capacity.items() if free > 0]
        if not tasks:
            return []
        rows = (
            tx.all(_CLAIMABLE_BATCHES, (tasks,)) if tx else self._read(_CLAIMABLE_BATCHES, (tasks,))
        )
        out = []
        for row in rows:
            if only is not None and row[1] not in only:
                continue
            if row[4] is not None and row[5] >= row[4]:
                continue
            if row[6] == 0 and (row[11] is None or row[11] > now):
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
        # Without outcomes, a read first spares idle polls the feed lock.
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
        rows = self._claimable(capacity, now, only, tx)
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
            due = tx.run(
                "UPDATE items SET state = 'pending', seq = %s WHERE batch_pk = %s "
                "AND state = 'retry_wait' AND run_after <= %s",
                (tx.seq, pk, now),
            )
            if due:
                tx.move_counts(pk, {"n_pending": due, "n_retry_wait": -due}, now)
        args = {
            "worker": worker_id,
            "expires": now + lease,
            "now": now,
            "seq": tx.seq,
            "pk": pk,
            "suspect": int(suspect),
            "room": room,
        }
        # Items that came back (retries, leases taken back) go first, then fresh ones.
        got = sorted(tx.all(_TAKE_REQUEUED, args), key=lambda r: (-r[5], r[0]))
        if len(got) < room and not suspect:
            low, high = span(pk)
            args.update(low=max(low, row[10]), high=high, room=room - len(got))
            fresh = sorted(tx.all(_TAKE_FRESH, args))
            if fresh:
                tx.run(
                    "UPDATE batches SET claim_cursor = %s WHERE pk = %s",
                    (fresh[-1][0] + 1, pk),
                )
                got += fresh
        if not got:
            return []
        tx.move_counts(pk, {"n_pending": -len(got), "n_running": len(got)}, now)
        if state is B.QUEUED:
            tx.set_state(pk, batch_id, B.QUEUED, B.PROCESSING, now, started_at=now)
        batch = ClaimedBatch(
            pk, batch_id, row[2], row[8], json.loads(row[9]), row[12] and json.loads(row[12])
        )
        return [Claim(r[0], batch, r[1], r[2], r[3], r[4], suspect) for r in got]

    def heartbeat(self, leases: Sequence[LeaseUpdate], now: float, lease: float) -> set[int]:
        if not leases:
            return set()
        # With the feed lock even when nothing changed: the lease sweep changes these rows
        # under it too, and one lock order for all keeps the two from deadlocking.
        with self._write() as tx:
            seq = tx.seq if any(update.changed for update in leases) else None
            held = {
                row[0]
                for row in tx.all(
                    _HEARTBEAT,
                    (
                        now + lease,
                        [u.item_id for u in leases],
                        [u.attempt for u in leases],
                        [None if u.progress is None else float(u.progress) for u in leases],
                        [u.message for u in leases],
                        [seq if u.changed else None for u in leases],
                    ),
                )
            }
            lost = {u.item_id for u in leases} - held
            logs = [
                (u.item_id, u.attempt, *line)
                for u in leases
                if u.item_id not in lost
                for line in u.logs
            ]
            if logs:
                tx.run(LOG_INSERT, log_rows(logs))
        return lost

    def release(self, leases: Sequence[tuple[int, int]], now: float) -> int:
        if not leases:
            return 0
        with self._write() as tx:
            rows = tx.all(
                "SELECT i.id, i.batch_pk, b.state FROM items i JOIN batches b "
                "ON b.pk = i.batch_pk WHERE i.id = ANY(%s)",
                ([item_id for item_id, _ in leases],),
            )
            where = {item_id: (pk, B(state)) for item_id, pk, state in rows}
            moved = 0
            for item_id, attempt in leases:
                if item_id not in where:
                    continue
                pk, batch_state = where[item_id]
                target = S.CANCELLED if batch_state is B.CANCELLED else S.PENDING
                moved += self._unlease(tx, pk, item_id, attempt, target, now, spend=False)
            tx.notify = moved > 0
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
        expired_before: float | None = None,
    ) -> int:
        """Move one running item off its lease to ``target``; 1 if it moved, else 0."""
        check_item(S.RUNNING, target)
        changed = tx.run(
            "UPDATE items SET state = %s, worker = NULL, lease_expires = NULL, "
            "max_attempt = max_attempt + %s, error = COALESCE(%s, error), "
            "error_type = CASE WHEN %s::text IS NULL THEN error_type ELSE 'LeaseExpired' END, "
            "suspect = COALESCE(%s, suspect), finished_at = %s, seq = %s "
            "WHERE id = %s AND attempts = %s AND state = 'running' "
            "AND (%s::float8 IS NULL OR lease_expires < %s::float8)",
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
                expired_before,
                expired_before,
            ),
        )
        if changed:
            tx.move_counts(pk, {"n_running": -1, COUNTER_OF[target]: 1}, now)
            if error is not None:
                tx.run(LOG_INSERT, log_rows([(item_id, attempt, now, "error", error)]))
            tx.end_if_done(pk, now)
        return int(changed)

    def _reclaim_leases(self, now: float) -> int:
        expired = self._read(
            "SELECT i.id, i.batch_pk, i.attempts, i.max_attempt, b.state, i.worker, i.suspect "
            "FROM batches b JOIN items i ON i.batch_pk = b.pk WHERE b.n_running > 0 "
            "AND i.state = 'running' AND i.lease_expires < %s ORDER BY i.id",
            (now,),
        )
        moved = 0
        if expired:
            with self._write() as tx:
                held = dict(
                    tx.all(
                        "SELECT worker, COUNT(*) FROM items WHERE state = 'running' "
                        "AND worker = ANY(%s) GROUP BY worker",
                        (list({row[5] for row in expired}),),
                    )
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
                        expired_before=now,
                    )
                tx.notify = moved > 0
        return moved
