"""SqlStore: every rule of the store, written once over ``SqlBase``'s few per-database
operations. ``SqliteStore`` and ``PostgresStore`` are SqlStores that say how their database
connects, takes a transaction and does those few operations."""

from __future__ import annotations

from batchyard.store.access import AccessTables
from batchyard.store.budgeting import Budgeting
from batchyard.store.clustering import Clustering
from batchyard.store.controlling import Controlling
from batchyard.store.datasets import DatasetTables
from batchyard.store.delivering import Delivering
from batchyard.store.limiting import Limiting
from batchyard.store.reading import Reading
from batchyard.store.submitting import Submitting
from batchyard.store.templating import Templating
from batchyard.store.working import Working


class SqlStore(
    Working,
    Controlling,
    Reading,
    Submitting,
    Limiting,
    Budgeting,
    Clustering,
    DatasetTables,
    Templating,
    Delivering,
    AccessTables,
):
    """The store, put together from its parts (one noun each)."""

    def reclaim_expired(self, now: float, steady: float | None = None) -> int:
        moved = self._reclaim_leases(now, steady)
        self._rebase_retries(now)
        self._drop_abandoned_uploads(now)
        return moved
