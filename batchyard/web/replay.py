"""A stream's start: what its client missed, read from the store.

A stream subscribes first and notes the follower's cursor then (``upto``); everything
after ``upto`` reaches its queue. The replay sends what lies between the client's last
event (``since``) and ``upto``: the items changed there (each at its latest change, if that
is not past ``upto``; a later one comes live), then each batch's status, and ``end`` for a
batch that has ended. Nothing is sent twice and nothing is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from batchyard.errors import BatchNotFound
from batchyard.models import BatchStatus, Item
from batchyard.store.base import Store
from batchyard.web.stream_events import Mark, StreamEvent, end_event, item_event, status_event

#: Items read per query of a replay.
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Replay:
    """What a stream sends before its live events, and the mark it ends at."""

    events: list[StreamEvent]
    mark: Mark
    #: The batches replayed that have ended (or are gone).
    ended: frozenset[str]


def replay(
    store: Store,
    batch_ids: Collection[str],
    since: Mark | None,
    upto: int,
    *,
    live: Collection[str] = (),
    sees: Callable[[BatchStatus], bool] = lambda status: True,
) -> Replay:
    """The replay of ``batch_ids`` (those ``sees`` lets through) from ``since`` (None: from
    ``upto``: only the statuses) to ``upto``. ``live``: the batches the follower had not
    seen end by ``upto``; one that has ended since gets its status and ``end`` live, after
    its last items, not here. Blocking: call it on a thread."""
    start = Mark(upto) if since is None else since
    statuses = {b: _status(store, b) for b in sorted(batch_ids)}
    shown = {b: s for b, s in statuses.items() if s is not None and sees(s)}
    items: list[Item] = []
    if start.key() < Mark(upto).key():
        for batch_id in shown:
            items.extend(_changes(store, batch_id, start, upto))
    items.sort(key=lambda i: (i.seq, i.batch_id, i.position))
    mark = max(start, Mark(upto), key=Mark.key)
    events = [item_event(item) for item in items]
    ended: set[str] = set()
    for batch_id, status in statuses.items():
        if batch_id in live and not _running(status):
            continue  # it ended after upto: its end comes live
        if status is None:
            events.append(end_event(None, batch_id, mark.seq))
            ended.add(batch_id)
        elif batch_id in shown:
            events.append(status_event(status, mark.seq))
            if status.state.is_terminal:
                events.append(end_event(status, batch_id, mark.seq))
                ended.add(batch_id)
    return Replay(events, mark, frozenset(ended))


def named_since(store: Store, since: Mark | None, upto: int) -> set[str]:
    """The batches the feed's events name between ``since`` and ``upto`` (a stream of every
    batch replays these beside the live ones)."""
    if since is None or since.seq >= upto:
        return set()
    named: set[str] = set()
    cursor = since.seq
    while True:
        page = store.events(since=cursor, limit=PAGE)
        named.update(e.batch_id for e in page if e.batch_id is not None and e.seq <= upto)
        if len(page) < PAGE or page[-1].seq >= upto:
            return named
        cursor = page[-1].seq


def _changes(store: Store, batch_id: str, since: Mark, upto: int) -> list[Item]:
    out: list[Item] = []
    cursor = since.seq - 1 if not since.whole else since.seq  # the rest of a broken group
    while True:
        try:
            page = store.item_changes(batch_id, cursor, PAGE, payloads=False, results=False)
        except BatchNotFound:
            return out
        out.extend(i for i in page if i.seq <= upto and Mark.of_item(i).is_after(since))
        if len(page) < PAGE or page[-1].seq >= upto:
            return out
        cursor = page[-1].seq


def _running(status: BatchStatus | None) -> bool:
    return status is not None and not status.state.is_terminal


def _status(store: Store, batch_id: str) -> BatchStatus | None:
    try:
        return store.get_batch(batch_id)
    except BatchNotFound:
        return None
