"""What only the PostgreSQL store has: its migrations (upgrade in place, concurrent first
opens, a newer schema refused), LISTEN/NOTIFY across connections, the connection bound, and
clear errors when the server is away or psycopg is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import Yard
from batchyard.errors import ConfigError, SchemaTooNew, StoreUnavailable
from batchyard.models import BatchOptions
from batchyard.states import BatchState, ItemState
from batchyard.store import open_store
from batchyard.store.base import NewItem, Outcome
from batchyard.store.rows import migrations
from tests.procs.pgdb import Databases, require_server, url_of

psycopg = pytest.importorskip("psycopg")
from batchyard.store.postgres import PostgresStore  # noqa: E402

T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_url(pg_databases: Databases) -> Iterator[str]:
    """A database with no schema at all."""
    require_server()
    import uuid

    name = f"batchyard_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url_of("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = url_of(name)
    try:
        yield url
    finally:
        pg_databases.drop(url)


def schema(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, column_name"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY indexname"
        ).fetchall()
        versions = conn.execute("SELECT version, name FROM schema_version ORDER BY 1").fetchall()
    return {"columns": columns, "indexes": indexes, "versions": versions}


def items(n: int) -> list[list[NewItem]]:
    return [[NewItem(str(p), p, json.dumps({"n": p})) for p in range(1, n + 1)]]


def test_a_first_version_database_is_upgraded_and_keeps_working(
    empty_url: str, pg_url: str
) -> None:
    first = migrations("postgres")[0]
    with psycopg.connect(empty_url) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        for statement in first.statements():
            conn.execute(statement.encode())
        conn.execute("INSERT INTO schema_version VALUES (1, %s, 0)", (first.name,))
        conn.execute(
            "INSERT INTO batches (pk, id, task, state, sealed, max_attempts, n_pending, "
            "created_at, updated_at) VALUES (1, 'batch_old', 't', 'queued', 1, 2, 1, 0, 0)"
        )
        conn.execute(
            "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, seq) "
            "VALUES (4294967297, 1, 'k1', 1, 'pending', '{\"n\": 1}', 2, 0)"
        )
    store = PostgresStore(empty_url)
    try:
        assert store.schema_version() == len(migrations("postgres"))
        (claim,) = store.claim("w", {"t": 5}, 5, T0, 30.0)
        done = store.record(
            [Outcome(claim.item_id, 1, "k1", 1, ItemState.FAILED, T0, T0 + 1, error="boom")],
            T0 + 1,
        )
        assert done.ended == ["batch_old"]
        assert store.get_batch("batch_old").state is BatchState.FAILED
        # Where the failed attempt ran (this outcome names no worker), then its error.
        assert [line.message for line in store.item_logs("batch_old", "k1")] == [
            "on a worker",
            "boom",
        ]
    finally:
        store.close()
    # pg_url's database was made from the template, i.e. by a fresh open.
    assert schema(empty_url) == schema(pg_url)


def test_concurrent_first_opens_apply_each_migration_once(empty_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_close() -> None:
        try:
            start.wait()
            PostgresStore(empty_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [v for v, _ in schema(empty_url)["versions"]] == [
        m.version for m in migrations("postgres")
    ]


def test_a_database_from_a_newer_batchyard_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(SchemaTooNew, match="99"):
        PostgresStore(pg_url)


def test_changes_reach_listeners_on_other_connections(pg_url: str) -> None:
    listener, writer = PostgresStore(pg_url), PostgresStore(pg_url)
    woken = threading.Event()
    stop = listener.on_change(woken.set)
    try:
        # Let the listener thread LISTEN before the first NOTIFY.
        for _ in range(100):
            with psycopg.connect(pg_url) as conn:
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'"
                ).fetchone()[0]
            if n:
                break
            threading.Event().wait(0.05)
        writer.create_batch("b1", BatchOptions(task="t", max_attempts=1), items(3), T0)
        assert woken.wait(5), "no wake after a new batch"
        woken.clear()
        writer.pause("b1", T0)
        writer.resume("b1", T0)
        assert woken.wait(5), "no wake after a resume"
        claims = writer.claim("w", {"t": 3}, 3, T0, 30.0)
        woken.clear()
        writer.record(
            [
                Outcome(c.item_id, c.batch.pk, c.key, 1, ItemState.FAILED, T0, T0, error="x")
                for c in claims
            ],
            T0,
        )
        assert not woken.wait(0.3), "a failure made nothing claimable, yet woke listeners"
        writer.retry_failed("b1", T0)
        assert woken.wait(5), "no wake after a retry"
    finally:
        stop()
        listener.close()
        writer.close()


def test_one_store_holds_a_bounded_number_of_connections(pg_url: str) -> None:
    store = open_store(f"{pg_url}?pool_size=2&application_name=bounded")
    try:
        stop = store.on_change(lambda: None)
        done = threading.Barrier(9)

        def read() -> None:
            for _ in range(50):
                store.get_batch  # noqa: B018
                store.cursor()
            done.wait()

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        done.wait()
        with psycopg.connect(pg_url) as conn:
            used = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        assert used <= 3  # two pooled, one listening
        for t in threads:
            t.join()
        stop()
    finally:
        store.close()


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match=r"cannot reach PostgreSQL at .*5999"):
        open_store("postgresql://postgres@127.0.0.1:5999/nothing")
    with pytest.raises(ConfigError, match="pool_size"):
        open_store("postgresql://postgres@127.0.0.1:5999/nothing?pool_size=x")


def test_the_cli_reports_an_unreachable_server_without_a_traceback(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "batchyard"),
            "--db",
            "postgresql://u@127.0.0.1:5999/x",
            "list",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 1, run
    assert "cannot reach PostgreSQL" in run.stderr
    assert "Traceback" not in run.stderr


def test_without_psycopg_the_error_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from batchyard.store import open_store\n"
        "try:\n    open_store('postgresql://u@h/db')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "ConfigError" in run.stdout, run
    assert "pip install 'batchyard[postgres]'" in run.stdout


def test_a_yard_works_on_postgres(pg_url: str) -> None:
    with Yard(pg_url) as yard:
        batch = yard.submit(
            "tests.procs.tasks:square", [{"id": f"k{n}", "n": n} for n in range(50)]
        )
        stats = yard.run_until_idle(poll_interval=0.02)
        assert stats.recorded == 50
        assert batch.status().state is BatchState.COMPLETED
