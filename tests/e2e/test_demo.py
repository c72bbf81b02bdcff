"""The demo as a newcomer runs it: ``python -m batchyard.demo`` in a subprocess, in a fresh
folder, then its database read back through the Python API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchyard import BatchState, Yard

ROOT = Path(__file__).resolve().parents[2]


def run_demo(cwd: Path, *args: str, items: int = 40) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATCHYARD_DEMO_ITEMS": str(items), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "batchyard.demo", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_piped_prints_plain_progress_and_a_report(tmp_path: Path) -> None:
    done = run_demo(tmp_path)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out and "\r" not in out, "cursor codes in piped output"
    assert "scoring 40 sample leads" in out
    assert "ended partially_completed" in out
    assert "40: 38 succeeded, 2 failed, 0 cancelled" in out
    for heading in ("duration", "per item", "retries", "usage", "score"):
        assert f"  {heading}" in out
    assert "lead-0013: Fail: lead lead-0013 has no email" in out
    assert "lead-0026: Fail: lead lead-0026 has no employees" in out
    assert out.count("items/s  ETA") >= 2  # the first status line and the last
    assert done.stderr == ""


def test_demo_leaves_a_finished_batch_in_its_database(tmp_path: Path) -> None:
    assert run_demo(tmp_path).returncode == 0
    assert run_demo(tmp_path).returncode == 0  # a second run starts from a fresh file

    with Yard(f"sqlite:///{tmp_path / 'batchyard-demo.db'}") as yard:
        (status,) = yard.batches().rows
        batch = yard.batch(status.id)
        items = list(batch.items())
        recount = yard.store.recount(status.id)

    assert status.state is BatchState.PARTIALLY_COMPLETED
    assert status.counts.total == len(items) == 40
    assert all(item.state.is_terminal for item in items)
    assert recount == status.counts
    assert status.usage.tokens_in > 0 and status.usage.cost > 0
    scored = [item for item in items if item.result is not None]
    assert len(scored) == 38
    assert all(0 <= item.result["score"] <= 100 for item in scored)
    assert all(item.metrics["score"] == item.result["score"] for item in scored)


def test_demo_options_override_the_environment(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--items", "12", "--db", "other.db", "--concurrency", "3")

    assert done.returncode == 0, done.stderr
    assert "scoring 12 sample leads in other.db" in done.stdout
    assert (tmp_path / "other.db").exists()
    assert not (tmp_path / "batchyard-demo.db").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal via the pty module")
def test_demo_on_a_terminal_redraws_one_line(tmp_path: Path) -> None:
    import pty

    parent, child = pty.openpty()
    env = {**os.environ, "BATCHYARD_DEMO_ITEMS": "40", "PYTHONPATH": str(ROOT), "TERM": "xterm"}
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchyard.demo"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=stderr,
        )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(parent)
    assert proc.wait(timeout=60) == 0
    assert errors.read_text() == ""
    screen = b"".join(chunks).decode()

    redraws = screen.split("\n")[2]  # the line after the two header lines
    assert redraws.count("\r") >= 3, "the progress line was not redrawn in place"
    assert "ended partially_completed" in screen
    assert "|" in redraws and "ETA" in redraws
