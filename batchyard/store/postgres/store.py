"""PostgresStore: the scale-out store. Any number of worker processes on any number of
machines share one database; claims skip rows others hold (``FOR UPDATE SKIP LOCKED``) and
idle workers wake on ``LISTEN/NOTIFY``.

It is put together from its parts, as the SQLite store is: ``connection`` (the pool,
transactions, migrations), ``listening``, ``submitting``, ``reading``, ``controlling``,
``working`` and ``recording``.
"""

from __future__ import annotations

from batchyard.store.postgres.budgeting import Budgeting
from batchyard.store.postgres.controlling import Controlling
from batchyard.store.postgres.limiting import Limiting
from batchyard.store.postgres.reading import Reading
from batchyard.store.postgres.submitting import Submitting
from batchyard.store.postgres.working import Working


class PostgresStore(Working, Controlling, Reading, Submitting, Limiting, Budgeting):
    """The scale-out store. ``url`` is a libpq URL; the schema is created or upgraded on
    first use. It holds at most ``pool_size`` pooled connections, plus one for LISTEN once
    ``on_change`` is used."""

    def reclaim_expired(self, now: float) -> int:
        moved = self._reclaim_leases(now)
        self._drop_abandoned_uploads(now)
        return moved
