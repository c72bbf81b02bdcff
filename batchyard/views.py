"""A batch's status as the CLI's `--json` and the server show it: with elapsed time, throughput
and ETA (``batchyard.progress``).

These are the extra keys of ``batchyard status --json`` beside ``BatchStatus.as_dict()``.
"""

from __future__ import annotations

from typing import Any

from batchyard.models import BatchStatus
from batchyard.progress import pace


def status_view(status: BatchStatus, now: float) -> dict[str, Any]:
    """``status.as_dict()`` plus ``elapsed`` (s), ``throughput`` (items/s since the first
    claim) and ``eta`` (s to finish at that pace, or at the rate limit the batch waits on;
    None when unknown or finished); ``waiting_on`` gains ``seconds`` (until the last
    waiting item should be admitted)."""
    view = status.as_dict()
    going = pace(status, now)
    eta = going.eta or None  # status --json has said null, not 0, once nothing is left
    view.update(elapsed=round(going.elapsed, 3), throughput=round(going.throughput, 3), eta=eta)
    if status.waiting_on is not None:
        seconds = round(status.waiting_on.seconds(now), 3)
        view["waiting_on"] = {**status.waiting_on.as_dict(), "seconds": seconds}
    return view
