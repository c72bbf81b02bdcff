"""The store contract: what every Store must do, driven through its methods with explicit times.

The ``store`` fixture (conftest.py) runs each test over every backend and checks, after each
test, that every batch's counters equal a recount of its items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchyard.errors import (
    BatchNotFound,
    BatchyardError,
    Conflict,
    DuplicateKey,
    InvalidTransition,
    ItemNotFound,
)
from batchyard.models import BatchOptions, Usage
from batchyard.states import BatchState, ItemState
from batchyard.store.base import (
    UPLOAD_LEASE,
    Claim,
    LeaseUpdate,
    NewItem,
    Outcome,
    Recorded,
    Store,
)

B = BatchState
S = ItemState
T0 = 1_700_000_000.0
LEASE = 30.0
ALL = {"t": 100}


# -- factories -------------------------------------------------------------------------


def new_items(n: int, start: int = 1, *, keys: list[str] | None = None) -> list[NewItem]:
    """``n`` items at positions ``start``.., keyed by position unless ``keys`` are given."""
    out = []
    for offset in range(n):
        position = start + offset
        key = keys[offset] if keys is not None else str(position)
        out.append(NewItem(key, position, json.dumps({"n": position})))
    return out


def appended(
    *sizes: int, last_keys: list[str] | None = None
) -> Callable[[int], list[list[NewItem]]]:
    """The ``chunks`` callable append_items takes: chunks of these sizes, positioned from
    the ``start`` the store hands it; ``last_keys`` overrides the last chunk's keys."""

    def chunks(start: int) -> list[list[NewItem]]:
        out = []
        for n, size in enumerate(sizes):
            keys = last_keys if n == len(sizes) - 1 else None
            out.append(new_items(size, start, keys=keys))
            start += size
        return out

    return chunks


def options(**overrides: Any) -> BatchOptions:
    fields: dict[str, Any] = {"task": "t", "max_attempts": 3}
    fields.update(overrides)
    return BatchOptions(**fields)


def submit(
    store: Store, batch_id: str, n: int = 3, *, now: float = T0, chunk: int = 0, **opts: Any
) -> str:
    """Create a batch of ``n`` items, in one chunk or in chunks of ``chunk`` items."""
    items = new_items(n)
    if chunk:
        chunks = [items[i : i + chunk] for i in range(0, n, chunk)]
    else:
        chunks = [items] if items else []
    store.create_batch(batch_id, options(**opts), chunks, now)
    return batch_id


def outcome(
    claim: Claim,
    state: ItemState = S.SUCCEEDED,
    *,
    at: float = T0 + 1,
    attempt: int | None = None,
    **fields: Any,
) -> Outcome:
    """The outcome of a claimed attempt; a success carries a small result by default."""
    if state is S.SUCCEEDED:
        fields.setdefault("result", json.dumps({"key": claim.key}))
    if state is S.FAILED:
        fields.setdefault("error", "boom")
        fields.setdefault("error_type", "ValueError")
    return Outcome(
        item_id=claim.item_id,
        batch_pk=claim.batch.pk,
        key=claim.key,
        attempt=claim.attempt if attempt is None else attempt,
        state=state,
        started_at=at - 0.5,
        finished_at=at,
        **fields,
    )


def claim(
    store: Store, limit: int = 100, *, now: float = T0, alone: bool = True, **capacity: int
) -> list[Claim]:
    """Claim as worker w1, by default as one that holds nothing (so it may get a suspect)."""
    return store.claim("w1", capacity or ALL, limit, now, LEASE, alone=alone)


def finish(
    store: Store, claims: list[Claim], state: ItemState = S.SUCCEEDED, at: float = T0 + 1
) -> Recorded:
    return store.record([outcome(c, state, at=at) for c in claims], at)


def states(store: Store, batch_id: str) -> dict[str, ItemState]:
    return {item.key: item.state for item in store.items(batch_id)}


def batch_moves(store: Store, batch_id: str) -> list[tuple[str | None, str]]:
    """The batch's state changes after it entered the queue (its first change)."""
    moves = [
        (e.data["from"], e.data["to"]) for e in store.events(batch_id) if e.kind == "batch.state"
    ]
    assert moves[0] in ((None, "queued"), ("uploading", "queued")), moves
    return moves[1:]


def assert_gone(store: Store, batch_id: str) -> None:
    with pytest.raises(BatchNotFound):
        store.get_batch(batch_id)
    with pytest.raises(BatchNotFound):
        store.items(batch_id)
    assert all(b.id != batch_id for b in store.list_batches().rows)
    assert store.events(batch_id) == []


# -- submitting ------------------------------------------------------------------------


def test_create_batch_in_several_chunks(store: Store) -> None:
    status = store.create_batch(
        "b1", options(name="leads"), [new_items(3), new_items(3, 4), new_items(2, 7)], T0
    )
    assert status.id == "b1"
    assert status.name == "leads"
    assert status.state is B.QUEUED
    assert status.counts.pending == 8
    assert status.counts.total == 8
    items = store.items("b1")
    assert [i.key for i in items] == [str(n) for n in range(1, 9)]
    assert [i.position for i in items] == list(range(1, 9))
    assert [i.payload for i in items] == [{"n": n} for n in range(1, 9)]
    assert all(i.state is S.PENDING and i.attempts == 0 for i in items)
    assert batch_moves(store, "b1") == []


def test_small_batch_is_written_in_one_step(store: Store) -> None:
    status = store.create_batch("b1", options(), [new_items(4)], T0)
    assert status.state is B.QUEUED
    assert status.counts.pending == 4
    assert batch_moves(store, "b1") == []
    assert status.created_at == T0


def test_empty_sealed_batch_completes_and_empty_open_batch_waits(store: Store) -> None:
    assert store.create_batch("b1", options(), [], T0).state is B.COMPLETED
    open_ = store.create_batch("b2", options(sealed=False), [], T0)
    assert open_.state is B.QUEUED
    assert not open_.sealed
    assert store.seal("b2", T0 + 1).state is B.COMPLETED


def test_options_are_kept(store: Store) -> None:
    opts = options(
        name="n",
        concurrency=4,
        max_attempts=5,
        timeout=2.5,
        priority=7,
        metadata={"owner": "ann"},
        params={"model": "m"},
    )
    status = store.create_batch("b1", opts, [new_items(1)], T0)
    assert (status.concurrency, status.max_attempts, status.timeout, status.priority) == (
        4,
        5,
        2.5,
        7,
    )
    assert status.metadata == {"owner": "ann"}
    assert status.params == {"model": "m"}
    (c,) = claim(store)
    assert c.batch.params == {"model": "m"}
    assert c.batch.timeout == 2.5
    assert c.batch.task == "t"
    assert c.max_attempt == 5


def test_duplicate_key_in_a_later_chunk_leaves_nothing(store: Store) -> None:
    chunks = [new_items(3), new_items(3, 4), new_items(2, 7, keys=["7", "2"])]
    with pytest.raises(DuplicateKey) as caught:
        store.create_batch("b1", options(), chunks, T0)
    assert caught.value.key == "2"
    assert caught.value.position == 8
    assert "'2'" in str(caught.value)
    assert "item 8" in str(caught.value)
    assert_gone(store, "b1")
    assert claim(store) == []


