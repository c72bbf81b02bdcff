"""TaskContext: what a running task can learn about its item and tell batchyard about it.

A context belongs to one attempt of one item. Its methods only set fields; the worker
reads them when it heartbeats and when it records the outcome, so they are cheap and safe
to call from a sync task's thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from batchyard.models import JSON, NO_USAGE, Usage

if TYPE_CHECKING:
    from batchyard.services import Services

MAX_LOG_LINES = 200
MAX_MESSAGE = 2000


class TaskContext:
    """Passed to a task as its second argument."""

    __slots__ = (
        "_cancelled",
        "_logs",
        "_services",
        "attempt",
        "batch_id",
        "key",
        "max_attempts",
        "message",
        "metrics",
        "params",
        "progress_changed",
        "progress_value",
        "usage_total",
    )

    def __init__(
        self,
        batch_id: str,
        key: str,
        attempt: int,
        max_attempts: int,
        params: dict[str, JSON],
        services: Services | Callable[[], Services] | None = None,
    ) -> None:
        self.batch_id = batch_id
        self.key = key
        #: 1 for the first attempt of this item, 2 for its first retry, and so on.
        self.attempt = attempt
        self.max_attempts = max_attempts
        #: The batch's task parameters (``submit(params=...)``, ``--param``).
        self.params = params
        self.progress_value: float | None = None
        self.message: str | None = None
        self.progress_changed = False
        self.usage_total = NO_USAGE
        self.metrics: dict[str, float] = {}
        self._logs: list[tuple[float, str, str]] | None = None
        self._cancelled = False
        self._services = services

    @property
    def services(self) -> Services:
        """Budget holds, the response cache and shared rate limiters for this attempt."""
        services = self._services
        if services is None:
            raise RuntimeError("ctx.services exists only for items a worker runs")
        if callable(services):  # made on first use: most attempts never ask
            services = self._services = services()
        return services

    @property
    def cancelled(self) -> bool:
        """True once the batch was cancelled or this attempt timed out or lost its lease.

        A sync task should check it between steps and return (or raise ``Cancelled``).
        """
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far this item is, from 0.0 to 1.0, with an optional message."""
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"progress must be between 0 and 1, not {fraction!r}")
        self.progress_value = fraction
        if message is not None:
            self.message = message[:MAX_MESSAGE]
            self.log(message, kind="progress")
        self.progress_changed = True

    def usage(
        self,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
        *,
        tokens_cached: int = 0,
        tokens_reasoning: int = 0,
        calls: int = 0,
        cache_hits: int = 0,
        saved_cost: float = 0.0,
        unpriced_calls: int = 0,
    ) -> None:
        """Add tokens and cost this item used; they roll up into the batch's usage (see
        ``Usage`` for the keywords). A call whose model has no price counts in ``calls``
        and in ``unpriced_calls``, with no cost: the batch then shows its cost as unknown
        (or as a lower bound), not as $0."""
        usage = Usage(
            int(tokens_in),
            int(tokens_out),
            float(cost),
            int(tokens_cached),
            int(tokens_reasoning),
            int(calls),
            int(cache_hits),
            float(saved_cost),
            int(unpriced_calls),
        )
        if any(value < 0 or math.isnan(value) for value in usage.values()):
            raise ValueError("usage must not be negative")
        self.usage_total = self.usage_total + usage

    def metric(self, name: str, value: float) -> None:
        """Record a number about this item (the last value per name wins); reports summarise
        each metric over the batch."""
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"metric {name!r} must be a finite number, not {value!r}")
        self.metrics[name] = number

    def log(self, message: str, *, kind: str = "log") -> None:
        """Keep a line in this item's log (``batchyard logs BATCH KEY``)."""
        if self._logs is None:
            self._logs = []
        if len(self._logs) < MAX_LOG_LINES:
            self._logs.append((time.time(), kind, str(message)[:MAX_MESSAGE]))

    def log_raw(self, kind: str, message: str) -> None:
        """Keep a line as it is (the worker's own lines: a traceback can be long)."""
        if self._logs is None:
            self._logs = []
        self._logs.append((time.time(), kind, message))

    def take_logs(self) -> list[tuple[float, str, str]]:
        logs, self._logs = self._logs or [], None
        return logs

    def __repr__(self) -> str:
        return f"TaskContext(batch_id={self.batch_id!r}, key={self.key!r}, attempt={self.attempt})"
