"""The feed follower over a real store: every change reaches the subscribers that want it
(and only those), once, in cursor order, with a status and an end; a subscriber too slow
to keep up is closed without holding back the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from batchyard.models import BatchOptions
from batchyard.states import ItemState
from batchyard.store import open_store
from batchyard.store.base import NewItem, Outcome, Store
from batchyard.web.feed import FeedFollower
from batchyard.web.replay import replay
from batchyard.web.stream_events import Mark, StreamEvent
from batchyard.web.subscriber import Subscriber

T0 = 1_700_000_000.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


def submit(store: Store, batch_id: str, n: int, owner: str | None = None) -> None:
    items = [NewItem(str(i), i, json.dumps({"n": i})) for i in range(1, n + 1)]
    store.create_batch(batch_id, BatchOptions(task="t", max_attempts=1, owner=owner), [items], T0)


def work(store: Store, n: int, state: ItemState = ItemState.SUCCEEDED) -> None:
    """Claim up to ``n`` items and record them, in one commit for all."""
    claims = store.claim("w", {"t": n}, n, T0, 30.0)
    store.record(
        [Outcome(c.item_id, c.batch.pk, c.key, c.attempt, state, T0, T0 + 1) for c in claims],
        T0 + 1,
    )


async def collect(sub: Subscriber, until: str = "end", timeout: float = 10.0) -> list[StreamEvent]:
    """Events of ``sub`` up to a take that held one of kind ``until`` (or it closed)."""
    got: list[StreamEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            taken = await sub.take(0.05)
            got += taken
            if any(event.kind == until for event in taken) or sub.is_done:
                return got


def test_a_subscriber_gets_each_item_change_its_status_and_the_end(store: Store) -> None:
    async def main() -> list[StreamEvent]:
        feed = FeedFollower(store, poll=0.01)
        await feed.start()
        try:
            submit(store, "b1", 5)
            sub = feed.subscribe(None, ["b1"])
            await asyncio.to_thread(work, store, 5)
            return await collect(sub)
        finally:
            await feed.stop()

    events = asyncio.run(main())
    items = [e for e in events if e.kind == "item"]
    assert {e.data["key"] for e in items if e.data["state"] == "succeeded"} == set("12345")
    assert [e.mark.key() for e in items] == sorted(e.mark.key() for e in items)
    # What the store's feed holds for the batch, at the same cursors.
    final = {i.key: i.seq for i in store.item_changes("b1", 0, payloads=False, results=False)}
    assert {e.data["key"]: e.mark.seq for e in items if e.data["state"] == "succeeded"} == final
    assert events[-1].kind == "end" and events[-1].data["state"] == "completed"
    assert events[-2].kind == "status" and events[-2].data["state"] == "completed"
    assert all(e.batch_id == "b1" for e in events)


def test_wide_subscribers_see_their_owners_batches_only(store: Store) -> None:
    async def main() -> tuple[list[StreamEvent], list[StreamEvent]]:
        feed = FeedFollower(store, poll=0.01)
        await feed.start()
        try:
            alice, admin = feed.subscribe("alice", None), feed.subscribe(None, None)
            assert feed.subscribers == 2
            submit(store, "a1", 2, owner="alice")
            submit(store, "b1", 2, owner="bob")
            await asyncio.to_thread(work, store, 4)
            seen_alice = await collect(alice)
            seen_admin: list[StreamEvent] = []
            while {e.batch_id for e in seen_admin if e.kind == "end"} != {"a1", "b1"}:
                seen_admin += await collect(admin)
            return seen_alice, seen_admin
        finally:
            await feed.stop()

    alice, admin = asyncio.run(main())
    assert {e.batch_id for e in alice} == {"a1"}
    assert {e.batch_id for e in admin} == {"a1", "b1"}


def test_a_slow_subscriber_is_closed_and_the_others_get_everything(store: Store) -> None:
    async def main() -> tuple[Subscriber, list[StreamEvent]]:
        feed = FeedFollower(store, poll=0.01, queue_limit=30)
        await feed.start()
        try:
            submit(store, "b1", 40)
            slow, quick = feed.subscribe(None, ["b1"]), feed.subscribe(None, ["b1"])
            got: list[StreamEvent] = []
            for _ in range(8):  # the quick one reads as it goes, the slow one never does
                await asyncio.to_thread(work, store, 5)
                got += await collect(quick, until="status")
            if not any(e.kind == "end" for e in got):
                got += await collect(quick)
            return slow, got
        finally:
            await feed.stop()

    slow, got = asyncio.run(main())
    assert slow.closed is not None and "too slow" in slow.closed
    done = {e.data["key"] for e in got if e.kind == "item" and e.data["state"] == "succeeded"}
    assert len(done) == 40 and got[-1].kind == "end"


def test_a_replay_resumes_inside_one_commit_without_a_gap_or_a_duplicate(store: Store) -> None:
    submit(store, "b1", 6)
    work(store, 6)  # one commit: six items under one cursor
    upto = store.cursor()
    everything = replay(store, ["b1"], Mark(0), upto).events
    items = [e for e in everything if e.kind == "item"]
    assert len({e.mark.seq for e in items}) == 1 and len(items) == 6
    for cut in range(len(items)):
        rest = replay(store, ["b1"], items[cut].mark, upto).events
        assert [e.id for e in rest if e.kind == "item"] == [e.id for e in items[cut + 1 :]]
    assert [e.kind for e in everything[-2:]] == ["status", "end"]
