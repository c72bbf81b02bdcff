"""DatabaseClock (a database's time read on this machine) and LeaseWatch (which lapsed
leases a sweep may take back), on their own."""

from __future__ import annotations

import threading
import time

from batchyard.clock import DatabaseClock
from batchyard.store.rules import LeaseWatch
from tests.integration.test_processes import wait_for

HOURS_2 = 7200.0


class Database:
    """A database clock two hours ahead of this machine's, counting its readings."""

    def __init__(self, ahead: float = HOURS_2) -> None:
        self.ahead = ahead
        self.reads = 0
        self.away = False
        self.lock = threading.Lock()

    def read(self) -> float:
        with self.lock:
            self.reads += 1
        if self.away:
            raise ConnectionError("database away")
        return time.time() + self.ahead


def test_a_database_clock_reads_the_database_once_then_runs_on() -> None:
    db = Database()
    clock = DatabaseClock(db.read)
    assert clock.offset is None
    first = clock.now()
    assert abs(first - (time.time() + HOURS_2)) < 0.5
    assert clock.now() >= first
    assert db.reads == 1
    offset = clock.offset
    assert offset is not None and abs(offset - HOURS_2) < 0.5


def test_a_database_clock_measures_again_behind_its_callers() -> None:
    db = Database()
    clock = DatabaseClock(db.read, resync=0.0)
    clock.now()
    db.ahead = -HOURS_2  # the database's clock stepped back
    wait_for(lambda: abs(clock.now() - (time.time() - HOURS_2)) < 0.5, 5, "the new reading")
    assert db.reads >= 2


def test_a_database_clock_without_its_database_uses_this_machine_meanwhile() -> None:
    db = Database()
    db.away = True
    clock = DatabaseClock(db.read)
    assert abs(clock.now() - time.time()) < 0.5
    clock.now()
    assert db.reads == 1  # not a round trip per call while it is away
    db.away = False
    clock.measure()
    assert abs(clock.now() - (time.time() + HOURS_2)) < 0.5


def test_a_lease_watch_takes_a_lease_after_seeing_it_lapsed_for_its_length() -> None:
    watch = LeaseWatch()
    lease = (7, 1, 1000.0, 30.0)
    assert watch.due([lease], 5.0) == set()
    assert watch.due([lease], 34.9) == set()
    assert watch.due([lease], 35.0) == {7}


def test_a_lease_watch_starts_again_on_a_renewal_and_forgets_what_it_no_longer_sees() -> None:
    watch = LeaseWatch()
    assert watch.due([(7, 1, 1000.0, 30.0)], 0.0) == set()
    assert watch.due([(7, 1, 1010.0, 30.0)], 20.0) == set()  # renewed: a new end
    assert watch.due([(7, 1, 1010.0, 30.0)], 49.0) == set()
    assert watch.due([], 50.0) == set()  # not lapsed any more: forgotten
    assert watch.due([(7, 1, 1010.0, 30.0)], 60.0) == set()
    assert watch.due([(7, 2, 1010.0, 30.0)], 95.0) == set()  # another attempt
    assert watch.due([(7, 2, 1010.0, 30.0)], 125.0) == {7}


def test_a_lease_of_unknown_length_goes_back_at_once() -> None:
    assert LeaseWatch().due([(3, 1, 1000.0, None)], 0.0) == {3}
