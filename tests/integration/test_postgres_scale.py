"""Many worker processes on one PostgreSQL database: 10,000 items over 4 workers with none
run twice and none lost, a worker SIGKILLed mid-run whose items the others finish, a server
restart mid-batch, and 40 workers within ``max_connections = 100``.

Executions are counted in a ledger file outside the database (one line per execution).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard import Batch, BatchState, ItemState, Yard
from tests.integration.test_processes import Workers, wait_for
from tests.procs.tasks import expected, read_ledger

psycopg = pytest.importorskip("psycopg")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.alone,  # restarts the server; counts its connections
    pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and pg_ctlcluster: Linux only"),
]

TASK = "tests.procs.tasks:ledgered"
N_ITEMS = 10_000


@pytest.fixture
def yard(pg_url: str) -> Iterator[Yard]:
    with Yard(pg_url) as y:
        yield y


@pytest.fixture
def workers(pg_url: str, tmp_path: Path, yard: Yard) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(pg_url, logs)
    try:
        yield pool
    finally:
        pool.close()


def submit(yard: Yard, ledger: Path, n: int = N_ITEMS, sleep: float = 0.002) -> Batch:
    return yard.submit(
        TASK,
        ({"id": f"k{i}", "n": i, "ledger": str(ledger), "sleep": sleep} for i in range(n)),
        max_attempts=5,
    )


def check_all_recorded_once(yard: Yard, batch_id: str, n: int) -> None:
    """Every item succeeded with its own result, exactly once in the counters."""
    batch = yard.batch(batch_id)
    status = batch.status()
    assert status.state is BatchState.COMPLETED, status
    assert status.counts.succeeded == n
    assert yard.store.recount(batch_id) == status.counts
    seen = 0
    for item in batch.items():
        assert item.state is ItemState.SUCCEEDED, item
        assert item.result == expected(item.payload["n"]), item
        seen += 1
    assert seen == n


def connections(url: str) -> int:
    """Client connections to the store's database, besides this one."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0])


