"""How a worker learns the tasks of batches it finds in the store, on SQLite and PostgreSQL:
promptly (a new task's first batch starts within ``poll_interval``; on PostgreSQL at once),
and safely (a name no worker may import is never imported, a module that hangs or submits as
it loads never holds the worker up, and such batches are left alone, hanging nobody).

Tasks live in modules written to the test's folder, with unique names (a module imported
once stays imported). Waits are on database state or a process's exit, with deadlines.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from batchyard import BatchState, Yard
from batchyard.items import chunks
from batchyard.models import BatchOptions, new_batch_id
from batchyard.worker import discovery
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
#: The worker's poll interval in the timing test: the README's default.
POLL = 0.5
FLAGS = ("--poll", str(POLL), "--lease", "60")


def submit_by_name(yard: Yard, name: str, n: int = 1) -> str:
    """A batch of task ``name`` written without resolving it (as another machine, or an
    older batchyard, would have written it); returns its id."""
    now = time.time()
    batch_id = new_batch_id(now)
    yard.store.create_batch(
        batch_id, BatchOptions(task=name), chunks([{"n": i} for i in range(n)]), now
    )
    return batch_id


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return value


def module(folder: Path, source: str) -> str:
    """Write a module with a fresh name into ``folder``; returns its name."""
    name = f"found_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source)
    return name


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder, importable in this process."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def worker_process(store_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process (``tests.procs.worker --forever``) with the README's poll interval
    and a long lease (so its lease sweep runs only every 5 s), tasks importable from the
    test's folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    with open(tmp_path / "worker.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.procs.worker", store_url, "--forever", *FLAGS],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_new_tasks_first_batch_starts_within_the_poll_interval(
    store_url: str, tmp_path: Path, worker_process: subprocess.Popen[bytes]
) -> None:
    tasks = module(tmp_path, "".join(f"def t{n}(item):\n    return {n}\n\n" for n in range(4)))
    with Yard(store_url) as yard:

        def ended(batch_id: str) -> Any:
            status = yard.batch(batch_id).status()
            return status if status.is_finished else None

        # The first batch also waits for the process to start.
        first = submit_by_name(yard, f"{tasks}:t0")
        wait_for(lambda: ended(first), 60, "a worker to run")
        waits = []
        for n in (1, 2, 3):  # each a task the worker has not seen yet
            batch_id = submit_by_name(yard, f"{tasks}:t{n}")
            status = wait_for(partial(ended, batch_id), 30, f"the batch of t{n} to end")
            assert status.state is BatchState.COMPLETED
            waits.append(status.started_at - status.created_at)
    # Within the poll interval, plus time to import and claim on a busy shared machine;
    # well under the 2-5 s of a worker that looked for new tasks only in its lease sweep.
    bound = 2 * POLL + 0.5
    assert max(waits) < bound, f"created -> started: {waits} (bound {bound}s)"
    if store_url.startswith("postgresql"):  # woken by NOTIFY, not by its next poll
        assert min(waits) < POLL, f"created -> started: {waits}"


def test_batches_no_worker_can_import_are_left_alone_and_hang_nobody(
    store_url: str, importable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = importable / "ran.txt"
    script = module(importable, f"open({str(ran)!r}, 'a').write('ran')\ndef f(item):\n    pass\n")
    names = [f"{script}.py:f", f"{script}:<lambda>", f"{script}:g.<locals>.f", "nowhere:f"]
    caplog.set_level(logging.WARNING, logger="batchyard.worker")
    with Yard(store_url) as yard:
        stale = [submit_by_name(yard, name) for name in names]
        fine = submit_by_name(yard, "tests.procs.tasks:square", 3)
        started = time.monotonic()
        yard.run_until_idle(**FAST)
        assert time.monotonic() - started < 10
        assert yard.batch(fine).status().state is BatchState.COMPLETED
        assert [yard.batch(b).status().state for b in stale] == [BatchState.QUEUED] * 4
        yard.run_until_idle(**FAST)  # another worker: it logs each once too
    assert not ran.exists()  # no name that names a script was imported
    warnings = [r.getMessage() for r in caplog.records if "cannot run task" in r.getMessage()]
    assert Counter(w.split()[3] for w in warnings) == dict.fromkeys(names, 2)


def test_a_module_that_hangs_as_it_loads_is_waited_for_only_so_long(
    store_url: str,
    importable: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(discovery, "IMPORT_PATIENCE", 0.3)
    release = importable / "release"
    stuck = module(
        importable,
        f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.01)\n"
        "def f(item):\n    return 'late'\n",
    )
    caplog.set_level(logging.WARNING, logger="batchyard.worker")
    try:
        with Yard(store_url) as yard:
            waiting = submit_by_name(yard, f"{stuck}:f")
            fine = submit_by_name(yard, "tests.procs.tasks:square", 3)
            started = time.monotonic()
            yard.run_until_idle(**FAST)
            assert time.monotonic() - started < 10
            assert yard.batch(fine).status().state is BatchState.COMPLETED
            assert yard.batch(waiting).status().state is BatchState.QUEUED
    finally:
        release.touch()  # let the import thread end
    assert any("still loading after" in r.getMessage() for r in caplog.records)


def test_a_module_that_submits_as_it_loads_is_refused(
    store_url: str, importable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = module(
        importable,
        "from batchyard import Yard\n"
        f"Yard({store_url!r}).submit('tests.procs.tasks:square', [{{'n': 1}}])\n"
        "def f(item):\n    pass\n",
    )
    caplog.set_level(logging.WARNING, logger="batchyard.worker")
    with Yard(store_url) as yard:
        batch_id = submit_by_name(yard, f"{script}:f")
        yard.run_until_idle(**FAST)
        assert [b.id for b in yard.batches().rows] == [batch_id]  # no second batch
    [warning] = [r.getMessage() for r in caplog.records if "cannot run task" in r.getMessage()]
    assert "submits a batch as it loads" in warning


def test_a_worker_told_its_tasks_loads_only_those(store_url: str) -> None:
    with Yard(store_url) as yard:
        mine = submit_by_name(yard, "tests.procs.tasks:square", 2)
        other = submit_by_name(yard, "tests.procs.tasks:slow_first", 2)
        yard.run_until_idle(tasks=("tests.procs.tasks:square",), **FAST)
        assert yard.batch(mine).status().state is BatchState.COMPLETED
        assert yard.batch(other).status().state is BatchState.QUEUED
        assert yard.registry.names() == ["tests.procs.tasks:square"]
