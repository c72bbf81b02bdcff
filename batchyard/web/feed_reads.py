"""What the feed follower reads from the store, on its own thread: where the feed is and
which batches are live at the start, then at each step what changed up to the newest final
cursor. One read serves every subscriber of the server."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from batchyard.errors import BatchNotFound
from batchyard.models import BatchStatus, Event, Item
from batchyard.states import BatchState
from batchyard.store.base import Store

#: Changes read per query.
PAGE = 1000
#: Batches whose items can still change.
LIVE = tuple(state for state in BatchState if not state.is_terminal)


@dataclass(frozen=True, slots=True)
class Changes:
    """What one read of the feed found, up to cursor ``upper``."""

    upper: int
    events: list[Event]
    items: list[Item]
    #: The statuses of batches whose owner was not known yet (None: deleted).
    statuses: dict[str, BatchStatus | None]


class FeedReader:
    """The follower's reads of ``store``. Blocking: call them on the follower's thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self) -> tuple[int, list[BatchStatus]]:
        cursor = self.store.cursor()  # first: a batch made during the listing is in the feed
        statuses: list[BatchStatus] = []
        for state in LIVE:
            after = None
            while True:
                page = self.store.list_batches(state=state, limit=PAGE, after=after)
                statuses.extend(page.rows)
                if page.next is None:
                    break
                after = page.next
        return cursor, statuses

    def read(
        self,
        since: int,
        probe: frozenset[str],
        wanted: frozenset[str],
        wide: bool,
        known: frozenset[str],
    ) -> Changes | None:
        upper = self.store.cursor()
        if upper <= since:
            return None
        events = self._events(since, upper)
        named = {e.batch_id for e in events if e.batch_id is not None}
        batches = probe | {b for b in named if wide or b in wanted}
        items = [i for b in sorted(batches) for i in self._items(b, since, upper)]
        unknown = ({i.batch_id for i in items} | named) - known
        return Changes(upper, events, items, {b: self._status(b) for b in unknown})

    def _events(self, since: int, upper: int) -> list[Event]:
        out: list[Event] = []
        while True:
            page = self.store.events(since=since, limit=PAGE)
            out.extend(e for e in page if e.seq <= upper)
            if len(page) < PAGE or page[-1].seq >= upper:
                return out
            since = page[-1].seq

    def _items(self, batch_id: str, since: int, upper: int) -> list[Item]:
        out: list[Item] = []
        while True:
            try:
                page = self.store.item_changes(batch_id, since, PAGE, payloads=False, results=False)
            except BatchNotFound:
                return out
            out.extend(i for i in page if i.seq <= upper)
            if len(page) < PAGE or page[-1].seq >= upper:
                return out
            since = page[-1].seq

    def _status(self, batch_id: str) -> BatchStatus | None:
        try:
            return self.store.get_batch(batch_id)
        except BatchNotFound:
            return None

    def statuses(self, batch_ids: Iterable[str]) -> dict[str, BatchStatus | None]:
        return {b: self._status(b) for b in batch_ids}