def test_four_workers_ten_thousand_items_none_twice_none_lost(
    yard: Yard, workers: Workers, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    batch = submit(yard, ledger)
    procs = [workers.start("--lease", "30", "--concurrency", "32") for _ in range(4)]
    for proc in procs:
        assert workers.finish(proc, 120) == 0, workers.stderr(proc)

    check_all_recorded_once(yard, batch.id, N_ITEMS)
    runs = read_ledger(ledger)
    per_key = Counter(line["key"] for line in runs)
    assert len(per_key) == N_ITEMS  # none lost
    assert [k for k, c in per_key.items() if c > 1] == []  # none twice
    stats = [workers.stats(proc) for proc in procs]
    assert sum(s["recorded"] for s in stats) == N_ITEMS
    assert all(s["rejected"] == 0 for s in stats), stats
    # Every worker took a share: the claims spread over the processes.
    assert all(s["claimed"] > 0 for s in stats), stats


def test_a_sigkilled_worker_items_are_finished_by_the_others(
    yard: Yard, workers: Workers, tmp_path: Path, pg_url: str
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    batch = submit(yard, ledger, sleep=0.005)
    lease = 2.0
    procs = [workers.start("--lease", str(lease), "--concurrency", "16") for _ in range(4)]
    victim = procs[0]
    wait_for(
        lambda: sum(1 for line in read_ledger(ledger) if line["pid"] == victim.pid) > 200,
        60,
        "the victim to run some items",
        workers.report,
    )
    victim.kill()
    assert victim.wait(10) == -signal.SIGKILL
    held = held_by(pg_url, victim.pid)
    for proc in procs[1:]:
        assert workers.finish(proc, 180) == 0, workers.stderr(proc)

    check_all_recorded_once(yard, batch.id, N_ITEMS)
    runs = read_ledger(ledger)
    per_key = Counter(line["key"] for line in runs)
    assert len(per_key) == N_ITEMS
    twice = {k for k, c in per_key.items() if c > 1}
    # Only what the victim was running when it died ran again, and only once more.
    victims = {line["key"] for line in runs if line["pid"] == victim.pid}
    assert twice <= victims, twice - victims
    assert all(per_key[k] == 2 for k in twice)
    # What it held when it died was taken back by the lease sweep and finished elsewhere.
    assert held, "the victim held nothing when it died"
    for key in held:
        item = batch.item(key)
        assert item.state is ItemState.SUCCEEDED and item.attempts == 2, item
        errors = [line.message for line in batch.logs(key) if line.kind == "error"]
        assert any("lease expired" in m for m in errors), errors
        assert {line["pid"] for line in runs if line["key"] == key} - {victim.pid}


def held_by(url: str, pid: int) -> list[str]:
    """The keys a worker process holds leases on right now."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT key FROM items WHERE state = 'running' AND worker LIKE %s", (f"%:{pid}",)
        ).fetchall()
    return [row[0] for row in rows]


def _restart_server(pg_url: str) -> None:
    version, cluster = _cluster_serving(pg_url)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _cluster_serving(pg_url: str) -> tuple[str, str]:
    """The installed cluster (version, name) that listens on the test URL's port: the
    machine's own PostgreSQL, whichever version it is."""
    from urllib.parse import urlsplit

    port = str(urlsplit(pg_url).port or 5432)
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        version, cluster, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, cluster
    pytest.fail(f"no local PostgreSQL cluster listens on port {port}:\n{listing}")


def test_workers_survive_a_server_restart_mid_batch(
    yard: Yard, workers: Workers, tmp_path: Path, pg_url: str
) -> None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("restarting PostgreSQL needs pg_ctlcluster and root")
        pytest.skip("SKIPPED POSTGRES RESTART: needs pg_ctlcluster and root")
    ledger = tmp_path / "ledger.jsonl"
    batch = submit(yard, ledger, sleep=0.005)
    batch_id = batch.id
    procs = [workers.start("--lease", "30", "--concurrency", "16") for _ in range(4)]
    wait_for(
        lambda: len(read_ledger(ledger)) > N_ITEMS // 4,
        60,
        "a quarter of the batch to run",
        workers.report,
    )
    _restart_server(pg_url)
    for proc in procs:
        assert workers.finish(proc, 180) == 0, workers.stderr(proc)
        assert proc.poll() == 0

    # The test's own store reconnects too (its pool replaces broken connections).
    for _ in range(3):
        try:
            yard.store.cursor()
            break
        except Exception:
            time.sleep(0.5)
    check_all_recorded_once(yard, batch_id, N_ITEMS)
    runs = read_ledger(ledger)
    per_key = Counter(line["key"] for line in runs)
    assert len(per_key) == N_ITEMS  # nothing lost
    stats = [workers.stats(proc) for proc in procs]
    # No duplicate recorded outcome: the counters say N once each, and a commit whose
    # answer the restart swallowed was refused when tried again (rejected), not applied twice.
    assert sum(s["recorded"] for s in stats) <= N_ITEMS
    assert yard.store.get_batch(batch_id).counts.succeeded == N_ITEMS


@pytest.mark.timeout(600)  # starting 40 Python processes takes a while on a small machine
def test_forty_workers_fit_in_max_connections(
    yard: Yard, workers: Workers, tmp_path: Path, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
    ledger = tmp_path / "ledger.jsonl"
    ready = [tmp_path / f"ready{n}" for n in range(40)]
    procs = [
        workers.start(
            "--forever",
            "--lease",
            "30",
            "--concurrency",
            "4",
            "--ready",
            str(path),
            "--poll",
            "0.2",
        )
        for path in ready
    ]
    wait_for(lambda: all(p.exists() for p in ready), 300, "40 workers to start", workers.report)
    batch = submit(yard, ledger, n=4000, sleep=0.01)
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, connections(pg_url))
        return batch.status().is_finished

    wait_for(finished, 180, "the batch to finish", workers.report)
    peak = max(peak, connections(pg_url))
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert workers.finish(proc, 60) == 0, workers.stderr(proc)
    runs = read_ledger(ledger)
    assert len({line["pid"] for line in runs}) > 1
    # Two per worker (one pooled, one LISTEN) plus this test's own store.
    assert peak <= 2 * 40 + 4, peak
    assert peak < max_connections, (peak, max_connections)
    print(f"40 workers: peak {peak} connections of max_connections={max_connections}")
