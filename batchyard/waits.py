"""The items one worker holds that wait for a rate limiter's admission. The limiter tells
(through each attempt's ``Services``, or the runner for a task's declared limits); the
worker reads it to publish the waits to the store (so a status anywhere counts those items
as waiting, not running), to log a wait once rather than per item, and to give those items
back at once when it stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchyard.store.limits import Wait, WaitRow

if TYPE_CHECKING:
    from batchyard.ratelimit import SharedLimiter, WaitObserver

log = logging.getLogger("batchyard.worker")


@dataclass(frozen=True, slots=True)
class _Held:
    """One waiting item: its batch, the key, the store's last answer and the key's rate."""

    batch_pk: int
    key: str
    reason: str
    #: When the store said the call may try again (for a paused key: the pause's end).
    next_try: float
    rate: float | None


class Waits:
    """Which held items wait for which limiter key, as the limiters tell. Used on the
    worker's event loop only (limiters wait there, sync tasks included)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # A worker passes its store's clock, as limiters (``SharedLimiter``) and statuses use.
        self._clock = clock
        self._held: dict[int, _Held] = {}
        #: Whether anything changed since the last ``rows``.
        self.changed = False
        #: The kind of wait last logged per key, so a wait is logged once, not per item.
        self._logged: dict[str, str] = {}

    def observer(self, batch_pk: int, item_id: int) -> WaitObserver:
        """What the limiter of one attempt tells."""

        def tell(limiter: SharedLimiter, wait: Wait | None) -> None:
            self.changed = True
            if wait is None:
                self._held.pop(item_id, None)
                return
            now = self._clock()
            self._held[item_id] = _Held(
                batch_pk, limiter.key, wait.reason, now + wait.seconds, limiter.rate
            )
            self._log_once(limiter, wait)

        return tell

    def is_waiting(self, item_id: int) -> bool:
        return item_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def rows(self, now: float) -> list[WaitRow]:
        """The waits per batch and key, as the store keeps them (``Store.publish_waits``).
        The last item of a key should be admitted after its earliest next try (a pause's
        end) plus one call per waiting item at the key's rate."""
        self.changed = False
        groups: dict[tuple[int, str], list[_Held]] = {}
        for held in self._held.values():
            groups.setdefault((held.batch_pk, held.key), []).append(held)
        rows = []
        for (batch_pk, key), helds in groups.items():
            latest = max(helds, key=lambda held: held.next_try)
            rate = latest.rate
            start = max(now, min(held.next_try for held in helds))
            until = start + (len(helds) - 1) / rate if rate else latest.next_try
            rows.append(WaitRow(batch_pk, key, latest.reason, len(helds), until, rate))
        return rows

    def _log_once(self, limiter: SharedLimiter, wait: Wait) -> None:
        kind = "paused" if wait.reason.startswith("paused") else wait.reason
        if self._logged.get(limiter.key) == kind:
            return
        self._logged[limiter.key] = kind
        limits = limiter.limits
        said = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("requests", limits.requests and _rate(limits.requests.per_second)),
                ("tokens", limits.tokens and _rate(limits.tokens.per_second)),
                ("concurrency", limits.concurrency),
            )
            if value
        )
        log.info(
            "items wait for rate limit %s (%s): waiting on %s, next try in %.1fs; they "
            "count as waiting, not running",
            limiter.key,
            said or "no limits",
            wait.reason,
            wait.seconds,
        )


def _rate(per_second: float) -> str:
    return f"{per_second * 60:.4g}/min"
