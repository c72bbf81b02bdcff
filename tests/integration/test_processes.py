"""The classic failures of job systems, with real worker processes on a real store: each test
runs over a SQLite file and over a PostgreSQL database (``store_url``, see conftest.py).

Each worker is a ``python -m tests.procs.worker`` subprocess. The tests kill, stop and
restart them, and wait only on conditions read from the database (or a process's exit),
with a deadline; they never sleep to let things settle and never assert on timing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import BatchState, ItemState, Yard
from tests.procs.tasks import expected, read_ledger

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL/SIGSTOP and /proc: Linux only"),
]

ROOT = Path(__file__).resolve().parents[2]
TASKS = "tests.procs.tasks"
LEASE = 1.0


# -- helpers --------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    detail: Callable[[], object] = lambda: "",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds,
    saying what was awaited and ``detail()`` (the state of things at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(0.01)


class Workers:
    """Starts worker subprocesses and makes sure none outlives its test."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a worker with ``args``; ``env``: more environment variables for it."""
        n = len(self.procs)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        with (
            open(self.logs / f"worker{n}.out", "wb") as out,
            open(self.logs / f"worker{n}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.procs.worker", self.url, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        self.procs.append(proc)
        return proc

    def stats(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        """The WorkerStats a worker printed when it ended."""
        n = self.procs.index(proc)
        lines = (self.logs / f"worker{n}.out").read_text().splitlines()
        assert lines, f"worker {n} printed no stats; stderr:\n{self.stderr(proc)}"
        stats: dict[str, Any] = json.loads(lines[-1])
        return stats

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"worker{self.procs.index(proc)}.err").read_text()[-4000:]

    def report(self) -> str:
        """Every worker's exit code and the end of its stderr, for a failure message."""
        return "\n".join(
            f"worker {n} pid {proc.pid} exit {proc.poll()}:\n{self.stderr(proc)}"
            for n, proc in enumerate(self.procs)
        )

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """Wait for a worker to exit; fail (showing its stderr) if it does not."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker pid {proc.pid} still running after {timeout}s; stderr:\n"
                f"{self.stderr(proc)}"
            ) from None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process must wake up to die
                proc.kill()
            proc.wait(10)


@pytest.fixture
def yard(store_url: str) -> Iterator[Yard]:
    with Yard(store_url) as y:
        yield y


@pytest.fixture
def workers(store_url: str, tmp_path: Path, yard: Yard) -> Iterator[Workers]:
    # Depends on ``yard`` so the schema exists before any worker opens the store.
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(store_url, logs)
    try:
        yield pool
    finally:
        pool.close()


def process_state(pid: int) -> str:
    """The one-letter state of a Linux process (R, S, T for stopped, Z ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def write_lock_free(url: str) -> bool:
    """Whether another connection can take the store's write lock right now (SQLite's lock;
    on PostgreSQL the change-feed row every writer locks first)."""
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            try:
                with pg.transaction():
                    pg.execute("SELECT seq FROM feed FOR UPDATE NOWAIT")
                return True
            except psycopg.errors.LockNotAvailable:
                return False
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def freeze(proc: subprocess.Popen[bytes], url: str) -> None:
    """SIGSTOP a worker outside a write transaction.

    A process stopped while it holds the store's write lock (SQLite's, or PostgreSQL's feed
    row) blocks every other writer until it resumes: such a stop proves nothing, so try
    again.
    """
    for _ in range(50):
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: process_state(proc.pid) == "T", 5, "the worker to stop")
        if write_lock_free(url):
            return
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: process_state(proc.pid) != "T", 5, "the worker to resume")
    raise AssertionError("the worker held the write lock at every stop")


def check_counters(yard: Yard, batch_id: str) -> None:
    """The O(1) counters agree with a recount of the item rows, and so do the error
    clusters' failed items."""
    assert yard.store.get_batch(batch_id).counts == yard.store.recount(batch_id)
    kept = {c.id: c.items for c in yard.store.error_clusters(batch_id) if c.items}
    assert kept == yard.store.recount_clusters(batch_id)


# -- 1. a worker SIGKILLed at random moments, restarted each time -----------------------------


def test_killed_and_restarted_worker_loses_nothing(yard: Yard, workers: Workers) -> None:
    n_items, kills = 3000, 5
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    batch = yard.submit(
        f"{TASKS}:square",
        ({"id": f"k{n}", "n": n, "sleep": rng.uniform(0.001, 0.01)} for n in range(n_items)),
        max_attempts=kills + 2,  # an item in flight at every kill still has an attempt left
    )
    worker_args = ("--lease", str(LEASE), "--concurrency", "32")

    def succeeded() -> int:
        return batch.status().counts.succeeded

    for kill in range(kills):
        proc = workers.start(*worker_args)
        # Kill after a random amount of fresh progress (at least one group commit), so the
        # kills land at arbitrary points: mid-claim, mid-commit, mid-task, mid-reclaim.
        target = succeeded() + rng.randint(1, 200)
        wait_for(
            lambda: succeeded() >= target or proc.poll() is not None,  # noqa: B023
            60,
            f"progress to {target} before kill {kill + 1} (seed {seed})",
            lambda: f"{batch.status().counts}\n{workers.report()}",
        )
        assert proc.poll() is None, f"worker ended before kill {kill + 1}: {workers.stderr(proc)}"
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL

    status = batch.status()
    assert status.counts.remaining > 0, f"the batch ended before the last kill (seed {seed})"
    last = workers.start(*worker_args)
    assert workers.finish(last, 60) == 0, workers.stderr(last)

    status = batch.status()
    assert status.state is BatchState.COMPLETED, (status, seed)
    check_counters(yard, batch.id)
    assert status.counts.succeeded == n_items
    assert status.counts.remaining == 0
    items = list(batch.items())
    keys = [item.key for item in items]
    assert len(keys) == n_items
    assert Counter(keys) == Counter(f"k{n}" for n in range(n_items))
    for item in items:
        assert item.state is ItemState.SUCCEEDED, (item, seed)
        assert item.result == expected(item.payload["n"]), (item, seed)
        assert item.finished_at is not None
    # The kills did take items down with them: those ran again and were recorded once.
    assert any(item.attempts > 1 for item in items), f"no kill hit a running item (seed {seed})"


# -- 2. a zombie worker (SIGSTOP past its lease, then SIGCONT) --------------------------------


def test_zombie_worker_late_outcome_is_rejected(
    yard: Yard, workers: Workers, tmp_path: Path
) -> None:
    ledger, gate = tmp_path / "ledger.jsonl", tmp_path / "gate"
    batch = yard.submit(
        f"{TASKS}:gated", [{"id": "z", "n": 7, "ledger": str(ledger), "gate": str(gate)}]
    )
    zombie = workers.start("--lease", str(LEASE), "--worker-id", "zombie")

    def started(attempt: int) -> list[dict[str, Any]]:
        return [
            line
            for line in read_ledger(ledger)
            if line["attempt"] == attempt and line["event"] == "start"
        ]

    wait_for(
        lambda: batch.item("z").state is ItemState.RUNNING and started(1),
        20,
        "the first worker to hold item z and start it",
    )
    freeze(zombie, workers.url)

    # The rescuer's own lease is longer: under load it must not lose item z in its turn.
    rescuer = workers.start("--lease", "3", "--worker-id", "rescuer")
    wait_for(
        lambda: batch.item("z").state is ItemState.SUCCEEDED,
        20,
        "the second worker to take item z over and record it",
        lambda: f"{batch.item('z')}\n{workers.report()}",
    )
    assert workers.finish(rescuer) == 0, workers.stderr(rescuer)
    item = batch.item("z")
    assert item.attempts == 2
    assert item.result == {**expected(7), "attempt": 2, "pid": rescuer.pid}
    assert batch.status().state is BatchState.COMPLETED
    cursor = yard.store.cursor()

    gate.touch()
    os.kill(zombie.pid, signal.SIGCONT)
    # The zombie finishes its attempt, reports it and, with nothing left to run, exits.
    assert workers.finish(zombie) == 0, workers.stderr(zombie)
    item = batch.item("z")
    assert item.result == {**expected(7), "attempt": 2, "pid": rescuer.pid}
    stats = workers.stats(zombie)
    assert (stats["claimed"], stats["recorded"], stats["rejected"]) == (1, 0, 1)
    [event] = [e for e in yard.store.events(None, since=cursor) if e.kind.endswith("rejected")]
    assert event.kind == "item.outcome_rejected"
    assert event.data["key"] == "z"
    assert event.data["attempt"] == 1
    assert event.data["state"] == ItemState.SUCCEEDED.value

    # The zombie did finish its work, but the recorded outcome is still the rescuer's.
    ends = [line for line in read_ledger(ledger) if line["event"] == "end"]
    assert sorted((line["attempt"], line["pid"]) for line in ends) == [
        (1, zombie.pid),
        (2, rescuer.pid),
    ]
    item = batch.item("z")
    assert item.state is ItemState.SUCCEEDED
    assert item.attempts == 2
    assert item.result == {**expected(7), "attempt": 2, "pid": rescuer.pid}
    status = batch.status()
    assert status.state is BatchState.COMPLETED
    assert status.counts.succeeded == 1
    check_counters(yard, batch.id)


# -- 3. a poison item that kills its own worker -----------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_poison_item_that_kills_its_worker_fails_after_max_attempts(
    yard: Yard, workers: Workers, tmp_path: Path, concurrency: int
) -> None:
    ledger, n_items, max_attempts = tmp_path / "ledger.jsonl", 30, 3
    batch = yard.submit(
        f"{TASKS}:poison",
        ({"id": f"k{n}", "n": n, "poison": n == 10, "ledger": str(ledger)} for n in range(n_items)),
        max_attempts=max_attempts,
    )
    args = ("--lease", str(LEASE), "--concurrency", str(concurrency))
    deaths = 0
    for _ in range(max_attempts + 2):
        proc = workers.start(*args)
        code = workers.finish(proc)
        if code == 0:
            break
        assert code == -signal.SIGKILL, workers.stderr(proc)
        deaths += 1
    else:
        pytest.fail(f"the batch never finished after {deaths} worker deaths")

    # Only deaths that are surely its own count: the one it died alone. Its first death may
    # have happened beside other items its worker held (prefetched or running); that one
    # is not charged, to it or to them, and from then on it runs alone.
    logs = [line.message for line in batch.logs("k10") if line.kind == "error"]
    charged = [m for m in logs if "while it ran alone" in m]
    uncharged = [m for m in logs if "not counted against it" in m]
    assert len(charged) == max_attempts and len(uncharged) <= 1, logs
    assert deaths == max_attempts + len(uncharged)
    runs = read_ledger(ledger)
    assert [line["attempt"] for line in runs] == list(range(1, deaths + 1))
    assert len({line["pid"] for line in runs}) == deaths

    status = batch.status()
    check_counters(yard, batch.id)
    casualties = {
        item.key: (item.attempts, item.error_type) for item in batch.items(ItemState.FAILED)
    }
    # The rest of the batch completes: only the poison item fails.
    assert casualties == {"k10": (deaths, "LeaseExpired")}
    assert status.state is BatchState.PARTIALLY_COMPLETED
    assert (status.counts.succeeded, status.counts.failed) == (n_items - 1, 1)
    poisoned = batch.item("k10")
    assert poisoned.error is not None and "lease expired" in poisoned.error
    # Its charged deaths are one error cluster; the uncharged one is no failure.
    (cluster,) = batch.error_clusters()
    assert cluster.text.startswith("LeaseExpired: lease expired on attempt <num> while it ran")
    assert (cluster.attempts, cluster.items, cluster.sample_key) == (max_attempts, 1, "k10")
    for item in batch.items():
        if item.key != "k10":
            assert item.state is ItemState.SUCCEEDED, item
            assert item.result == expected(item.payload["n"])


