"""Batch-end callbacks: a worker leases the endings whose callbacks are due and runs the
task's ``on_complete`` and ``on_success`` or ``on_failure`` (at least once per ending)."""

from __future__ import annotations

import asyncio
import inspect
import logging

from batchyard.models import BatchStatus
from batchyard.states import BatchState
from batchyard.tasks import TaskSpec
from batchyard.worker.shared import Shared

log = logging.getLogger("batchyard.worker")


class Callbacks:
    """Runs the callbacks of batches that ended, for the tasks this worker knows."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    async def run_due(self) -> None:
        """Lease every ending whose callbacks are due, run them, and mark them done. A
        callback that raises is logged; its ending still counts as done."""
        shared = self._shared
        cfg = shared.config
        due = await shared.db.call(
            shared.store.claim_callbacks,
            shared.known_tasks(),
            shared.now(),
            cfg.lease,
            cfg.batches,
        )
        for status, round_ in due:
            spec = shared.registry.get(status.task)  # known: never imports here
            if spec is not None:
                await _call_callbacks(spec, status)
            await shared.db.call(shared.store.finish_callbacks, status.id, round_)


async def _call_callbacks(spec: TaskSpec, status: BatchStatus) -> None:
    chosen = [spec.on_complete]
    if status.state is BatchState.COMPLETED:
        chosen.append(spec.on_success)
    elif status.state in (BatchState.FAILED, BatchState.PARTIALLY_COMPLETED):
        chosen.append(spec.on_failure)
    for callback in chosen:
        if callback is None:
            continue
        try:
            if inspect.iscoroutinefunction(callback):
                await callback(status)
            else:
                await asyncio.to_thread(callback, status)
        except Exception:
            log.exception("callback %r of batch %s failed", callback, status.id)
