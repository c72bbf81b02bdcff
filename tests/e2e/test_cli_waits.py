"""Items waiting for a rate limit, as a user sees them: ``batchyard worker`` holds 48 items
against a 30/min limit; ``status`` and ``status --json`` say they wait (which key, how long)
and count them apart from those running; ``-v`` says so once; SIGTERM gives them back at
once, unspent, rather than after the 30 s grace.

Every wait is for something to appear, with a deadline; no fixed sleeps.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchyard import Yard
from tests.integration.test_processes import wait_for

BATCHYARD = str(Path(sys.executable).parent / "batchyard")
TASKS = """
async def quick(item):
    return item["n"]
"""
ITEMS = 60
CONCURRENCY = 48
GRACE = 30.0


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "limited.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def db_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'waits.db'}"


def cli(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [BATCHYARD, "--db", db_url(folder), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def status_json(folder: Path, batch_id: str) -> dict[str, Any]:
    view: dict[str, Any] = orjson.loads(cli(folder, "status", batch_id, "--json"))
    return view


@pytest.fixture
def worker(folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(folder / "worker.err", "wb") as err:
        proc = subprocess.Popen(
            [
                BATCHYARD,
                "--db",
                db_url(folder),
                "-v",
                "worker",
                "--concurrency",
                str(CONCURRENCY),
                "--grace",
                f"{GRACE:g}s",
            ],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_status_shows_the_wait_and_sigterm_gives_waiting_items_back_at_once(
    folder: Path, worker: subprocess.Popen[bytes]
) -> None:
    with Yard(db_url(folder)) as yard:
        batch_id = yard.submit(
            "limited:quick",
            [{"n": n} for n in range(ITEMS)],
            rate_limit="30/min",
            max_attempts=1,
        ).id
    key = f"batch:{batch_id}"

    def waiting() -> dict[str, Any] | None:
        view = status_json(folder, batch_id)
        shown = view["waiting_on"]
        return view if shown and shown["items"] >= CONCURRENCY - 4 else None

    view = wait_for(waiting, 20.0, "the held items to show as waiting")
    counts, shown = view["counts"], view["waiting_on"]
    assert shown["key"] == key and shown["reason"] == "requests"
    assert counts["running"] <= 2, counts  # executing: what 30/min admits, not the 48 held
    assert counts["waiting"] == shown["items"]
    assert counts["total"] == ITEMS
    # The last of them is admitted a while from now, at about half a call a second; the ETA
    # counts every item left at that rate, not the pace of the first burst.
    assert shown["seconds"] > 20 and 0.4 < shown["rate"] < 0.5
    left = ITEMS - counts["succeeded"]
    assert view["eta"] >= left / shown["rate"] - 5

    text = cli(folder, "status", batch_id)
    assert "waiting" in text and f"for rate limit {key} (requests)" in text, text

    # SIGTERM: nothing is executing, so nothing needs the grace.
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(GRACE) == 0
    took = time.monotonic() - stopped
    assert took < 10, f"the worker took {took:.1f}s to stop"

    after = status_json(folder, batch_id)
    assert after["waiting_on"] is None
    assert after["counts"]["running"] == after["counts"]["waiting"] == 0
    assert after["counts"]["pending"] == ITEMS - after["counts"]["succeeded"]
    # Unspent: each pending item may still run its one attempt (max_attempt is the highest
    # attempt number it may reach; a release raises it with the attempt it took back).
    with sqlite3.connect(folder / "waits.db") as db:
        allowances = {
            max_attempt - attempts
            for max_attempt, attempts in db.execute(
                "SELECT max_attempt, attempts FROM items WHERE state = 'pending'"
            )
        }
    assert allowances == {1}, allowances

    log = (folder / "worker.err").read_text()
    assert log.count(f"items wait for rate limit {key}") == 1, log
    assert "gave back" in log, log
