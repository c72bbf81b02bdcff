"""Numbers derived from a batch's status for display: elapsed time, throughput, ETA.

These are the extra keys of ``batchyard status --json`` beside ``BatchStatus.as_dict()``.
"""

from __future__ import annotations

from typing import Any

from batchyard.models import BatchStatus


def status_view(status: BatchStatus, now: float) -> dict[str, Any]:
    """``status.as_dict()`` plus ``elapsed`` (s), ``throughput`` (items/s since the first
    claim) and ``eta`` (s to finish at that pace; None when unknown or finished)."""
    view = status.as_dict()
    started = status.started_at
    end = status.finished_at or now
    elapsed = max(0.0, end - started) if started else 0.0
    finished = status.counts.finished
    throughput = finished / elapsed if elapsed > 0 else 0.0
    remaining = status.counts.remaining
    eta = (
        remaining / throughput if throughput > 0 and remaining and not status.is_finished else None
    )
    view.update(elapsed=round(elapsed, 3), throughput=round(throughput, 3), eta=eta)
    return view
