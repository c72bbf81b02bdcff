"""Webhook deliveries in the store, on every backend: written with the change they report (an
end, a pause, a pause that needs attention), one per URL, with the batch's status as body;
leased to one claimer at a time; fenced when recorded; retried, then failed; counted; deleted
with their batch. And the settings every process shares."""

from __future__ import annotations

import json
import threading

import pytest

from batchyard.deliveries import Attempt, Backoff, DeliveryState
from batchyard.errors import BatchNotFound, Conflict
from batchyard.states import ItemState as S
from batchyard.store.base import Store
from tests.contract.test_store import LEASE, T0, claim, finish, submit

D = DeliveryState
HOOKS = ("https://a.example/hook", "http://b.example:8080/in")
OK = Attempt(204, None, 0.01)
DOWN = Attempt(None, "ConnectError: refused", 0.01)


def test_an_ending_writes_one_delivery_per_url_with_the_status_as_body(store: Store) -> None:
    submit(store, "b1", 2, webhooks=HOOKS)
    assert store.webhook_deliveries("b1") == []
    finish(store, claim(store))
    deliveries = store.webhook_deliveries("b1")
    assert [(d.url, d.event, d.state, d.attempts) for d in deliveries] == [
        (HOOKS[0], "batch.completed", D.PENDING, 0),
        (HOOKS[1], "batch.completed", D.PENDING, 0),
    ]
    body = json.loads(deliveries[0].payload)
    assert body["id"] == "b1" and body["state"] == "completed"
    assert body["counts"]["succeeded"] == 2 and "throughput" in body and "eta" in body
    assert body["error_clusters"] == []
    assert deliveries[0].id != deliveries[1].id
    assert deliveries[0].next_at == deliveries[0].created_at == T0 + 1


def test_a_failed_batch_sends_its_top_error_clusters(store: Store) -> None:
    submit(store, "b1", 2, webhooks=HOOKS[:1], max_attempts=1)
    finish(store, claim(store), S.FAILED)
    (delivery,) = store.webhook_deliveries("b1")
    body = json.loads(delivery.payload)
    assert delivery.event == "batch.failed" and body["counts"]["failed"] == 2
    (cluster,) = body["error_clusters"]
    assert cluster == store.error_clusters("b1")[0].as_dict()
    assert (cluster["items"], cluster["share"]) == (2, 1.0)


def test_pauses_are_announced_and_a_pause_with_a_reason_needs_attention(store: Store) -> None:
    submit(store, "b1", 1, webhooks=HOOKS[:1])
    store.pause("b1", T0 + 1)
    store.resume("b1", T0 + 2)
    store.pause("b1", T0 + 3, reason="the budget of 5.00 is spent")
    store.cancel("b1", T0 + 4)
    events = [(d.event, json.loads(d.payload)["state"]) for d in store.webhook_deliveries("b1")]
    assert events == [
        ("batch.paused", "paused"),
        ("batch.needs_attention", "paused"),
        ("batch.cancelled", "cancelled"),
    ]
    reason = json.loads(store.webhook_deliveries("b1")[1].payload)["pause_reason"]
    assert reason == "the budget of 5.00 is spent"


def test_a_batch_without_webhooks_writes_no_delivery_and_a_failed_change_none(
    store: Store,
) -> None:
    submit(store, "quiet", 1)
    finish(store, claim(store))
    assert store.webhook_deliveries("quiet") == []
    submit(store, "b1", 1, webhooks=HOOKS[:1])
    store.cancel("b1", T0 + 1)
    with pytest.raises(Conflict):
        store.pause("b1", T0 + 2)  # refused: its transaction writes nothing
    assert [d.event for d in store.webhook_deliveries("b1")] == ["batch.cancelled"]
    assert store.delivery_counts() == {D.PENDING: 1, D.DELIVERED: 0, D.FAILED: 0}


