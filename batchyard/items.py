"""Turning a stream of user items into keyed, encoded chunks, checking each on the way.

Nothing here holds more than one chunk: a million-item iterable streams through.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
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
#: Items of a chunk's first orjson call; later calls take as many as make about half the
#: item limit by the sizes seen, up to YIELD_EVERY (see ``_members``).
FIRST_GROUP = 16


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
    if type(raw) is str and 0 < len(raw) <= MAX_KEY_LENGTH:  # the common cases, first
        return raw
    if type(raw) is int and len(key := str(raw)) <= MAX_KEY_LENGTH:
        return key
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
    if "\x00" in key:  # (a chunk with one comes here: its JSON holds a \u0000 escape)
        raise InvalidItem(
            f"field {key_field!r} holds a NUL character (U+0000); a key cannot "
            "(PostgreSQL's text has none)",
            position=position,
        )
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
) -> Iterator[Chunk]:
    """Encoded items in chunks of ``size``; positions count from ``start``.

    A chunk's items are read before they are encoded, each dict copied as it is read (its
    top level: a generator that changes one dict and yields it again has every state
    stored; what is nested in an item must not change once it is yielded). A bad item
    raises (the first of a chunk) before anything the iterable raises after yielding it."""
    source = iter(items)
    while True:
        taken: list[Any] = []
        try:
            _read(taken, islice(source, size))  # (keeps what it took if the iterable raises)
        except BaseException:
            _encode_each(taken, start, key_field)
            raise
        if not taken:
            return
        yield _encoded(taken, start, key_field)
        start += len(taken)


def _read(taken: list[Any], items: Iterator[Any]) -> None:
    append = taken.append
    for item in items:
        append(item.copy() if type(item) is dict else item)


def _encoded(items: list[Any], start: int, key_field: str | None) -> Chunk:
    """The chunk of ``items``: a few orjson calls when every item is plain (a dict with a
    usable key, all orjson encodes as the codec would, nothing near the size limit), else
    item by item, which raises the first bad item's error."""
    keys = _plain_keys(items, start, key_field)
    members = None if keys is None else _members(keys, items)
    if keys is None or members is None:
        encoded = _encode_each(items, start, key_field)
        keys = [it.key for it in encoded]
        members = ",".join(_member(it.key, it.payload) for it in encoded)
    return Chunk(keys, start, f"{{{members}}}")


def _plain_keys(items: list[Any], start: int, key_field: str | None) -> list[str] | None:
    """The items' keys; None when one is not a dict or has no usable key."""
    keys: list[str] = []
    append = keys.append
    for position, item in enumerate(items, start):
        if type(item) is not dict:
            return None
        try:
            append(item_key(item, key_field, position))
        except Exception:  # raised again by _encode_each, after any error of an earlier item
            return None
    return keys


def _members(keys: list[str], items: list[Any]) -> str | None:
    """The members ``"key":item,...`` of a chunk's JSON object, orjson encoding a group of
    items at a time; None when the items must be encoded one by one: a key used twice in a
    group, a group orjson does not encode as ``codec.dumps`` would each item, one too large
    to be sure that each item is within MAX_ITEM_BYTES, or one with a \\u0000 escape
    (see ``_member``)."""
    parts: list[str] = []
    group = FIRST_GROUP
    done = 0
    while done < len(items):
        taken = items[done : done + group]
        members = dict(zip(keys[done : done + group], taken, strict=True))
        if len(members) < len(taken):  # a key used twice
            return None
        data = codec.dumps_plain(members)
        if data is None or len(data) > MAX_ITEM_BYTES:
            return None
        text = data.decode()
        if _NUL in text:
            return None
        parts.append(text[1:-1])
        done += len(taken)
        group = max(1, min(YIELD_EVERY, len(taken) * (MAX_ITEM_BYTES // 2) // len(data)))
        # Let a writer thread that waits for the GIL have it now, not at the end of a
        # 5 ms switch interval: the writer is the slower side of a submission.
        time.sleep(0)
    return ",".join(parts)


def _encode_each(items: list[Any], start: int, key_field: str | None) -> list[NewItem]:
    encoded = []
    for position, item in enumerate(items, start):
        encoded.append(encode(item, position, key_field))
        if not position % YIELD_EVERY:
            time.sleep(0)
    return encoded


def _member(key: str, payload: str) -> str:
    # PostgreSQL's JSON functions refuse a \u0000 escape wherever they read one: an item
    # with one goes as a JSON string holding its text.
    value = codec.quote(payload) if _NUL in payload else payload
    return f"{codec.quote(key)}:{value}"


_NUL = "\\u0000"


_DONE: Any = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Feed(Iterator[Chunk]):
    """The writer's side of the pipe. ``ready()`` tells a store whether the next chunk can
    be had without waiting, so it may keep its transaction open for it."""

    def __init__(self, pipe: queue.Queue[Any]) -> None:
        self._pipe = pipe

    def __next__(self) -> Chunk:
        chunk = self._pipe.get()
        if chunk is _DONE:
            self._pipe.put(_DONE)  # stay exhausted
            raise StopIteration
        if isinstance(chunk, _Failed):
            raise chunk.error
        return cast(Chunk, chunk)

    def ready(self) -> bool:
        return not self._pipe.empty()


class _WriteBehind(Generic[T]):
    """A writer thread fed chunks through a small queue."""

    def __init__(self, write: Callable[[Iterator[Chunk]], T]) -> None:
        self._pipe: queue.Queue[Any] = queue.Queue(maxsize=3)
        self._write = write
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="batchyard-submit", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[Chunk]:
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


def write_behind(chunks: Iterator[Chunk], write: Callable[[Iterator[Chunk]], T]) -> T:
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
