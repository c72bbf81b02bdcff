"""Idempotency keys on both stores: the same key with the same input gives the first batch
and writes nothing, even when twenty submissions race; the same key with other input is
refused; keys lapse, are pruned, and go with a batch that failed to upload or was deleted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.errors import IdempotencyConflict, InputError
from batchyard.selection import Selection
from batchyard.store import open_store
from batchyard.store.base import Idempotency, NewItem, Store
from tests.contract.conftest import make_store
from tests.contract.test_datasets import leads, load
from tests.contract.test_store import T0, new_items, options

DAY = 86_400.0


def key(name: str = "k1", now: float = T0) -> Idempotency:
    return Idempotency(name, now + DAY)


def batches(store: Store) -> list[str]:
    return [status.id for status in store.list_batches(limit=100).rows]


def test_the_same_key_and_input_gives_the_first_batch(store: Store) -> None:
    first = store.create_batch("b1", options(), [new_items(5)], T0, key())
    again = store.create_batch("b2", options(), [new_items(5)], T0 + 1, key())
    assert (first.id, again.id) == ("b1", "b1")
    assert batches(store) == ["b1"]
    assert store.get_batch("b1").counts.total == 5


def test_chunked_input_is_compared_whole(store: Store) -> None:
    chunks = [new_items(3), new_items(3, 4), new_items(2, 7)]
    assert store.create_batch("b1", options(), chunks, T0, key()).id == "b1"
    # The same items cut into other chunks are the same input.
    rechunked = [new_items(5), new_items(3, 6)]
    assert store.create_batch("b2", options(), rechunked, T0, key()).id == "b1"
    assert store.get_batch("b1").counts.total == 8
    # One more item is other input.
    with pytest.raises(IdempotencyConflict, match=r"'k1'.*other input") as caught:
        store.create_batch("b3", options(), [*chunks, new_items(1, 9)], T0, key())
    assert caught.value.batch_id == "b1"
    assert batches(store) == ["b1"]


@pytest.mark.parametrize(
    "change",
    [
        {"task": "other"},
        {"params": {"model": "m2"}},
        {"max_attempts": 5},
        {"name": "another name"},
    ],
)
def test_the_same_key_with_other_options_is_refused(store: Store, change: dict[str, Any]) -> None:
    store.create_batch("b1", options(), [new_items(2)], T0, key())
    with pytest.raises(IdempotencyConflict):
        store.create_batch("b2", options(**change), [new_items(2)], T0, key())
    assert batches(store) == ["b1"]


def test_other_payloads_under_the_same_keys_are_refused(store: Store) -> None:
    store.create_batch("b1", options(), [new_items(2)], T0, key())
    changed = [NewItem(it.key, it.position, '{"n": -1}') for it in new_items(2)]
    with pytest.raises(IdempotencyConflict):
        store.create_batch("b2", options(), [changed], T0, key())


def test_other_keys_make_other_batches(store: Store) -> None:
    store.create_batch("b1", options(), [new_items(2)], T0, key("k1"))
    store.create_batch("b2", options(), [new_items(2)], T0, key("k2"))
    store.create_batch("b3", options(), [new_items(2)], T0)
    assert sorted(batches(store)) == ["b1", "b2", "b3"]


def test_a_lapsed_key_is_taken_afresh_and_pruned(store: Store) -> None:
    store.create_batch("b1", options(), [new_items(2)], T0, Idempotency("k1", T0 + 10))
    # Past its expiry the key is free again, even for other input.
    later = store.create_batch("b2", options(task="other"), [new_items(1)], T0 + 11, key("k1"))
    assert later.id == "b2"
    store.create_batch("b3", options(), [new_items(1)], T0, Idempotency("k3", T0 + 10))
    store.prune(finished_before=0, now=T0 + 11)  # deletes no batch, only lapsed keys
    assert store.create_batch("b4", options(task="x"), [new_items(1)], T0 + 12, key("k3")).id == (
        "b4"
    )


def test_a_failed_upload_frees_its_key(store: Store) -> None:
    def failing() -> Iterator[list[NewItem]]:
        yield new_items(2)
        yield new_items(2, 3)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        store.create_batch("b1", options(), failing(), T0, key())
    assert store.create_batch("b2", options(), [new_items(4)], T0, key()).id == "b2"


def test_a_deleted_batch_frees_its_key(store: Store) -> None:
    store.create_batch("b1", options(), [new_items(1)], T0, key())
    store.cancel("b1", T0)
    store.delete_batch("b1", T0)
    assert store.create_batch("b2", options(), [new_items(1)], T0, key()).id == "b2"


def test_a_second_submission_waits_for_the_first_upload(store: Store) -> None:
    """While the first is uploading its key holds no fingerprint yet: the second waits for
    it and then compares, so it can never see a half-made batch as its own."""
    halfway, go_on = threading.Event(), threading.Event()

    def slow() -> Iterator[list[NewItem]]:
        yield new_items(3)
        yield new_items(3, 4)
        halfway.set()
        assert go_on.wait(30)
        yield new_items(3, 7)

    first = threading.Thread(target=store.create_batch, args=("b1", options(), slow(), T0, key()))
    first.start()
    assert halfway.wait(30)
    got: list[str] = []
    second = threading.Thread(
        target=lambda: got.append(store.create_batch("b2", options(), [new_items(9)], T0, key()).id)
    )
    second.start()
    second.join(0.3)
    assert second.is_alive() and not got  # still waiting for the first upload
    go_on.set()
    first.join(30)
    second.join(30)
    assert got == ["b1"]
    assert batches(store) == ["b1"]
    assert store.get_batch("b1").counts.total == 9


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_twenty_racing_submissions_make_one_batch(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Twenty submissions at once, each on a store of its own (its own connections), as
    twenty processes would be: exactly one batch, and every one of them gets its id."""
    first = make_store(kind, tmp_path, request)
    stores = [first] + [open_store(first.url) for _ in range(19)]

    def submit(n: int, store: Store) -> str:
        chunks = [new_items(200), new_items(200, 201)]
        return store.create_batch(f"b{n}", options(), chunks, T0, key()).id

    try:
        got = _race(stores, submit)
        assert len(got) == 20 and len(set(got)) == 1, got
        assert batches(first) == got[:1]
        assert first.get_batch(got[0]).counts.total == 400
    finally:
        for store in stores:
            store.close()


