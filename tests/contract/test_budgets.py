"""Budgets, pause reasons, the extended usage roll-up and the response cache, the same on
every store. Times are given explicitly; nothing sleeps."""

from __future__ import annotations

import pytest

from batchyard.errors import ConfigError
from batchyard.models import Usage
from batchyard.states import BatchState, ItemState
from batchyard.store.base import Store
from tests.contract.test_store import LEASE, T0, claim, outcome, submit

S = ItemState


def test_a_hold_fits_within_recorded_cost_plus_holds_in_flight(store: Store) -> None:
    submit(store, "b", 3, budget=1.0)
    a, b, c = claim(store)
    pk = a.batch.pk
    assert store.hold_budget(pk, a.item_id, a.attempt, 0.4, T0).granted
    assert store.hold_budget(pk, b.item_id, b.attempt, 0.4, T0).granted
    refused = store.hold_budget(pk, c.item_id, c.attempt, 0.4, T0)
    assert not refused.granted
    assert (refused.budget, refused.spent) == (1.0, 0.0)
    assert refused.held == pytest.approx(0.8)
    # a finishes having cost 0.1: its hold lapses with the attempt, its cost is recorded.
    store.record([outcome(a, usage=Usage(10, 5, 0.1))], T0 + 1)
    check = store.hold_budget(pk, c.item_id, c.attempt, 0.4, T0 + 1)
    assert check.granted and check.spent == pytest.approx(0.1)
    assert check.held == pytest.approx(0.4)


def test_holds_of_one_attempt_add_up_and_lapse_when_it_is_released(store: Store) -> None:
    submit(store, "b", 1, budget=1.0)
    (a,) = claim(store)
    pk = a.batch.pk
    assert store.hold_budget(pk, a.item_id, a.attempt, 0.3, T0).granted
    assert store.hold_budget(pk, a.item_id, a.attempt, 0.3, T0).granted
    assert not store.hold_budget(pk, a.item_id, a.attempt, 0.5, T0).granted
    store.release([(a.item_id, a.attempt)], T0 + 1)
    (again,) = claim(store, now=T0 + 2)
    assert store.hold_budget(pk, again.item_id, again.attempt, 0.9, T0 + 2).granted


def test_a_dead_workers_hold_lapses_when_its_lease_is_reclaimed(store: Store) -> None:
    submit(store, "b", 1, budget=1.0)
    (a,) = claim(store)
    assert store.hold_budget(a.batch.pk, a.item_id, a.attempt, 0.9, T0).granted
    store.reclaim_expired(T0 + LEASE + 1)
    (again,) = claim(store, now=T0 + LEASE + 2)
    assert store.hold_budget(a.batch.pk, again.item_id, again.attempt, 0.9, T0 + LEASE + 2).granted


def test_without_a_budget_every_hold_is_granted(store: Store) -> None:
    submit(store, "b", 1)
    (a,) = claim(store)
    check = store.hold_budget(a.batch.pk, a.item_id, a.attempt, 1e9, T0)
    assert check.granted and check.budget is None


def test_set_budget_and_pause_with_a_reason_then_resume_clears_it(store: Store) -> None:
    submit(store, "b", 2)
    assert store.set_budget("b", 2.5, T0).budget == 2.5
    paused = store.pause("b", T0 + 1, "budget reached")
    assert paused.state is BatchState.PAUSED and paused.pause_reason == "budget reached"
    # A second pause keeps the first reason.
    assert store.pause("b", T0 + 2, "something else").pause_reason == "budget reached"
    resumed = store.resume("b", T0 + 3)
    assert resumed.state is BatchState.QUEUED and resumed.pause_reason is None
    assert store.set_budget("b", None, T0 + 4).budget is None
    with pytest.raises(ConfigError):
        store.set_budget("b", -1.0, T0 + 5)
    reasons = [e.data.get("reason") for e in store.events("b") if e.kind == "batch.state"]
    assert "budget reached" in reasons


def test_every_usage_figure_rolls_up_from_items_to_the_batch(store: Store) -> None:
    submit(store, "b", 2)
    a, b = claim(store)
    store.record(
        [
            outcome(a, usage=Usage(100, 20, 0.5, 40, 5, 1, 0, 0.0)),
            outcome(b, usage=Usage(0, 0, 0.0, 0, 0, 0, 1, 0.25, 0)),
        ],
        T0 + 1,
    )
    assert store.get_batch("b").usage == Usage(100, 20, 0.5, 40, 5, 1, 1, 0.25)
    assert store.item("b", a.key).usage == Usage(100, 20, 0.5, 40, 5, 1, 0, 0.0)
    assert store.item("b", b.key).usage.saved_cost == 0.25


def test_unpriced_calls_roll_up_and_make_the_cost_a_lower_bound(store: Store) -> None:
    submit(store, "b", 3)
    a, b, c = claim(store)
    store.record([outcome(a, usage=Usage(100, 20, 0.0, calls=2, unpriced_calls=2))], T0 + 1)
    unknown = store.get_batch("b")
    assert unknown.usage.unpriced_calls == 2 and unknown.usage.cost_is_unknown
    assert store.item("b", a.key).usage.unpriced_calls == 2

    store.record(
        [
            outcome(b, usage=Usage(10, 5, 0.25, calls=1)),
            outcome(c, usage=Usage(10, 5, 0.0, calls=1, unpriced_calls=1)),
        ],
        T0 + 2,
    )
    partly = store.get_batch("b").usage
    assert (partly.calls, partly.unpriced_calls, partly.cost) == (4, 3, 0.25)
    assert not partly.cost_is_known and not partly.cost_is_unknown


def test_the_response_cache_keeps_the_first_answer_and_forgets_old_ones(store: Store) -> None:
    assert store.cache_get("k1") is None
    store.cache_put("k1", '{"answer": 1}', T0)
    store.cache_put("k1", '{"answer": 2}', T0 + 1)
    store.cache_put("k2", '{"answer": 3}', T0 + 100)
    assert store.cache_get("k1") == '{"answer": 1}'
    assert store.cache_prune(T0 + 50) == 1
    assert store.cache_get("k1") is None and store.cache_get("k2") == '{"answer": 3}'


def test_limits_are_kept_with_the_batch_and_given_with_its_claims(store: Store) -> None:
    submit(store, "b", 1, limits={"rate_limit": "25/min"})
    assert store.get_batch("b").limits == {"rate_limit": "25/min"}
    (a,) = claim(store)
    assert a.batch.limits == {"rate_limit": "25/min"}