def test_a_claim_leases_due_deliveries_to_one_claimer(store: Store) -> None:
    for n in range(6):
        submit(store, f"b{n}", 1, webhooks=HOOKS[:1])
        store.cancel(f"b{n}", T0 + n)
    assert store.claim_deliveries(T0 - 1, LEASE) == []  # none due yet
    first = store.claim_deliveries(T0 + 10, LEASE, limit=4)
    second = store.claim_deliveries(T0 + 10, LEASE, limit=4)
    assert len(first) == 4 and len(second) == 2
    assert {d.id for d in first}.isdisjoint(d.id for d in second)
    assert all(d.attempts == 1 and d.next_at == T0 + 10 + LEASE for d in first + second)
    assert store.claim_deliveries(T0 + 10 + LEASE - 1, LEASE) == []
    # A claimer that died: its deliveries come back once the lease lapses.
    again = store.claim_deliveries(T0 + 10 + LEASE, LEASE)
    assert len(again) == 6 and all(d.attempts == 2 for d in again)


def test_claimers_racing_never_share_a_delivery(store: Store) -> None:
    for n in range(40):
        submit(store, f"b{n}", 1, webhooks=HOOKS)
        store.cancel(f"b{n}", T0)
    got: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def claimer(mine: list[str]) -> None:
        start.wait()
        while batch := store.claim_deliveries(T0 + 1, LEASE, limit=3):
            mine.extend(d.id for d in batch)

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [d for mine in got for d in mine]
    assert len(claimed) == len(set(claimed)) == 80


def test_an_outcome_is_recorded_once_and_only_under_its_lease(store: Store) -> None:
    submit(store, "b1", 1, webhooks=HOOKS[:1])
    store.cancel("b1", T0)
    (lost,) = store.claim_deliveries(T0, LEASE)
    (held,) = store.claim_deliveries(T0 + LEASE, LEASE)  # the first lease lapsed
    assert not store.finish_delivery(lost, OK, T0 + LEASE + 1, None)
    assert store.finish_delivery(held, OK, T0 + LEASE + 1, None)
    assert not store.finish_delivery(held, OK, T0 + LEASE + 2, None)  # done already
    (done,) = store.webhook_deliveries("b1")
    assert (done.state, done.attempts, done.last_status, done.delivered_at) == (
        D.DELIVERED,
        2,
        204,
        T0 + LEASE + 1,
    )
    assert done.next_at is None
    assert store.claim_deliveries(T0 + 10 * LEASE, LEASE) == []


def test_failed_tries_are_retried_with_backoff_then_given_up(store: Store) -> None:
    submit(store, "b1", 1, webhooks=HOOKS[:1])
    store.cancel("b1", T0)
    backoff = Backoff(base=60, cap=600, give_up_after=1000)
    now, tries = T0, 0
    while True:
        (delivery,) = store.claim_deliveries(now, LEASE)
        tries += 1
        retry_at = backoff.next_try(delivery.attempts, delivery.created_at, now, draw=0.5)
        assert store.finish_delivery(delivery, DOWN, now, retry_at)
        if retry_at is None:
            break
        assert store.claim_deliveries(retry_at - 0.001, LEASE) == []  # not due before
        now = retry_at
    (failed,) = store.webhook_deliveries("b1")
    assert failed.state is D.FAILED and failed.attempts == tries == 5
    assert (failed.last_status, failed.last_error, failed.next_at) == (None, DOWN.error, None)
    assert store.delivery_counts()[D.FAILED] == 1


def test_deleting_a_batch_deletes_its_deliveries(store: Store) -> None:
    submit(store, "b1", 1, webhooks=HOOKS)
    store.cancel("b1", T0)
    store.delete_batch("b1", T0 + 1)
    with pytest.raises(BatchNotFound):
        store.webhook_deliveries("b1")
    assert sum(store.delivery_counts().values()) == 0
    assert store.claim_deliveries(T0 + 2, LEASE) == []


def test_a_setting_is_made_once_and_kept(store: Store) -> None:
    made: list[str] = []
    start = threading.Barrier(4)

    def make() -> str:
        made.append(f"v{len(made)}")
        return made[-1]

    seen: list[str] = []

    def reader() -> None:
        start.wait()
        seen.append(store.setting("secret", make))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 4 and len(set(seen)) == 1 and seen[0] in made
    assert store.setting("secret", lambda: "other") == seen[0]