# -- 4. two workers on one file never run an item twice ---------------------------------------


def test_two_workers_never_run_an_item_twice(yard: Yard, workers: Workers, tmp_path: Path) -> None:
    ledger, n_items = tmp_path / "ledger.jsonl", 1500
    # A long lease: nothing fails here, so no item may ever be taken over.
    args = ("--forever", "--lease", "30", "--concurrency", "16", "--task", f"{TASKS}:ledgered")
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [workers.start(*args, "--ready", str(path)) for path in ready]
    wait_for(lambda: all(path.exists() for path in ready), 20, "both workers to start")

    batch = yard.submit(
        f"{TASKS}:ledgered",
        ({"id": f"k{n}", "n": n, "ledger": str(ledger)} for n in range(n_items)),
    )
    wait_for(
        lambda: batch.status().is_finished,
        90,
        "the batch to finish",
        lambda: f"{batch.status()}\n{workers.report()}",
    )
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert workers.finish(proc) == 0, workers.stderr(proc)

    runs = read_ledger(ledger)
    per_key = Counter(line["key"] for line in runs)
    assert per_key == Counter(f"k{n}" for n in range(n_items)), {
        key: count for key, count in per_key.items() if count != 1
    }
    per_pid = Counter(line["pid"] for line in runs)
    assert set(per_pid) == {proc.pid for proc in procs}, per_pid

    stats = [workers.stats(proc) for proc in procs]
    assert sum(s["recorded"] for s in stats) == n_items
    assert all(s["rejected"] == 0 and s["released"] == 0 for s in stats), stats
    status = batch.status()
    assert status.state is BatchState.COMPLETED
    check_counters(yard, batch.id)
    for item in batch.items():
        assert item.state is ItemState.SUCCEEDED
        assert item.attempts == 1
        assert item.result == expected(item.payload["n"])
    assert not [e for e in yard.store.events(None, since=0) if e.kind.endswith("rejected")]


