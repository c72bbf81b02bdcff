"""The rate-limit primitives every store shares: token buckets for requests and tokens,
leased concurrency slots, pauses. Times are given explicitly; nothing sleeps."""

from __future__ import annotations

import json
import threading
import time

import pytest

from batchyard.models import BatchOptions, Waiting
from batchyard.store.base import NewItem, Store
from batchyard.store.limits import Grant, Limits, Rate, Wait, WaitRow

T0 = 1_700_000_000.0
RPM = Limits(requests=Rate(60, 60.0, burst=3))  # 1 a second, 3 at once
TPM = Limits(tokens=Rate(600, 60.0))  # 10 tokens a second, 600 at once


def granted(got: Grant | Wait) -> Grant:
    assert isinstance(got, Grant), got
    return got


def waits(got: Grant | Wait) -> Wait:
    assert isinstance(got, Wait), got
    return got


def test_a_request_bucket_starts_full_then_refills_at_its_rate(store: Store) -> None:
    for _ in range(3):
        granted(store.limit_acquire("k", RPM, 0, T0))
    wait = waits(store.limit_acquire("k", RPM, 0, T0))
    assert wait.reason == "requests"
    assert wait.seconds == pytest.approx(1.0)
    assert waits(store.limit_acquire("k", RPM, 0, T0 + 0.5)).seconds == pytest.approx(0.5)
    granted(store.limit_acquire("k", RPM, 0, T0 + 1.0))
    waits(store.limit_acquire("k", RPM, 0, T0 + 1.0))
    # A long idle refills to the burst, never beyond it.
    for _ in range(3):
        granted(store.limit_acquire("k", RPM, 0, T0 + 100))
    waits(store.limit_acquire("k", RPM, 0, T0 + 100))


def test_keys_are_independent(store: Store) -> None:
    for _ in range(3):
        granted(store.limit_acquire("a", RPM, 0, T0))
    waits(store.limit_acquire("a", RPM, 0, T0))
    granted(store.limit_acquire("b", RPM, 0, T0))


def test_a_refused_call_takes_nothing(store: Store) -> None:
    limits = Limits(requests=Rate(60, 60.0, burst=2), tokens=Rate(600, 60.0))
    granted(store.limit_acquire("k", limits, 500, T0))
    # Too many tokens: refused, and its request is not spent.
    assert waits(store.limit_acquire("k", limits, 200, T0)).reason == "tokens"
    granted(store.limit_acquire("k", limits, 100, T0))
    state = store.limit_state("k", T0)
    assert state is not None
    assert state.requests == pytest.approx(0.0)
    assert state.tokens == pytest.approx(0.0)


def test_tokens_wait_for_the_bucket_to_refill(store: Store) -> None:
    granted(store.limit_acquire("k", TPM, 550, T0))
    wait = waits(store.limit_acquire("k", TPM, 100, T0))
    assert wait.reason == "tokens"
    assert wait.seconds == pytest.approx(5.0)  # 50 missing at 10 a second
    granted(store.limit_acquire("k", TPM, 100, T0 + 5))


def test_a_call_larger_than_the_bucket_waits_for_a_full_one_and_leaves_debt(
    store: Store,
) -> None:
    granted(store.limit_acquire("k", TPM, 100, T0))
    assert waits(store.limit_acquire("k", TPM, 900, T0)).seconds == pytest.approx(10.0)
    granted(store.limit_acquire("k", TPM, 900, T0 + 10))
    # 300 in debt: a call of 10 waits 31 s.
    assert waits(store.limit_acquire("k", TPM, 10, T0 + 10)).seconds == pytest.approx(31.0)


def test_settle_refunds_an_overestimate_and_charges_an_underestimate(store: Store) -> None:
    grant = granted(store.limit_acquire("k", TPM, 500, T0))
    waits(store.limit_acquire("k", TPM, 200, T0))
    store.limit_settle(grant, 50, T0)  # 450 back
    other = granted(store.limit_acquire("k", TPM, 200, T0))
    state = store.limit_state("k", T0)
    assert state is not None and state.tokens == pytest.approx(350)
    store.limit_settle(other, 500, T0)  # 300 more
    state = store.limit_state("k", T0)
    assert state is not None and state.tokens == pytest.approx(50)
    # Settling again corrects from the last settled value, not from the estimate.
    store.limit_settle(other, 450, T0)
    state = store.limit_state("k", T0)
    assert state is not None and state.tokens == pytest.approx(100)


def test_settle_refills_before_correcting_and_never_overfills(store: Store) -> None:
    grant = granted(store.limit_acquire("k", TPM, 600, T0))
    # 60 s later the bucket is full again; the unused estimate cannot overfill it.
    store.limit_settle(grant, 0, T0 + 60)
    state = store.limit_state("k", T0 + 60)
    assert state is not None and state.tokens == pytest.approx(600)
    grant = granted(store.limit_acquire("k", TPM, 100, T0 + 60))
    # An underestimate found after the bucket refilled is still charged.
    store.limit_settle(grant, 700, T0 + 120)
    state = store.limit_state("k", T0 + 120)
    assert state is not None and state.tokens == pytest.approx(0)


def test_settle_keeps_the_request_bucket_refilling(store: Store) -> None:
    limits = Limits(requests=Rate(60, 60.0, burst=1), tokens=Rate(600, 60.0))
    grant = granted(store.limit_acquire("k", limits, 100, T0))
    store.limit_settle(grant, 10, T0 + 0.6)
    # The request refilled over the settle: it is due at T0 + 1, not T0 + 1.6.
    assert waits(store.limit_acquire("k", limits, 10, T0 + 0.6)).seconds == pytest.approx(0.4)
    granted(store.limit_acquire("k", limits, 10, T0 + 1.0))


