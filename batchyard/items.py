"""Turning a stream of user items into keyed, encoded chunks, checking each on the way.

Nothing here holds more than one chunk: a million-item iterable streams through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from batchyard import codec
from batchyard.errors import InvalidItem, NotSerializable
from batchyard.store.base import NewItem

#: The largest JSON encoding of one item that a batch accepts.
MAX_ITEM_BYTES = 1_000_000
MAX_KEY_LENGTH = 512
CHUNK_SIZE = 5000


def item_key(item: dict[str, Any], key_field: str | None, position: int) -> str:
    """The key of an item: its ``key_field`` value when present, else its position."""
    raw = item.get(key_field) if key_field else None
    if raw is None:
        return str(position)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidItem(
            f"field {key_field!r} must be a string or an integer to serve as the item's key, "
            f"not {type(raw).__name__}",
            position=position,
        )
    key = str(raw)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidItem(
            f"field {key_field!r} must be 1 to {MAX_KEY_LENGTH} characters long", position=position
        )
    return key


def encode(item: Any, position: int, key_field: str | None) -> NewItem:
    """Check one item and encode it; raises an InputError naming its position."""
    if not isinstance(item, dict):
        raise InvalidItem(
            f"an item must be a JSON object (a dict), not {type(item).__name__}", position=position
        )
    key = item_key(item, key_field, position)
    try:
        payload = codec.dumps(item)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(
            f"the item is not JSON-serialisable: {exc}", position=position, key=key
        ) from exc
    if len(payload) > MAX_ITEM_BYTES:
        raise InvalidItem(
            f"the item is {len(payload):,} bytes as JSON; the limit is {MAX_ITEM_BYTES:,}",
            position=position,
            key=key,
        )
    return NewItem(key, position, payload)


def chunks(
    items: Iterable[Any],
    *,
    key_field: str | None = "id",
    start: int = 1,
    size: int = CHUNK_SIZE,
) -> Iterator[list[NewItem]]:
    """Encoded items in lists of ``size``; positions count from ``start``."""
    chunk: list[NewItem] = []
    for position, item in enumerate(items, start):
        chunk.append(encode(item, position, key_field))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
