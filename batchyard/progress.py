"""How fast a batch goes and when it will end, read from its status: elapsed time, throughput
and ETA, written once for the CLI, the live view, reports (and later the server)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from batchyard.models import BatchStatus


@dataclass(frozen=True, slots=True)
class Pace:
    """A batch's pace at one moment.

    ``elapsed`` is seconds from its first claim to its end (or to now while it runs; 0 before
    any claim); ``throughput`` finished items per second of it; ``rate`` the pace the ETA
    assumes; ``eta`` seconds left at that rate, or at the rate limit its items wait on when
    that is longer (``limit_eta``): 0.0 when nothing is left, None when the rate is not
    known yet.
    """

    elapsed: float
    throughput: float
    rate: float
    eta: float | None


def elapsed(status: BatchStatus, now: float) -> float:
    """Seconds from the batch's first claim to its end, or to ``now`` while it runs."""
    started = status.started_at
    if started is None:
        return 0.0
    return max(0.0, (status.finished_at or now) - started)


def pace(status: BatchStatus, now: float, recent: float | None = None) -> Pace:
    """The batch's pace at ``now``. ``recent`` (items per second lately, see ``Meter``)
    drives the ETA while the batch runs; without it, the throughput since the start does."""
    counts = status.counts
    took = elapsed(status, now)
    throughput = counts.finished / took if took > 0 else 0.0
    rate = throughput if status.is_finished or recent is None else recent
    eta = None
    if counts.remaining == 0 or status.is_finished:
        eta = 0.0
    elif rate > 0:
        eta = counts.remaining / rate
    limited = limit_eta(status, now)
    if limited is not None and (eta is None or limited > eta):
        eta = limited
    return Pace(took, throughput, rate, eta)


def limit_eta(status: BatchStatus, now: float) -> float | None:
    """Seconds the items left need at least when the batch waits on a rate limiter: the
    key's pause, if any, then every item left at the key's request rate (None when it
    waits on nothing, or on a limiter whose rate is unknown and whose wait is over)."""
    waiting = status.waiting_on
    if waiting is None or status.is_finished:
        return None
    left = status.counts.remaining
    if not waiting.rate:
        return waiting.seconds(now) or None
    # ``until`` is the pause's end plus the waiting items at the rate: keep the pause.
    pause = max(0.0, waiting.seconds(now) - max(0, waiting.items - 1) / waiting.rate)
    return pause + left / waiting.rate


class Meter:
    """Items per second over the last ``window`` seconds, from samples of a finished count."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, finished: int) -> None:
        self._samples.append((at, finished))
        while len(self._samples) > 2 and at - self._samples[0][0] > self.window:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """None until two samples a moment apart exist."""
        if len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 > 0.2 else None