def test_concurrency_slots_are_released_or_come_back_when_their_lease_ends(
    store: Store,
) -> None:
    limits = Limits(concurrency=2, lease=30.0)
    first = granted(store.limit_acquire("k", limits, 0, T0))
    granted(store.limit_acquire("k", limits, 0, T0 + 1))
    wait = waits(store.limit_acquire("k", limits, 0, T0 + 2))
    assert wait.reason == "concurrency"
    assert wait.seconds == pytest.approx(28.0)  # when the first lease ends
    assert store.limit_release(first, T0 + 3) is True
    assert store.limit_release(first, T0 + 3) is False
    third = granted(store.limit_acquire("k", limits, 0, T0 + 3))
    state = store.limit_state("k", T0 + 3)
    assert state is not None and state.in_flight == 2
    # The holders die: their slots come back when their leases end.
    waits(store.limit_acquire("k", limits, 0, T0 + 30))
    granted(store.limit_acquire("k", limits, 0, T0 + 31.5))
    assert store.limit_release(third, T0 + 40) is False  # it had expired
    granted(store.limit_acquire("k", limits, 0, T0 + 40))


def test_a_pause_stops_the_key_until_it_ends_and_never_shortens(store: Store) -> None:
    assert store.limit_pause("k", T0 + 20, "429 from the provider", T0) == T0 + 20
    wait = waits(store.limit_acquire("k", RPM, 0, T0 + 5))
    assert wait.seconds == pytest.approx(15.0)
    assert wait.reason == "paused: 429 from the provider"
    assert store.limit_pause("k", T0 + 10, "shorter", T0 + 5) == T0 + 20
    assert waits(store.limit_acquire("k", RPM, 0, T0 + 6)).reason.endswith("429 from the provider")
    assert store.limit_pause("k", T0 + 30, "longer", T0 + 6) == T0 + 30
    assert waits(store.limit_acquire("k", RPM, 0, T0 + 25)).reason == "paused: longer"
    granted(store.limit_acquire("k", RPM, 0, T0 + 30))
    # The bucket was full through the pause.
    granted(store.limit_acquire("k", RPM, 0, T0 + 30))
    granted(store.limit_acquire("k", RPM, 0, T0 + 30))
    other = granted(store.limit_acquire("other", RPM, 0, T0 + 25))
    assert other.key == "other"


def test_a_clock_behind_the_key_refills_nothing(store: Store) -> None:
    for _ in range(3):
        granted(store.limit_acquire("k", RPM, 0, T0 + 10))
    # Another machine's clock runs 5 s behind: it is not given a refill for it.
    assert waits(store.limit_acquire("k", RPM, 0, T0 + 5)).seconds == pytest.approx(1.0)
    granted(store.limit_acquire("k", RPM, 0, T0 + 11))


def test_no_limits_admit_everything(store: Store) -> None:
    for _ in range(50):
        granted(store.limit_acquire("k", Limits(), 10_000, T0))
    assert store.limit_state("nothing", T0) is None


def test_concurrent_callers_never_overdraw_a_bucket(store: Store) -> None:
    limits = Limits(requests=Rate(600, 60.0, burst=25), tokens=Rate(1000, 60.0))
    results: list[Grant | Wait] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(10):
            got = store.limit_acquire("k", limits, 30, T0)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [r for r in results if isinstance(r, Grant)]
    # 25 requests could go, but 1000 tokens hold only 33 calls of 30... and 25 < 33.
    assert len(admitted) == 25
    assert len({g.id for g in admitted}) == 25


# -- items waiting for admission ---------------------------------------------------------


def _batch_with_running(store: Store, running: int) -> int:
    """A batch ``b`` of 5 items, ``running`` of them claimed; returns its pk."""
    store.create_batch(
        "b",
        BatchOptions(task="t"),
        [[NewItem(str(n), n, json.dumps(n)) for n in range(1, 6)]],
        T0,
    )
    claims = store.claim("w1", {"t": 100}, running, T0, 30.0, alone=True)
    assert len(claims) == running
    return claims[0].batch.pk


def test_waiting_items_count_as_waiting_not_running(store: Store) -> None:
    pk = _batch_with_running(store, 4)
    now = time.time()
    row = WaitRow(pk, "task:t", "requests", 3, now + 6.0, 0.5)
    store.publish_waits("w1", [row], now, now + 30.0)
    status = store.get_batch("b")
    assert (status.counts.running, status.counts.waiting, status.counts.pending) == (1, 3, 1)
    assert status.counts.remaining == 5
    assert status.waiting_on == Waiting("task:t", "requests", 3, now + 6.0, 0.5)
    assert status.as_dict()["counts"]["waiting"] == 3
    # Another worker's items on the same key add up, never beyond the items held running.
    store.publish_waits("w2", [WaitRow(pk, "task:t", "requests", 2, now + 9.0, 0.5)], now, now + 30)
    status = store.get_batch("b")
    assert (status.counts.running, status.counts.waiting) == (0, 4)
    assert status.waiting_on is not None and status.waiting_on.until == now + 9.0
    # A worker's rows are replaced as a whole; none left: nothing waits.
    store.publish_waits("w1", [], now, now + 30.0)
    store.publish_waits("w2", [], now, now + 30.0)
    status = store.get_batch("b")
    assert (status.counts.running, status.counts.waiting, status.waiting_on) == (4, 0, None)


def test_the_waits_of_a_worker_that_stopped_answering_expire(store: Store) -> None:
    pk = _batch_with_running(store, 2)
    now = time.time()
    store.publish_waits("w1", [WaitRow(pk, "task:t", "requests", 2, now + 5, None)], now, now - 1)
    status = store.get_batch("b")
    assert (status.counts.running, status.counts.waiting, status.waiting_on) == (2, 0, None)
