"""How fast a batch goes and when it will end, read from its status: elapsed time, throughput
and ETA, written once for the CLI, the live view, reports and the server; and, from when its
items finished (``Store.finishes``), its throughput over time (``History``), an ETA range
once one means something (``eta_range``) and whether it has stalled (``stall``)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from batchyard.models import BatchStatus, Finishes
from batchyard.states import BatchState


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


#: A history's most buckets: past it, neighbours merge into buckets twice as wide.
BUCKETS = 40
#: A history's narrowest bucket (s), and the fewest items a bucket read from the store
#: holds on average.
MIN_WIDTH = 0.25
BUCKET_ITEMS = 3.0
#: An ETA range needs this many finished items, this long a run (s), and this many recent
#: buckets with a rate: before that it would say little but noise.
RANGE_ITEMS = 20
RANGE_SECONDS = 30.0
RANGE_BUCKETS = 4
#: The recent buckets whose rates make the range, and the least it spreads either side of
#: their mean rate (a share of it): even a steady pace is a guess about what comes next.
RECENT_BUCKETS = 8
RANGE_MIN_SPREAD = 0.1
#: Stalled: quiet for longer than ``STALL_FACTOR`` times the longest recent run, and never
#: less than ``STALL_FLOOR`` (s); before any item has ended, ``STALL_UNKNOWN`` (s), or the
#: batch's timeout times the factor when it has one.
STALL_FACTOR = 3.0
STALL_FLOOR = 60.0
STALL_UNKNOWN = 300.0
_RUNNING = frozenset({BatchState.PROCESSING, BatchState.RETRYING})


@dataclass(frozen=True, slots=True)
class History:
    """Items finished per bucket of ``width`` seconds from ``start`` (a batch's first
    claim), the last bucket up to ``until``. Counts may be fractions: read from a sample,
    each sampled item stands for several."""

    start: float
    width: float
    counts: tuple[float, ...]
    until: float

    def rates(self) -> list[float]:
        """Items per second in each bucket, oldest first; the last one, still filling, only
        once it covers half its width (a sliver would say a rate from one or two items)."""
        rates = [n / self.width for n in self.counts[:-1]]
        covered = self.until - (self.start + (len(self.counts) - 1) * self.width)
        if self.counts and covered >= self.width / 2:
            rates.append(self.counts[-1] / covered)
        return rates

    def added(self, at: float, finished: float) -> History:
        """This history with ``finished`` more items between ``until`` and ``at`` (a live
        update), spread evenly over that span (when in it they ended is not known): new
        buckets up to ``at``, merged in pairs while there would be more than ``BUCKETS``."""
        counts, width = list(self.counts), self.width
        while int((at - self.start) // width) >= BUCKETS:
            counts = [sum(counts[n : n + 2]) for n in range(0, len(counts), 2)]
            width *= 2
        last = max(0, int((at - self.start) // width))
        counts += [0.0] * (last + 1 - len(counts))
        since = min(self.until, at)
        span = at - since
        for index in range(max(0, int((since - self.start) // width)), last + 1):
            if span <= 0:
                counts[index] += finished if index == last else 0.0
                continue
            left = max(since, self.start + index * width)
            right = min(at, self.start + (index + 1) * width)
            counts[index] += finished * max(0.0, right - left) / span
        return History(self.start, width, tuple(counts), max(self.until, at))


def history(status: BatchStatus, finishes: Finishes, now: float) -> History | None:
    """The batch's throughput over its life from the finish times read (None before its
    first claim): at most ``BUCKETS`` buckets, none narrower than ``MIN_WIDTH`` nor
    holding fewer than ``BUCKET_ITEMS`` items on average."""
    if status.started_at is None:
        return None
    start = status.started_at
    until = max(start, status.finished_at or now)
    ran = until - start
    # A bucket holds BUCKET_ITEMS items on average at least: narrower ones would draw the
    # gaps between single items (0, 1, 0, 2, ...), not a pace.
    finished = len(finishes.sampled) * finishes.scale
    width = max(ran / BUCKETS, MIN_WIDTH, BUCKET_ITEMS * ran / max(finished, 1.0))
    counts = [0.0] * max(1, min(BUCKETS, math.ceil(ran / width)))
    for at in finishes.sampled:
        index = min(len(counts) - 1, max(0, int((at - start) // width)))
        counts[index] += finishes.scale
    return History(start, width, tuple(counts), until)


def eta_range(status: BatchStatus, going: History | None, now: float) -> tuple[float, float] | None:
    """Seconds left as a range, from the spread of the recent buckets' rates: the items
    left at their mean rate plus and minus two standard errors, or ``RANGE_MIN_SPREAD`` of
    it when that is more (the slow end at no less than half the mean), both ends at least
    the rate limit's ``limit_eta``. None while it would mean little: a batch not running
    (``is_running``), under ``RANGE_ITEMS`` finished items or ``RANGE_SECONDS`` of
    running, fewer than ``RANGE_BUCKETS`` recent rates, or none of them above zero (then
    see ``stall``)."""
    left = status.counts.remaining
    if going is None or not is_running(status) or left == 0:
        return None
    if status.counts.finished < RANGE_ITEMS or elapsed(status, now) < RANGE_SECONDS:
        return None
    recent = going.rates()[-RECENT_BUCKETS:]
    mean = sum(recent) / len(recent) if recent else 0.0
    if len(recent) < RANGE_BUCKETS or mean <= 0:
        return None
    spread = math.sqrt(sum((r - mean) ** 2 for r in recent) / (len(recent) - 1))
    error = max(2 * spread / math.sqrt(len(recent)), RANGE_MIN_SPREAD * mean)
    fast, slow = mean + error, max(mean - error, mean / 2)
    floor = limit_eta(status, now) or 0.0
    return max(left / fast, floor), max(left / slow, floor)


def is_running(status: BatchStatus) -> bool:
    """Whether the batch runs now (processing or retrying, after its first claim): the only
    state with an ETA range or a stall; any other is neither."""
    return status.state in _RUNNING and status.started_at is not None


@dataclass(frozen=True, slots=True)
class Stall:
    """How long a running batch with items to run has been quiet (``quiet``: seconds since
    an item last started or ended an attempt, or the batch last moved), and how long it may
    be before that is a stall (``patience``)."""

    quiet: float
    patience: float

    @property
    def is_stalled(self) -> bool:
        return self.quiet > self.patience


def stall(status: BatchStatus, finishes: Finishes, now: float) -> Stall | None:
    """Whether the batch can stall, and how quiet it is: None unless it is running
    (processing or retrying: not queued, paused or ended), has items pending or running,
    and none of them waits for a rate limiter (a wait the status explains). Its patience is
    ``STALL_FACTOR`` times the longest run of the items that ended last (at least
    ``STALL_FLOOR``), or before any ended, ``STALL_FACTOR`` times its timeout, else
    ``STALL_UNKNOWN``. An attempt that runs counts as activity when it starts and ends
    (the store keeps no time of a task's progress reports)."""
    counts = status.counts
    if not is_running(status):
        return None
    if counts.pending + counts.running == 0 or counts.waiting or status.waiting_on is not None:
        return None
    moments = [status.started_at, status.updated_at, finishes.last_activity]
    quiet = max(0.0, now - max(t for t in moments if t is not None))
    if finishes.durations:
        patience = STALL_FACTOR * max(finishes.durations)
    elif status.timeout:
        patience = STALL_FACTOR * status.timeout
    else:
        patience = STALL_UNKNOWN
    return Stall(quiet, max(STALL_FLOOR, patience))
