"""The store's rules for clocks that step or disagree (docs/architecture.md, "Clocks"): a
lease goes back only once a sweep has seen it lapsed and unrenewed for its whole length on
the sweeper's steady clock, and a retry that began to wait "in the future" waits its delay
from now. ``steady`` below is the sweeper's monotonic time, in seconds."""

from __future__ import annotations

import time

from batchyard.clock import DatabaseClock
from batchyard.states import ItemState
from batchyard.store.base import LeaseUpdate, Store
from tests.contract.test_store import LEASE, T0, claim, outcome, submit

S = ItemState
HOURS_2 = 7200.0


def test_the_store_clock_reads_this_machines_time(store: Store) -> None:
    clock = store.clock()
    assert clock is store.clock()
    assert abs(clock.now() - time.time()) < 5  # the test server runs on this machine
    assert isinstance(clock, DatabaseClock) == store.url.startswith("postgres")


def test_a_lapsed_lease_goes_back_after_a_sweep_saw_it_for_its_length(store: Store) -> None:
    submit(store, "b1", 1)
    claim(store)
    # The clock jumped two hours ahead: the lease looks lapsed, but only from now on.
    assert store.reclaim_expired(T0 + HOURS_2, steady=100.0) == 0
    assert store.reclaim_expired(T0 + HOURS_2 + 1, steady=100.0 + LEASE - 1) == 0
    assert store.reclaim_expired(T0 + HOURS_2 + 2, steady=100.0 + LEASE) == 1
    item = store.item("b1", "1")
    assert (item.state, item.error_type) == (S.PENDING, "LeaseExpired")


def test_a_lease_renewed_while_watched_stays(store: Store) -> None:
    submit(store, "b1", 1)
    (held,) = claim(store)
    assert store.reclaim_expired(T0 + HOURS_2, steady=0.0) == 0
    # Its worker renews on the new time (after the step), then lives on.
    assert store.heartbeat([LeaseUpdate(held.item_id, held.attempt)], T0 + HOURS_2, LEASE) == set()
    assert store.reclaim_expired(T0 + HOURS_2 + 1, steady=LEASE + 1) == 0
    assert store.item("b1", "1").state is S.RUNNING
    # A renewal after the sweep first saw the lease lapse starts the watch again.
    assert store.reclaim_expired(T0 + HOURS_2 + LEASE + 1, steady=LEASE + 2) == 0
    assert store.reclaim_expired(T0 + HOURS_2 + LEASE + 2, steady=2 * LEASE + 2) == 1


def test_a_lease_ending_further_ahead_than_its_length_goes_back(store: Store) -> None:
    """The clock went back two hours after the lease was set (and its worker died): the
    lease is not left for two hours."""
    submit(store, "b1", 1)
    claim(store)
    back = T0 - HOURS_2
    assert store.reclaim_expired(back, steady=0.0) == 0
    assert store.reclaim_expired(back + LEASE / 2, steady=LEASE / 2) == 0
    assert store.reclaim_expired(back + LEASE, steady=LEASE) == 1
    # Without a steady clock the sweep reads the lease's end alone: not lapsed then.
    submit(store, "b2", 1)
    claim(store, now=T0 + 1)
    assert store.reclaim_expired(back) == 0


def test_a_retry_that_began_to_wait_after_now_waits_its_delay_from_now(store: Store) -> None:
    submit(store, "b1", 2)
    first, second = claim(store)
    store.record(
        [
            outcome(first, S.RETRY_WAIT, at=T0 + 1, run_after=T0 + 11),
            outcome(second, S.RETRY_WAIT, at=T0 + 1, run_after=T0 + 21),
        ],
        T0 + 1,
    )
    back = T0 + 2 - HOURS_2  # the clock went back two hours a second later
    store.reclaim_expired(back)
    assert claim(store, now=back + 9.9) == []
    (due,) = claim(store, now=back + 10)
    assert due.item_id == first.item_id
    assert claim(store, now=back + 19.9) == []
    assert [c.item_id for c in claim(store, now=back + 20)] == [second.item_id]
    # Retries recorded on a clock behind are left as they are.
    store.record([outcome(due, S.RETRY_WAIT, at=back + 11, run_after=back + 15)], back + 11)
    store.reclaim_expired(back + 12)
    assert claim(store, now=back + 14.9) == []
    assert len(claim(store, now=back + 15)) == 1


def test_a_retry_recorded_while_a_sweep_was_on_its_way_keeps_its_time(store: Store) -> None:
    """A sweep's time was read before a retry was recorded (the sweep waited in a queue):
    the retry began to wait a little after it, which is no clock step."""
    submit(store, "b1", 1)
    (first,) = claim(store)
    store.record([outcome(first, S.RETRY_WAIT, at=T0 + 5, run_after=T0 + 8)], T0 + 5)
    store.reclaim_expired(T0 + 4)  # its time read a second before the retry was recorded
    assert claim(store, now=T0 + 7.9) == []  # not rebased to run early
    assert len(claim(store, now=T0 + 8)) == 1
