"""Where tasks live, as a user meets it: real scripts run with ``python`` in a fresh folder,
and the installed ``batchyard worker`` in that folder, as subprocesses on a real SQLite file.

A task no worker can import by name (a lambda, a nested function, a function of the script
being run) is refused at submit unless it is registered on the Yard and run in that process;
a worker never imports such a name (that would run the script again), and a module that hangs
as it loads never keeps a worker from stopping. Every wait has a deadline; no test sleeps.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import BatchState, BatchStatus, Yard
from batchyard.items import chunks
from batchyard.models import BatchOptions, new_batch_id

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM: POSIX only")

BATCHYARD = Path(sys.executable).parent / "batchyard"
DB = "sqlite:///batchyard.db"

LAMBDA_SCRIPT = f"""
from batchyard import Yard

yard = Yard({DB!r})
batch = yard.submit(lambda item, ctx: 1, [{{"n": 1}}])
yard.run_until_idle()
"""

# A function of the script, registered on the Yard: fine when the script runs its batch
# itself. Each run leaves a line in runs.txt, so a test can tell whether a worker re-ran it.
MAIN_SCRIPT = f"""
import sys
from pathlib import Path

from batchyard import Yard

with open("runs.txt", "a") as runs:
    runs.write("ran\\n")
yard = Yard({DB!r})


@yard.task
def double(item, ctx):
    return item["n"] * 2


batch = yard.submit(double, [{{"n": 1}}, {{"n": 2}}])
print(batch.id, batch.status().task, flush=True)
if "--leave" not in sys.argv:  # else: exit at once and leave the batch behind
    yard.run_until_idle()
    print(batch.status().state.value, [item.result for item in batch.results()], flush=True)
"""


def python(folder: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "a.py").write_text(script)
    return subprocess.run(
        [sys.executable, "a.py", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


class Worker:
    """``batchyard -v worker ARGS`` in a folder, its stderr in a file."""

    def __init__(self, folder: Path, n: int, args: tuple[str, ...]) -> None:
        self.log = folder / f"worker{n}.err"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [str(BATCHYARD), "-v", "--db", DB, "worker", *args],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.log.read_text()

    def finish(self, timeout: float) -> int:
        """Its exit status; fails (with its stderr) unless it ends within ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout}s; stderr:\n{self.stderr()}"
            ) from None


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts workers in the test's folder; kills those left at the end."""
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        started.append(Worker(tmp_path, len(started), args))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return value


def batches(folder: Path) -> list[Any]:
    with Yard(f"sqlite:///{folder / 'batchyard.db'}") as yard:
        return list(yard.batches().rows)


def test_a_script_that_submits_a_lambda_is_refused_with_the_fix(tmp_path: Path) -> None:
    done = python(tmp_path, LAMBDA_SCRIPT)
    assert done.returncode == 1
    assert "TaskNotImportable: task a.py:<lambda> cannot be run by a worker" in done.stderr
    assert "a lambda has no name a worker can import" in done.stderr
    assert "Move it into a module" in done.stderr and "@yard.task" in done.stderr
    assert batches(tmp_path) == []  # nothing written


def test_a_script_runs_its_own_registered_task(tmp_path: Path) -> None:
    done = python(tmp_path, MAIN_SCRIPT)
    assert done.returncode == 0, done.stderr
    task = done.stdout.split()[1]
    assert task == "a.py:double"
    assert "completed [2, 4]" in done.stdout


def test_a_worker_leaves_a_scripts_batch_alone_and_never_runs_the_script(
    tmp_path: Path, workers: Callable[..., Worker]
) -> None:
    done = python(tmp_path, MAIN_SCRIPT, "--leave")
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    idle = workers("--until-idle")
    assert idle.finish(timeout=30) == 0, idle.stderr()
    assert time.monotonic() - started < 20  # nothing to wait for: no import, no patience
    assert "cannot run task a.py:double here (it is a function of the script a.py" in (
        idle.stderr()
    )
    assert (tmp_path / "runs.txt").read_text() == "ran\n"  # the worker did not run a.py
    [stale] = batches(tmp_path)
    assert stale.state is BatchState.QUEUED and stale.counts.pending == 2

    # A worker that runs until stopped stops at once on SIGTERM, and cleanly.
    worker = workers()
    wait_for(
        lambda: "cannot run task a.py:double" in worker.stderr(),
        30,
        "the worker to look at the script's batch",
    )
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish(timeout=10) == 0, worker.stderr()
    assert (tmp_path / "runs.txt").read_text() == "ran\n"


def test_a_module_that_hangs_as_it_loads_never_keeps_a_worker_from_stopping(
    tmp_path: Path, workers: Callable[..., Worker]
) -> None:
    # A name given by string (or by an older batchyard): the worker must import it to know.
    (tmp_path / "stuck.py").write_text(
        "import pathlib, time\n"
        "pathlib.Path('loading').touch()\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
        "def f(item, ctx):\n"
        "    return 1\n"
    )
    _submit_by_name(tmp_path, "stuck:f")
    worker = workers()
    wait_for(lambda: (tmp_path / "loading").exists(), 30, "the worker to import stuck.py")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish(timeout=10) == 0, worker.stderr()


def test_a_worker_starts_a_new_tasks_first_batch_within_the_poll_interval(
    tmp_path: Path, workers: Callable[..., Worker]
) -> None:
    poll = 0.5  # the README's default, which `batchyard worker` uses
    (tmp_path / "jobs.py").write_text(
        "".join(f"def t{n}(item):\n    return {n}\n\n" for n in range(4))
    )
    (tmp_path / "one.jsonl").write_text('{"n": 1}\n')
    Yard(f"sqlite:///{tmp_path / 'batchyard.db'}").close()  # a worker needs a database
    worker = workers()

    def submit(task: str) -> BatchStatus:
        done = subprocess.run(
            [str(BATCHYARD), "--db", DB, "submit", task, "one.jsonl"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        with Yard(f"sqlite:///{tmp_path / 'batchyard.db'}") as yard:
            [batch_id] = [b.id for b in yard.batches().rows if b.task == task]
            status: BatchStatus = wait_for(
                lambda: (s := yard.batch(batch_id).status()).is_finished and s,
                30,
                f"the batch of {task} to end\n{worker.stderr()}",
            )
            return status

    submit("jobs:t0")  # the worker is up
    waits = [(s.started_at or 0) - s.created_at for s in map(submit, ["jobs:t1", "jobs:t2"])]
    # Within the poll interval, plus time to import and claim on a busy shared machine;
    # it used to take 2-5 s (new tasks were looked for only in the lease sweep).
    assert max(waits) < 2 * poll + 0.5, f"created -> started: {waits}"


def _submit_by_name(folder: Path, name: str) -> None:
    """A batch of task ``name`` written without importing its module (as another machine,
    or an older batchyard, would have written it)."""
    with Yard(f"sqlite:///{folder / 'batchyard.db'}") as yard:
        now = time.time()
        yard.store.create_batch(new_batch_id(now), BatchOptions(task=name), chunks([{"n": 1}]), now)
