"""Submitting: a batch and its items written all or nothing, appends to open batches, seal."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from batchyard.errors import (
    Conflict,
    DuplicateKey,
    StoreError,
)
from batchyard.models import (
    BatchOptions,
    BatchStatus,
)
from batchyard.states import BatchState
from batchyard.store.base import (
    UPLOAD_LEASE,
    Chunk,
    NewItem,
)
from batchyard.store.rules import COMMIT_ITEMS, readiness
from batchyard.store.sqlite.connection import (
    MAX_POSITION,
    POSITION_BITS,
    B,
    SqliteBase,
    Tx,
    delete_rows,
)


class Submitting(SqliteBase):
    """Creating batches with their items, appending to open ones, sealing."""

    def create_batch(
        self, batch_id: str, options: BatchOptions, chunks: Iterable[list[NewItem]], now: float
    ) -> BatchStatus:
        it = iter(chunks)
        first = next(it, [])
        second = next(it, None)
        if second is None:
            # Small batch: one transaction, never visible half-made.
            with self._write() as tx:
                pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now)
                self._insert_items(tx, pk, first, options.max_attempts, now)
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
                tx.end_if_done(pk, now)
            return self.get_batch(batch_id)
        with self._write() as tx:
            pk = self._insert_batch(tx, batch_id, options, B.UPLOADING, now)
        try:
            self._upload(pk, chain([first, second], it), readiness(chunks), options, now)
            with self._write() as tx:
                tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
        except BaseException:
            self._discard(pk)
            raise
        return self.get_batch(batch_id)

    def _upload(
        self,
        pk: int,
        chunks: Iterator[list[NewItem]],
        ready: Callable[[], bool],
        options: BatchOptions,
        now: float,
    ) -> None:
        """Insert chunks, one transaction for as many as are ready without waiting (up to
        COMMIT_ITEMS): never hold the write lock while the source is slow."""
        for chunk in chunks:
            with self._write() as tx:
                written = 0
                while True:
                    self._insert_items(tx, pk, chunk, options.max_attempts, now)
                    written += len(chunk)
                    if written >= COMMIT_ITEMS or not ready():
                        break
                    following = next(chunks, None)
                    if following is None:
                        break
                    chunk = following
                tx.conn.execute(
                    "UPDATE batches SET upload_expires = ? WHERE pk = ?", (now + UPLOAD_LEASE, pk)
                )

    def _insert_batch(
        self, tx: Tx, batch_id: str, options: BatchOptions, state: BatchState, now: float
    ) -> int:
        row = tx.conn.execute(
            "INSERT INTO batches (id, name, task, state, sealed, priority, concurrency, "
            "max_attempts, timeout, params, metadata, upload_expires, created_at, updated_at, "
            "budget, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk",
            (
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
            ),
        ).fetchone()
        return int(row[0])

    def _insert_items(
        self, tx: Tx, pk: int, chunk: list[NewItem], max_attempts: int, now: float
    ) -> None:
        if not chunk:
            return
        if chunk[-1].position > MAX_POSITION:
            raise StoreError(f"a batch holds at most {MAX_POSITION:,} items")
        start = chunk[0].position
        if chunk[-1].position - start != len(chunk) - 1:
            raise StoreError("a chunk's positions must follow each other")  # pragma: no cover
        # One statement per chunk over a JSON array: SQLite inserts the whole chunk without
        # the GIL (the caller encodes the next chunk meanwhile) and without binding each row.
        # A duplicate key fails the statement, and with it the whole submission.
        rows = chunk.rows_json if isinstance(chunk, Chunk) else Chunk(chunk).rows_json
        try:
            tx.conn.execute(
                "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, "
                "seq) SELECT ?1 + key, ?2, json_extract(value, '$[0]'), ?3 + key, 'pending', "
                "json_extract(value, '$[1]'), ?4, 0 FROM json_each(?5)",
                ((pk << POSITION_BITS) + start, pk, start, max_attempts, rows),
            )
        except sqlite3.IntegrityError:
            self._raise_duplicate(tx, pk, chunk)
        tx.move_counts(pk, {"n_pending": len(chunk)}, now)

    @staticmethod
    def _raise_duplicate(tx: Tx, pk: int, chunk: list[NewItem]) -> None:
        seen: dict[str, int] = {}
        for it in chunk:
            if it.key in seen:
                raise DuplicateKey(
                    f"duplicate key (first used by item {seen[it.key]})",
                    first_position=seen[it.key],
                    position=it.position,
                    key=it.key,
                )
            seen[it.key] = it.position
        for it in chunk:
            row = tx.conn.execute(
                "SELECT position FROM items WHERE batch_pk = ? AND key = ?", (pk, it.key)
            ).fetchone()
            if row is not None:
                raise DuplicateKey(
                    f"duplicate key (first used by item {row[0]})",
                    first_position=row[0],
                    position=it.position,
                    key=it.key,
                )
        raise StoreError("an item insert was ignored for no reason found")  # pragma: no cover

    def _discard(self, pk: int) -> None:
        with self._write() as tx:
            delete_rows(tx, pk)

    def append_items(
        self, batch_id: str, chunks: Callable[[int], Iterable[list[NewItem]]], now: float
    ) -> int:
        added = 0
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            pk, state, sealed = row[0], B(row[4]), bool(row[5])
            if sealed or state.is_terminal:
                raise Conflict(
                    batch_id, f"is {'sealed' if sealed else state.value}; it takes no items"
                )
            # Positions are taken under the write lock, so concurrent appends never clash.
            start = sum(row[13:19]) + 1
            for chunk in chunks(start):
                self._insert_items(tx, pk, chunk, row[7], now)
                added += len(chunk)
            if added:
                tx.event(batch_id, "batch.items_added", {"count": added}, now)
        return added

    def seal(self, batch_id: str, now: float) -> BatchStatus:
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            if not row[5]:
                tx.conn.execute(
                    "UPDATE batches SET sealed = 1, updated_at = ? WHERE pk = ?", (now, row[0])
                )
                tx.event(batch_id, "batch.sealed", {}, now)
                tx.end_if_done(row[0], now)
        return self.get_batch(batch_id)

    def _drop_abandoned_uploads(self, now: float) -> None:
        rows = self._read(
            "SELECT pk FROM batches WHERE state = 'uploading' AND upload_expires < ?", (now,)
        )
        for (pk,) in rows:
            with self._write() as tx:
                still = tx.conn.execute(
                    "SELECT 1 FROM batches WHERE pk = ? AND state = 'uploading' "
                    "AND upload_expires < ?",
                    (pk, now),
                ).fetchone()
                if still:
                    delete_rows(tx, pk)
