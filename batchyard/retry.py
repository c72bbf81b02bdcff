"""When an attempt that failed is tried again: exponential backoff with jitter and a cap.

Pure: the decision depends only on its arguments (the random draw is passed in).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchyard.errors import Fail, Retry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``base * 2**(attempt-1)`` seconds, capped at ``cap``, of which the upper half is random.

    "Equal jitter": a delay never falls below half its nominal value, so a crowd of
    items that failed together spreads out without any of them retrying at once.
    """

    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("retry backoff and its cap must not be negative")

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """The wait before the attempt after ``attempt`` (1-based); ``draw`` is in [0, 1)."""
        nominal = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        u = random.random() if draw is None else draw
        return nominal / 2 + u * nominal / 2

    def decide(
        self,
        exc: BaseException,
        attempt: int,
        max_attempt: int,
        draw: float | None = None,
        *,
        tries: int | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the item has failed.
        ``tries``: the attempts that ran in this round (the backoff grows with them and
        starts again in a retry round); ``attempt`` when not given."""
        if isinstance(exc, Fail) or attempt >= max_attempt:
            return None
        if isinstance(exc, Retry):
            return exc.after
        return self.delay(attempt if tries is None else tries, draw)
