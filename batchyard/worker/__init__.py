"""The worker: claims items in chunks, runs them in lanes, records outcomes in group
commits. One asyncio loop per process; every store call goes through one thread of its own,
in order. Leases are renewed by a heartbeat; the store refuses an outcome whose lease was
taken over (the attempt number is the fencing token).

The parts, one module each:

- ``worker.py``: ``Worker``, which puts the parts together, and ``stop`` / ``wake``.
- ``config.py``: ``WorkerConfig`` and ``WorkerStats``.
- ``claims.py``: the claim/commit loop (group commit, outage backoff, idle waits, drain).
- ``lanes.py``: the lanes that run jobs from one queue; an attempt's deadline is set there.
- ``inflight.py``: the jobs held, outcomes waiting for a commit, prefetch and when to commit.
- ``chores.py``: heartbeat, control, timeout watchdog, reclaim of expired leases.
- ``discovery.py``: loading the tasks of batches found in the store (daemon threads,
  a patience limit, never a name no worker may import).
- ``callbacks.py``: batch-end callbacks (``on_complete``, ``on_success``, ``on_failure``).
- ``shared.py``: the store thread and what every part shares.
- ``collector.py``: the garbage collector's young threshold, raised while any worker runs.
"""

from batchyard.worker.config import WorkerConfig, WorkerStats
from batchyard.worker.worker import Worker

__all__ = ["Worker", "WorkerConfig", "WorkerStats"]
