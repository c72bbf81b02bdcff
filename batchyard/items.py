"""Turning a stream of user items into keyed, encoded chunks, checking each on the way.

Nothing here holds more than one chunk: a million-item iterable streams through.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar, cast

from batchyard import codec
from batchyard.errors import InputError, InvalidItem, ItemTooLarge, NotSerializable
from batchyard.store.base import Chunk, NewItem

T = TypeVar("T")

#: The largest item a batch accepts: 1 MiB (1,048,576 bytes) of compact JSON in UTF-8.
#: The same number bounds an input line (``inputs.MAX_LINE_BYTES``), so a JSONL line the
#: reader accepts is never refused as an item.
MAX_ITEM_BYTES = 1 << 20
MAX_KEY_LENGTH = 512
CHUNK_SIZE = 5000
YIELD_EVERY = 256


def stream(items: Iterable[Any]) -> Iterator[Any]:
    """An iterator over a user's items; raises InputError for a single dict or string,
    or anything not iterable."""
    if isinstance(items, (dict, str, bytes)):
        raise InputError(f"items must be an iterable of dicts, not a single {type(items).__name__}")
    try:
        return iter(items)
    except TypeError:
        raise InputError(f"items must be iterable, not {type(items).__name__}") from None


def item_key(item: dict[str, Any], key_field: str | None, position: int) -> str:
    """The key of an item: its ``key_field`` value when present, else its position."""
    raw = item.get(key_field) if key_field else None
    if raw is None:
        return str(position)
    if type(raw) is str and 0 < len(raw) <= MAX_KEY_LENGTH:  # the common case, first
        return raw
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
    # Counted in characters first: UTF-8 takes at most 4 bytes a character, so only a big
    # item is measured in bytes.
    if len(payload) > MAX_ITEM_BYTES // 4:
        size = len(payload.encode())
        if size > MAX_ITEM_BYTES:
            raise ItemTooLarge(
                f"the item is {size:,} bytes as JSON; the limit is {MAX_ITEM_BYTES:,} (1 MiB)",
                position=position,
                key=key,
            )
    # tuple.__new__ skips the named tuple's Python-level __new__: a submission makes one
    # of these per item.
    return _new_item(NewItem, (key, position, payload))


_new_item = tuple.__new__


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
        if not position % YIELD_EVERY:
            # Let a writer thread that waits for the GIL have it now, not at the end of a
            # 5 ms switch interval: the writer is the slower side of a submission.
            time.sleep(0)
        if len(chunk) >= size:
            yield Chunk(chunk)
            chunk = []
    if chunk:
        yield Chunk(chunk)


_DONE: Any = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Feed(Iterator[list[NewItem]]):
    """The writer's side of the pipe. ``ready()`` tells a store whether the next chunk can
    be had without waiting, so it may keep its transaction open for it."""

    def __init__(self, pipe: queue.Queue[Any]) -> None:
        self._pipe = pipe

    def __next__(self) -> list[NewItem]:
        chunk = self._pipe.get()
        if chunk is _DONE:
            self._pipe.put(_DONE)  # stay exhausted
            raise StopIteration
        if isinstance(chunk, _Failed):
            raise chunk.error
        return cast(list[NewItem], chunk)

    def ready(self) -> bool:
        return not self._pipe.empty()


class _WriteBehind(Generic[T]):
    """A writer thread fed chunks through a small queue."""

    def __init__(self, write: Callable[[Iterator[list[NewItem]]], T]) -> None:
        self._pipe: queue.Queue[Any] = queue.Queue(maxsize=3)
        self._write = write
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="batchyard-submit", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[list[NewItem]]:
        return _Feed(self._pipe)

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
                # Let the writer have the GIL now: a busy encoder would otherwise keep it
                # for a whole switch interval (5 ms) while the writer waits to start.
                time.sleep(0)
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
