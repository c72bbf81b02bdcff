"""Attempts that ran, and why items ran again: a lease given back before its task was
called is no run; a run that ended by a lost worker, a release mid-run, an error retried or
a retry asked for makes the next run a re-run, counted on the batch by that reason. The
fencing token (``attempts``) counts every lease regardless."""

from __future__ import annotations

from batchyard.models import Reruns
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Store
from tests.contract.test_store import LEASE, T0, claim, finish, outcome, submit

B = BatchState
S = ItemState


def runs(store: Store, batch_id: str) -> dict[str, tuple[int, int]]:
    """Each item's (runs, attempts)."""
    return {item.key: (item.runs, item.attempts) for item in store.items(batch_id)}


def test_a_lease_given_back_unrun_is_no_run_and_keeps_its_try(store: Store) -> None:
    submit(store, "b1", 2, max_attempts=1)
    first = claim(store)
    assert runs(store, "b1") == {"1": (1, 1), "2": (1, 1)}  # running: the run under way
    # Prefetched and never started, or held back by a paused batch: given back unrun.
    assert store.release([(c.item_id, c.attempt) for c in first], T0 + 1) == 2
    assert runs(store, "b1") == {"1": (0, 1), "2": (0, 1)}
    again = claim(store, now=T0 + 2)
    assert [c.attempt for c in again] == [2, 2]  # the fencing token still grows
    finish(store, again, S.FAILED, at=T0 + 3)
    # max_attempts=1 counted runs: the give-back did not spend the one try.
    assert runs(store, "b1") == {"1": (1, 2), "2": (1, 2)}
    status = store.get_batch("b1")
    assert status.reruns == Reruns()
    assert status.state is B.FAILED


def test_a_pause_gives_items_back_unrun(store: Store) -> None:
    submit(store, "b1", 2)
    held = claim(store)
    store.pause("b1", T0 + 1, reason="budget reached")
    assert store.release([(c.item_id, c.attempt) for c in held], T0 + 1) == 2
    store.resume("b1", T0 + 2)
    finish(store, claim(store, now=T0 + 3), at=T0 + 4)
    assert runs(store, "b1") == {"1": (1, 2), "2": (1, 2)}
    assert store.get_batch("b1").reruns.total == 0


def test_a_release_mid_run_counts_and_its_next_run_says_released(store: Store) -> None:
    submit(store, "b1", 2)
    started, idle = claim(store)
    assert store.release(
        [(started.item_id, started.attempt), (idle.item_id, idle.attempt)],
        T0 + 1,
        ran=[started.item_id],
    )
    assert runs(store, "b1") == {"1": (1, 1), "2": (0, 1)}
    assert store.get_batch("b1").reruns == Reruns()  # not yet: nothing ran again
    finish(store, claim(store, now=T0 + 2), at=T0 + 3)
    assert runs(store, "b1") == {"1": (2, 2), "2": (1, 2)}
    assert store.get_batch("b1").reruns == Reruns(released=1)


def test_a_lost_worker_counts_and_its_next_run_says_worker_lost(store: Store) -> None:
    submit(store, "b1", 3)
    claim(store)
    assert store.reclaim_expired(T0 + LEASE + 1) == 3
    assert runs(store, "b1") == {"1": (1, 1), "2": (1, 1), "3": (1, 1)}
    # The three died together: none is charged; each runs alone next, as a suspect.
    for n in range(3):
        now = T0 + 100 * (n + 1)
        finish(store, claim(store, now=now), at=now + 1)
    assert runs(store, "b1") == {"1": (2, 2), "2": (2, 2), "3": (2, 2)}
    status = store.get_batch("b1")
    assert status.reruns == Reruns(worker_lost=3)
    assert status.state is B.COMPLETED


def test_an_error_retried_says_error(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=3)
    (c,) = claim(store)
    store.record([outcome(c, S.RETRY_WAIT, error="boom", run_after=T0 + 5)], T0 + 1)
    assert store.get_batch("b1").reruns == Reruns()  # waiting: it has not run again yet
    (c,) = claim(store, now=T0 + 6)
    assert store.get_batch("b1").reruns == Reruns(error=1)
    store.record([outcome(c, S.RETRY_WAIT, at=T0 + 7, run_after=T0 + 8)], T0 + 7)
    (c,) = claim(store, now=T0 + 9)
    finish(store, [c], S.FAILED, at=T0 + 10)
    assert runs(store, "b1") == {"1": (3, 3)}
    assert store.get_batch("b1").reruns == Reruns(error=2)


def test_a_retry_asked_for_says_retry(store: Store) -> None:
    submit(store, "b1", 3, max_attempts=1)
    failed, cancelled, succeeded = claim(store)
    store.record(
        [outcome(failed, S.FAILED), outcome(cancelled, S.CANCELLED), outcome(succeeded)], T0 + 1
    )
    store.retry_failed("b1", T0 + 3, states=[S.FAILED, S.CANCELLED])
    finish(store, claim(store, now=T0 + 4), at=T0 + 5)
    assert runs(store, "b1") == {"1": (2, 2), "2": (2, 2), "3": (1, 1)}
    assert store.get_batch("b1").reruns == Reruns(retry=2)


def test_an_unrun_give_back_of_a_rerun_undoes_its_reason(store: Store) -> None:
    submit(store, "b1", 1)
    claim(store)
    store.reclaim_expired(T0 + LEASE + 1)
    (c,) = claim(store, now=T0 + 100)
    assert store.get_batch("b1").reruns == Reruns(worker_lost=1)
    store.release([(c.item_id, c.attempt)], T0 + 101)  # prefetched, never started
    assert store.get_batch("b1").reruns == Reruns()
    assert runs(store, "b1") == {"1": (1, 2)}
    finish(store, claim(store, now=T0 + 102), at=T0 + 103)
    assert store.get_batch("b1").reruns == Reruns(worker_lost=1)
    assert runs(store, "b1") == {"1": (2, 3)}


def test_max_attempts_counts_runs_whatever_was_given_back(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=2)
    for n in range(3):  # three give-backs before the task is ever called
        (c,) = claim(store, now=T0 + n)
        store.release([(c.item_id, c.attempt)], T0 + n)
    (c,) = claim(store, now=T0 + 10)
    store.record([outcome(c, S.RETRY_WAIT, at=T0 + 11, run_after=T0 + 11)], T0 + 11)
    (c,) = claim(store, now=T0 + 12)
    assert c.attempt == c.max_attempt  # the last try: a failure now ends the item
    finish(store, [c], S.FAILED, at=T0 + 13)
    item = store.item("b1", "1")
    assert (item.state, item.runs, item.attempts) == (S.FAILED, 2, 5)
