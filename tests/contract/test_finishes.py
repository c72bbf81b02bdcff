"""``Store.finishes``: when a batch's items finished, read in one bounded pass (a sample by
primary key, the last changed items by the feed's index), on every store."""

from __future__ import annotations

import pytest

from batchyard.errors import BatchNotFound
from batchyard.states import ItemState
from batchyard.store.base import Store
from tests.contract.test_store import T0, claim, finish, outcome, submit

S = ItemState


def test_a_batch_nothing_has_touched_has_no_finishes(store: Store) -> None:
    submit(store, "b1", 4)
    seen = store.finishes("b1")
    assert seen.sampled == () and seen.recent == () and seen.durations == ()
    assert seen.scale == 1.0 and seen.last_activity is None
    submit(store, "empty", 0)
    assert store.finishes("empty").sampled == ()
    with pytest.raises(BatchNotFound):
        store.finishes("nope")


def test_every_finish_of_a_small_batch_is_read_and_the_latest_activity_is_a_claim(
    store: Store,
) -> None:
    submit(store, "b1", 6)
    first = claim(store, 3, now=T0)
    store.record(
        [
            outcome(c, S.FAILED if n == 2 else S.SUCCEEDED, at=T0 + 10 + n)
            for n, c in enumerate(first)
        ],
        T0 + 12,
    )
    later = claim(store, 1, now=T0 + 20)
    seen = store.finishes("b1")
    assert seen.scale == 1.0
    assert seen.sampled == (T0 + 10, T0 + 11, T0 + 12)
    assert seen.recent == (T0 + 12, T0 + 11, T0 + 10)
    assert sorted(seen.durations) == [0.5, 0.5, 0.5]  # the outcomes' own run times
    assert seen.last_activity == T0 + 20  # the claim of the fourth item
    finish(store, later, at=T0 + 30)
    assert store.finishes("b1").last_activity == T0 + 30


def test_a_big_batch_is_sampled_and_each_sample_stands_for_its_share(store: Store) -> None:
    submit(store, "big", 40)
    done = claim(store, 20)
    for n, c in enumerate(done):  # one transaction each: "changed last" is then exact
        store.record([outcome(c, at=T0 + 1 + n)], T0 + 1 + n)
    seen = store.finishes("big", sample=10, recent=5)
    assert seen.scale == 4.0  # 40 items, 10 read
    # Items 1, 5, 9, 13, 17 of the 20 finished ones are in the sample: ids by position.
    assert len(seen.sampled) == 5 and seen.sampled == tuple(sorted(seen.sampled))
    assert len(seen.sampled) * seen.scale == 20
    assert seen.recent == tuple(T0 + 20 - n for n in range(5))  # the last 5 changed
    # Items still running count as activity, ended ones as finishes: claim more, read.
    claim(store, 2, now=T0 + 40)
    seen = store.finishes("big", sample=10, recent=5)
    assert seen.last_activity == T0 + 40 and seen.recent == tuple(T0 + 20 - n for n in range(3))
    # No sample asked for: only the items changed last are read.
    recent_only = store.finishes("big", sample=0, recent=5)
    assert recent_only.sampled == () and recent_only.recent == seen.recent
