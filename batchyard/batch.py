"""``Batch``: a handle on one batch that holds only its id; every call reads the store
(or asks it for one change), so any process holding one sees the same batch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from batchyard import items as item_codec
from batchyard.clusters import ErrorCluster
from batchyard.deliveries import Delivery
from batchyard.models import UNSET, BatchStatus, Event, Finishes, Item, LogLine, TemplateRef
from batchyard.report import MAX_FAILED, Outcomes, Report, build_report
from batchyard.rerun import rerun
from batchyard.states import ItemState
from batchyard.store.base import Store

if TYPE_CHECKING:
    from batchyard.yard import Yard


class Batch:
    """A handle on one batch. It holds only the id; every call reads the store."""

    def __init__(self, yard: Yard, batch_id: str, *, replayed: bool = False) -> None:
        self.yard = yard
        self.id = batch_id
        #: True when ``Yard.submit`` found this batch under its idempotency key and
        #: created nothing.
        self.replayed = replayed

    def __repr__(self) -> str:
        return f"Batch({self.id!r})"

    @property
    def _store(self) -> Store:
        return self.yard.store

    def _now(self) -> float:
        return self.yard.clock.now()

    def status(self) -> BatchStatus:
        """State, counts per item state, progress, usage and timestamps (O(1) to read)."""
        return self._store.get_batch(self.id)

    def finishes(self) -> Finishes:
        """When its items finished, read in one bounded pass whatever its size: what
        ``progress.history``, ``eta_range`` and ``stall`` (and ``status_view``) read."""
        return self._store.finishes(self.id)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> BatchStatus:
        """Block until the batch ends (some worker must be running); TimeoutError after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            status = self.status()
            if status.is_finished:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {self.id} still {status.state.value} after {timeout}s")
            time.sleep(delay)
            delay = min(poll, delay * 2)

    def webhooks(self) -> list[Delivery]:
        """The batch's webhook deliveries, oldest first: event, URL, state, attempts, the
        last try's status, error and duration, the next try (docs/webhooks.md)."""
        return self._store.webhook_deliveries(self.id)

    def webhook_urls(self) -> list[str]:
        """The URLs the batch calls when it ends or pauses, in order."""
        return self._store.webhook_urls(self.id)

    def cancel(self) -> BatchStatus:
        """Cancel: no more claims, waiting items cancelled, running ones told to stop."""
        return self._store.cancel(self.id, self._now())

    def pause(self) -> BatchStatus:
        """Stop claims; running items finish."""
        return self._store.pause(self.id, self._now())

    def resume(self, *, budget: float | None = UNSET) -> BatchStatus:
        """Carry on after a pause; ``budget`` first sets a new cap (None removes it)."""
        if budget is not UNSET:
            self.set_budget(budget)
        status = self._store.resume(self.id, self._now())
        self.yard._wake_workers()
        return status

    def set_budget(self, budget: float | None) -> BatchStatus:
        """Set the cap on the batch's cost (None: no cap). A batch paused by its budget
        stays paused until ``resume``."""
        return self._store.set_budget(self.id, budget, self._now())

    def retry_failed(
        self,
        *,
        keys: Iterable[str] | None = None,
        states: Iterable[ItemState | str] = (ItemState.FAILED,),
        cluster: str | None = None,
    ) -> int:
        """Send a finished batch's failed items back, ahead of fresh work; returns how
        many. ``states`` may add (or be) ``"cancelled"``; ``keys`` sends back only those
        items (each must be in one of ``states``); ``cluster`` (an error cluster's id, or
        a start of it that only one has) only the failed items whose failure is in it.
        Each item gets a fresh ``max_attempts`` and its backoff starts again; its
        ``attempts`` keeps counting. All or nothing: raises ItemNotFound for an unknown
        key, Conflict for a key in another state or a batch that has not ended failed or
        partially completed, ClusterNotFound for an unknown or ambiguous cluster."""
        sent = self._store.retry_failed(
            self.id,
            self._now(),
            keys=None if keys is None else list(keys),
            states=[ItemState(state) for state in states],
            cluster=cluster,
        )
        self.yard._wake_workers()
        return sent

    def error_clusters(self, limit: int | None = None) -> list[ErrorCluster]:
        """What went wrong, grouped: the batch's failures by signature (error class,
        message with ids and numbers blanked, the task's top frame), most failed items
        first, at most ``limit``. Counts are kept by the store as failures are recorded,
        so this reads no item. Raises BatchNotFound."""
        return self._store.error_clusters(self.id, limit)

    def outcomes(self, other: str) -> Outcomes:
        """The items this batch shares with batch ``other`` (the same key), counted by their
        state here and there: read in one statement, no item loaded. Raises
        BatchNotFound."""
        cells = self._store.outcome_matrix(self.id, other)
        return Outcomes(self.id, other, cells)

    def rerun(
        self,
        *,
        template: str | TemplateRef | None = None,
        state: str | ItemState | Iterable[str | ItemState] = "all",
        name: str | None = None,
    ) -> Batch:
        """A new batch with this batch's items (``state="failed"``: only its failed ones)
        and options, linked to it (``status().rerun_of``), run with the same template
        version or ``template`` (``NAME``, ``NAME@N``). The items are copied inside the
        store, never through this process. See ``batchyard.rerun.rerun`` for what it
        raises."""
        new_id = rerun(self.yard, self.id, template=template, state=state, name=name)
        return Batch(self.yard, new_id)

    def add(self, items: Iterable[Any], *, key_field: str | None = "id") -> int:
        """Add items to an open batch, all or none; returns how many were added."""
        stream = item_codec.stream(items)
        added = self._store.append_items(
            self.id,
            lambda start: item_codec.chunks(stream, key_field=key_field, start=start),
            self._now(),
        )
        self.yard._wake_workers()
        return added

    def seal(self) -> BatchStatus:
        """An open batch stops taking items; it ends when they are done."""
        return self._store.seal(self.id, self._now())

    def delete(self) -> None:
        """Delete a finished batch and everything recorded about it."""
        self._store.delete_batch(self.id, self._now())

    def items(
        self,
        state: ItemState | str | None = None,
        *,
        page: int = 1000,
        payloads: bool = True,
        results: bool = True,
    ) -> Iterator[Item]:
        """Every item in submission order (optionally in one state), read a page at a time.
        ``payloads=False`` and ``results=False`` leave those unread (None), for listings."""
        wanted = None if state is None else ItemState(state)
        after = 0
        while True:
            rows = self._store.items(
                self.id, state=wanted, after=after, limit=page, payloads=payloads, results=results
            )
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].position

    def results(self) -> Iterator[Item]:
        """The finished items (succeeded, failed or cancelled) in submission order."""
        return (item for item in self.items() if item.state.is_terminal)

    def item(self, key: str) -> Item:
        return self._store.item(self.id, str(key))

    def report(self, *, max_failed: int = MAX_FAILED) -> Report:
        """How the batch went, in figures, from one pass over its items (what
        ``batchyard report`` shows; ``str()`` of it is the same text, ``as_dict()`` the
        JSON). Lists at most ``max_failed`` failed items. Raises BatchNotFound."""
        return build_report(self, max_failed=max_failed)

    def logs(self, key: str) -> list[LogLine]:
        """Log lines, progress messages and every attempt's error of one item."""
        return self._store.item_logs(self.id, str(key))

    def events(self, since: int = 0, limit: int = 1000) -> list[Event]:
        """This batch's events in the change feed after cursor ``since``."""
        return self._store.events(self.id, since, limit)

    def changes(self, since: int = 0, limit: int = 1000) -> list[Item]:
        """Items changed after cursor ``since``, oldest change first."""
        return self._store.item_changes(self.id, since, limit)


def remaining_payloads(store: Store, batch_id: str) -> Iterator[Any]:
    """The payloads of a batch's items still to do (pending, waiting for a retry, running)."""
    left = {ItemState.PENDING, ItemState.RETRY_WAIT, ItemState.RUNNING}
    after = 0
    while page := store.items(batch_id, after=after, limit=1000):
        for item in page:
            if item.state in left:
                yield item.payload
        after = page[-1].position
