"""Turning a stream of user items into keyed, encoded chunks, checking each on the way.

Nothing here holds more than one chunk: a million-item iterable streams through.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar, cast

from batchyard import codec
from batchyard.errors import InvalidItem, NotSerializable
from batchyard.store.base import NewItem

T = TypeVar("T")

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


_DONE: Any = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _WriteBehind(Generic[T]):
    """A writer thread fed chunks through a small queue."""

    def __init__(self, write: Callable[[Iterator[list[NewItem]]], T]) -> None:
        self._pipe: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._write = write
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="batchyard-submit", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[list[NewItem]]:
        while (chunk := self._pipe.get()) is not _DONE:
            if isinstance(chunk, _Failed):
                raise chunk.error
            yield chunk

    def _run(self) -> None:
        try:
            self._outcome.append(self._write(self._chunks()))
        except BaseException as exc:
            self._outcome.append(_Failed(exc))

    def feed(self, chunk: Any) -> bool:
        """Hand a chunk over; False once the writer has stopped (it failed)."""
        while self._thread.is_alive():
            try:
                self._pipe.put(chunk, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def result(self) -> T:
        self._thread.join()
        outcome = self._outcome[0]
        if isinstance(outcome, _Failed):
            raise outcome.error
        return cast(T, outcome)


def write_behind(
    chunks: Iterator[list[NewItem]], write: Callable[[Iterator[list[NewItem]]], T]
) -> T:
    """``write(chunks)`` on a thread of its own while this thread makes the chunks.

    Encoding is Python (it holds the GIL) and inserting is mostly SQLite (it releases it),
    so the two overlap. The caller's iterable stays on the caller's thread (it may be a
    cursor bound to it); a failure on either side stops the other and is raised here.
    """
    first = next(chunks, None)
    second = next(chunks, None)
    if second is None:  # one chunk: nothing to overlap
        return write(iter([] if first is None else [first]))
    writer = _WriteBehind(write)
    try:
        for chunk in chain([first, second], chunks):
            if not writer.feed(chunk):
                break
        writer.feed(_DONE)
    except BaseException as exc:
        writer.feed(_Failed(exc))
        writer.result()
        raise
    return writer.result()
