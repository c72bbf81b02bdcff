"""Loading rows into a dataset: one transaction, all or nothing (a new dataset, rows added,
or rows replaced), each chunk inserted in one statement from its JSON object, and the fields
the rows had merged into ``dataset_fields``.

A row whose JSON holds a NUL character (``\\u0000``) is kept whole, as an item is; its
fields holding such text are marked (``Field.holds_nul``) so that filters read them the way
PostgreSQL's ``doc`` keeps them (``datasql.without_nul``). A NUL in a top-level field's name
is refused: ``dataset_fields`` keeps the names, and PostgreSQL's text holds no NUL."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from batchyard.errors import (
    ConfigError,
    DatasetNotFound,
    DuplicateKey,
    InputError,
    InvalidItem,
    StoreError,
)
from batchyard.records import JSON_TYPES, Dataset, FieldTally, LoadMode
from batchyard.store.base import Chunk, NewItems, as_chunk
from batchyard.store.datasql import without_nul
from batchyard.store.rules import span
from batchyard.store.sqlbase import SqlBase
from batchyard.store.tx import Tx

#: Makes a load's chunks: (first position, key field) -> lists of encoded rows.
RowChunks = Callable[[int, "str | None"], Iterable[NewItems]]

# Inserts one chunk of rows from its JSON object (``Chunk.json``; parameters: the first
# row's id, the dataset pk, the object). It differs by database like SqlBase.INSERT_CHUNK;
# kept here by dialect name so that datasets stay in their own modules.
_INSERT = {
    "sqlite": (
        "INSERT INTO dataset_rows (id, dataset_pk, key, payload) "
        "SELECT ? + rowid, ?, key, value FROM json_each(?)"
    ),
    "postgres": (
        "INSERT INTO dataset_rows (id, dataset_pk, key, payload, doc) "
        "SELECT ? + o - 1, ?, k, v, v::jsonb "
        "FROM json_each_text(?::json) WITH ORDINALITY AS t(k, v, o)"
    ),
}
# PostgreSQL's, for a chunk holding a \u0000 escape: jsonb refuses it, so ``doc`` has
# U+0001 in its place (the payload is kept as given).
_INSERT_NUL = (
    "INSERT INTO dataset_rows (id, dataset_pk, key, payload, doc) "
    f"SELECT ? + o - 1, ?, k, v, {without_nul('v', sqlite=False)}::jsonb "
    "FROM json_each_text(?::json) WITH ORDINALITY AS t(k, v, o)"
)
_NUL = "\\u0000"
#: Stored in ``dataset_fields.types`` after a field's JSON types: ``Field.holds_nul``.
NUL_MARK = "nul"


class Loading(SqlBase):
    """Rows into datasets."""

    @abstractmethod
    def get_dataset(self, name: str) -> Dataset:
        """The dataset as stored (``DatasetTables`` reads it)."""

    def load_dataset(
        self,
        name: str,
        mode: LoadMode,
        key_field: str | None,
        chunks: RowChunks,
        tally: FieldTally,
        now: float,
    ) -> Dataset:
        with self._write() as tx:
            pk, key_field, start = self._open_for_load(tx, name, mode, key_field, now)
            added = 0
            holding_nul: set[str] = set()
            for chunk in chunks(start, key_field):
                holding_nul |= self._insert_dataset_rows(tx, pk, chunk)
                added += len(chunk)
            if not added:
                raise InputError("no rows: the input is empty")
            seen = {
                name: types | {NUL_MARK} if name in holding_nul else types
                for name, types in tally.types.items()
            }
            self._merge_dataset_fields(tx, pk, seen)
            tx.run(
                "UPDATE datasets SET n_rows = n_rows + ?, updated_at = ? WHERE pk = ?",
                (added, now, pk),
            )
        return self.get_dataset(name)

    def _open_for_load(
        self, tx: Tx, name: str, mode: LoadMode, key_field: str | None, now: float
    ) -> tuple[int, str | None, int]:
        """The dataset's pk, its key field and the position of the first new row."""
        row = tx.one(
            f"SELECT pk, key_field, n_rows FROM datasets WHERE name = ?{self.dialect.for_update}",
            (name,),
        )
        if row is not None and mode == "create":
            raise ConfigError(
                f"dataset {name!r} exists already: --append adds rows to it, --replace "
                "replaces them"
            )
        if row is None and mode == "append":
            raise DatasetNotFound(name)
        if row is None:
            try:
                with tx.savepoint():
                    created = tx.one(
                        "INSERT INTO datasets (name, key_field, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?) RETURNING pk",
                        (name, key_field, now, now),
                    )
            except tx.UniqueViolation as exc:
                raise ConfigError(f"dataset {name!r} was created meanwhile") from exc
            return int(created[0]), key_field, 1
        pk, kept, rows = int(row[0]), row[1], int(row[2])
        if mode == "append":
            return pk, kept, rows + 1
        self._delete_dataset_rows(tx, pk)
        tx.run(
            "UPDATE datasets SET key_field = ?, n_rows = 0, updated_at = ? WHERE pk = ?",
            (key_field, now, pk),
        )
        return pk, key_field, 1

    def _insert_dataset_rows(self, tx: Tx, pk: int, rows: NewItems) -> set[str]:
        """Inserts a chunk of rows; returns the fields holding text with a NUL character."""
        if not rows:
            return set()
        chunk = as_chunk(rows)
        low, high = span(pk)
        if low + chunk.end >= high:
            raise StoreError(f"a dataset holds at most {high - low - 1:,} rows")
        holding_nul = _holding_nul(chunk) if _NUL in chunk.json else set()
        insert = _INSERT[self.dialect.name]
        if _NUL in chunk.json and self.dialect.name == "postgres":
            insert = _INSERT_NUL
        try:
            with tx.savepoint():
                tx.run(insert, (low + chunk.start, pk, chunk.json))
        except tx.UniqueViolation:
            self._raise_duplicate_row(tx, pk, chunk)
        return holding_nul

    def _raise_duplicate_row(self, tx: Tx, pk: int, chunk: Chunk) -> None:
        seen: dict[str, int] = {}
        for position, key in enumerate(chunk.keys, chunk.start):
            if key in seen:
                _duplicate(seen[key], position, key)
            seen[key] = position
        where, keys = self._any("key", seen)
        query = f"SELECT key, id FROM dataset_rows WHERE dataset_pk = ? AND {where}"
        found = tx.all(query, (pk, keys))
        low = span(pk)[0]
        earlier = {key: row_id - low for key, row_id in found}
        for position, key in enumerate(chunk.keys, chunk.start):
            if key in earlier:
                _duplicate(earlier[key], position, key)
        raise StoreError("a row insert failed for no reason found")  # pragma: no cover

    @staticmethod
    def _merge_dataset_fields(tx: Tx, pk: int, seen: dict[str, set[str]]) -> None:
        kept = {
            name: (ord_, set(types.split(",")))
            for name, ord_, types in tx.all(
                "SELECT name, ord, types FROM dataset_fields WHERE dataset_pk = ?", (pk,)
            )
        }
        next_ord = max((ord_ for ord_, _ in kept.values()), default=0) + 1
        for name, types in seen.items():
            if name not in kept:
                tx.run(
                    "INSERT INTO dataset_fields (dataset_pk, name, ord, types) VALUES (?, ?, ?, ?)",
                    (pk, name, next_ord, _types(types)),
                )
                next_ord += 1
            elif not types <= kept[name][1]:
                tx.run(
                    "UPDATE dataset_fields SET types = ? WHERE dataset_pk = ? AND name = ?",
                    (_types(types | kept[name][1]), pk, name),
                )

    @staticmethod
    def _delete_dataset_rows(tx: Tx, pk: int) -> int:
        low, high = span(pk)
        tx.run("DELETE FROM dataset_fields WHERE dataset_pk = ?", (pk,))
        return tx.run("DELETE FROM dataset_rows WHERE id >= ? AND id < ?", (low, high))