# -- 5. SIGTERM: finish what fits in the grace period, give the rest back ----------------------


def test_sigterm_lets_short_items_finish_and_gives_long_ones_back(
    yard: Yard, workers: Workers, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    sleeps = {"quick1": 0.3, "quick2": 0.3, "long1": 120, "long2": 120}
    batch = yard.submit(
        f"{TASKS}:slow_first",
        (
            {"id": key, "n": n, "sleep": sleeps[key], "ledger": str(ledger)}
            for n, key in enumerate(sleeps)
        ),
    )
    proc = workers.start("--forever", "--lease", "30", "--grace", "5", "--concurrency", "8")
    wait_for(
        lambda: len(read_ledger(ledger)) == 4,
        30,
        "all four items to start",
        workers.report,
    )
    proc.send_signal(signal.SIGTERM)
    assert workers.finish(proc) == 0, workers.stderr(proc)

    stats = workers.stats(proc)
    assert (stats["recorded"], stats["released"]) == (2, 2)
    states = {item.key: (item.state, item.attempts) for item in batch.items()}
    assert states == {
        "quick1": (ItemState.SUCCEEDED, 1),
        "quick2": (ItemState.SUCCEEDED, 1),
        # Given back at once, unfinished: pending again, not waiting out a 30 s lease.
        "long1": (ItemState.PENDING, 1),
        "long2": (ItemState.PENDING, 1),
    }
    check_counters(yard, batch.id)

    # Another worker takes them straight away; the released attempt was not spent.
    finisher = workers.start("--lease", "30", "--concurrency", "8")
    assert workers.finish(finisher) == 0, workers.stderr(finisher)
    assert batch.status().state is BatchState.COMPLETED
    assert {(r["key"], r["attempt"]) for r in read_ledger(ledger)} == {
        ("quick1", 1),
        ("quick2", 1),
        ("long1", 1),
        ("long2", 1),
        ("long1", 2),
        ("long2", 2),
    }


# -- 6. why items ran again: a worker stopped mid-run, a worker killed -------------------------


def test_a_report_says_why_items_ran_again(yard: Yard, workers: Workers, tmp_path: Path) -> None:
    from batchyard.report import build_report

    def submit(name: str) -> Any:
        return yard.submit(
            f"{TASKS}:slow_first",
            (
                {"id": key, "n": n, "sleep": 120, "ledger": str(ledger)}
                for n, key in enumerate((f"{name}1", f"{name}2"))
            ),
            name=name,
        )

    def started(name: str) -> int:
        return sum(line["key"].startswith(name) for line in read_ledger(ledger))

    ledger = tmp_path / "ledger.jsonl"
    stopped = submit("stopped")
    proc = workers.start("--forever", "--lease", "30", "--grace", "0.2", "--concurrency", "8")
    wait_for(lambda: started("stopped") == 2, 30, "both items to start", workers.report)
    proc.send_signal(signal.SIGTERM)  # they ran and are given back mid-run
    assert workers.finish(proc) == 0, workers.stderr(proc)

    killed = submit("killed")
    proc = workers.start("--forever", "--lease", str(LEASE), "--concurrency", "8")
    wait_for(
        lambda: started("killed") == 2 and stopped.status().is_finished,
        30,
        "the stopped batch to finish and both killed items to start",
        workers.report,
    )
    proc.kill()  # they die with their worker: their leases expire
    assert proc.wait(10) == -signal.SIGKILL
    finisher = workers.start("--lease", str(LEASE), "--concurrency", "8")
    assert workers.finish(finisher) == 0, workers.stderr(finisher)

    for batch, reason in ((stopped, "released"), (killed, "worker_lost")):
        assert batch.status().state is BatchState.COMPLETED
        check_counters(yard, batch.id)
        assert [item.runs for item in batch.items()] == [2, 2]
        attempts = build_report(batch).as_dict()["attempts"]
        assert (attempts["retried"], attempts["again"]) == (2, {reason: 2})
