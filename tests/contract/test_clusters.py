"""Error clusters in the store: counted with the failures that make them (refused outcomes
count nothing), read with their shares, taken off by a retry, retried by cluster; over
every backend. After each test the ``store`` fixture checks every batch's clusters against
a recount of its failed items."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.clusters import Signature, signature
from batchyard.errors import BatchNotFound, ClusterNotFound, ConfigError, Conflict
from batchyard.states import ItemState
from batchyard.store.base import Claim, Outcome, Store
from tests.contract.test_store import LEASE, T0, B, claim, outcome, submit

S = ItemState
A = Signature.of_text("ValueError: price <num> out of range @ tasks.py:price")
Z = Signature.of_text("KeyError: <str> @ tasks.py:lookup")


def failed(c: Claim, sig: Signature | None, state: ItemState = S.FAILED, **fields: Any) -> Outcome:
    """A failure of ``c`` with signature ``sig`` (None: the store makes one)."""
    if state is S.RETRY_WAIT:
        fields.setdefault("run_after", T0 + 5)
    fields.setdefault("error", f"ValueError: price {c.key} out of range")
    fields.setdefault("error_type", "ValueError")
    return outcome(c, state, signature=sig, **fields)


def by_id(store: Store, batch_id: str) -> dict[str, tuple[int, int]]:
    return {c.id: (c.attempts, c.items) for c in store.error_clusters(batch_id)}


def test_attempts_and_items_are_counted_per_signature(store: Store) -> None:
    submit(store, "b1", 4)
    c1, c2, c3, c4 = claim(store)
    store.record(
        [
            failed(c1, A, S.RETRY_WAIT, at=T0 + 1),
            failed(c2, A, at=T0 + 2),
            failed(c3, Z, at=T0 + 3, error="KeyError: 'sku'", error_type="KeyError"),
            outcome(c4),
        ],
        T0 + 3,
    )
    first, second = store.error_clusters("b1")
    assert (first.id, first.text, first.attempts, first.items) == (A.id, A.text, 2, 1)
    assert (first.first_seen, first.last_seen, first.share) == (T0 + 1, T0 + 2, 0.5)
    assert (first.sample, first.sample_key) == ("ValueError: price 1 out of range", "1")
    assert (second.id, second.attempts, second.items, second.sample) == (
        Z.id,
        1,
        1,
        "KeyError: 'sku'",
    )
    # The retried item succeeds: its cluster keeps the attempt it went through.
    (again,) = claim(store, now=T0 + 6)
    store.record([outcome(again, at=T0 + 7)], T0 + 7)
    assert by_id(store, "b1") == {A.id: (2, 1), Z.id: (1, 1)}
    assert store.get_batch("b1").state is B.PARTIALLY_COMPLETED


def test_a_failure_without_a_signature_gets_one_from_its_error(store: Store) -> None:
    submit(store, "b1", 2)
    c1, c2 = claim(store)
    store.record([failed(c1, None), failed(c2, None)], T0 + 1)
    (cluster,) = store.error_clusters("b1")
    assert cluster.text == "ValueError: price <num> out of range"
    assert cluster.id == signature("ValueError", "price 1 out of range").id
    assert (cluster.attempts, cluster.items, cluster.share) == (2, 2, 1.0)


def test_successes_and_cancellations_make_no_cluster(store: Store) -> None:
    submit(store, "b1", 2)
    c1, c2 = claim(store)
    store.record([outcome(c1), outcome(c2, S.CANCELLED, error="Cancelled: stop")], T0 + 1)
    assert store.error_clusters("b1") == []


def test_refused_outcomes_count_nothing(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    # Two outcomes for one attempt in one commit: the first counts, the second is refused.
    done = store.record([failed(c, A, S.RETRY_WAIT), failed(c, A, S.RETRY_WAIT)], T0 + 1)
    assert len(done.rejected) == 1
    assert by_id(store, "b1") == {A.id: (1, 0)}
    # The same attempt again, later: stale, refused, not counted.
    assert len(store.record([failed(c, A)], T0 + 2).rejected) == 1
    assert by_id(store, "b1") == {A.id: (1, 0)}


def test_a_retry_in_a_cancelled_batch_is_no_failure(store: Store) -> None:
    submit(store, "b1", 1)
    (c,) = claim(store)
    store.cancel("b1", T0 + 1)
    store.record([failed(c, A, S.RETRY_WAIT)], T0 + 2)
    assert store.item("b1", "1").state is S.CANCELLED
    assert store.error_clusters("b1") == []


def test_an_expiry_that_spends_an_attempt_is_a_failure(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=2)
    for round_ in range(2):
        now = T0 + round_ * 100
        assert len(claim(store, now=now)) == 1
        assert store.reclaim_expired(now + LEASE + 1) == 1
    (cluster,) = store.error_clusters("b1")
    assert cluster.text == (
        "LeaseExpired: lease expired on attempt <num> while it ran alone: its worker died or "
        "stopped answering"
    )
    assert (cluster.attempts, cluster.items, cluster.sample_key) == (2, 1, "1")
    assert cluster.last_seen == T0 + 100 + LEASE + 1


def test_an_expiry_in_a_crowd_is_not_counted(store: Store) -> None:
    submit(store, "b1", 2)
    claim(store)
    assert store.reclaim_expired(T0 + LEASE + 1) == 2
    assert store.error_clusters("b1") == []


def fail_all(store: Store, batch_id: str, sigs: list[Signature], now: float = T0) -> None:
    got = claim(store, now=now)
    store.record([failed(c, sig) for c, sig in zip(got, sigs, strict=True)], now + 1)


def test_a_retry_takes_its_items_off_their_clusters(store: Store) -> None:
    submit(store, "b1", 3, max_attempts=1)
    fail_all(store, "b1", [A, A, Z])
    assert store.retry_failed("b1", T0 + 2) == 3
    assert by_id(store, "b1") == {A.id: (2, 0), Z.id: (1, 0)}
    fail_all(store, "b1", [Z, Z, Z], now=T0 + 3)
    assert by_id(store, "b1") == {Z.id: (4, 3), A.id: (2, 0)}
    assert [c.id for c in store.error_clusters("b1")] == [Z.id, A.id]


def test_retry_one_cluster_by_a_prefix_of_its_id(store: Store) -> None:
    submit(store, "b1", 4, max_attempts=1)
    fail_all(store, "b1", [A, Z, A, Z])
    assert store.retry_failed("b1", T0 + 2, cluster=A.id[:4].upper()) == 2
    assert {item.key: item.state for item in store.items("b1")} == {
        "1": S.PENDING,
        "2": S.FAILED,
        "3": S.PENDING,
        "4": S.FAILED,
    }
    assert by_id(store, "b1") == {Z.id: (2, 2), A.id: (2, 0)}
    assert store.get_batch("b1").state is B.RETRYING


def unchanged(store: Store, batch_id: str, error: type[Exception], **kwargs: Any) -> None:
    before = (store.get_batch(batch_id), store.items(batch_id), store.error_clusters(batch_id))
    with pytest.raises(error) as caught:
        store.retry_failed(batch_id, T0 + 5, **kwargs)
    after = (store.get_batch(batch_id), store.items(batch_id), store.error_clusters(batch_id))
    assert after == before, caught.value


def test_retry_of_a_cluster_is_refused_whole(store: Store) -> None:
    aa1, aa2 = Signature("aa11111111", "one"), Signature("aa22222222", "two")
    submit(store, "b1", 3, max_attempts=2)
    got = claim(store)
    store.record(
        [failed(got[0], aa1), failed(got[1], aa2), failed(got[2], A, S.RETRY_WAIT)], T0 + 1
    )
    (c,) = claim(store, now=T0 + 6)
    store.record([failed(c, Z)], T0 + 7)  # A's item ends in Z: A has no failed item left
    with pytest.raises(ClusterNotFound) as caught:
        store.retry_failed("b1", T0 + 8, cluster="aa")
    assert caught.value.matches == ("aa11111111", "aa22222222")
    assert "give more of the id" in str(caught.value)
    unchanged(store, "b1", ClusterNotFound, cluster="ffff")
    unchanged(store, "b1", ConfigError, cluster="not-hex")
    unchanged(store, "b1", ConfigError, cluster="aa1", keys=["1"])
    unchanged(store, "b1", ConfigError, cluster="aa1", states=[S.FAILED, S.CANCELLED])
    unchanged(store, "b1", Conflict, cluster=A.id)
    assert store.retry_failed("b1", T0 + 9, cluster="aa1") == 1


def test_reading_clusters(store: Store) -> None:
    submit(store, "b1", 3, max_attempts=1)
    fail_all(store, "b1", [Z, A, A])
    (top,) = store.error_clusters("b1", limit=1)
    assert (top.id, top.items, top.share) == (A.id, 2, 2 / 3)
    assert top.as_dict()["share"] == 2 / 3
    with pytest.raises(BatchNotFound):
        store.error_clusters("nope")
    with pytest.raises(ConfigError):
        store.error_clusters("b1", limit=0)
    with pytest.raises(BatchNotFound):
        store.recount_clusters("nope")
    submit(store, "b2", 1)
    assert store.error_clusters("b2") == []


def test_deleting_a_batch_deletes_its_clusters(store: Store) -> None:
    submit(store, "b1", 1, max_attempts=1)
    fail_all(store, "b1", [A])
    store.delete_batch("b1", T0 + 2)
    read = getattr(store, "_read")  # noqa: B009  # no store operation reads a deleted batch
    assert read("SELECT COUNT(*) FROM error_clusters")[0][0] == 0
