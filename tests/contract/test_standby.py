"""Items held ready beyond a batch's cap (``Standby``), on every store: a worker running
items of a capped batch may hold more of them leased but not counted against the cap, and
start one in place of one of its own that ended; the commit of the outcome says so."""

from __future__ import annotations

from batchyard.states import ItemState
from batchyard.store.base import Claim, Standby, Store
from tests.contract.test_store import LEASE, T0, outcome, submit

S = ItemState
W1, W2 = "w1", "w2"


def round_trip(
    store: Store,
    worker: str,
    *,
    want: int = 0,
    holding: dict[int, int] | None = None,
    started: list[Claim] = (),  # type: ignore[assignment]
    outcomes: list[Claim] = (),  # type: ignore[assignment]
    limit: int = 100,
    now: float = T0,
) -> list[Claim]:
    """A worker's round: the outcomes (successes) of ``outcomes``, the items held ready in
    ``started`` started, then a claim asking to hold ``want`` more ready."""
    standby = Standby(want, holding or {}, [(c.item_id, c.attempt) for c in started])
    done, got = store.record_and_claim(
        [outcome(c, at=now) for c in outcomes],
        worker,
        {"t": 100},
        limit,
        now,
        LEASE,
        standby=standby,
    )
    assert done.rejected == []
    return got


def test_a_claim_holds_items_ready_beyond_the_cap_and_counts_them_pending(store: Store) -> None:
    batch_id = submit(store, "b", 10, concurrency=3)
    got = round_trip(store, W1, want=5)
    running = [c for c in got if not c.standby]
    ready = [c for c in got if c.standby]
    # Three under the cap, and as many held ready as it holds there (each waits for one).
    assert (len(running), len(ready)) == (3, 3)
    counts = store.get_batch(batch_id).counts
    assert (counts.running, counts.pending) == (3, 7)
    # Items read as the counters count them: those held ready have not started.
    assert all(store.item(batch_id, c.key).state is S.RUNNING for c in running)
    for c in ready:
        item = store.item(batch_id, c.key)
        assert (item.state, item.started_at, item.worker) == (S.PENDING, None, W1)
    listed = {s: {i.key for i in store.items(batch_id, state=s)} for s in (S.RUNNING, S.PENDING)}
    assert listed[S.RUNNING] == {c.key for c in running}
    assert {c.key for c in ready} < listed[S.PENDING]
    assert (len(listed[S.RUNNING]), len(listed[S.PENDING])) == (counts.running, counts.pending)
    # Another worker finds the cap full: items held ready do not make room.
    assert round_trip(store, W2, want=5) == []


def test_no_item_is_held_ready_in_a_batch_without_a_cap_or_without_ours_in_it(
    store: Store,
) -> None:
    submit(store, "open", 4)
    assert not any(c.standby for c in round_trip(store, W1, want=5))
    submit(store, "capped", 6, concurrency=2)
    first = round_trip(store, W1, limit=2)  # w1 fills the cap
    assert len(first) == 2
    # w2 holds nothing there: nothing of its own would end to start one held ready.
    assert round_trip(store, W2, want=5) == []
    # w1, holding 2 there, may hold 2 ready, no more.
    got = round_trip(store, W1, want=5, holding={first[0].batch.pk: 2})
    assert [c.standby for c in got] == [True, True]


def test_a_started_item_takes_the_place_of_one_that_ended_in_the_same_commit(
    store: Store,
) -> None:
    batch_id = submit(store, "b", 6, concurrency=2)
    got = round_trip(store, W1, want=2)
    running = [c for c in got if not c.standby]
    ready = [c for c in got if c.standby]
    assert (len(running), len(ready)) == (2, 2)
    # The first ended; the worker started one held ready in its place, and it ended too.
    round_trip(store, W1, outcomes=[running[0], ready[0]], started=[ready[0]], limit=0)
    assert store.item(batch_id, ready[0].key).state is S.SUCCEEDED
    counts = store.get_batch(batch_id).counts
    assert (counts.succeeded, counts.running, counts.pending) == (2, 1, 3)
    # One of the two under the cap is free again: another worker may take one now.
    assert len(round_trip(store, W2)) == 1


def test_starting_an_item_held_ready_is_a_change_in_the_feed(store: Store) -> None:
    batch_id = submit(store, "b", 4, concurrency=1)
    (first, held) = round_trip(store, W1, want=1)
    round_trip(store, W1, outcomes=[first], limit=0)
    before = store.cursor()
    # A round that only starts an item held ready (it arrived after its place was free).
    round_trip(store, W1, started=[held], limit=0, now=T0 + 5)
    assert store.cursor() > before
    (changed,) = store.item_changes(batch_id, since=before)
    assert (changed.key, changed.state, changed.started_at) == (held.key, S.RUNNING, T0 + 5)
    counts = store.get_batch(batch_id).counts
    assert (counts.running, counts.pending, counts.succeeded) == (1, 2, 1)
    assert counts == store.recount(batch_id)


def test_an_outcome_of_an_item_held_ready_that_was_not_started_is_refused(
    store: Store,
) -> None:
    batch_id = submit(store, "b", 4, concurrency=1)
    (_, held) = round_trip(store, W1, want=1)
    assert held.standby
    done, _ = store.record_and_claim([outcome(held)], W1, {}, 0, T0, LEASE)
    assert [(o.item_id, o.attempt) for o in done.rejected] == [(held.item_id, held.attempt)]
    assert store.item(batch_id, held.key).state is S.PENDING  # still held ready
    counts = store.get_batch(batch_id).counts
    assert (counts.running, counts.pending, counts.succeeded) == (1, 3, 0)


def test_items_held_ready_go_back_unspent_when_released(store: Store) -> None:
    batch_id = submit(store, "b", 4, concurrency=1)
    (first, held) = round_trip(store, W1, want=1)
    assert store.release([(held.item_id, held.attempt)], T0) == 1
    item = store.item(batch_id, held.key)
    assert item.state is S.PENDING
    counts = store.get_batch(batch_id).counts
    assert (counts.running, counts.pending) == (1, 3)
    # Its next attempt is its first run: the release spent nothing.
    round_trip(store, W1, outcomes=[first], limit=0)
    (again,) = round_trip(store, W1, limit=1)
    assert again.tries == 1


def test_a_lapsed_lease_of_an_item_held_ready_is_taken_back(store: Store) -> None:
    batch_id = submit(store, "b", 4, concurrency=1)
    got = round_trip(store, W1, want=1)
    assert store.reclaim_expired(T0 + LEASE + 1) == 2
    counts = store.get_batch(batch_id).counts
    assert (counts.running, counts.pending) == (0, 4)
    # The cap is free again, and holds: one to run, one held ready at most.
    again = round_trip(store, W2, want=1, now=T0 + LEASE + 2)
    assert sorted(c.standby for c in again) == [False, True]
    assert {c.key for c in again} <= {c.key for c in got} | {"3", "4"}


def test_cancelling_a_batch_cancels_its_items_held_ready(store: Store) -> None:
    batch_id = submit(store, "b", 4, concurrency=1)
    (first, held) = round_trip(store, W1, want=1)
    status = store.cancel(batch_id, T0)
    assert (status.counts.pending, status.counts.running, status.counts.cancelled) == (0, 1, 3)
    assert store.item(batch_id, held.key).state is S.CANCELLED
    # Starting it now changes nothing, and the one running still finishes.
    round_trip(store, W1, outcomes=[first], started=[held], limit=0)
    assert store.get_batch(batch_id).counts.succeeded == 1
    assert store.item(batch_id, held.key).state is S.CANCELLED
