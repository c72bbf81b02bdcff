"""Log hygiene under faults: a worker whose PostgreSQL connections are terminated twenty
times finishes its batch and says so in a few plain lines: at most one line when an outage
starts and one when it ends, no traceback (without -v), and none of the connection pool's
own warnings on stderr (they go to batchyard's logger at DEBUG)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchyard import Yard

psycopg = pytest.importorskip("psycopg")

BATCHYARD = Path(sys.executable).parent / "batchyard"
TASKS = """
import time

def nap(item):
    time.sleep(0.01)
    return item["n"]
"""
TERMINATIONS = 20


def _worker_backends(admin: Any, database: str) -> set[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'",
        (database,),
    ).fetchall()
    return {pid for (pid,) in rows}


def test_terminated_connections_make_a_few_plain_lines(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "naptasks.py").write_text(TASKS)
    (tmp_path / "naps.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(1500)))
    batch_id = subprocess.run(
        [str(BATCHYARD), "--db", pg_url, "submit", "naptasks:nap", "naps.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    worker = subprocess.Popen(
        [str(BATCHYARD), "--db", pg_url, "worker", "--until-idle", "--concurrency", "8"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    database = pg_url.rsplit("/", 1)[1]
    terminated: set[int] = set()
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # Once the worker is at work (a worker that cannot open its store exits at once).
        while not admin.execute("SELECT n_succeeded FROM batches").fetchone()[0]:
            assert worker.poll() is None and time.monotonic() < deadline
        while len(terminated) < TERMINATIONS and worker.poll() is None:
            assert time.monotonic() < deadline, "the worker never reconnected"
            fresh = _worker_backends(admin, database) - terminated
            if not fresh:
                continue  # wait for the worker to open a new connection
            for pid in fresh:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            terminated |= fresh
    _, err = worker.communicate(timeout=120)
    assert len(terminated) >= TERMINATIONS // 2, (len(terminated), err)
    assert worker.returncode == 0, err
    with Yard(pg_url) as yard:
        assert yard.batch(batch_id).status().counts.succeeded == 1500
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert not any("discarding" in line or "psycopg" in line for line in lines), err
    down = [line for line in lines if "store unavailable" in line]
    back = [line for line in lines if "store back after" in line]
    assert 1 <= len(down) <= len(terminated), err
    assert len(back) == len(down), err  # every outage said to end
    noise = [line for line in lines if line not in down and line not in back]
    assert len(noise) <= 4, noise  # the batch's own start/end lines, lost leases at most
