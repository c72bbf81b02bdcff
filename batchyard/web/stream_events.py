"""What a live stream carries: ``status``, ``item`` and ``end`` events, each at a ``Mark``
(its place in the store's change feed), with its JSON made once for every subscriber.

A mark is the feed cursor, and for an item also the item's place among the changes of one
transaction (``cursor:batch:position``): one commit changes many items under one cursor,
and a stream that broke half-way through them must resume with the rest, not all or none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

from fastapi.sse import format_sse_event

from batchyard.models import JSON, BatchStatus, Item
from batchyard.views import status_view

Kind = Literal["status", "item", "end"]
#: An item's error is cut to its last line and this many characters.
ERROR_CHARS = 300
MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Mark:
    """A place in a stream. ``Mark(seq)`` is after everything at cursor ``seq``; with
    ``batch`` it is just after that batch's item at ``position`` among the items of ``seq``
    (items of one cursor go in batch id, then position order)."""

    seq: int
    whole: bool = True
    batch: str = ""
    position: int = 0

    @classmethod
    def parse(cls, text: str) -> Mark:
        """A mark from an event id (``123`` or ``123:batch_x:7``); ValueError if it is not
        one."""
        parts = text.strip().split(":")
        try:
            if len(parts) == 1:
                return cls(_natural(parts[0]))
            if len(parts) == 3 and parts[1]:
                return cls(_natural(parts[0]), False, parts[1], _natural(parts[2]))
        except ValueError:
            pass
        raise ValueError(f"{text!r} is not an event id of this stream (a cursor such as 1234)")

    @classmethod
    def of_item(cls, item: Item) -> Mark:
        return cls(item.seq, False, item.batch_id, item.position)

    def __str__(self) -> str:
        return str(self.seq) if self.whole else f"{self.seq}:{self.batch}:{self.position}"

    def key(self) -> tuple[int, int, str, int]:
        # A whole mark sorts after every item mark of its cursor.
        return (self.seq, int(self.whole), self.batch, self.position)

    def is_after(self, other: Mark | None) -> bool:
        return other is None or self.key() > other.key()


def _natural(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event for subscribers: its kind, batch, mark, its data as JSON text and as
    Server-Sent Event bytes (both made once, whatever the number of subscribers)."""

    kind: Kind
    batch_id: str
    mark: Mark
    data: dict[str, JSON]
    text: str = field(compare=False)
    sse: bytes = field(compare=False)

    @classmethod
    def make(cls, kind: Kind, batch_id: str, mark: Mark, data: dict[str, JSON]) -> StreamEvent:
        data = {**data, "cursor": mark.seq}
        text = json.dumps(data, separators=(",", ":"))
        sse = format_sse_event(data_str=text, event=kind, id=str(mark))
        return cls(kind, batch_id, mark, data, text, sse)

    @property
    def id(self) -> str:
        return str(self.mark)

    def message(self) -> str:
        """The event as a WebSocket message: its data with ``type`` and ``id``."""
        return f'{{"type":"{self.kind}","id":"{self.mark}",{self.text[1:]}'


def status_event(status: BatchStatus, seq: int) -> StreamEvent:
    """A batch's status, in the shape of ``batchyard status --json``."""
    return StreamEvent.make("status", status.id, Mark(seq), status_view(status, time.time()))


def end_event(status: BatchStatus | None, batch_id: str, seq: int) -> StreamEvent:
    """The batch ended (or was deleted: ``state`` is null)."""
    state = None if status is None else status.state.value
    return StreamEvent.make("end", batch_id, Mark(seq), {"batch_id": batch_id, "state": state})


def item_event(item: Item) -> StreamEvent:
    """An item changed: what a list of items shows, never its payload or result."""
    data: dict[str, JSON] = {
        "batch_id": item.batch_id,
        "key": item.key,
        "position": item.position,
        "state": item.state.value,
        "attempt": item.runs,
        "error": _cut(_last_line(item.error), ERROR_CHARS),
        "duration": item.duration,
        "finished_at": item.finished_at,
        "progress": item.progress,
        "message": _cut(item.message, MESSAGE_CHARS),
        "usage": None if item.usage.is_zero else item.usage.as_dict(),
    }
    return StreamEvent.make("item", item.batch_id, Mark.of_item(item), data)


def _last_line(text: str | None) -> str | None:
    if not text:
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"
