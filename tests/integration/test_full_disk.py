"""A full disk is an outage, not a crash: a worker draining 20,000 items from a SQLite store
on a real 64 MiB tmpfs, the filesystem filled to ENOSPC for a few seconds and then freed.
The worker keeps its unrecorded outcomes, says once that the store is away and once that it
is back, and finishes the batch by itself; a command that writes meanwhile fails with one
line that says the disk is full; every item succeeds once, with its result.

Mounting a tmpfs needs root (CI runs as root).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BATCHYARD = Path(sys.executable).parent / "batchyard"
ITEMS = 20_000
TASKS = """
import asyncio

async def work(item):
    await asyncio.sleep(0.004)
    return {"n": item["n"], "text": "y" * 200}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("mounting a tmpfs needs Linux, root and mount (CI runs as root)")
        pytest.skip("SKIPPED FULL DISK: mounting a tmpfs needs Linux and root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros until the filesystem says ENOSPC."""
    filler = disk / "filler"
    block = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


class Lines:
    """A process's stderr, read by a thread, each line with when it came."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._new = threading.Condition()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._new:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._new.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        with self._new:
            found = self._new.wait_for(lambda: any(text in line for _, line in self.lines), timeout)
        assert found, f"no line with {text!r} in {timeout} s: {self.text()}"

    def close(self, proc: subprocess.Popen[str]) -> None:
        self._thread.join(30)
        assert proc.stderr is not None
        proc.stderr.close()

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def succeeded(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute("SELECT n_succeeded FROM batches").fetchone()[0])


def test_a_full_disk_is_an_outage_the_worker_rides_out(small_disk: Path, tmp_path: Path) -> None:
    (tmp_path / "disktasks.py").write_text(TASKS)
    (tmp_path / "items.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(ITEMS)))
    (tmp_path / "more.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(2_000)))
    db = small_disk / "yard.db"
    url = f"sqlite:///{db}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BATCHYARD), "--db", url, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    submitted = cli("submit", "disktasks:work", "items.jsonl", "--concurrency", "64")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    worker = subprocess.Popen(
        [str(BATCHYARD), "--db", url, "worker", "--until-idle", "--concurrency", "64"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(worker)
    try:
        deadline = time.monotonic() + 60
        while succeeded(db) < ITEMS // 10:
            assert worker.poll() is None and time.monotonic() < deadline, lines.text()
        filler = fill(small_disk)
        lines.wait_for("store unavailable", timeout=60)
        at_full = succeeded(db)
        # A command that writes fails with one line that says so, and writes nothing.
        more = cli("submit", "disktasks:work", "more.jsonl")
        assert more.returncode == 1, more
        assert more.stderr.count("\n") == 1 and "the disk is full" in more.stderr, more
        assert succeeded(db) == at_full  # nothing is recorded while the disk is full
        assert cli("status", batch_id).returncode == 0  # reading goes on
        assert worker.poll() is None, lines.text()  # still alive, waiting for room
        filler.unlink()
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        lines.close(worker)
    assert worker.returncode == 0, lines.text()
    text = lines.text()
    assert "Traceback" not in text, text
    down = [
        at for at, line in lines.lines if "store unavailable" in line and "disk is full" in line
    ]
    back = [line for _, line in lines.lines if "store back after" in line]
    assert len(down) == 1 and len(back) == 1, text
    # Never more than a line a second, whatever else it says.
    times = [at for at, _ in lines.lines]
    assert len(times) <= 2 + (times[-1] - times[0]), text
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        assert states == {"succeeded": ITEMS}, states
        missing = conn.execute(
            "SELECT COUNT(*) FROM items WHERE result IS NULL OR attempts <> 1"
        ).fetchone()[0]
        assert missing == 0
        assert conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 1
