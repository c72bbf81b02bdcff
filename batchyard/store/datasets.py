"""Datasets in the store: reading a filtered page with its count, deleting, and making a
batch of the rows a selection picks, copied inside the database (INSERT ... SELECT: no row
goes through Python). Loading rows is ``store/loading.py``."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from batchyard.errors import ConfigError, DatasetNotFound, InputError
from batchyard.models import BatchOptions, BatchStatus
from batchyard.records import (
    Dataset,
    Field,
    Record,
    RecordPage,
)
from batchyard.selection import Selection, Sort, decode_cursor, encode_cursor, sort_kind, typed
from batchyard.store.base import Idempotency
from batchyard.store.datasql import JsonSql, Sql, plain
from batchyard.store.fingerprint import Fingerprint
from batchyard.store.loading import NUL_MARK, Loading
from batchyard.store.rules import B, S, span
from batchyard.store.submitting import KeyTaken, Submitting, stamp_key
from batchyard.store.tx import Tx

#: The most rows a page may ask for.
MAX_PAGE = 10_000

_COLUMNS = "name, key_field, n_rows, created_at, updated_at"
_COPY = (
    "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, seq) "
    f"SELECT ? + n, ?, key, n, '{S.PENDING}', payload, ?, 0 FROM ("
    "SELECT r.key AS key, r.payload AS payload, ROW_NUMBER() OVER (ORDER BY r.id) AS n "
    "FROM dataset_rows r WHERE {where}) s"
)


class DatasetTables(Loading):
    """Datasets: their rows, their fields, and batches made from them."""

    @abstractmethod
    def _held(
        self, idempotency: Idempotency, now: float, digest: Callable[[], str]
    ) -> BatchStatus | None:
        """The batch made first under a key taken (``Submitting``'s)."""

    def get_dataset(self, name: str) -> Dataset:
        return self._dataset(name)[1]

    def _dataset(self, name: str, tx: Tx | None = None) -> tuple[int, Dataset]:
        query = f"SELECT pk, {_COLUMNS} FROM datasets WHERE name = ?"
        rows = tx.all(query, (name,)) if tx is not None else self._read(query, (name,))
        if not rows:
            raise DatasetNotFound(name)
        pk = int(rows[0][0])
        fields_query = "SELECT name, types FROM dataset_fields WHERE dataset_pk = ? ORDER BY ord"
        found = tx.all(fields_query, (pk,)) if tx is not None else self._read(fields_query, (pk,))
        return pk, _dataset(rows[0][1:], found)

    def list_datasets(self) -> list[Dataset]:
        fields: dict[int, list[Any]] = {}
        for pk, name, types in self._read(
            "SELECT dataset_pk, name, types FROM dataset_fields ORDER BY dataset_pk, ord"
        ):
            fields.setdefault(int(pk), []).append((name, types))
        return [
            _dataset(row[1:], fields.get(int(row[0]), []))
            for row in self._read(f"SELECT pk, {_COLUMNS} FROM datasets ORDER BY name")
        ]

    def dataset_rows(
        self,
        name: str,
        selection: Selection | None = None,
        *,
        sort: Sort | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RecordPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigError(f"a page holds 1 to {MAX_PAGE:,} rows, not {limit}")
        pk, dataset = self._dataset(name)
        where = self._rows_where(pk, dataset, selection or Selection())
        kind = None if sort is None else sort_kind(dataset, sort)
        json_sql = _json_sql(self.dialect.name, dataset)
        # One pass over the dataset: the matching rows' ids (and sort values) are kept
        # aside, then counted and paged; only the page's rows are read whole.
        query = Sql().add("WITH m AS MATERIALIZED (SELECT r.id AS rid")
        if sort is not None and kind is not None:
            query.add(", ").extend(json_sql.value(sort.field, kind)).add(" AS s")
        query.add(" FROM dataset_rows r WHERE ").extend(where).add("), p AS (SELECT * FROM m")
        low = span(pk)[0]
        if cursor is not None:
            value, position = decode_cursor(cursor, sort)
            query.add(" WHERE ").extend(json_sql.after(sort, value, low + position, kind))
        order = json_sql.order(sort, kind)
        query.add(f" ORDER BY {order} LIMIT ?) ", limit + 1)
        sort_value = "p.s" if sort is not None else "NULL"
        query.add(
            f"SELECT p.rid, r.key, r.payload, {sort_value}, (SELECT COUNT(*) FROM m) "
            "FROM p JOIN dataset_rows r ON r.id = p.rid "
            f"ORDER BY {json_sql.order(sort, kind, 'p.')}"
        )
        rows = self._read(query.sql(), query.params)
        if rows:
            count = int(rows[0][4])
        elif cursor is None:
            count = 0
        else:
            counted = self._read(
                "SELECT COUNT(*) FROM dataset_rows r WHERE " + where.sql(), where.params
            )
            count = int(counted[0][0])
        records = [Record(key, at - low, json.loads(payload)) for at, key, payload, *_ in rows]
        more = None
        if len(rows) > limit:
            last = rows[limit - 1]
            more = encode_cursor(sort, plain(last[3]), last[0] - low)
        return RecordPage(records[:limit], count, more)

    def _rows_where(self, pk: int, dataset: Dataset, selection: Selection) -> Sql:
        """The rows of dataset ``pk`` a selection picks, as a WHERE clause over ``r``."""
        low, high = span(pk)
        where = Sql().add("r.id > ? AND r.id < ?", low, high)
        json_sql = _json_sql(self.dialect.name, dataset)
        for condition in selection.where:
            where.add(" AND ").extend(json_sql.condition(typed(dataset, condition)))
        if selection.keys is not None:
            member, keys = self._any("r.key", selection.keys)
            where.add(f" AND r.dataset_pk = ? AND {member}", pk, keys)
        return where

    # -- deleting -----------------------------------------------------------------------

    def delete_dataset(self, name: str) -> int:
        with self._write() as tx:
            query = f"SELECT pk FROM datasets WHERE name = ?{self.dialect.for_update}"
            row = tx.one(query, (name,))
            if row is None:
                raise DatasetNotFound(name)
            deleted = self._delete_dataset_rows(tx, int(row[0]))
            tx.run("DELETE FROM datasets WHERE pk = ?", (int(row[0]),))
        return deleted

    # -- batches from datasets ----------------------------------------------------------

    def create_batch_from_dataset(
        self,
        batch_id: str,
        options: BatchOptions,
        name: str,
        selection: Selection,
        now: float,
        idempotency: Idempotency | None = None,
    ) -> BatchStatus:
        fingerprint = None if idempotency is None else _fingerprint(options, name, selection)
        while True:
            try:
                return self._copy_rows(batch_id, options, name, selection, now, idempotency)
            except KeyTaken:
                pass
            assert idempotency is not None and fingerprint is not None
            found = self._held(idempotency, now, fingerprint.digest)
            if found is not None:
                return found
            # The submission that held the key failed and took it with its batch: try again.

    def _copy_rows(
        self,
        batch_id: str,
        options: BatchOptions,
        name: str,
        selection: Selection,
        now: float,
        idempotency: Idempotency | None,
    ) -> BatchStatus:
        with self._write() as tx:
            share = " FOR SHARE" if self.dialect.for_update else ""
            tx.all(f"SELECT pk FROM datasets WHERE name = ?{share}", (name,))
            ds_pk, dataset = self._dataset(name, tx)
            where = self._rows_where(ds_pk, dataset, selection)
            pk = Submitting._insert_batch(tx, batch_id, options, B.UPLOADING, now, idempotency)
            copied = tx.run(
                _COPY.format(where=where.sql()),
                (span(pk)[0], pk, options.max_attempts, *where.params),
            )
            self._check_row_keys(tx, ds_pk, name, selection)
            if not copied:
                raise InputError(f"no rows of {name!r} match {selection.describe()}")
            metadata = {**options.metadata, **_source(name, selection), "rows": copied}
            tx.run("UPDATE batches SET metadata = ? WHERE pk = ?", (json.dumps(metadata), pk))
            tx.move_counts(pk, {"n_pending": copied}, now)
            tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
            if idempotency is not None:
                stamp_key(tx, idempotency, _fingerprint(options, name, selection))
            tx.end_if_done(pk, now)
            tx.notify = True
        self._after_insert(copied)
        return self.get_batch(batch_id)

    def _check_row_keys(self, tx: Tx, pk: int, name: str, selection: Selection) -> None:
        if selection.keys is None:
            return
        member, keys = self._any("key", selection.keys)
        found = {
            key
            for (key,) in tx.all(
                f"SELECT key FROM dataset_rows WHERE dataset_pk = ? AND {member}", (pk, keys)
            )
        }
        missing = [key for key in selection.keys if key not in found]
        if missing:
            shown = ", ".join(map(repr, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise InputError(f"{name!r} has no row with key {shown}")


def _json_sql(dialect: str, dataset: Dataset) -> JsonSql:
    return JsonSql(dialect, frozenset(f.name for f in dataset.fields if f.holds_nul))


def _fingerprint(options: BatchOptions, name: str, selection: Selection) -> Fingerprint:
    """What makes two batches of a dataset the same: their options and the selection (the
    rows are read in the store, so the same selection at the same time is the same input)."""
    fingerprint = Fingerprint(options)
    fingerprint.note(json.dumps(_source(name, selection)))
    return fingerprint


def _source(name: str, selection: Selection) -> dict[str, Any]:
    """What a batch made from a dataset records of where its items came from."""
    source: dict[str, Any] = {"dataset": name, "where": [c.text for c in selection.where]}
    if selection.keys is not None:
        source["keys"] = list(selection.keys)
    return source


def _field(name: str, types: list[str]) -> Field:
    return Field(name, tuple(t for t in types if t != NUL_MARK), holds_nul=NUL_MARK in types)


def _dataset(row: Any, fields: Iterable[Any]) -> Dataset:
    name, key_field, rows, created_at, updated_at = row
    return Dataset(
        name=name,
        key_field=key_field,
        rows=int(rows),
        fields=tuple(_field(name, types.split(",")) for name, types in fields),
        created_at=float(created_at),
        updated_at=float(updated_at),
    )