def _types(types: set[str]) -> str:
    return ",".join(t for t in (*JSON_TYPES, NUL_MARK) if t in types)


class _Members(list[tuple[str, Any]]):
    """A JSON object's members in order, a name used twice kept twice."""


def _holding_nul(chunk: Chunk) -> set[str]:
    """The top-level fields of a chunk's rows that hold text with a NUL character; raises
    InvalidItem for a row with one in a field's name. (Only for a chunk holding a
    ``\\u0000`` escape: such a row's member is a JSON string holding its text.)"""
    found: set[str] = set()
    rows = json.loads(chunk.json, object_pairs_hook=_Members)
    for position, (key, row) in enumerate(rows, chunk.start):
        members = json.loads(row, object_pairs_hook=_Members) if isinstance(row, str) else row
        for name, value in members if isinstance(members, _Members) else ():
            if "\x00" in name:
                raise InvalidItem(
                    f"field name {name!r} holds a NUL character (U+0000); a dataset's field "
                    "names cannot (PostgreSQL's text has none)",
                    position=position,
                    key=key,
                )
            if isinstance(value, str) and "\x00" in value:
                found.add(name)
    return found


def _duplicate(first_position: int, position: int, key: str) -> None:
    raise DuplicateKey(
        f"duplicate key (first used by row {first_position})",
        first_position=first_position,
        position=position,
        key=key,
    )
