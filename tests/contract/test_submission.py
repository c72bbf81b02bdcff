"""Items as ``items.chunks`` encodes them, on both stores: each payload is stored as the
exact text ``codec.dumps`` makes, whichever way its chunk was encoded (a few orjson calls,
or item by item), and a submission's fingerprint does not depend on its chunks."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from batchyard import codec
from batchyard import items as item_codec
from batchyard.errors import IdempotencyConflict
from batchyard.records import FieldTally
from batchyard.store.base import Idempotency, Store
from batchyard.store.sqlbase import SqlBase
from tests.contract.test_store import T0, options


class Color(enum.StrEnum):
    RED = "red"


def tricky() -> list[dict[Any, Any]]:
    """Items that test the encoding: escapes, characters beyond ASCII, numbers as orjson
    writes them, and items only the standard library encodes (an int dict key, a StrEnum,
    an int past 64 bits), so that some chunks go item by item."""
    return [
        {"id": 1, "s": 'é漢字😀\u2028\x01\x1f"\\/\n\t', "f": [1e16, 1.5, -0.0, 1e-7]},
        {"id": 'k"ey\\', "nested": {"": [], "a": {}, "b": [[]]}, "t": True, "n": None},
        {"id": "ключ", "nul": "a\x00b"},
        {"id": 4, "x": "null", "y": [None]},
        {"name": "keyed by its position"},
        {"id": 6, 1: "an int key"},
        {"id": 7, "c": Color.RED, "big": 2**64},
        {"id": 2**62, "v": 2},
        {"id": 9, "v": "\\u0000 as text"},
    ]


def stored(store: Store, table: str, column: str) -> list[tuple[str, str]]:
    assert isinstance(store, SqlBase)
    rows = store._read(f"SELECT key, payload FROM {table} ORDER BY {column}")
    return [(str(key), str(payload)) for key, payload in rows]


def expected(items: list[dict[Any, Any]]) -> list[tuple[str, str]]:
    keys = [str(item.get("id", position)) for position, item in enumerate(items, 1)]
    return list(zip(keys, [codec.dumps(item) for item in items], strict=True))


@pytest.mark.parametrize("size", [1, 2, 4, 100])
def test_payloads_are_stored_as_the_codec_writes_them(store: Store, size: int) -> None:
    items = tricky()
    chunks = item_codec.chunks(items, size=size)
    store.create_batch("b1", options(), chunks, T0)
    assert stored(store, "items", "position") == expected(items)
    assert [it.payload for it in store.items("b1")] == [
        codec.loads(codec.dumps(it)) for it in items
    ]


def test_dataset_rows_are_stored_as_the_codec_writes_them(store: Store) -> None:
    # (With the NUL character too: on PostgreSQL a row is also kept as jsonb, which has none.)
    items = tricky()
    tally = FieldTally()
    stream = tally.over(items)
    store.load_dataset(
        "d1",
        "create",
        "id",
        lambda start, kept: item_codec.chunks(stream, key_field=kept, start=start, size=4),
        tally,
        T0,
    )
    assert stored(store, "dataset_rows", "id") == expected(items)


def test_a_fingerprint_does_not_depend_on_the_chunks(store: Store) -> None:
    key = Idempotency("k1", T0 + 86_400)
    items = [{**item, "id": n} for n, item in enumerate(tricky() * 3)]
    first = store.create_batch("b1", options(), item_codec.chunks(items, size=2), T0, key)
    again = store.create_batch("b2", options(), item_codec.chunks(items, size=5), T0, key)
    assert (first.id, again.id) == ("b1", "b1")
    other = [*items[:-1], {**items[-1], "v": "changed"}]
    with pytest.raises(IdempotencyConflict):
        store.create_batch("b3", options(), item_codec.chunks(other, size=5), T0, key)
