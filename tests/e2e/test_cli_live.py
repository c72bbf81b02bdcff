"""The live commands as a user runs them: ``run`` and ``monitor`` in a real terminal (tmux,
whose screen we read back), ``run`` into a pipe, and ``worker`` beside the Python API.

Items wait at gates (files in the test's folder) so a test decides when work moves on:
every wait below is for something to appear, with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from batchyard import BatchState, Yard

BATCHYARD = str(Path(sys.executable).parent / "batchyard")
TASKS = """
import asyncio
from pathlib import Path

from batchyard import Fail


async def gated(item, ctx):
    ctx.progress(0.5, f"waiting at {item['gate']}")
    while not Path(item["gate"]).exists():
        await asyncio.sleep(0.02)
    if item.get("fail"):
        raise Fail(f"item {item['id']} was told to fail")
    ctx.progress(1.0, "through")
    return {"id": item["id"]}
"""

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the task module, importable here as in the CLI (its current folder)."""
    (tmp_path / "gates.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def items(count: int, gate: str, **extra: object) -> list[dict[str, object]]:
    return [{"id": f"i{n:02d}", "gate": gate, **extra} for n in range(1, count + 1)]


def submit(folder: Path, rows: list[dict[str, object]], concurrency: int = 3) -> str:
    with Yard(db_url(folder)) as yard:
        return yard.submit("gates:gated", rows, concurrency=concurrency, max_attempts=1).id


def db_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'live.db'}"


def status(folder: Path, batch_id: str) -> BatchState:
    with Yard(db_url(folder)) as yard:
        return yard.batch(batch_id).status().state


def cli(folder: Path, *args: str) -> list[str]:
    return [BATCHYARD, "--db", db_url(folder), *args]


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Terminal:
    """A 120x40 tmux session running one shell command; the screen is read as text."""

    def __init__(self, cwd: Path) -> None:
        self.socket = f"batchyard-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cwd = cwd

    def start(self, argv: list[str]) -> None:
        # The pane stays after the command, showing its exit status.
        shell = f"{shlex.join(argv)}; echo EXIT=$?; sleep 600"
        self._tmux("new-session", "-d", "-x", "120", "-y", "40", "-c", str(self.cwd), shell)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p").stdout

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        found = None

        def seen() -> re.Match[str] | None:
            nonlocal found
            found = re.search(pattern, self.screen())
            return found

        try:
            wait_until(seen, pattern, timeout)
        except AssertionError:
            raise AssertionError(f"no {pattern!r} on the screen:\n{self.screen()}") from None
        assert found is not None
        return found

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def close(self) -> None:
        self._tmux("kill-server", check=False)

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check
        )


@pytest.fixture
def terminal(folder: Path) -> Iterator[Terminal]:
    term = Terminal(folder)
    yield term
    term.close()


def finished_count(term: Terminal) -> int:
    return int(term.wait_for(r"(\d+)/12\b").group(1))


def test_monitor_follows_a_worker_until_the_batch_ends(folder: Path, terminal: Terminal) -> None:
    batch_id = submit(folder, items(4, "gate-a") + items(12, "gate-b")[4:])
    terminal.start(cli(folder, "monitor", batch_id))
    terminal.wait_for(r"state queued")
    assert finished_count(terminal) == 0

    worker = subprocess.Popen(
        cli(folder, "worker", "--until-idle", "--concurrency", "3"),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Items in flight with their own progress message (sent by the worker's heartbeat).
        terminal.wait_for(r"in flight")
        terminal.wait_for(r"i0[123] +1 +.*50% +waiting at gate-a")
        (folder / "gate-a").touch()
        terminal.wait_for(r"\b4/12\b.*items/s")
        terminal.wait_for(r"waiting at gate-b")
        assert "state processing" in terminal.screen()
        (folder / "gate-b").touch()
        terminal.wait_for(r"EXIT=0")
        _, err = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    screen = terminal.screen()
    assert "state completed" in screen and "12/12" in screen and "100%" in screen
    assert status(folder, batch_id) is BatchState.COMPLETED


def test_run_shows_progress_and_exits_1_when_items_failed(folder: Path, terminal: Terminal) -> None:
    rows = [*items(5, "gate-r"), {"id": "bad", "gate": "gate-r", "fail": True}]
    (folder / "input.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    terminal.start(cli(folder, "run", "gates:gated", "input.jsonl", "--max-attempts", "1"))

    terminal.wait_for(r"0/6\b")
    terminal.wait_for(r"i0\d +1 +.*waiting at gate-r")
    (folder / "gate-r").touch()
    terminal.wait_for(r"EXIT=1")
    screen = terminal.screen()
    assert "state partially_completed" in screen and "6/6" in screen
    assert re.search(r"recent errors[\s\S]*bad +1 +failed +Fail: item bad was told to fail", screen)


def test_run_stops_on_ctrl_c_twice_and_leaves_the_rest_queued(
    folder: Path, terminal: Terminal
) -> None:
    (folder / "input.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in items(4, "never"))
    )
    terminal.start(cli(folder, "run", "gates:gated", "input.jsonl", "--name", "stopped"))
    terminal.wait_for(r"waiting at never")
    terminal.keys("C-c")
    terminal.wait_for(r"stopping: running items get")
    terminal.keys("C-c")
    terminal.wait_for(r"EXIT=130")
    assert "goes on with it" in terminal.screen()
    # The command it suggests reaches this store (the screen wraps lines: compare without
    # whitespace), as the "look further" commands above it do.
    screen = "".join(terminal.screen().split())
    assert f"'batchyard--db{db_url(folder)}worker--batchbatch_" in screen
    with Yard(db_url(folder)) as yard:
        (batch,) = yard.batches().rows
    assert batch.counts.pending == 4 and batch.state is BatchState.PROCESSING


def test_run_into_a_pipe_prints_plain_lines_without_cursor_codes(folder: Path) -> None:
    (folder / "input.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in items(3, "gate-p"))
    )
    proc = subprocess.Popen(
        cli(folder, "run", "gates:gated", "input.jsonl"),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline()]  # the batch id
    while len(lines) < 3:  # two status lines, a few seconds apart, while the items wait
        lines.append(proc.stdout.readline())
    (folder / "gate-p").touch()
    rest, err = proc.communicate(timeout=20)
    out = b"".join(lines).decode() + rest.decode()

    assert proc.returncode == 0, err
    assert b"\x1b[" not in out.encode() and "\r" not in out
    status_lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(status_lines) >= 3
    assert "0/3 (0%)" in status_lines[0] and "items/s  ETA" in status_lines[0]
    assert "completed 3/3 (100%)" in status_lines[-1]


def test_worker_batch_leaves_other_batches_alone(folder: Path) -> None:
    (folder / "open").touch()
    mine = submit(folder, items(5, "open"))
    other = submit(folder, items(3, "open"))

    done = subprocess.run(
        cli(folder, "worker", "--batch", mine, "--until-idle"),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert status(folder, mine) is BatchState.COMPLETED
    with Yard(db_url(folder)) as yard:
        left = yard.batch(other).status()
    assert left.state is BatchState.QUEUED and left.counts.pending == 3