def test_duplicate_key_within_one_chunk(store: Store) -> None:
    with pytest.raises(DuplicateKey) as caught:
        store.create_batch("b1", options(), [new_items(3, keys=["a", "b", "a"])], T0)
    assert (caught.value.key, caught.value.position) == ("a", 3)
    assert_gone(store, "b1")


def test_exception_from_the_chunks_leaves_nothing(store: Store) -> None:
    def chunks() -> Iterator[list[NewItem]]:
        yield new_items(2)
        yield new_items(2, 3)
        raise ValueError("line 5 is not JSON")

    with pytest.raises(ValueError, match="line 5"):
        store.create_batch("b1", options(), chunks(), T0)
    assert_gone(store, "b1")


def test_exception_before_the_first_chunk_leaves_nothing(store: Store) -> None:
    def chunks() -> Iterator[list[NewItem]]:
        raise ValueError("bad header")
        yield []  # pragma: no cover

    with pytest.raises(ValueError, match="bad header"):
        store.create_batch("b1", options(), chunks(), T0)
    assert_gone(store, "b1")


def test_a_batch_being_uploaded_is_invisible_to_workers(store: Store) -> None:
    seen: list[Any] = []

    def chunks() -> Iterator[list[NewItem]]:
        yield new_items(2)
        yield new_items(2, 3)
        seen.append(claim(store))
        seen.append(store.active_tasks())
        seen.append(store.reclaim_expired(T0 + 1))  # an upload under way is not abandoned
        yield new_items(1, 5)

    assert store.create_batch("b1", options(), chunks(), T0).state is B.QUEUED
    assert seen == [[], set(), 0]
    assert store.get_batch("b1").counts.pending == 5


def test_an_abandoned_upload_is_removed(store: Store) -> None:
    def chunks() -> Iterator[list[NewItem]]:
        yield new_items(2)
        yield new_items(2, 3)
        store.reclaim_expired(T0 + UPLOAD_LEASE + 1)  # as if the uploader died long ago
        yield new_items(1, 5)

    with pytest.raises(BatchyardError):
        store.create_batch("b1", options(), chunks(), T0)
    assert_gone(store, "b1")


def test_append_to_an_open_batch_then_seal(store: Store, agree: Callable[[], None]) -> None:
    submit(store, "b1", 2, sealed=False)
    starts: list[int] = []

    def chunks(start: int) -> list[list[NewItem]]:
        starts.append(start)
        return appended(2, 1)(start)

    added = store.append_items("b1", chunks, T0 + 1)
    assert added == 3
    assert starts == [3]
    assert [(i.key, i.position) for i in store.items("b1")][2:] == [("3", 3), ("4", 4), ("5", 5)]
    assert store.get_batch("b1").counts.pending == 5
    assert [e.data for e in store.events("b1") if e.kind == "batch.items_added"] == [{"count": 3}]
    agree()
    finish(store, claim(store))
    # Every item is done, but an open batch may still get more: it does not end.
    assert store.get_batch("b1").state is B.PROCESSING
    status = store.seal("b1", T0 + 2)
    assert status.sealed
    assert status.state is B.COMPLETED
    with pytest.raises(Conflict):
        store.append_items("b1", appended(1), T0 + 3)
    assert store.get_batch("b1").counts.total == 5


def test_append_to_a_sealed_batch_is_refused(store: Store) -> None:
    submit(store, "b1", 2)
    cursor = store.cursor()
    with pytest.raises(Conflict):
        store.append_items("b1", appended(1), T0 + 1)
    assert store.get_batch("b1").counts.total == 2
    assert store.cursor() == cursor


def test_append_is_atomic(store: Store) -> None:
    submit(store, "b1", 2, sealed=False)
    with pytest.raises(DuplicateKey) as caught:
        store.append_items("b1", appended(2, 1, last_keys=["1"]), T0 + 1)
    assert (caught.value.key, caught.value.position) == ("1", 5)
    assert store.get_batch("b1").counts.total == 2
    assert [i.key for i in store.items("b1")] == ["1", "2"]


def test_append_to_a_cancelled_open_batch_is_refused(store: Store) -> None:
    submit(store, "b1", 1, sealed=False)
    store.cancel("b1", T0 + 1)
    with pytest.raises(Conflict):
        store.append_items("b1", appended(1), T0 + 2)


def test_seal_twice_is_harmless(store: Store) -> None:
    submit(store, "b1", 1, sealed=False)
    store.seal("b1", T0 + 1)
    cursor = store.cursor()
    assert store.seal("b1", T0 + 2).sealed
    assert store.cursor() == cursor


def test_unknown_batches(store: Store) -> None:
    for call in (
        lambda: store.get_batch("nope"),
        lambda: store.append_items("nope", appended(1), T0),
        lambda: store.seal("nope", T0),
        lambda: store.pause("nope", T0),
        lambda: store.resume("nope", T0),
        lambda: store.cancel("nope", T0),
        lambda: store.retry_failed("nope", T0),
        lambda: store.delete_batch("nope", T0),
        lambda: store.items("nope"),
        lambda: store.item_changes("nope"),
        lambda: store.recount("nope"),
        lambda: store.outcome_matrix("nope", "nope"),
    ):
        with pytest.raises(BatchNotFound):
            call()


def test_outcome_matrix_counts_the_shared_keys_by_their_state_in_each(store: Store) -> None:
    submit(store, "b1", 4)
    ran = {c.key: c for c in claim(store)}
    store.record(
        [outcome(ran[k]) for k in "12"] + [outcome(ran[k], S.FAILED) for k in "34"], T0 + 1
    )
    submit(store, "b2", 5, now=T0 + 2)  # keys 1-5: key 5 only here
    again = {c.key: c for c in claim(store, now=T0 + 3)}
    store.record(
        [outcome(again["1"], S.FAILED, at=T0 + 4)] + [outcome(again[k], at=T0 + 4) for k in "234"],
        T0 + 4,
    )  # key 5 stays running
    submit(store, "b3", 2, now=T0 + 5)
    assert store.outcome_matrix("b1", "b2") == {
        (S.SUCCEEDED, S.FAILED): 1,
        (S.SUCCEEDED, S.SUCCEEDED): 1,
        (S.FAILED, S.SUCCEEDED): 2,
    }
    assert store.outcome_matrix("b2", "b1") == {
        (S.FAILED, S.SUCCEEDED): 1,
        (S.SUCCEEDED, S.SUCCEEDED): 1,
        (S.SUCCEEDED, S.FAILED): 2,
    }
    assert store.outcome_matrix("b2", "b3") == {
        (S.SUCCEEDED, S.PENDING): 1,
        (S.FAILED, S.PENDING): 1,
    }
    with pytest.raises(BatchNotFound):
        store.outcome_matrix("b1", "nope")


