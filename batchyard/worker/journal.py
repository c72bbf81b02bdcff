"""One line per batch a worker starts and per batch that ends with its commit, on the
``batchyard.worker.batches`` logger (``batchyard worker`` prints them without ``-v``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from batchyard.models import BatchStatus
from batchyard.report_text import format_duration
from batchyard.store.base import Claim, Store

log = logging.getLogger("batchyard.worker.batches")


class Journal:
    """Notes the batches one worker run touches. Called on the store thread: the status it
    reads costs one store read per batch, not per item."""

    def __init__(self) -> None:
        self._started: set[str] = set()

    def claimed(self, store: Store, claims: Iterable[Claim]) -> None:
        """Log the batches of ``claims`` this run had not claimed from before."""
        for batch_id in dict.fromkeys(claim.batch.id for claim in claims):
            if batch_id in self._started or not log.isEnabledFor(logging.INFO):
                continue
            self._started.add(batch_id)
            status = _status(store, batch_id)
            if status is None:
                continue
            log.info(
                "started %s (task %s, %s items)", batch_id, status.task, f"{status.counts.total:,}"
            )

    def ended(self, store: Store, batch_ids: Iterable[str]) -> None:
        """Log how each of ``batch_ids`` (just ended by this worker's commit) ended."""
        if not log.isEnabledFor(logging.INFO):
            return
        for batch_id in batch_ids:
            status = _status(store, batch_id)
            if status is None:
                continue
            c = status.counts
            took = None
            if status.finished_at is not None and status.started_at is not None:
                took = status.finished_at - status.started_at
            log.info(
                "%s %s: %s succeeded, %s failed%s in %s",
                batch_id,
                status.state.value,
                f"{c.succeeded:,}",
                f"{c.failed:,}",
                f", {c.cancelled:,} cancelled" if c.cancelled else "",
                format_duration(took),
            )


def _status(store: Store, batch_id: str) -> BatchStatus | None:
    # NOTE: these lines are read after the commit that claimed or recorded: a failed read
    # (a deleted batch, an outage) must not lose the claims or outcomes with it.
    try:
        return store.get_batch(batch_id)
    except Exception:
        log.debug("could not read batch %s for its line", batch_id, exc_info=True)
        return None
