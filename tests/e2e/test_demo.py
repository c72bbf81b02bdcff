"""The demo as a newcomer runs it: ``batchyard demo`` (and ``python -m batchyard.demo``) in a
subprocess, in a fresh folder, then its database read back through the Python API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchyard import BatchState, Yard

ROOT = Path(__file__).resolve().parents[2]
BATCHYARD = str(Path(sys.executable).parent / "batchyard")


def run_demo(cwd: Path, *args: str, items: int = 40) -> subprocess.CompletedProcess[str]:
    """``batchyard demo``; with ``python -m`` as the first of ``args``, the module."""
    env = {**os.environ, "BATCHYARD_DEMO_ITEMS": str(items), "PYTHONPATH": str(ROOT)}
    command = (
        [sys.executable, "-m", "batchyard.demo", *args[1:]]
        if args[:1] == ("python -m",)
        else [BATCHYARD, "demo", *args]
    )
    return subprocess.run(
        command,
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
    assert "scoring 40 sample leads from demo-leads.jsonl in sqlite:///batchyard.db" in out
    assert "40: 38 succeeded, 2 failed, 0 cancelled  (partially_completed)" in out
    for heading in ("success", "duration", "attempts", "usage", "metric score"):
        assert f"\n{heading}  " in out
    assert "lead-0013: Fail: lead lead-0013 has no email" in out
    assert "lead-0026: Fail: lead lead-0026 has no employees" in out
    assert out.count("items/s  ETA") >= 2  # the first status line and the last
    found = re.search(r"^batch (batch_\w+), task", out, re.MULTILINE)
    assert found is not None
    batch_id = found.group(1)
    assert f"look further: batchyard report {batch_id}\n" in out
    assert f"batchyard items {batch_id} --state failed\n" in out
    assert done.stderr == ""
    sample = (tmp_path / "demo-leads.jsonl").read_text().splitlines()
    assert len(sample) == 40 and '"id":"lead-0001"' in sample[0]


def test_demo_leaves_its_batch_in_the_cli_database(tmp_path: Path) -> None:
    assert run_demo(tmp_path).returncode == 0
    assert run_demo(tmp_path).returncode == 0  # a second run adds a second batch

    with Yard(f"sqlite:///{tmp_path / 'batchyard.db'}") as yard:
        status, _ = yard.batches().rows  # newest first
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
    done = run_demo(tmp_path, "--items", "12", "--concurrency", "3")

    assert done.returncode == 0, done.stderr
    assert "scoring 12 sample leads" in done.stdout and "concurrency 3" in done.stdout
    assert "items         12: 10 succeeded, 2 failed" in done.stdout


def test_python_m_demo_uses_a_fresh_file_of_its_own(tmp_path: Path) -> None:
    for _ in range(2):
        done = run_demo(tmp_path, "python -m", "--items", "12", "--db", "other.db")
        assert done.returncode == 0, done.stderr
    assert "scoring 12 sample leads from demo-leads.jsonl in sqlite:///other.db" in done.stdout
    assert not (tmp_path / "batchyard.db").exists()
    with Yard(f"sqlite:///{tmp_path / 'other.db'}") as yard:
        assert len(yard.batches().rows) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal via the pty module")
def test_demo_on_a_terminal_redraws_its_dashboard(tmp_path: Path) -> None:
    import pty

    parent, child = pty.openpty()
    env = {**os.environ, "BATCHYARD_DEMO_ITEMS": "40", "PYTHONPATH": str(ROOT), "TERM": "xterm"}
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        proc = subprocess.Popen(
            [BATCHYARD, "demo"],
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

    assert "\x1b[" in screen, "the dashboard was not redrawn in place"
    assert screen.count("ETA") >= 2, "a single frame"
    assert "partially_completed" in screen and "recent errors" in screen
    assert "failed, 0 cancelled  (partially_completed)" in screen and "look further:" in screen
