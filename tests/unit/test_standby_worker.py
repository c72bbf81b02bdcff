"""Workers holding items ready beyond a batch's cap (``Standby``): one starts in place of
one of their own that ended, the commit says so, and the cap holds across workers."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from batchyard import ItemState, Yard
from batchyard.store.base import NO_STANDBY, Standby
from batchyard.worker import Worker, WorkerConfig

CAP = 6
#: A worker of 20 lanes with quick polls (as tests.conftest.FAST).
CONFIG = WorkerConfig(
    concurrency=20, poll_interval=0.02, control_interval=0.02, flush_interval=0.005
)


class Watch:
    """Counts the items of a task running at once, and the starts of items held ready the
    store was told of."""

    def __init__(self, yard: Yard) -> None:
        self.live = self.peak = self.started = 0
        store = yard.store
        record_and_claim = store.record_and_claim

        def counted(*args: Any, **kwargs: Any) -> Any:
            standby: Standby = kwargs.get("standby", NO_STANDBY)
            self.started += len(standby.started)
            return record_and_claim(*args, **kwargs)

        store.record_and_claim = counted  # type: ignore[method-assign]

    async def nap(self, seconds: float) -> None:
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.live -= 1


def test_two_workers_hold_items_ready_and_never_run_more_than_the_cap(yard: Yard) -> None:
    watch = Watch(yard)

    @yard.task
    async def nap(item: dict[str, Any]) -> None:
        await watch.nap(0.01)

    batch = yard.submit(nap, [{} for _ in range(120)], concurrency=CAP)

    async def both() -> None:
        workers = [Worker(yard.store, yard.registry, CONFIG) for _ in range(2)]
        await asyncio.gather(*(worker.run(until_idle=True) for worker in workers))

    asyncio.run(both())
    status = batch.status()
    assert status.counts.succeeded == 120
    assert status.counts == yard.store.recount(batch.id)
    assert watch.peak == CAP  # full, and never over, though two workers shared it
    assert watch.started > 0  # items held ready were started in place of ones that ended


def test_a_stopping_worker_gives_its_items_held_ready_back_unspent(yard: Yard) -> None:
    watch = Watch(yard)
    worker = Worker(yard.store, yard.registry, replace(CONFIG, grace=0))

    @yard.task
    async def nap(item: dict[str, Any]) -> None:
        await watch.nap(0.02)
        if watch.started >= CAP:  # items held ready have run: stop while holding more
            worker.stop()

    batch = yard.submit(nap, [{} for _ in range(200)], concurrency=CAP)
    asyncio.run(worker.run())
    status = batch.status()
    assert status.counts.running == 0  # nothing held, ready or not
    assert status.counts.succeeded + status.counts.pending == 200
    assert 0 < status.counts.succeeded < 200
    assert status.counts == yard.store.recount(batch.id)
    # What went back was given back unspent: every item left runs its first attempt.
    left = yard.store.items(batch.id, state=ItemState.PENDING, limit=200)
    assert left and all(item.runs == 0 for item in left)
