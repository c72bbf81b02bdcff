"""SqliteStore: the embedded store, one file in WAL mode shared by the processes of a machine.

It is put together from its parts: ``connection`` (connections, transactions, migrations),
``submitting``, ``reading``, ``controlling`` and ``working``.
"""

from __future__ import annotations

from batchyard.store.sqlite.budgeting import Budgeting
from batchyard.store.sqlite.controlling import Controlling
from batchyard.store.sqlite.limiting import Limiting
from batchyard.store.sqlite.reading import Reading
from batchyard.store.sqlite.submitting import Submitting
from batchyard.store.sqlite.working import Working


class SqliteStore(Working, Controlling, Reading, Submitting, Limiting, Budgeting):
    """The embedded store. ``path`` is a file, created with its schema on first use."""

    def reclaim_expired(self, now: float) -> int:
        moved = self._reclaim_leases(now)
        self._drop_abandoned_uploads(now)
        return moved
