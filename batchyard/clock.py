"""Where batchyard reads the time, so tests can set it instead of waiting for it, and so
every process of a PostgreSQL store reads one time: its database's (``DatabaseClock``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("batchyard.clock")


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch, as stored in leases and timestamps."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


#: How often a ``DatabaseClock`` measures its database's clock again (seconds).
RESYNC = 30.0
#: A measurement whose round trip took longer than this is too coarse to replace one we
#: have (seconds).
MAX_ROUND_TRIP = 1.0


class DatabaseClock:
    """The time of a database that several machines share, read on this one.

    ``read()`` asks the database for its time (one round trip). The clock measures it on
    first use and then every ``RESYNC`` seconds, corrected by half the round trip, and in
    between carries it forward on this machine's monotonic clock, which never steps. So
    ``now()`` agrees across workers whatever their wall clocks say (hours off, or stepped
    by NTP or a suspend), and costs no round trip: only the first call waits for one; a
    later measurement runs on a daemon thread while callers use the one before. If the
    database cannot be read, the local wall clock stands in until it can.
    """

    def __init__(self, read: Callable[[], float], resync: float = RESYNC) -> None:
        self._read = read
        self._resync = resync
        self._lock = threading.Lock()
        #: The database's time minus this machine's monotonic time, once measured.
        self._anchor: float | None = None
        self._measured = 0.0  # monotonic time of the last try
        self._measuring = False
        self._tried = False

    @property
    def offset(self) -> float | None:
        """Seconds the database's clock is ahead of this machine's wall clock, if known."""
        anchor = self._anchor
        return None if anchor is None else time.monotonic() + anchor - time.time()

    def now(self) -> float:
        mono = time.monotonic()
        anchor = self._anchor
        if anchor is None:
            with self._lock:
                if self._anchor is None and (not self._tried or mono - self._measured >= 1.0):
                    self.measure()
                anchor = self._anchor
            if anchor is None:  # the database is away: this machine's time meanwhile
                return time.time()
        elif mono - self._measured >= self._resync:
            with self._lock:
                start = not self._measuring and mono - self._measured >= self._resync
                self._measuring = self._measuring or start
            if start:
                threading.Thread(
                    target=self._measure_behind, name="batchyard-clock", daemon=True
                ).start()
        return mono + anchor

    def measure(self) -> None:
        """Read the database's clock now (blocking); a failure keeps the last reading."""
        before = time.monotonic()
        self._measured, self._tried = before, True
        try:
            db_time = self._read()
        except Exception as exc:  # a database away: try again at the next resync
            # INFO: an outage is told once, by whoever meets it (the worker, the CLI).
            log.info("could not read the database's clock (%s); using the last reading", exc)
            return
        after = time.monotonic()
        if after - before > MAX_ROUND_TRIP and self._anchor is not None:
            return
        self._anchor = db_time - (before + after) / 2

    def _measure_behind(self) -> None:
        try:
            self.measure()
        finally:
            self._measuring = False
