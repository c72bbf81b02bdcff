"""Claims stay index-driven on a big fresh batch whatever the server's statistics: with
autovacuum off for the items table (as on this machine's server, and as on a busy server
that has not caught up with a bulk insert), a 200,000-item submission used to leave the
planner guessing a handful of rows, and each claim sorted every pending item (0.5 s)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchyard import Yard
from batchyard.store.rules import span
from batchyard.store.working import _FRESH, _TAKE

psycopg = pytest.importorskip("psycopg")

ITEMS = 200_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def test_a_big_fresh_batch_is_claimed_through_the_primary_key(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE items SET (autovacuum_enabled = false)")
        assert (
            conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'items'").fetchone()[0]
            <= 0
        ), "a fresh database should have no statistics for items"
    yard = Yard(pg_url)
    try:
        batch = yard.submit("tests.procs.tasks:square", ({"n": n} for n in range(ITEMS)))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            pk = conn.execute("SELECT pk FROM batches WHERE id = %s", (batch.id,)).fetchone()[0]
            low, high = span(pk)
            # The claim of fresh items exactly as the store sends it (placeholders aside).
            claim = _TAKE.format(where=_FRESH, lock=" FOR UPDATE SKIP LOCKED", clear="")
            explain = "EXPLAIN (FORMAT JSON) " + claim.replace("?", "%s")
            params = (low, high, 512, "worker", 2e9, 30.0, 1e9, 1, 0)
            plan = conn.execute(explain, params).fetchone()[0]
            reltuples = conn.execute(
                "SELECT reltuples FROM pg_class WHERE relname = 'items'"
            ).fetchone()[0]
        nodes = _nodes(plan[0]["Plan"])
        kinds = [node["Node Type"] for node in nodes]
        assert "Sort" not in kinds, json.dumps(plan, indent=1)
        assert any(
            node["Node Type"] == "Index Scan" and node.get("Index Name") == "items_pkey"
            for node in nodes
        ), json.dumps(plan, indent=1)
        assert reltuples >= ITEMS * 0.9  # the store analyzed the table after the submission
        # And the claims really take the items in order through the worker's path.
        claims = yard.store.claim("w1", {"tests.procs.tasks:square": 512}, 512, 2e9, 30.0)
        assert [c.key for c in claims] == [str(n) for n in range(1, 513)]
    finally:
        yard.close()
