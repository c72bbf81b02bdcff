"""Working: claims, heartbeats, releases and the lease sweep; recording outcomes is in
``recording``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from batchyard.clusters import signature
from batchyard.models import Again
from batchyard.states import ItemState, check_item
from batchyard.store.base import (
    NO_STANDBY,
    Claim,
    ClaimedBatch,
    LeaseUpdate,
    Outcome,
    Recorded,
    Standby,
)
from batchyard.store.clustering import Hit, count_failures
from batchyard.store.reading import NEXT_DUE
from batchyard.store.recording import Recording
from batchyard.store.rows import COUNTER_OF, ClaimableRow, ExpiredRow, TakenRow, held_ready
from batchyard.store.rules import (
    CLAIMABLE,
    CLOCK_STEP,
    POSITION_BITS,
    B,
    LeaseWatch,
    S,
    expiry,
    span,
)
from batchyard.store.sqlbase import LOG_INSERT
from batchyard.store.tx import Tx

A = Again
#: The error class of an attempt whose lease expired.
LEASE_EXPIRED = "LeaseExpired"

_CLAIMABLE_ROW = (
    f"SELECT {', '.join(ClaimableRow._fields[:-1])}, "
    f"CASE WHEN n_pending = 0 THEN {NEXT_DUE} END FROM batches b "
)
_CLAIMABLE_BATCHES = (
    f"{_CLAIMABLE_ROW} WHERE state IN {CLAIMABLE} AND (n_pending > 0 OR n_retry_wait > 0) "
    f"AND task {{any_of}} ORDER BY priority DESC, state = '{B.RETRYING}' DESC, pk"
)
# Lease up to N items of one batch; ``{where}`` picks requeued or fresh ones, ``{lock}``
# passes over rows other transactions hold (PostgreSQL). RETURNING gives rows in no set
# order: the caller sorts them.
#: What a claim sets on an item it leases; its parameters are ``lease_args`` (see
#: ``_claim_from``). A requeued item also loses an earlier attempt's progress (CLEAR).
_new = tuple.__new__
LEASE_SETS = (
    f"state = '{S.RUNNING}', attempts = attempts + 1, worker = ?, lease_expires = ?, "
    "lease_for = ?, started_at = ?, seq = ?, standby = ?"
)
CLEAR_PROGRESS = ", progress = NULL, message = NULL"
_TAKE = (
    "WITH picked AS (SELECT id FROM items WHERE {where} LIMIT ?{lock}) "
    f"UPDATE items SET {LEASE_SETS}{{clear}} WHERE id IN (SELECT id FROM picked) "
    f"RETURNING {', '.join(TakenRow._fields)}"
)
_REQUEUED = (
    f"batch_pk = ? AND state = '{S.PENDING}' AND attempts > 0 AND suspect = ? "
    "ORDER BY priority DESC, id"
)
_FRESH = f"id >= ? AND id < ? AND state = '{S.PENDING}' AND attempts = 0 ORDER BY id"
_UNLEASE = (
    "UPDATE items SET state = ?, worker = NULL, lease_expires = NULL, "
    "max_attempt = max_attempt + ?, finished_at = ?, seq = ?{sets} "
    f"WHERE id = ? AND attempts = ? AND state = '{S.RUNNING}'{{where}} RETURNING again, standby"
)
#: Items held ready (standby) that their worker starts: they count against the cap now,
#: and read as running from now on (a change in the feed).
_PROMOTE = (
    "UPDATE items SET standby = 0, seq = ?, started_at = ? "
    f"WHERE id = ? AND attempts = ? AND {held_ready()}"
)
#: What a lease taken back sets besides: a run that ended so says why it runs again; a lease
#: given back before its task was called was no run (and its claim counted no re-run).
_RAN_SETS = {
    A.WORKER_LOST: f", again = '{A.WORKER_LOST}', error = ?, error_type = '{LEASE_EXPIRED}', "
    "error_sig = ?, suspect = 1",
    A.RELEASED: f", again = '{A.RELEASED}'",
    None: ", unrun = unrun + 1",
}


class Working(Recording):
    """What workers do to items: claim, heartbeat, release; and the lease sweep."""

    #: The leases this store object's sweeps saw lapse, and since when; made on the first
    #: sweep (two sweeps racing to make it lose one sighting at most).
    _lease_watch: LeaseWatch | None = None

    def _claimable(
        self,
        capacity: Mapping[str, int],
        now: float,
        only: Collection[str] | None = None,
        tx: Tx | None = None,
        standby: Standby = NO_STANDBY,
    ) -> list[ClaimableRow]:
        """Claimable batches of the given tasks (and ids, if ``only``) with something
        runnable now, best first."""
        tasks = [name for name, free in capacity.items() if free > 0]
        if not tasks:
            return []
        query = _CLAIMABLE_BATCHES.format(any_of=self.dialect.any_of)
        params = (self.dialect.array(tasks),)
        found = tx.all(query, params) if tx else self._read(query, params)
        rows = [ClaimableRow._make(row) for row in found]
        return [row for row in rows if _runnable(row, now, only, standby)]

    @staticmethod
    def _hold(
        tx: Tx,
        row: ClaimableRow,
        now: float,
        *,
        wait: bool,
        listed_held: bool,
        standby: Standby = NO_STANDBY,
    ) -> ClaimableRow | None:
        """The batch as it is once this transaction holds its row; None when it was passed
        over (another transaction holds it) or nothing is runnable in it now. A row this
        transaction held already when it listed the candidates is as listed."""
        if not listed_held:
            fresh = tx.try_hold(f"{_CLAIMABLE_ROW} WHERE pk = ?", row.pk, wait=wait)
            if fresh is None:
                return None
            row = ClaimableRow._make(fresh)
        return row if B(row.state).is_active and _runnable(row, now, None, standby) else None

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
        standby: Standby = NO_STANDBY,
    ) -> tuple[Recorded, list[Claim]]:
        # Outcomes free slots under batch caps, so with outcomes the claim always looks
        # inside the transaction; without, a read first spares idle polls the write lock.
        want = (
            limit > 0
            and bool(capacity)
            and (bool(outcomes) or bool(self._claimable(capacity, now, only, None, standby)))
        )
        started = standby.started
        if not outcomes and not want and not started:
            return Recorded([], []), []
        with self._write() as tx:
            if started:
                # Held in pk order with the outcomes' batches, before either changes.
                tx.lock_batches(
                    {o.batch_pk for o in outcomes} | {i >> POSITION_BITS for i, _ in started}
                )
                self._start_standby(tx, started, now)
            done = self._record_in(tx, outcomes, now) if outcomes else Recorded([], [])
            claims = (
                self._claim_in(tx, worker_id, capacity, limit, now, lease, alone, only, standby)
                if want
                else []
            )
        return done, claims

    @staticmethod
    def _start_standby(tx: Tx, started: Sequence[tuple[int, int]], now: float) -> None:
        """Items held ready that their worker started count against their caps now."""
        by_batch: dict[int, list[tuple[int, float, int, int]]] = {}
        for item_id, attempt in started:
            row = (tx.seq, now, item_id, attempt)
            by_batch.setdefault(item_id >> POSITION_BITS, []).append(row)
        for pk in sorted(by_batch):
            moved = tx.many(_PROMOTE, by_batch[pk])
            if moved:
                tx.move_counts(pk, {"n_standby": -moved}, now)

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
        standby: Standby = NO_STANDBY,
    ) -> list[Claim]:
        candidates = self._claimable(capacity, now, only, tx, standby)
        held = {c.pk for c in candidates if tx.holds(c.pk)}
        if alone:
            suspect = self._claim_suspect(tx, candidates, held, worker_id, now, lease)
            if suspect:
                return suspect
        # Batches another writer holds are passed over; only when nothing else was free
        # does the claim wait for one (a worker on a single busy batch takes its turn).
        claims: list[Claim] = []
        left = dict(capacity)
        ready = standby.want
        for wait in (False, True):
            for candidate in candidates:
                room = min(limit - len(claims), left.get(candidate.task, 0))
                if room <= 0:
                    continue
                row = self._hold(
                    tx, candidate, now, wait=wait, listed_held=candidate.pk in held, standby=standby
                )
                if row is None:
                    continue
                take, extra = room, 0
                if row.room is not None:
                    take = max(0, min(room, row.room))
                    extra = _ready_in(row, standby, min(ready, room - take), take)
                got = self._claim_from(tx, row, worker_id, take, now, lease, ready=extra)
                left[row.task] -= len(got)
                ready -= sum(claim.standby for claim in got)
                claims.extend(got)
            if claims:
                break
        return claims

    def _claim_suspect(
        self,
        tx: Tx,
        candidates: list[ClaimableRow],
        held: set[int],
        worker_id: str,
        now: float,
        lease: float,
    ) -> list[Claim]:
        """One suspect item (see ``reclaim_expired``) for a worker that holds nothing."""
        for candidate in candidates:
            row = self._hold(tx, candidate, now, wait=True, listed_held=candidate.pk in held)
            if row is not None:
                suspect = self._claim_from(tx, row, worker_id, 1, now, lease, suspect=True)
                if suspect:
                    return suspect
        return []

    def _claim_from(
        self,
        tx: Tx,
        row: ClaimableRow,
        worker_id: str,
        room: int,
        now: float,
        lease: float,
        *,
        suspect: bool = False,
        ready: int = 0,
    ) -> list[Claim]:
        """Lease up to ``room`` items of batch ``row`` to run, then up to ``ready`` more to
        hold ready beyond its cap (see ``Standby``)."""
        if row.n_retry_wait:
            due = tx.run(
                f"UPDATE items SET state = '{S.PENDING}', seq = ?, again = '{A.ERROR}' "
                f"WHERE batch_pk = ? AND state = '{S.RETRY_WAIT}' AND run_after <= ?",
                (tx.seq, row.pk, now),
            )
            if due:
                tx.move_counts(row.pk, {"n_pending": due, "n_retry_wait": -due}, now)
        lease_args = (worker_id, now + lease, lease, now, tx.seq)
        got, row = self._lease(tx, row, room, (*lease_args, 0), suspect)
        held, row = self._lease(tx, row, ready, (*lease_args, 1), suspect)
        if not got and not held:
            return []
        moves = {"n_pending": -len(got) - len(held), "n_running": len(got) + len(held)}
        if held:
            moves["n_standby"] = len(held)
        for taken in (*got, *held):
            if taken.again is not None:  # a re-run: counted by why, as it starts
                column = f"again_{taken.again}"
                moves[column] = moves.get(column, 0) + 1
        tx.move_counts(row.pk, moves, now)
        if row.state == B.QUEUED:
            tx.set_state(row.pk, row.id, B.QUEUED, B.PROCESSING, now, started_at=now)
        batch = ClaimedBatch(
            row.pk,
            row.id,
            row.task,
            row.timeout,
            json.loads(row.params),
            None if row.limits is None else json.loads(row.limits),
            row.max_attempts,
            row.concurrency,
        )
        # tuple.__new__ skips the named tuple's Python-level __new__ (one per item).
        claims = [
            _new(Claim, (t.id, batch, t.key, t.payload, t.attempts, t.max_attempt, suspect, False))
            for t in got
        ]
        claims += [
            _new(Claim, (t.id, batch, t.key, t.payload, t.attempts, t.max_attempt, suspect, True))
            for t in held
        ]
        return claims

    def _lease(
        self, tx: Tx, row: ClaimableRow, room: int, lease_args: tuple[Any, ...], suspect: bool
    ) -> tuple[list[TakenRow], ClaimableRow]:
        """Lease up to ``room`` items of batch ``row``: items that came back (retries,
        leases taken back) first, highest priority first, then fresh ones in order. Returns
        them and the batch's row as it now is (its claim cursor moved past them)."""
        if room <= 0:
            return [], row
        got = sorted(
            self._take(tx, _REQUEUED, (row.pk, int(suspect), room), lease_args, requeued=True),
            key=lambda taken: (-taken.priority, taken.id),
        )
        if len(got) < room and not suspect:
            low, high = span(row.pk)
            window = (max(low, row.claim_cursor), high, room - len(got))
            fresh = sorted(self._take(tx, _FRESH, window, lease_args, requeued=False))
            if fresh:
                cursor = fresh[-1].id + 1
                tx.run("UPDATE batches SET claim_cursor = ? WHERE pk = ?", (cursor, row.pk))
                row = row._replace(claim_cursor=cursor)
                got += fresh
        return got, row

    def _take(
        self,
        tx: Tx,
        where: str,
        pick: tuple[Any, ...],
        lease_args: tuple[Any, ...],
        *,
        requeued: bool,
    ) -> list[TakenRow]:
        """Lease up to the last of ``pick`` items matching ``where`` (its other parameters
        the rest of ``pick``); the rows taken, in no set order. SQLite takes them its own
        way (``SqliteStore._take``)."""
        # A requeued item may carry an earlier attempt's progress; a fresh one has none.
        clear = CLEAR_PROGRESS if requeued else ""
        query = _TAKE.format(where=where, lock=self.dialect.skip_locked, clear=clear)
        return [TakenRow._make(row) for row in tx.all(query, (*pick, *lease_args))]

    def heartbeat(self, leases: Sequence[LeaseUpdate], now: float, lease: float) -> set[int]:
        if not leases:
            return set()
        with self._write() as tx:
            # Shared holds on the batches (an item's id carries its batch): a heartbeat waits
            # for a commit or a sweep of the same batch, never in a cycle with one.
            tx.lock_batches({u.item_id >> POSITION_BITS for u in leases}, share=True)
            seq = tx.seq if any(update.changed for update in leases) else None
            lost = self._renew_leases(tx, leases, now + lease, seq)
            logs = [
                (u.item_id, u.attempt, *line)
                for u in leases
                if u.item_id not in lost
                for line in u.logs
            ]
            if logs:
                tx.many(LOG_INSERT, logs)
        return lost

    def release(
        self, leases: Sequence[tuple[int, int]], now: float, ran: Collection[int] = ()
    ) -> int:
        if not leases:
            return 0
        started = set(ran)
        with self._write() as tx:
            tx.lock_batches({item_id >> POSITION_BITS for item_id, _ in leases})
            where, ids = self._any("i.id", [item_id for item_id, _ in leases])
            rows = tx.all(
                "SELECT i.id, i.batch_pk, b.state FROM items i JOIN batches b "
                f"ON b.pk = i.batch_pk WHERE {where}",
                (ids,),
            )
            found = {item_id: (pk, B(state)) for item_id, pk, state in rows}
            moved = 0
            for item_id, attempt in leases:
                if item_id not in found:
                    continue
                pk, batch_state = found[item_id]
                target = S.CANCELLED if batch_state is B.CANCELLED else S.PENDING
                why = A.RELEASED if item_id in started else None
                moved += self._unlease(tx, pk, item_id, attempt, target, now, spend=False, ran=why)
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
        ran: Again | None,
        expired: tuple[str, float] | None = None,
    ) -> int:
        """Move one running item off its lease to ``target``; 1 if it moved, else 0.
        ``ran``: why the run it had ends (None: its task was never called, so the attempt
        was no run). With ``expired`` (why, the lease's end as the sweep saw it), only if
        the lease was not renewed since: it is marked suspect and ``why`` is its error and
        a line of its log."""
        check_item(S.RUNNING, target)
        params: list[Any] = [
            target.value,
            0 if spend else 1,
            now if target.is_terminal else None,
            tx.seq,
        ]
        where = ""
        if expired is not None:
            params += (expired[0], signature(LEASE_EXPIRED, expired[0]).id)
            where = " AND lease_expires = ?"
        params += (item_id, attempt)
        if expired is not None:
            params.append(expired[1])
        row = tx.one(_UNLEASE.format(sets=_RAN_SETS[ran], where=where), params)
        if row is None:
            return 0
        moves = {"n_running": -1, COUNTER_OF[target]: 1}
        if row[1]:  # it was held ready, not counted against the cap
            moves["n_standby"] = -1
        if ran is None and row[0] is not None:
            # The claim counted this lease as a re-run; it never ran.
            moves[f"again_{row[0]}"] = -1
        tx.move_counts(pk, moves, now)
        if expired is not None:
            tx.run(LOG_INSERT, (item_id, attempt, now, "error", expired[0]))
        tx.end_if_done(pk, now)
        return 1

    def _reclaim_leases(self, now: float, steady: float | None) -> int:
        lapsed = [
            ExpiredRow._make(row)
            for row in self._read(
                f"SELECT {', '.join(f'i.{name}' for name in ExpiredRow._fields)} "
                "FROM batches b JOIN items i ON i.batch_pk = b.pk WHERE b.n_running > 0 "
                f"AND i.state = '{S.RUNNING}' "
                "AND (i.lease_expires < ? OR i.lease_expires > ? + i.lease_for) ORDER BY i.id",
                (now, now),
            )
        ]
        if steady is None:  # the caller's clock decides alone (a test's FakeClock)
            expired = [row for row in lapsed if row.lease_expires < now]
        else:
            if self._lease_watch is None:
                self._lease_watch = LeaseWatch()
            watched = [(r.id, r.attempts, r.lease_expires, r.lease_for) for r in lapsed]
            due = self._lease_watch.due(watched, steady)
            expired = [row for row in lapsed if row.id in due]
        if not expired:
            return 0
        moved = 0
        hits: list[tuple[ExpiredRow, bool, str]] = []
        with self._write() as tx:
            batch_pks = {row.batch_pk for row in expired}
            tx.lock_batches(batch_pks)
            where, pks = self._any("pk", batch_pks)
            # Read now that they are held: a batch may have been cancelled meanwhile.
            states = dict(tx.all(f"SELECT pk, state FROM batches WHERE {where}", (pks,)))
            where, workers = self._any("worker", {row.worker for row in expired})
            held = dict(
                tx.all(
                    f"SELECT worker, COUNT(*) FROM items WHERE state = '{S.RUNNING}' "
                    f"AND {where} GROUP BY worker",
                    (workers,),
                )
            )
            for row in expired:
                if row.batch_pk not in states:
                    continue  # deleted meanwhile
                others = held.get(row.worker, 1) - 1
                target, spend, why = expiry(
                    B(states[row.batch_pk]),
                    row.attempts,
                    row.max_attempt,
                    others,
                    bool(row.suspect),
                )
                took = self._unlease(
                    tx,
                    row.batch_pk,
                    row.id,
                    row.attempts,
                    target,
                    now,
                    spend=spend,
                    ran=A.WORKER_LOST,
                    expired=(why, row.lease_expires),
                )
                if took and row.started_at is not None:  # when and where the lost run began
                    started = (row.id, row.attempts, row.started_at, "started")
                    tx.run(LOG_INSERT, (*started, f"on worker {row.worker}"))
                if took and spend and target is not S.CANCELLED:  # a failed attempt
                    hits.append((row, target is S.FAILED, why))
                moved += took
            self._count_expiries(tx, hits, now)
            tx.notify = moved > 0
        return moved

    def _count_expiries(
        self, tx: Tx, expiries: Sequence[tuple[ExpiredRow, bool, str]], now: float
    ) -> None:
        """Count the expiries that spent an attempt in their batches' error clusters."""
        if not expiries:
            return
        where, ids = self._any("id", [row.id for row, _, _ in expiries])
        keys = dict(tx.all(f"SELECT id, key FROM items WHERE {where}", (ids,)))
        hits = [
            Hit(row.batch_pk, signature(LEASE_EXPIRED, why), final, now, why, keys.get(row.id))
            for row, final, why in expiries
        ]
        count_failures(tx, hits)

    def _rebase_retries(self, now: float) -> int:
        """Retries that began to wait more than ``CLOCK_STEP`` later than ``now`` (the clock
        went back since, or the worker that recorded them was ahead) wait their delay from
        ``now`` instead, not until the clocks meet; returns how many.

        NOTE: ``now`` was read before this sweep reached the store (a queue, the lease sweep
        first): a retry recorded meanwhile began to wait a little after it. Without the
        margin such a retry would be taken for a clock step and run early."""
        ahead = now + CLOCK_STEP
        rows = self._read(
            "SELECT i.id, i.batch_pk FROM batches b JOIN items i ON i.batch_pk = b.pk "
            f"WHERE b.n_retry_wait > 0 AND i.state = '{S.RETRY_WAIT}' AND i.waiting_since > ?",
            (ahead,),
        )
        if not rows:
            return 0
        with self._write() as tx:
            tx.lock_batches({pk for _, pk in rows})
            where, ids = self._any("id", [item_id for item_id, _ in rows])
            rebased = tx.run(
                "UPDATE items SET run_after = ? + (run_after - waiting_since), "
                f"waiting_since = ? WHERE {where} AND state = '{S.RETRY_WAIT}' "
                "AND waiting_since > ?",
                (now, now, ids, ahead),
            )
            tx.notify = rebased > 0
        return rebased


def _runnable(
    row: ClaimableRow, now: float, only: Collection[str] | None, standby: Standby = NO_STANDBY
) -> bool:
    """Whether a claim may take something from this batch now: under its cap, or items to
    hold ready beyond it (``_ready_in``)."""
    return (
        (only is None or row.id in only)
        and (row.room is None or row.room > 0 or _ready_in(row, standby, standby.want, 0) > 0)
        and (row.n_pending > 0 or (row.next_due is not None and row.next_due <= now))
    )


def _ready_in(row: ClaimableRow, standby: Standby, most: int, taking: int) -> int:
    """How many items a claim taking ``taking`` under the cap of batch ``row`` may also
    hold ready beyond it (at most ``most``): no more than the worker will hold there under
    the cap (each waits for one of those to end), and no more than the cap in all."""
    if row.concurrency is None or most <= 0:
        return 0
    holds = standby.holding.get(row.pk, 0) + taking
    return max(0, min(most, holds, row.concurrency - row.n_standby))
