"""items.chunks: the first bad item of a chunk is the one reported, before anything the
iterable raises after it, and a chunk encoded in a few orjson calls holds the same text as
one encoded item by item."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from batchyard import codec
from batchyard.errors import InvalidItem, NotSerializable
from batchyard.items import MAX_KEY_LENGTH, chunks


def test_a_bad_item_is_reported_before_an_error_of_the_iterable_after_it() -> None:
    def rows() -> Iterator[Any]:
        yield {"a": 1}
        yield "text"
        raise OSError("disk went away")

    with pytest.raises(InvalidItem) as caught:
        list(chunks(rows()))
    assert caught.value.position == 2
    assert isinstance(caught.value.__context__, OSError)


def test_the_first_bad_item_of_a_chunk_is_the_one_reported() -> None:
    items = [{"id": 1}, {"v": {1}}, {"id": True}, {"v": math.nan}]
    with pytest.raises(NotSerializable) as caught:
        list(chunks(items))
    assert caught.value.position == 2
    with pytest.raises(InvalidItem, match="field 'id' must be a string or an integer"):
        list(chunks(items[2:]))
    with pytest.raises(NotSerializable, match="item 2, key '2': the item is not JSON"):
        list(chunks([{"id": 1}, {"v": math.inf}]))


def test_an_integer_key_is_its_digits() -> None:
    (chunk,) = chunks([{"id": 7}, {"id": -3}, {"id": 10 ** (MAX_KEY_LENGTH - 1)}])
    assert chunk.keys == ["7", "-3", str(10 ** (MAX_KEY_LENGTH - 1))]
    with pytest.raises(InvalidItem, match=f"must be 1 to {MAX_KEY_LENGTH} characters long"):
        list(chunks([{"id": 10**MAX_KEY_LENGTH}]))


def test_a_key_with_a_nul_character_is_refused() -> None:
    # PostgreSQL's text holds no NUL character: such a key would be stored on SQLite only.
    with pytest.raises(InvalidItem, match="field 'id' holds a NUL character") as caught:
        list(chunks([{"id": "a"}, {"id": "b\x00c"}]))
    assert caught.value.position == 2
    (chunk,) = chunks([{"id": "a", "v": "b\x00c"}])  # in a value it is kept
    assert chunk.keys == ["a"]


def test_a_chunk_holds_the_same_text_whichever_way_it_was_encoded() -> None:
    plain = [{"id": n, "s": "é\n", "n": None} for n in range(40)]
    (fast,) = chunks(plain)
    # An item only the standard library encodes sends its whole chunk item by item.
    (slow,) = chunks([*plain, {"id": 40, 1: "x"}])
    assert slow.json.startswith(fast.json[:-1] + ",")
    members = [f'"{n}":{codec.dumps(item)}' for n, item in enumerate(plain)]
    assert fast.json == "{" + ",".join(members) + "}"
    assert (fast.start, len(fast), slow.keys[-1]) == (1, 40, "40")


@pytest.mark.parametrize("key_field", ["id", None])
def test_a_dict_filled_anew_and_yielded_again_has_every_state_stored(
    key_field: str | None,
) -> None:
    """A generator may fill one dict for each item and yield it again: each item is kept as
    it was when it was yielded, though a chunk is read before it is encoded."""

    def rows() -> Iterator[dict[str, Any]]:
        row: dict[str, Any] = {}
        for n in range(1, 301):
            row["id"], row["text"] = n, f"row {n}"
            yield row

    stored = [
        item
        for chunk in chunks(rows(), key_field=key_field, size=128)
        for item in codec.loads(chunk.json).values()
    ]
    assert stored == [{"id": n, "text": f"row {n}"} for n in range(1, 301)]
