"""The store factories the contract suite runs over.

Add a backend by adding its name to ``STORES`` and a branch to ``make_store``; every test
taking the ``store`` fixture then runs against it too. Each test gets a fresh store (for
PostgreSQL a fresh database cloned from a template holding the schema), and after each test
every batch's kept counters must equal a recount of its item rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchyard.store.base import Store
from batchyard.store.sqlite import SqliteStore
from tests.procs.pgdb import Databases, require_server

STORES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    databases = Databases()
    try:
        yield databases
    finally:
        databases.close()


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "x.db")
    if kind == "postgres":
        require_server()
        from batchyard.store.postgres import PostgresStore

        databases: Databases = request.getfixturevalue("pg_databases")
        url = databases.create()
        request.addfinalizer(lambda: databases.drop(url))
        return PostgresStore(url)
    raise AssertionError(f"unknown store kind {kind!r}")  # pragma: no cover


def assert_counters_agree(store: Store) -> None:
    """Every batch's kept counters equal a recount of its item rows, its re-runs by reason
    add up to its items' runs after their first, and its error clusters' failed items equal
    a recount of its failed item rows by signature."""
    after = None
    while True:
        page = store.list_batches(limit=100, after=after)
        for status in page.rows:
            assert status.counts == store.recount(status.id), status.id
            again = sum(max(item.runs - 1, 0) for item in store.items(status.id, limit=10**6))
            assert status.reruns.total == again, status.id
            assert_clusters_agree(store, status.id)
        if page.next is None:
            return
        after = page.next


def assert_clusters_agree(store: Store, batch_id: str) -> None:
    """A batch's clusters count exactly its failed items by signature, and never fewer
    attempts than items."""
    clusters = store.error_clusters(batch_id)
    kept = {c.id: c.items for c in clusters if c.items}
    assert kept == store.recount_clusters(batch_id), batch_id
    assert all(c.attempts >= c.items >= 0 for c in clusters), clusters


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = make_store(request.param, tmp_path, request)
    try:
        yield opened
        assert_counters_agree(opened)
    finally:
        opened.close()


@pytest.fixture
def agree(store: Store) -> Callable[[], None]:
    """Call it mid-scenario to check counters against a recount."""
    return lambda: assert_counters_agree(store)
