"""What only the SQLite store does: claims come back as one JSON text, or row by row when
that text would pass SQLite's longest string."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from batchyard.models import BatchOptions
from batchyard.states import ItemState
from batchyard.store.base import NewItem, Outcome
from batchyard.store.sqlite import SqliteStore

T0 = 1_700_000_000.0


def _items(n: int) -> list[NewItem]:
    payloads = [{"id": i, "text": 'a "quoted" line\n' * 6, "n": i} for i in range(n)]
    return [NewItem(str(i), i + 1, json.dumps(p)) for i, p in enumerate(payloads)]


def test_claims_too_big_for_one_json_text_are_read_row_by_row(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "big.db")
    try:
        items = _items(8)
        store.create_batch("b1", BatchOptions(task="t"), [items], T0)
        # Room for every statement of a claim but the one JSON text of 8 items: SQLite
        # refuses that one (string or blob too big) and the claim reads rows instead.
        store._conn().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 600)
        claims = store.claim("w1", {"t": 8}, 8, T0, 30.0)
        assert sorted((c.key, c.payload, c.attempt) for c in claims) == sorted(
            (item.key, item.payload, 1) for item in items
        )
        done = store.record(
            [
                Outcome(c.item_id, c.batch.pk, c.key, c.attempt, ItemState.SUCCEEDED, T0, T0 + 1)
                for c in claims
            ],
            T0 + 1,
        )
        assert done.rejected == []
        assert store.get_batch("b1").counts.succeeded == 8
    finally:
        store.close()


def test_a_claim_gives_back_each_payload_as_it_was_submitted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "exact.db")
    try:
        odd = ['{"s":"\\u00e9 \\"x\\" \\\\ \\n","e":"é","u":"\\ud83d\\ude00"}', '{"n":1e3}']
        items = [NewItem(str(i), i + 1, text) for i, text in enumerate(odd)]
        store.create_batch("b1", BatchOptions(task="t"), [items], T0)
        claims = store.claim("w1", {"t": 8}, 8, T0, 30.0)
        assert sorted((c.key, c.payload) for c in claims) == [("0", odd[0]), ("1", odd[1])]
    finally:
        store.close()