def _race(stores: list[Store], submit: Callable[[int, Store], str]) -> list[str]:
    """``submit`` on every store at once (a thread each, let go together): its answers."""
    start = threading.Barrier(len(stores))
    got: list[str] = []
    errors: list[BaseException] = []

    def run(n: int, store: Store) -> None:
        start.wait()
        try:
            got.append(submit(n, store))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return got


def test_a_dataset_batch_under_a_key_is_made_once(store: Store) -> None:
    load(store, "leads", leads(6))
    picked = Selection.of(["employees>=30"], ["k3", "k5"])
    first = store.create_batch_from_dataset("b1", options(), "leads", picked, T0, key())
    again = store.create_batch_from_dataset("b2", options(), "leads", picked, T0 + 1, key())
    assert (first.id, again.id) == ("b1", "b1") and batches(store) == ["b1"]
    assert [i.key for i in store.items("b1")] == ["k3", "k5"]
    other = Selection.of(["employees>=30"], ["k3"])
    with pytest.raises(IdempotencyConflict) as caught:
        store.create_batch_from_dataset("b3", options(), "leads", other, T0 + 2, key())
    assert caught.value.batch_id == "b1" and batches(store) == ["b1"]
    # A key whose batch could not be made (no row matched) went with it: it is free again.
    none = Selection.of(["employees>=1000"])
    with pytest.raises(InputError, match="no rows of 'leads' match"):
        store.create_batch_from_dataset("b4", options(), "leads", none, T0, key("k2"))
    made = store.create_batch_from_dataset("b5", options(), "leads", picked, T0 + 3, key("k2"))
    assert made.id == "b5" and sorted(batches(store)) == ["b1", "b5"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_dataset_batches_racing_under_one_key_make_one(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight submissions of one selection at once, each on a store of its own: one batch."""
    first = make_store(kind, tmp_path, request)
    load(first, "leads", leads(6))
    stores = [first] + [open_store(first.url) for _ in range(7)]
    picked = Selection.of(["employees>=30"])
    try:
        got = _race(
            stores,
            lambda n, store: (
                store.create_batch_from_dataset(f"b{n}", options(), "leads", picked, T0, key()).id
            ),
        )
        assert len(got) == 8 and len(set(got)) == 1, got
        assert batches(first) == got[:1] and first.get_batch(got[0]).counts.total == 4
    finally:
        for store in stores:
            store.close()
