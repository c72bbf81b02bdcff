"""Template versions, their usage, and re-runs of batches, the same on every store. Times
are given explicitly; nothing sleeps."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from batchyard.errors import BatchNotFound, Conflict, StoreError, TemplateExists, TemplateNotFound
from batchyard.models import TemplateRef, Usage
from batchyard.states import BatchState, ItemState
from batchyard.store import templating
from batchyard.store.base import Store
from batchyard.templates import NewVersion
from tests.contract.test_store import T0, claim, new_items, options, outcome, submit

S = ItemState


def version(name: str = "lead", base: int = 0, **params: object) -> NewVersion:
    return NewVersion(name, base, "llm", {"model": "m", **params}, f"v{base + 1}", "ann")


def test_versions_are_numbered_from_one_and_never_change(store: Store) -> None:
    first = store.add_template_version(version(template="Hi"), T0)
    second = store.add_template_version(version(base=1, template="Hello"), T0 + 1)
    assert (first.version, second.version) == (1, 2)
    assert [(t.version, t.params["template"]) for t in store.template_versions("lead")] == [
        (1, "Hi"),
        (2, "Hello"),
    ]
    one = store.template_versions("lead")[0]
    assert (one.task, one.description, one.author, one.archived, one.created_at) == (
        "llm",
        "v1",
        "ann",
        False,
        T0,
    )
    assert store.template_versions("nobody") == []


def test_a_version_written_on_a_stale_base_is_refused(store: Store) -> None:
    store.add_template_version(version(), T0)
    with pytest.raises(TemplateExists):
        store.add_template_version(version(), T0)
    store.add_template_version(version(base=1, x=1), T0)
    with pytest.raises(StoreError, match="is at version 2, not 1"):
        store.add_template_version(version(base=1, x=2), T0)
    assert [t.version for t in store.template_versions("lead")] == [1, 2]


def test_templates_are_listed_by_name_then_version(store: Store) -> None:
    store.add_template_version(version("b"), T0)
    store.add_template_version(version("a"), T0)
    store.add_template_version(version("b", base=1), T0)
    assert [str(t.ref) for t in store.list_templates()] == ["a@1", "b@1", "b@2"]


def test_archiving_sets_a_flag_and_keeps_the_version(store: Store) -> None:
    store.add_template_version(version(), T0)
    assert store.archive_template("lead", 1, T0).archived
    assert store.archive_template("lead", 1, T0).archived  # again: no change, no error
    (kept,) = store.template_versions("lead")
    assert kept.archived and kept.params == {"model": "m"}
    with pytest.raises(TemplateNotFound, match="no version 2"):
        store.archive_template("lead", 2, T0)


def test_a_batch_records_its_template_version_and_what_it_re_runs(store: Store) -> None:
    submit(store, "b1", 2, template=TemplateRef("lead", 3), rerun_of="b0")
    status = store.get_batch("b1")
    assert (status.template, status.rerun_of) == (TemplateRef("lead", 3), "b0")
    assert status.as_dict()["template"] == "lead@3"
    (listed,) = store.list_batches().rows
    assert (listed.template, listed.rerun_of) == (TemplateRef("lead", 3), "b0")
    submit(store, "b2", 1)
    assert (store.get_batch("b2").template, store.get_batch("b2").rerun_of) == (None, None)


def test_usage_sums_the_batches_of_each_version(store: Store) -> None:
    for batch_id, ref in (("a", 1), ("b", 1), ("c", 2)):
        submit(store, batch_id, 2, template=TemplateRef("lead", ref))
    submit(store, "other", 2, template=TemplateRef("other", 1))
    results = []
    for c in claim(store, limit=100):
        if c.batch.id == "a" and c.key == "1":
            results.append(outcome(c, S.FAILED))
        else:
            results.append(outcome(c, usage=Usage(100, 10, 0.01, calls=1)))
    store.record(results, T0 + 1)
    one, two = store.template_usage("lead")
    assert (one.version, one.batches, one.items, one.succeeded, one.failed) == (1, 2, 4, 3, 1)
    assert (one.tokens_in, one.tokens_out, one.calls) == (300, 30, 3)
    assert one.cost == pytest.approx(0.03)
    assert one.success_rate == pytest.approx(0.75)
    assert (two.version, two.batches, two.items, two.succeeded) == (2, 1, 2, 2)
    assert store.template_usage("nobody") == []


def test_template_batches_are_newest_first(store: Store) -> None:
    for batch_id in ("a", "b", "c"):
        submit(store, batch_id, 1, template=TemplateRef("lead", 1))
    submit(store, "d", 1, template=TemplateRef("lead", 2))
    assert store.template_batches("lead", 1) == ["c", "b", "a"]
    assert store.template_batches("lead", 1, limit=1) == ["c"]


# -- re-runs -----------------------------------------------------------------------------


def finish_some(store: Store, batch_id: str, failed: set[str]) -> None:
    claims = [c for c in claim(store, limit=1000) if c.batch.id == batch_id]
    store.record([outcome(c, S.FAILED if c.key in failed else S.SUCCEEDED) for c in claims], T0 + 1)


def test_a_rerun_copies_every_item_fresh_and_in_order(store: Store) -> None:
    submit(store, "old", 5)
    finish_some(store, "old", {"2", "4"})
    status = store.rerun_batch("old", "new", options(rerun_of="old"), None, T0 + 2)
    assert status.state is BatchState.QUEUED
    assert (status.counts.pending, status.counts.total, status.rerun_of) == (5, 5, "old")
    items = store.items("new")
    assert [(i.key, i.position, i.state) for i in items] == [
        (str(n), n, S.PENDING) for n in range(1, 6)
    ]
    assert [i.payload for i in items] == [{"n": n} for n in range(1, 6)]
    assert all(i.attempts == 0 and i.result is None and i.error is None for i in items)
    assert store.get_batch("old").counts.failed == 2  # the old batch is untouched
    assert ("batch.rerun", {"rerun_of": "old", "items": 5}) in [
        (e.kind, e.data) for e in store.events("new")
    ]


def test_a_rerun_of_failed_items_numbers_them_afresh_and_runs(store: Store) -> None:
    submit(store, "old", 6)
    finish_some(store, "old", {"2", "5"})
    store.rerun_batch("old", "new", options(), [S.FAILED], T0 + 2)
    assert [(i.key, i.position) for i in store.items("new")] == [("2", 1), ("5", 2)]
    again = claim(store, now=T0 + 3)
    assert sorted(c.key for c in again) == ["2", "5"]
    store.record([outcome(c, at=T0 + 4) for c in again], T0 + 4)
    assert store.get_batch("new").state is BatchState.COMPLETED


def test_a_big_rerun_goes_in_several_transactions(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(templating, "COMMIT_ITEMS", 4)
    submit(store, "old", 11)
    finish_some(store, "old", {"1", "3", "4", "8", "9", "11"})
    store.rerun_batch("old", "new", options(), [S.FAILED], T0 + 2)
    got = [(i.key, i.position) for i in store.items("new")]
    assert got == [(k, n) for n, k in enumerate(["1", "3", "4", "8", "9", "11"], start=1)]
    store.rerun_batch("old", "all", options(), None, T0 + 2)
    assert [i.key for i in store.items("all")] == [str(n) for n in range(1, 12)]


def test_a_rerun_with_nothing_to_copy_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(store, "old", 3)
    finish_some(store, "old", set())
    with pytest.raises(Conflict, match="no items in the states asked for"):
        store.rerun_batch("old", "new", options(), [S.FAILED], T0 + 2)
    monkeypatch.setattr(templating, "COMMIT_ITEMS", 2)  # the path of big batches too
    with pytest.raises(Conflict):
        store.rerun_batch("old", "new", options(), [S.CANCELLED], T0 + 2)
    assert [b.id for b in store.list_batches().rows] == ["old"]
    with pytest.raises(BatchNotFound):
        store.rerun_batch("nope", "new", options(), None, T0)


def test_a_rerun_keeps_no_item_in_the_clients_memory(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(templating, "COMMIT_ITEMS", 10_000)  # several transactions
    n = 30_000
    payload = json.dumps({"text": "x" * 400})
    chunks = [
        [item._replace(payload=payload) for item in new_items(min(10_000, n - start), start + 1)]
        for start in range(0, n, 10_000)
    ]
    store.create_batch("old", options(), chunks, T0)
    del chunks
    tracemalloc.start()
    try:
        store.rerun_batch("old", "new", options(), None, T0 + 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.get_batch("new").counts.pending == n
    # 30,000 payloads of 400 bytes would be 12 MB passing through Python: none did.
    assert peak < 1_000_000, peak
