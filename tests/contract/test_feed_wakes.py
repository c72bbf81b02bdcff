"""``on_feed``: a store either wakes followers of its change feed after every commit that
changed it, from any process, or says it does not (None) and is polled through ``cursor()``."""

from __future__ import annotations

import threading

from batchyard.store import open_store
from batchyard.store.base import Store
from tests.contract.test_store import T0, outcome, submit


def _listening(store: Store) -> None:
    """Wait until the store's listener has run LISTEN and holds the presence lock that
    writers look for (PostgreSQL), and writers' last look at it has lapsed."""
    import psycopg

    from batchyard.store.postgres.connection import _PRESENCE, FEED_PRESENCE, PRESENCE_TTL

    key = (FEED_PRESENCE >> 32, FEED_PRESENCE & 0xFFFFFFFF)
    for _ in range(250):
        with psycopg.connect(store.url) as conn:
            row = conn.execute(_PRESENCE, key).fetchone()
        if row and row[0]:
            threading.Event().wait(PRESENCE_TTL)
            return
        threading.Event().wait(0.02)
    raise AssertionError("the feed listener never took its presence lock")


def test_every_commit_that_changes_the_feed_wakes_or_the_cursor_moves(store: Store) -> None:
    writer = open_store(store.url)
    woken = threading.Event()
    stop = store.on_feed(woken.set)
    try:
        if stop is None:  # a store without notifications: the cursor is what a poll reads
            before = store.cursor()
            submit(writer, "b1")
            assert store.cursor() > before
            return
        submit(writer, "b0")  # the writer looks before anyone listens, and must notice
        _listening(store)
        submit(writer, "b1")
        assert woken.wait(5), "no wake after a new batch"
        claims = writer.claim("w", {"t": 3}, 3, T0, 30.0)
        woken.clear()
        writer.record([outcome(c) for c in claims], T0 + 1)
        # Unlike on_change (claimable work), every change of the feed wakes a follower.
        assert woken.wait(5), "no wake after outcomes were recorded"
    finally:
        if stop is not None:
            stop()
        writer.close()