def test_outcome_matrix_of_batches_without_a_common_key_is_empty(store: Store) -> None:
    store.create_batch("b1", options(), [new_items(3)], T0)
    store.create_batch("b2", options(), [new_items(3, keys=["x", "y", "z"])], T0)
    assert store.outcome_matrix("b1", "b2") == {}


# -- claiming --------------------------------------------------------------------------


def test_claim_leases_items_in_order_within_limit(store: Store) -> None:
    submit(store, "b1", 5)
    got = claim(store, 2)
    assert [c.key for c in got] == ["1", "2"]
    assert all(c.attempt == 1 and c.max_attempt == 3 for c in got)
    assert json.loads(got[0].payload) == {"n": 1}
    status = store.get_batch("b1")
    assert status.state is B.PROCESSING
    assert status.started_at == T0
    assert (status.counts.pending, status.counts.running) == (3, 2)
    item = store.item("b1", "1")
    assert (item.state, item.attempts, item.started_at) == (S.RUNNING, 1, T0)
    assert batch_moves(store, "b1") == [("queued", "processing")]
    assert [c.key for c in claim(store, 10)] == ["3", "4", "5"]
    assert claim(store, 10) == []
    assert store.claim("w1", ALL, 0, T0, LEASE) == []


def test_claim_respects_per_task_capacity(store: Store) -> None:
    submit(store, "a1", 3, task="a")
    submit(store, "b1", 3, task="b")
    got = store.claim("w1", {"a": 2, "b": 1, "c": 5}, 10, T0, LEASE)
    assert sorted((c.batch.task, c.key) for c in got) == [("a", "1"), ("a", "2"), ("b", "1")]
    assert store.claim("w1", {"a": 0}, 10, T0, LEASE) == []
    assert store.claim("w1", {"c": 9}, 10, T0, LEASE) == []
    assert store.claim("w1", {}, 10, T0, LEASE) == []


def test_claim_respects_batch_concurrency(store: Store) -> None:
    submit(store, "b1", 5, concurrency=2)
    first = claim(store, 10)
    assert len(first) == 2
    assert claim(store, 10) == []
    finish(store, first[:1])
    assert [c.key for c in claim(store, 10)] == ["3"]
    assert store.get_batch("b1").counts.running == 2


def test_claim_takes_higher_priority_batches_first(store: Store) -> None:
    submit(store, "low", 2, priority=0)
    submit(store, "high", 2, priority=5)
    submit(store, "low2", 2, priority=0)
    got = claim(store, 3)
    assert [(c.batch.id, c.key) for c in got] == [("high", "1"), ("high", "2"), ("low", "1")]
    assert [c.batch.id for c in claim(store, 3)] == ["low", "low2", "low2"]


def test_claim_skips_a_full_batch_for_the_next_one(store: Store) -> None:
    submit(store, "b1", 3, concurrency=1, priority=5)
    submit(store, "b2", 3)
    assert [(c.batch.id, c.key) for c in claim(store, 3)] == [("b1", "1"), ("b2", "1"), ("b2", "2")]


def test_claim_ignores_batches_not_active(store: Store) -> None:
    submit(store, "paused", 1)
    store.pause("paused", T0)
    submit(store, "cancelled", 1)
    store.cancel("cancelled", T0)
    submit(store, "open", 0, sealed=False)
    assert claim(store) == []
    assert store.active_tasks() == {"t"}  # the open, empty batch is still queued
    store.resume("paused", T0 + 1)
    assert [c.batch.id for c in claim(store)] == ["paused"]


def test_retry_wait_items_are_claimed_only_when_due(store: Store) -> None:
    submit(store, "b1", 2)
    (first,) = claim(store, 1)
    store.record([outcome(first, S.RETRY_WAIT, at=T0 + 1, run_after=T0 + 10)], T0 + 1)
    assert store.get_batch("b1").counts.retry_wait == 1
    # The pending item goes first; the waiting one is not due yet.
    assert [c.key for c in claim(store, 10, now=T0 + 2)] == ["2"]
    assert claim(store, 10, now=T0 + 9) == []
    (again,) = claim(store, 10, now=T0 + 10)
    assert (again.key, again.attempt) == ("1", 2)
    status = store.get_batch("b1")
    assert (status.counts.retry_wait, status.counts.running) == (0, 2)


