"""Submitting: a batch and its items written all or nothing, appends to open batches, seal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from batchyard.errors import Conflict, DuplicateKey, IdempotencyConflict, StoreError
from batchyard.models import BatchOptions, BatchStatus
from batchyard.states import BatchState
from batchyard.store.base import UPLOAD_LEASE, Chunk, Idempotency, NewItems, as_chunk
from batchyard.store.fingerprint import Fingerprint
from batchyard.store.rules import COMMIT_ITEMS, MAX_POSITION, POSITION_BITS, B, readiness, span
from batchyard.store.sqlbase import SqlBase
from batchyard.store.tx import Tx

_CLAIM_KEY = (
    "INSERT INTO idempotency_keys (key, batch_id, created_at, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)
_INSERT_BATCH = (
    "INSERT INTO batches (id, name, task, state, sealed, priority, concurrency, max_attempts, "
    "timeout, params, metadata, upload_expires, created_at, updated_at, budget, limits, "
    "template_name, template_version, rerun_of, owner) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk"
)


class Submitting(SqlBase):
    """Creating batches with their items, appending to open ones, sealing."""

    def create_batch(
        self,
        batch_id: str,
        options: BatchOptions,
        chunks: Iterable[NewItems],
        now: float,
        idempotency: Idempotency | None = None,
    ) -> BatchStatus:
        fingerprint = Fingerprint(options) if idempotency else None
        it = iter(chunks) if fingerprint is None else fingerprint.over(chunks)
        first: NewItems = next(it, [])
        second = next(it, None)
        while True:
            try:
                return self._create(
                    batch_id, options, (first, second, it), now, idempotency, fingerprint
                )
            except KeyTaken:
                pass
            assert idempotency is not None and fingerprint is not None
            found = self._held(idempotency, now, lambda: _drained(it, fingerprint))
            if found is not None:
                return found
            # The submission that held the key failed and took it with its batch: try again.

    def _create(
        self,
        batch_id: str,
        options: BatchOptions,
        items: tuple[NewItems, NewItems | None, Iterator[NewItems]],
        now: float,
        idempotency: Idempotency | None,
        fingerprint: Fingerprint | None,
    ) -> BatchStatus:
        first, second, rest = items
        if second is None:
            # Small batch: one transaction, never visible half-made.
            with self._write() as tx:
                pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now, idempotency)
                self._insert_items(tx, pk, first, options.max_attempts, now)
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
                stamp_key(tx, idempotency, fingerprint)
                tx.end_if_done(pk, now)
                tx.notify = True
            self._after_insert(len(first))
            return self.get_batch(batch_id)
        with self._write() as tx:
            pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now, idempotency)
        try:
            added = self._upload(pk, chain([first, second], rest), readiness(rest), options, now)
            with self._write() as tx:
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
                stamp_key(tx, idempotency, fingerprint)
                tx.notify = True
        except BaseException:
            with self._write() as tx:
                delete_rows(tx, pk)
            raise
        self._after_insert(added)
        return self.get_batch(batch_id)

    def _held(
        self, idempotency: Idempotency, now: float, digest: Callable[[], str]
    ) -> BatchStatus | None:
        """The batch made first under the key, once the submission holding it settles
        (``digest``: this one's fingerprint, asked for then); None when that submission
        failed and took the key with it. Raises IdempotencyConflict for other input."""
        held = self._wait_for_key(idempotency.key, now)
        if held is None:
            return None
        owner, theirs = held
        if theirs != digest():
            raise IdempotencyConflict(idempotency.key, owner)
        return self.get_batch(owner)

    def _wait_for_key(self, key: str, now: float) -> tuple[str, str] | None:
        """Wait until the submission holding ``key`` has all its items in; its batch id
        and fingerprint then, or None when it failed (its key went with its batch). A
        submission whose process died is dropped when its upload lease runs out (time
        counted from the caller's ``now``, as the store's clock)."""
        delay, started = 0.01, time.monotonic()
        while True:
            rows = self._read(
                "SELECT batch_id, fingerprint FROM idempotency_keys WHERE key = ?", (key,)
            )
            if not rows:
                return None
            owner, fingerprint = rows[0]
            if fingerprint is not None:
                return str(owner), str(fingerprint)
            self._drop_abandoned_uploads(now + time.monotonic() - started)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _upload(
        self,
        pk: int,
        chunks: Iterator[NewItems],
        ready: Callable[[], bool],
        options: BatchOptions,
        now: float,
    ) -> int:
        """Insert chunks, one transaction for as many as are ready without waiting (up to
        COMMIT_ITEMS): never hold a lock while the source is slow. Item inserts need no
        feed cursor (a fresh item has seq 0), so these transactions skip the feed. Returns
        how many items went in."""
        total = 0
        for chunk in chunks:
            with self._write() as tx:
                written = 0
                while True:
                    self._insert_items(tx, pk, chunk, options.max_attempts, now)
                    written += len(chunk)
                    total += len(chunk)
                    if written >= COMMIT_ITEMS or not ready():
                        break
                    following = next(chunks, None)
                    if following is None:
                        break
                    chunk = following
                tx.run(
                    "UPDATE batches SET upload_expires = ? WHERE pk = ?", (now + UPLOAD_LEASE, pk)
                )
        return total

    @staticmethod
    def _insert_batch(
        tx: Tx,
        batch_id: str,
        options: BatchOptions,
        state: BatchState,
        now: float,
        idempotency: Idempotency | None = None,
    ) -> int:
        values = (
            batch_id,
            options.name,
            options.task,
            state.value,
            int(options.sealed),
            options.priority,
            options.concurrency,
            options.max_attempts,
            options.timeout,
            json.dumps(options.params),
            json.dumps(options.metadata),
            now + UPLOAD_LEASE if state is B.UPLOADING else None,
            now,
            now,
            options.budget,
            None if options.limits is None else json.dumps(options.limits),
            None if options.template is None else options.template.name,
            None if options.template is None else options.template.version,
            options.rerun_of,
            options.owner,
        )
        if idempotency is not None:
            tx.run(
                "DELETE FROM idempotency_keys WHERE key = ? AND expires_at <= ?",
                (idempotency.key, now),
            )
            # A submission holding the key makes this wait for its commit, then do nothing.
            if not tx.all(_CLAIM_KEY, (idempotency.key, batch_id, now, idempotency.expires_at)):
                raise KeyTaken
        try:
            with tx.savepoint():
                pk = int(tx.one(_INSERT_BATCH, values)[0])
        except tx.UniqueViolation as exc:
            raise StoreError(f"a batch with id {batch_id} exists already") from exc
        if options.webhooks:
            tx.many(
                "INSERT INTO batch_webhooks (batch_pk, position, url) VALUES (?, ?, ?)",
                [(pk, n, url) for n, url in enumerate(options.webhooks, 1)],
            )
        return pk

    def _insert_items(
        self, tx: Tx, pk: int, items: NewItems, max_attempts: int, now: float
    ) -> None:
        if not items:
            return
        chunk = as_chunk(items)
        if chunk.end > MAX_POSITION:
            raise StoreError(f"a batch holds at most {MAX_POSITION:,} items")
        # One statement per chunk over its JSON object: the database unpacks the whole chunk
        # (SQLite without the GIL, so the caller encodes the next chunk meanwhile) and no
        # row is bound one by one. A duplicate key fails the statement, and with it the
        # submission; the savepoint keeps the transaction usable to say which key.
        first_id = (pk << POSITION_BITS) + chunk.start
        try:
            with tx.savepoint():
                tx.run(self.INSERT_CHUNK, (first_id, pk, chunk.start, max_attempts, chunk.json))
        except tx.UniqueViolation:
            self._raise_duplicate(tx, pk, chunk)
        tx.move_counts(pk, {"n_pending": len(chunk)}, now)

    def _raise_duplicate(self, tx: Tx, pk: int, chunk: Chunk) -> None:
        seen: dict[str, int] = {}
        for position, key in enumerate(chunk.keys, chunk.start):
            if key in seen:
                _duplicate(seen[key], position, key)
            seen[key] = position
        where, keys = self._any("key", seen)
        query = f"SELECT key, position FROM items WHERE batch_pk = ? AND {where}"
        found = dict(tx.all(query, (pk, keys)))
        for position, key in enumerate(chunk.keys, chunk.start):
            if key in found:
                _duplicate(found[key], position, key)
        raise StoreError("an item insert failed for no reason found")  # pragma: no cover

    def append_items(
        self, batch_id: str, chunks: Callable[[int], Iterable[NewItems]], now: float
    ) -> int:
        added = 0
        with self._write() as tx:
            row = tx.batch(batch_id)
            if row.sealed or row.batch_state.is_terminal:
                raise Conflict(
                    batch_id, f"is {'sealed' if row.sealed else row.state}; it takes no items"
                )
            # Positions are taken while the batch row is locked: concurrent appends never clash.
            for chunk in chunks(row.counts.total + 1):
                self._insert_items(tx, row.pk, chunk, row.max_attempts, now)
                added += len(chunk)
            if added:
                tx.event(batch_id, "batch.items_added", {"count": added}, now)
                tx.notify = True
        self._after_insert(added)
        return added

    def seal(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch(batch_id)
            if not row.sealed:
                tx.run("UPDATE batches SET sealed = 1, updated_at = ? WHERE pk = ?", (now, row.pk))
                tx.event(batch_id, "batch.sealed", {}, now)
                tx.end_if_done(row.pk, now)
        return self.get_batch(batch_id)

    def _drop_abandoned_uploads(self, now: float) -> None:
        abandoned = f"state = '{B.UPLOADING}' AND upload_expires < ?"
        for (pk,) in self._read(f"SELECT pk FROM batches WHERE {abandoned}", (now,)):
            with self._write() as tx:
                still = tx.one(
                    f"SELECT 1 FROM batches WHERE pk = ? AND {abandoned}{self.dialect.for_update}",
                    (pk, now),
                )
                if still:
                    delete_rows(tx, pk)


class KeyTaken(Exception):
    """The idempotency key is held by another submission (raised to roll back)."""


def stamp_key(tx: Tx, idempotency: Idempotency | None, fingerprint: Fingerprint | None) -> None:
    """Save the fingerprint of a submission whose items are all in: the key is settled."""
    if idempotency is not None and fingerprint is not None:
        tx.run(
            "UPDATE idempotency_keys SET fingerprint = ? WHERE key = ?",
            (fingerprint.digest(), idempotency.key),
        )


def _drained(rest: Iterator[NewItems], fingerprint: Fingerprint) -> str:
    """The fingerprint of a submission once the rest of its items went into it."""
    for _ in rest:
        pass
    return fingerprint.digest()


def _duplicate(first_position: int, position: int, key: str) -> None:
    raise DuplicateKey(
        f"duplicate key (first used by item {first_position})",
        first_position=first_position,
        position=position,
        key=key,
    )


def delete_rows(tx: Tx, pk: int) -> None:
    """Delete a batch with its items, logs, holds, events and webhook deliveries (sent or
    not)."""
    low, high = span(pk)
    tx.run("DELETE FROM item_logs WHERE item_id >= ? AND item_id < ?", (low, high))
    # The batch row first: hold_budget locks it before its holds, so this never waits in a
    # cycle with a worker holding budget for a straggler of the batch.
    tx.run(f"SELECT 1 FROM batches WHERE pk = ?{tx.dialect.for_update}", (pk,))
    tx.run("DELETE FROM items WHERE id >= ? AND id < ?", (low, high))
    tx.run("DELETE FROM budget_holds WHERE batch_pk = ?", (pk,))
    tx.run("DELETE FROM error_clusters WHERE batch_pk = ?", (pk,))
    tx.run("DELETE FROM batch_webhooks WHERE batch_pk = ?", (pk,))
    tx.run("DELETE FROM webhook_deliveries WHERE batch_pk = ?", (pk,))
    tx.run("DELETE FROM events WHERE batch_id = (SELECT id FROM batches WHERE pk = ?)", (pk,))
    tx.run(
        "DELETE FROM idempotency_keys WHERE batch_id = (SELECT id FROM batches WHERE pk = ?)",
        (pk,),
    )
    tx.run("DELETE FROM batches WHERE pk = ?", (pk,))