def test_retry_wait_item_recorded_with_error_keeps_it(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    store.record(
        [outcome(c, S.RETRY_WAIT, run_after=T0 + 5, error="rate limited", error_type="Retry")],
        T0 + 1,
    )
    item = store.item("b1", "1")
    assert (item.state, item.error, item.error_type) == (S.RETRY_WAIT, "rate limited", "Retry")
    assert [line.message for line in store.item_logs("b1", "1") if line.kind == "error"] == [
        "rate limited"
    ]


# -- leases ----------------------------------------------------------------------------


def test_heartbeat_extends_leases(store: Store) -> None:
    submit(store, "b1", 2)
    got = claim(store)
    lost = store.heartbeat([LeaseUpdate(c.item_id, c.attempt) for c in got], T0 + 20, LEASE)
    assert lost == set()
    assert store.reclaim_expired(T0 + LEASE + 5) == 0
    assert store.get_batch("b1").counts.running == 2
    assert store.reclaim_expired(T0 + 20 + LEASE + 1) == 2
    assert store.get_batch("b1").counts.pending == 2


def test_heartbeat_saves_progress_and_moves_the_item_cursor(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    before = store.cursor()
    update = LeaseUpdate(c.item_id, c.attempt, progress=0.5, message="half", changed=True)
    assert store.heartbeat([update], T0 + 1, LEASE) == set()
    item = store.item("b1", "1")
    assert (item.progress, item.message) == (0.5, "half")
    assert item.seq > before
    assert [i.key for i in store.item_changes("b1", since=before)] == ["1"]


def test_heartbeat_reports_lost_leases(store: Store) -> None:
    submit(store, "b1", 2)
    first, second = claim(store)
    store.reclaim_expired(T0 + LEASE + 1)
    (retaken,) = claim(store, 1, now=T0 + LEASE + 2)
    assert retaken.item_id == first.item_id
    now = T0 + LEASE + 3
    stale = [
        LeaseUpdate(first.item_id, first.attempt),  # taken over by attempt 2
        LeaseUpdate(second.item_id, second.attempt),  # reclaimed, pending again
    ]
    assert store.heartbeat(stale, now, LEASE) == {first.item_id, second.item_id}
    assert store.heartbeat([LeaseUpdate(retaken.item_id, retaken.attempt)], now, LEASE) == set()
    # The stale heartbeat did not extend the lease of attempt 2 beyond its own.
    assert store.reclaim_expired(T0 + LEASE + 2 + LEASE + 1) == 0
    assert store.reclaim_expired(now + LEASE + 1) == 1
    assert store.heartbeat([], T0, LEASE) == set()


def test_record_rejects_a_stale_attempt(store: Store, agree: Callable[[], None]) -> None:
    submit(store, "b1", 1)
    (stale,) = claim(store)
    assert store.reclaim_expired(T0 + LEASE + 1) == 1
    (fresh,) = claim(store, now=T0 + LEASE + 2)
    assert (fresh.item_id, fresh.attempt) == (stale.item_id, 2)
    before_item = store.item("b1", "1")
    before = store.get_batch("b1")
    since = store.cursor()

    done = store.record([outcome(stale, at=T0 + LEASE + 3)], T0 + LEASE + 3)

    assert [(o.item_id, o.attempt) for o in done.rejected] == [(stale.item_id, 1)]
    assert done.ended == []
    assert store.item("b1", "1") == before_item
    assert store.get_batch("b1").counts == before.counts
    agree()
    rejected = [e for e in store.events(since=since) if e.kind == "item.outcome_rejected"]
    assert len(rejected) == 1
    assert rejected[0].data["key"] == "1"
    assert rejected[0].data["attempt"] == 1
    assert rejected[0].data["item_id"] == stale.item_id

    done = store.record([outcome(fresh, at=T0 + LEASE + 4)], T0 + LEASE + 4)
    assert done.rejected == []
    assert done.ended == ["b1"]
    item = store.item("b1", "1")
    assert (item.state, item.attempts, item.result) == (S.SUCCEEDED, 2, {"key": "1"})


def test_record_twice_is_refused_the_second_time(store: Store) -> None:
    submit(store, "b1", 2)
    first, _ = claim(store)
    assert store.record([outcome(first)], T0 + 1).rejected == []
    done = store.record([outcome(first, S.FAILED)], T0 + 2)
    assert len(done.rejected) == 1
    assert store.item("b1", "1").state is S.SUCCEEDED
    assert store.get_batch("b1").counts.succeeded == 1


def test_record_mixes_accepted_and_rejected(store: Store) -> None:
    submit(store, "b1", 2)
    first, second = claim(store)
    store.release([(first.item_id, first.attempt)], T0 + 1)
    done = store.record([outcome(first, at=T0 + 2), outcome(second, at=T0 + 2)], T0 + 2)
    assert [o.key for o in done.rejected] == ["1"]
    assert states(store, "b1") == {"1": S.PENDING, "2": S.SUCCEEDED}


def test_stale_and_fresh_outcome_of_one_item_in_one_commit(store: Store) -> None:
    # A worker may hold a late outcome of attempt 1 and the outcome of attempt 2 of the
    # same item in one group commit; only attempt 2 may count.
    submit(store, "b1", 1)
    (stale,) = claim(store)
    store.reclaim_expired(T0 + LEASE + 1)
    (fresh,) = claim(store, now=T0 + LEASE + 2)
    at = T0 + LEASE + 3
    done = store.record([outcome(stale, at=at), outcome(fresh, at=at)], at)
    assert [o.attempt for o in done.rejected] == [1]
    assert store.get_batch("b1").counts == store.recount("b1")
    assert store.get_batch("b1").state is B.COMPLETED


def test_record_saves_the_outcome(store: Store) -> None:
    submit(store, "b1", 2)
    first, second = claim(store)
    store.record(
        [
            outcome(
                first,
                at=T0 + 3,
                usage=Usage(10, 5, 0.25),
                metrics=json.dumps({"score": 0.9}),
                progress=1.0,
                message="done",
                logs=[(T0 + 2, "log", "hello")],
            ),
            outcome(second, S.FAILED, at=T0 + 3, usage=Usage(1, 0, 0.5)),
        ],
        T0 + 3,
    )
    item = store.item("b1", "1")
    assert item.result == {"key": "1"}
    assert (item.usage.tokens_in, item.usage.tokens_out, item.usage.cost) == (10, 5, 0.25)
    assert item.metrics == {"score": 0.9}
    assert (item.progress, item.message) == (1.0, "done")
    assert (item.finished_at, item.duration) == (T0 + 3, 0.5)
    assert [(line.kind, line.message) for line in store.item_logs("b1", "1")] == [("log", "hello")]
    failed = store.item("b1", "2")
    assert (failed.state, failed.error, failed.error_type) == (S.FAILED, "boom", "ValueError")
    assert [line.kind for line in store.item_logs("b1", "2")] == [
        "started",
        "error",
    ]  # where it ran, then why it failed
    status = store.get_batch("b1")
    assert (status.usage.tokens_in, status.usage.tokens_out, status.usage.cost) == (11, 5, 0.75)
    assert status.state is B.PARTIALLY_COMPLETED
    assert status.finished_at == T0 + 3
    with pytest.raises(ItemNotFound):
        store.item("b1", "9")
    with pytest.raises(ItemNotFound):
        store.item_logs("b1", "9")


def test_record_nothing(store: Store) -> None:
    done = store.record([], T0)
    assert (done.rejected, done.ended) == ([], [])


# -- reclaiming and releasing ----------------------------------------------------------


def test_reclaim_returns_expired_items_to_the_queue(store: Store) -> None:
    submit(store, "b1", 2)
    claim(store)
    assert store.reclaim_expired(T0 + LEASE) == 0  # the lease runs up to its end
    assert store.reclaim_expired(T0 + LEASE + 1) == 2
    item = store.item("b1", "1")
    assert (item.state, item.attempts, item.error_type) == (S.PENDING, 1, "LeaseExpired")
    assert "not counted against it; it runs alone next" in (item.error or "")
    assert store.get_batch("b1").state is B.PROCESSING
    # Both died with their worker together: each comes back alone, its attempt not spent.
    (again,) = claim(store, now=T0 + LEASE + 2)
    assert (again.attempt, again.max_attempt - again.attempt, again.alone) == (2, 2, True)


def test_reclaim_fails_items_whose_attempts_are_spent(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=2)
    for round_ in range(2):
        now = T0 + round_ * 100
        assert len(claim(store, now=now)) == 1
        assert store.reclaim_expired(now + LEASE + 1) == 1
    item = store.item("b1", "1")
    assert (item.state, item.attempts) == (S.FAILED, 2)
    status = store.get_batch("b1")
    assert status.state is B.FAILED
    assert status.counts.failed == 1


def test_reclaim_cancels_items_of_a_cancelled_batch(store: Store) -> None:
    submit(store, "b1", 2)
    claim(store, 1)
    store.cancel("b1", T0 + 1)
    assert store.reclaim_expired(T0 + LEASE + 1) == 1
    assert states(store, "b1") == {"1": S.CANCELLED, "2": S.CANCELLED}
    assert store.get_batch("b1").state is B.CANCELLED


def test_release_gives_items_back_without_spending_the_attempt(store: Store) -> None:
    submit(store, "b1", 2, max_attempts=1)
    first = claim(store)
    left = {c.key: c.max_attempt - c.attempt for c in first}
    assert store.release([(c.item_id, c.attempt) for c in first], T0 + 1) == 2
    assert store.get_batch("b1").counts.pending == 2
    again = claim(store, now=T0 + 2)
    assert {c.key: c.max_attempt - c.attempt for c in again} == left
    # A released attempt is not a failed one: expiry of the new lease still fails the item
    # only once its own attempts are spent.
    assert store.release([(first[0].item_id, first[0].attempt)], T0 + 3) == 0  # stale
    assert store.release([], T0 + 3) == 0
    # Both leases expire in one worker: neither is charged; each then runs alone, and
    # dying alone spends its one attempt.
    assert store.reclaim_expired(T0 + 2 + LEASE + 1) == 2
    assert set(states(store, "b1").values()) == {S.PENDING}
    for n in range(2):
        now = T0 + 100 * (n + 1)
        assert len(claim(store, now=now)) == 1
        assert store.reclaim_expired(now + LEASE + 1) == 1
    assert set(states(store, "b1").values()) == {S.FAILED}


def test_release_in_a_cancelled_batch_cancels(store: Store) -> None:
    submit(store, "b1", 2)
    (c,) = claim(store, 1)
    store.cancel("b1", T0 + 1)
    assert store.release([(c.item_id, c.attempt)], T0 + 2) == 1
    assert states(store, "b1") == {"1": S.CANCELLED, "2": S.CANCELLED}


def test_release_in_a_paused_batch_keeps_it_pending(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    store.pause("b1", T0 + 1)
    assert store.release([(c.item_id, c.attempt)], T0 + 2) == 1
    assert states(store, "b1") == {"1": S.PENDING}
    assert store.get_batch("b1").state is B.PAUSED


# -- pause, resume, cancel -------------------------------------------------------------


def test_pause_stops_claims_and_resume_restores_the_state(store: Store) -> None:
    submit(store, "q", 2)
    submit(store, "p", 2)
    claim(store, 1)  # p is not touched yet: q's first item
    assert store.get_batch("q").state is B.PROCESSING
    assert store.pause("q", T0 + 1).state is B.PAUSED
    assert store.pause("p", T0 + 1).state is B.PAUSED
    assert claim(store, now=T0 + 2) == []
    assert store.resume("q", T0 + 3).state is B.PROCESSING
    assert store.resume("p", T0 + 3).state is B.QUEUED
    assert [c.batch.id for c in claim(store, now=T0 + 4)] == ["q", "p", "p"]
    assert ("paused", "processing") in batch_moves(store, "q")


def test_pause_and_resume_are_idempotent(store: Store) -> None:
    submit(store, "b1", 1)
    store.pause("b1", T0)
    cursor = store.cursor()
    assert store.pause("b1", T0 + 1).state is B.PAUSED
    assert store.cursor() == cursor
    store.resume("b1", T0 + 2)
    cursor = store.cursor()
    assert store.resume("b1", T0 + 3).state is B.QUEUED
    assert store.cursor() == cursor


def test_a_paused_batch_ends_only_when_resumed(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    store.pause("b1", T0 + 1)
    done = finish(store, [c], at=T0 + 2)
    assert done.ended == []
    status = store.get_batch("b1")
    assert (status.state, status.counts.succeeded) == (B.PAUSED, 1)
    assert store.resume("b1", T0 + 3).state is B.COMPLETED


def test_pause_and_resume_of_an_ended_batch_are_refused(store: Store) -> None:
    submit(store, "b1", 1)
    finish(store, claim(store))
    before = store.get_batch("b1")
    cursor = store.cursor()
    with pytest.raises((Conflict, InvalidTransition)):
        store.pause("b1", T0 + 5)
    with pytest.raises((Conflict, InvalidTransition)):
        store.resume("b1", T0 + 5)
    assert store.get_batch("b1") == before
    assert store.cursor() == cursor


def test_cancel_stops_waiting_items_and_lets_running_ones_finish(
    store: Store, agree: Callable[[], None]
) -> None:
    submit(store, "b1", 5)
    one, two, three = claim(store, 3)
    store.record(
        [outcome(one), outcome(two, S.RETRY_WAIT, run_after=T0 + 100)],
        T0 + 1,
    )
    status = store.cancel("b1", T0 + 2)
    assert status.state is B.CANCELLED
    assert status.finished_at == T0 + 2
    assert states(store, "b1") == {
        "1": S.SUCCEEDED,
        "2": S.CANCELLED,
        "3": S.RUNNING,
        "4": S.CANCELLED,
        "5": S.CANCELLED,
    }
    agree()
    assert claim(store, now=T0 + 200) == []
    done = finish(store, [three], at=T0 + 3)
    assert done.rejected == []
    assert store.item("b1", "3").state is S.SUCCEEDED
    assert store.get_batch("b1").state is B.CANCELLED
    assert batch_moves(store, "b1")[-1] == ("processing", "cancelled")


def test_cancel_a_paused_batch(store: Store) -> None:
    submit(store, "b1", 2)
    store.pause("b1", T0)
    assert store.cancel("b1", T0 + 1).state is B.CANCELLED
    assert set(states(store, "b1").values()) == {S.CANCELLED}
    with pytest.raises(Conflict):
        store.resume("b1", T0 + 2)


def test_cancel_twice_is_harmless_and_an_ended_batch_cannot_be_cancelled(store: Store) -> None:
    submit(store, "b1", 1)
    store.cancel("b1", T0)
    cursor = store.cursor()
    assert store.cancel("b1", T0 + 1).state is B.CANCELLED
    assert store.cursor() == cursor
    submit(store, "b2", 1)
    finish(store, claim(store))
    before = store.get_batch("b2")
    with pytest.raises(Conflict):
        store.cancel("b2", T0 + 2)
    assert store.get_batch("b2") == before


def test_a_retry_recorded_after_cancel_does_not_leave_the_item_waiting(store: Store) -> None:
    # The task raised Retry before its worker heard of the cancel: the item must not stay
    # in retry_wait forever in a batch nobody claims from.
    submit(store, "b1", 2)
    (c,) = claim(store, 1)
    store.cancel("b1", T0 + 1)
    store.record([outcome(c, S.RETRY_WAIT, at=T0 + 2, run_after=T0 + 5)], T0 + 2)
    status = store.get_batch("b1")
    assert status.state is B.CANCELLED
    assert status.counts.remaining == 0
    assert store.item("b1", "1").state.is_terminal


# -- retrying failed items -------------------------------------------------------------


def test_retry_failed_sends_only_failed_items_back(store: Store, agree: Callable[[], None]) -> None:
    submit(store, "b1", 3, max_attempts=1)
    one, two, three = claim(store)
    store.record([outcome(one), outcome(two, S.FAILED), outcome(three, S.FAILED)], T0 + 1)
    assert store.get_batch("b1").state is B.PARTIALLY_COMPLETED
    since = store.cursor()

    assert store.retry_failed("b1", T0 + 2) == 2

    status = store.get_batch("b1")
    assert (status.state, status.round, status.finished_at) == (B.RETRYING, 1, None)
    assert (status.counts.pending, status.counts.succeeded, status.counts.failed) == (2, 1, 0)
    agree()
    assert states(store, "b1") == {"1": S.SUCCEEDED, "2": S.PENDING, "3": S.PENDING}
    assert store.item("b1", "2").error is None
    kinds = [e.kind for e in store.events("b1", since=since)]
    assert sorted(kinds) == ["batch.retry", "batch.state"]
    assert sorted(i.key for i in store.item_changes("b1", since=since)) == ["2", "3"]

    again = claim(store, now=T0 + 3)
    assert [(c.key, c.attempt, c.max_attempt) for c in again] == [("2", 2, 2), ("3", 2, 2)]
    done = finish(store, again, at=T0 + 4)
    assert done.ended == ["b1"]
    status = store.get_batch("b1")
    assert (status.state, status.finished_at) == (B.COMPLETED, T0 + 4)
    assert batch_moves(store, "b1")[-2:] == [
        ("partially_completed", "retrying"),
        ("retrying", "completed"),
    ]


def test_retried_items_go_before_fresh_work(store: Store) -> None:
    submit(store, "old", 1, max_attempts=1)
    finish(store, claim(store), S.FAILED)
    submit(store, "new", 2)
    store.retry_failed("old", T0 + 2)
    assert [c.batch.id for c in claim(store, 1, now=T0 + 3)] == ["old"]


def test_retry_failed_is_refused_unless_the_batch_ended_with_failures(store: Store) -> None:
    submit(store, "running", 2)
    submit(store, "done", 1)
    finish(store, [c for c in claim(store) if c.batch.id == "done"])
    submit(store, "cancelled", 1)
    store.cancel("cancelled", T0)
    for batch_id in ("running", "done", "cancelled"):
        before = store.get_batch(batch_id)
        with pytest.raises(Conflict):
            store.retry_failed(batch_id, T0 + 5)
        assert store.get_batch(batch_id) == before


def test_retry_failed_can_end_failed_again(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=1)
    finish(store, claim(store), S.FAILED)
    assert store.get_batch("b1").state is B.FAILED
    store.retry_failed("b1", T0 + 2)
    done = finish(store, claim(store, now=T0 + 3), S.FAILED, at=T0 + 4)
    assert done.ended == ["b1"]
    status = store.get_batch("b1")
    assert (status.state, status.round) == (B.FAILED, 1)


# -- how batches end -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "ending"),
    [
        ([S.SUCCEEDED, S.SUCCEEDED], B.COMPLETED),
        ([S.SUCCEEDED, S.FAILED], B.PARTIALLY_COMPLETED),
        ([S.SUCCEEDED, S.CANCELLED], B.PARTIALLY_COMPLETED),
        ([S.FAILED, S.FAILED], B.FAILED),
        ([S.FAILED, S.CANCELLED], B.FAILED),
    ],
)
def test_batch_end_rules(store: Store, outcomes: list[ItemState], ending: BatchState) -> None:
    submit(store, "b1", len(outcomes))
    got = claim(store)
    done = store.record([outcome(c, state) for c, state in zip(got, outcomes, strict=True)], T0 + 1)
    assert done.ended == ["b1"]
    status = store.get_batch("b1")
    assert status.state is ending
    assert status.finished_at == T0 + 1
    assert batch_moves(store, "b1") == [("queued", "processing"), ("processing", ending.value)]


def test_a_batch_does_not_end_while_items_remain(store: Store) -> None:
    submit(store, "b1", 2)
    first, _ = claim(store)
    assert finish(store, [first]).ended == []
    assert store.get_batch("b1").state is B.PROCESSING


# -- reading ---------------------------------------------------------------------------


def test_list_filters_and_pages(store: Store) -> None:
    for n in range(5):
        submit(store, f"b{n}", 1, task="even" if n % 2 == 0 else "odd")
    store.cancel("b2", T0)
    pages, after = [], None
    while True:
        page = store.list_batches(limit=2, after=after)
        pages.append([b.id for b in page.rows])
        if page.next is None:
            break
        after = page.next
    assert pages == [["b4", "b3"], ["b2", "b1"], ["b0"]]
    assert [b.id for b in store.list_batches(task="even").rows] == ["b4", "b2", "b0"]
    assert [b.id for b in store.list_batches(state=B.CANCELLED).rows] == ["b2"]
    assert [b.id for b in store.list_batches(state=B.QUEUED, task="even").rows] == ["b4", "b0"]
    page = store.list_batches(limit=5)
    assert page.next is None
    assert len(page.rows) == 5
    assert store.list_batches(task="none").rows == []


def test_items_filters_and_pages(store: Store) -> None:
    submit(store, "b1", 5)
    finish(store, claim(store, 2))
    assert [i.key for i in store.items("b1", limit=2)] == ["1", "2"]
    assert [i.key for i in store.items("b1", after=2, limit=2)] == ["3", "4"]
    assert [i.key for i in store.items("b1", after=4)] == ["5"]
    assert [i.key for i in store.items("b1", state=S.SUCCEEDED)] == ["1", "2"]
    assert [i.key for i in store.items("b1", state=S.PENDING, after=3)] == ["4", "5"]
    assert store.item("b1", "3").payload == {"n": 3}


# -- the change feed -------------------------------------------------------------------


def test_every_write_moves_the_cursor_forward(store: Store) -> None:
    seen = [store.cursor()]

    def step() -> None:
        seen.append(store.cursor())
        assert seen[-1] > seen[-2]

    submit(store, "b1", 3, sealed=False)
    step()
    store.append_items("b1", appended(1), T0)
    step()
    got = claim(store)
    step()
    store.heartbeat([LeaseUpdate(got[0].item_id, 1, progress=0.1, changed=True)], T0, LEASE)
    step()
    finish(store, got[:1])
    step()
    store.release([(got[1].item_id, 1)], T0 + 1)
    step()
    store.reclaim_expired(T0 + LEASE + 1)
    step()
    store.pause("b1", T0 + 40)
    step()
    store.resume("b1", T0 + 41)
    step()
    store.seal("b1", T0 + 42)
    step()
    store.cancel("b1", T0 + 43)
    step()
    store.delete_batch("b1", T0 + 44)
    step()


def test_events_since_a_cursor(store: Store) -> None:
    submit(store, "b1", 1)
    submit(store, "b2", 1)
    mark = store.cursor()
    finish(store, claim(store), at=T0 + 1)
    later = store.events(since=mark)
    assert all(e.seq > mark for e in later)
    assert all(e.seq <= store.cursor() for e in later)
    assert {(e.batch_id, e.data["to"]) for e in later if e.kind == "batch.state"} == {
        ("b1", "processing"),
        ("b2", "processing"),
        ("b1", "completed"),
        ("b2", "completed"),
    }
    assert [e.data["to"] for e in store.events("b1", since=mark)] == ["processing", "completed"]
    everything = store.events()
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert store.events(since=store.cursor()) == []
    assert len(store.events(limit=2)) == 2
    assert all(e.at in (T0, T0 + 1) for e in everything)


def test_the_state_event_is_written_with_the_change(store: Store) -> None:
    submit(store, "b1", 1)
    mark = store.cursor()
    claim(store)
    item = store.item("b1", "1")
    (event,) = store.events("b1", since=mark)
    # One transaction: the item change and the batch event carry the same cursor.
    assert event.seq == item.seq == store.cursor()


def test_paging_through_events_with_a_small_limit_misses_nothing(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=1)
    finish(store, claim(store), S.FAILED)
    store.retry_failed("b1", T0 + 2)  # writes a state event and a retry event
    finish(store, claim(store, now=T0 + 3), at=T0 + 4)
    everything = [(e.seq, e.kind, e.data) for e in store.events()]
    paged: list[tuple[int, str, dict[str, Any]]] = []
    since = 0
    while page := store.events(since=since, limit=1):
        paged.extend((e.seq, e.kind, e.data) for e in page)
        since = page[-1].seq
    assert paged == everything


def test_item_changes_since_a_cursor(store: Store) -> None:
    submit(store, "b1", 4)
    mark = store.cursor()
    assert store.item_changes("b1", since=mark) == []
    got = claim(store, 2)
    after_claim = store.cursor()
    changed = store.item_changes("b1", since=mark)
    assert sorted(i.key for i in changed) == ["1", "2"]
    assert all(i.state is S.RUNNING and mark < i.seq <= after_claim for i in changed)
    finish(store, got[1:])
    changed = store.item_changes("b1", since=after_claim)
    assert [(i.key, i.state) for i in changed] == [("2", S.SUCCEEDED)]
    assert [i.seq for i in store.item_changes("b1")] == sorted(
        i.seq for i in store.item_changes("b1")
    )


def test_paging_through_item_changes_with_a_small_limit_misses_nothing(store: Store) -> None:
    submit(store, "b1", 5)
    claim(store)  # five items change in one transaction, under one cursor
    everything = {i.key for i in store.item_changes("b1")}
    paged: set[str] = set()
    since = 0
    while page := store.item_changes("b1", since=since, limit=2):
        paged.update(i.key for i in page)
        since = page[-1].seq
    assert paged == everything


# -- deleting --------------------------------------------------------------------------


def test_delete_only_finished_batches(store: Store) -> None:
    submit(store, "b1", 2)
    claim(store, 1)
    with pytest.raises(Conflict):
        store.delete_batch("b1", T0 + 1)
    assert store.get_batch("b1").counts.total == 2
    store.cancel("b1", T0 + 2)
    since = store.cursor()
    store.delete_batch("b1", T0 + 3)
    assert_gone(store, "b1")
    deleted = [e for e in store.events(since=since) if e.kind == "batch.deleted"]
    assert [e.data for e in deleted] == [{"batch_id": "b1"}]
    with pytest.raises(BatchNotFound):
        store.delete_batch("b1", T0 + 4)


def test_a_deleted_batchs_late_outcome_is_rejected(store: Store) -> None:
    submit(store, "b1", 2)
    first, _ = claim(store)
    store.cancel("b1", T0 + 1)
    store.delete_batch("b1", T0 + 2)
    assert len(store.record([outcome(first, at=T0 + 3)], T0 + 3).rejected) == 1
    assert store.heartbeat([LeaseUpdate(first.item_id, 1)], T0 + 3, LEASE) == {first.item_id}
    assert store.release([(first.item_id, 1)], T0 + 3) == 0


def test_prune_deletes_batches_that_ended_before_a_time(store: Store) -> None:
    for n, at in enumerate([T0, T0 + 100, T0 + 200]):
        submit(store, f"done{n}", 1, now=at)
        finish(store, claim(store, now=at), at=at + 1)
    submit(store, "cancelled", 1)
    store.cancel("cancelled", T0 + 10)
    submit(store, "running", 1, now=T0)
    assert store.prune(T0 + 150, T0 + 300) == 3
    left = {b.id for b in store.list_batches().rows}
    assert left == {"done2", "running"}
    assert store.prune(T0 + 150, T0 + 301) == 0
    assert store.prune(T0 + 10_000, T0 + 302) == 1
    assert {b.id for b in store.list_batches().rows} == {"running"}


# -- callbacks and the outlook ---------------------------------------------------------


def test_callbacks_are_claimed_once_per_ending(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=1)
    submit(store, "other", 1, task="u")
    assert store.claim_callbacks({"t"}, T0, LEASE) == []
    finish(store, claim(store), S.FAILED)
    assert store.outlook({"t"}, T0 + 2).callbacks_due == 1

    ((status, round_),) = store.claim_callbacks({"t"}, T0 + 2, LEASE)
    assert (status.id, status.state, round_) == ("b1", B.FAILED, 1)
    assert store.claim_callbacks({"t"}, T0 + 3, LEASE) == []  # leased
    assert store.claim_callbacks({"u"}, T0 + 3, LEASE) == []
    assert store.outlook({"t"}, T0 + 3).callbacks_due == 0
    # The lease ran out (the worker died mid-callback): another worker takes them over.
    ((status, round_),) = store.claim_callbacks({"t"}, T0 + 2 + LEASE + 1, LEASE)
    assert round_ == 1
    store.finish_callbacks("b1", 1)
    assert store.claim_callbacks({"t"}, T0 + 1000, LEASE) == []

    # A retry round that ends again runs the callbacks again.
    store.retry_failed("b1", T0 + 1001)
    finish(store, claim(store, now=T0 + 1002), at=T0 + 1003)
    ((status, round_),) = store.claim_callbacks({"t"}, T0 + 1004, LEASE)
    assert (status.state, round_) == (B.COMPLETED, 2)
    store.finish_callbacks("b1", 2)
    assert store.claim_callbacks({"t"}, T0 + 5000, LEASE) == []
    assert store.claim_callbacks(set(), T0, LEASE) == []


def test_a_cancelled_batch_gets_its_callbacks(store: Store) -> None:
    submit(store, "b1", 1)
    store.cancel("b1", T0)
    ((status, round_),) = store.claim_callbacks({"t"}, T0 + 1, LEASE)
    assert (status.state, round_) == (B.CANCELLED, 1)


def test_outlook(store: Store) -> None:
    assert store.outlook(set(), T0) == store.outlook({"t"}, T0)
    assert store.outlook({"t"}, T0).remaining == 0
    assert store.outlook({"t"}, T0).next_due is None
    submit(store, "b1", 3)
    submit(store, "paused", 2)
    store.pause("paused", T0)
    submit(store, "other", 4, task="u")
    first, second, _ = claim(store, 3, t=3)
    store.record(
        [
            outcome(first),
            outcome(second, S.RETRY_WAIT, run_after=T0 + 50),
        ],
        T0 + 1,
    )
    look = store.outlook({"t"}, T0 + 2)
    assert (look.remaining, look.next_due, look.callbacks_due) == (2, T0 + 50, 0)
    assert store.outlook({"t", "u"}, T0 + 2).remaining == 6


def test_batch_states(store: Store) -> None:
    submit(store, "b1", 1)
    submit(store, "b2", 1)
    got = claim(store)
    store.cancel("b2", T0 + 1)
    pks = {c.batch.id: c.batch.pk for c in got}
    assert store.batch_states(list(pks.values())) == {
        pks["b1"]: B.PROCESSING,
        pks["b2"]: B.CANCELLED,
    }
    assert store.batch_states([]) == {}


def test_items_that_die_together_are_not_charged_and_then_run_alone(
    store: Store, agree: Callable[[], None]
) -> None:
    submit(store, "b1", 4, max_attempts=1)
    crowd = store.claim("w1", ALL, 3, T0, LEASE)
    (loner,) = store.claim("w2", ALL, 1, T0, LEASE)
    assert store.reclaim_expired(T0 + LEASE + 1) == 4
    items = {item.key: item for item in store.items("b1")}
    # w2 held one item: its death is surely that item's doing, and its one attempt is spent.
    assert items[loner.key].state is S.FAILED
    # w1 held three: none is charged, each becomes a suspect.
    assert {items[c.key].state for c in crowd} == {S.PENDING}
    agree()
    # A worker that holds something gets no suspect; one that holds nothing gets exactly one.
    assert store.claim("w3", ALL, 10, T0 + 40, LEASE, alone=False) == []
    (suspect,) = store.claim("w3", ALL, 10, T0 + 40, LEASE, alone=True)
    assert suspect.alone and suspect.key == crowd[0].key
    # It dies alone: now it is charged and, its attempt spent, it fails.
    assert store.reclaim_expired(T0 + 40 + LEASE + 1) == 1
    assert store.item("b1", suspect.key).state is S.FAILED
    # The others run alone in turn and succeed.
    for n in range(2):
        (other,) = store.claim("w3", ALL, 10, T0 + 100 + n, LEASE, alone=True)
        finish(store, [other], at=T0 + 100 + n)
    status = store.get_batch("b1")
    assert (status.counts.succeeded, status.counts.failed) == (2, 2)
    assert status.state is B.PARTIALLY_COMPLETED


# -- rules that hold whatever the database groups (issue 9) -----------------------------


def test_of_several_outcomes_for_one_attempt_the_first_applies(
    store: Store, agree: Callable[[], None]
) -> None:
    # [item2 failed, item1 succeeded, item1 failed]: a store that applied statements per
    # shape could let the last outcome of item1 win while its counters said the first.
    submit(store, "b1", 2, max_attempts=1)
    one, two = claim(store)
    at = T0 + 1
    done = store.record([outcome(two, S.FAILED), outcome(one), outcome(one, S.FAILED)], at)
    assert [(o.key, o.state) for o in done.rejected] == [("1", S.FAILED)]
    assert states(store, "b1") == {"1": S.SUCCEEDED, "2": S.FAILED}
    status = store.get_batch("b1")
    assert (status.counts.succeeded, status.counts.failed) == (1, 1)
    assert status.state is B.PARTIALLY_COMPLETED
    agree()


def test_a_rejected_outcome_is_an_event_of_its_batch(store: Store) -> None:
    submit(store, "b1", 1)
    (first,) = claim(store)
    finish(store, [first])
    store.record([outcome(first, S.FAILED, at=T0 + 2)], T0 + 2)
    rejected = [e for e in store.events("b1") if e.kind == "item.outcome_rejected"]
    assert len(rejected) == 1
    assert rejected[0].batch_id == "b1"
    assert rejected[0].data["key"] == "1"


@pytest.mark.parametrize("ended", [B.COMPLETED, B.CANCELLED])
def test_every_control_of_an_ended_batch_raises_conflict(store: Store, ended: BatchState) -> None:
    submit(store, "b1", 1)
    if ended is B.CANCELLED:
        store.cancel("b1", T0)
    else:
        finish(store, claim(store))
    before = store.get_batch("b1")
    controls = [store.pause, store.resume]
    if ended is not B.CANCELLED:
        controls.append(store.cancel)  # cancelling a cancelled batch is a harmless no-op
    for control in controls:
        with pytest.raises(Conflict) as caught:
            control("b1", T0 + 5)
        assert caught.value.batch_id == "b1"
        assert "ended" in str(caught.value)
    assert store.get_batch("b1") == before


def test_a_lost_compare_and_set_raises_conflict(store: Store) -> None:
    submit(store, "b1", 1)
    claim(store)  # queued -> processing
    status = store.get_batch("b1")
    assert status.state is B.PROCESSING
    with pytest.raises(Conflict) as caught:
        with store._write() as tx:  # type: ignore[attr-defined]
            row = tx.batch("b1")
            # Another writer moved it first: the change expected it still queued.
            tx.set_state(row.pk, "b1", B.QUEUED, B.PROCESSING, T0 + 1)
    assert caught.value.batch_id == "b1"
    assert store.get_batch("b1") == status


# -- retrying what you choose (issue 10) -------------------------------------------------


def _ended_with_failed_and_cancelled(store: Store) -> None:
    """b1 ends partially completed: 1 succeeded, 2 and 3 failed, 4 cancelled by its task."""
    submit(store, "b1", 4, max_attempts=1)
    one, two, three, four = claim(store)
    outcomes = [outcome(one), outcome(two, S.FAILED), outcome(three, S.FAILED)]
    store.record([*outcomes, outcome(four, S.CANCELLED)], T0 + 1)
    assert store.get_batch("b1").state is B.PARTIALLY_COMPLETED


def test_retry_one_failed_item_by_key(store: Store, agree: Callable[[], None]) -> None:
    _ended_with_failed_and_cancelled(store)
    assert store.retry_failed("b1", T0 + 2, keys=["3"]) == 1
    assert states(store, "b1") == {
        "1": S.SUCCEEDED,
        "2": S.FAILED,
        "3": S.PENDING,
        "4": S.CANCELLED,
    }
    agree()
    (again,) = claim(store, now=T0 + 3)
    # Its attempts keep counting; its round starts again (fresh attempts, fresh backoff).
    assert (again.key, again.attempt, again.tries) == ("3", 2, 1)
    finish(store, [again], at=T0 + 4)
    assert store.get_batch("b1").state is B.PARTIALLY_COMPLETED  # 2 failed, 4 cancelled


def test_retry_cancelled_items_and_both_states(store: Store, agree: Callable[[], None]) -> None:
    _ended_with_failed_and_cancelled(store)
    assert store.retry_failed("b1", T0 + 2, states=[S.CANCELLED]) == 1
    assert store.item("b1", "4").state is S.PENDING
    assert store.get_batch("b1").counts.cancelled == 0
    agree()
    finish(store, claim(store, now=T0 + 3), at=T0 + 4)
    assert store.retry_failed("b1", T0 + 5, states=[S.FAILED, S.CANCELLED]) == 2
    assert store.get_batch("b1").round == 2


def test_a_retry_that_cannot_be_done_changes_nothing(store: Store) -> None:
    _ended_with_failed_and_cancelled(store)
    before, cursor = store.get_batch("b1"), store.cursor()
    with pytest.raises(ItemNotFound):
        store.retry_failed("b1", T0 + 2, keys=["3", "nope"])
    with pytest.raises(Conflict, match="item 1 is succeeded"):
        store.retry_failed("b1", T0 + 2, keys=["3", "1"])
    with pytest.raises(Conflict, match="item 4 is cancelled"):
        store.retry_failed("b1", T0 + 2, keys=["4"])  # failed only, unless asked
    with pytest.raises(BatchyardError, match="failed and/or cancelled"):
        store.retry_failed("b1", T0 + 2, states=[S.SUCCEEDED])
    assert store.get_batch("b1") == before
    assert store.cursor() == cursor
