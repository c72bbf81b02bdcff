"""Workers whose clocks disagree, or whose clock steps, under libfaketime (Debian package
``faketime``): no live lease is taken over, and retries come after their backoff.

A worker under ``FAKETIME=+2h`` beside a normal one is a machine with a wrong clock on
PostgreSQL (the database's clock decides there); on SQLite every process shares the
machine's clock, so the fault there is a step of that clock, simulated for running
processes through a shared ``FAKETIME_TIMESTAMP_FILE``. libfaketime is kept off the
monotonic clock (``FAKETIME_DONT_FAKE_MONOTONIC``): that clock never steps on a real machine, and
the ledger times runs with it across processes.
"""

from __future__ import annotations

import glob
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard import BatchState, Yard
from tests.integration.test_processes import Workers, check_counters, wait_for
from tests.procs.tasks import read_ledger

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="libfaketime: Linux only"),
]

TASK = "tests.procs.tasks:clocked"
#: Short, but not so short that a busy machine's heartbeats come later than the lease.
LEASE = 2.0
#: The lease of the takeover tests, longer: under a busy machine's load (CI with two test
#: processes) a heartbeat 2 s late is a real lost lease, not the fault tested.
HELD = 3.0
#: How much later than asked a retry may start: the claim loop's idle poll, a commit, a
#: busy machine.
RETRY_SLACK = 1.5


def libfaketime() -> str:
    """The thread-safe build: the plain one parses the timestamp file into a static buffer
    that a second thread can overwrite mid-parse, and a worker has several threads reading
    the clock. CI saw it as a step-back clock reading the true time for a moment (its
    retries ran 1.4 s after they asked to wait 3 s)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail(
            "libfaketime is missing: these tests need the Debian package `faketime` "
            "(sudo apt-get install faketime)"
        )
    return found[0]


def faked(offset: str | None = None, timestamp_file: Path | None = None) -> dict[str, str]:
    """The environment that runs a process under libfaketime: a fixed ``offset`` ("+2h"),
    or whatever ``timestamp_file`` says at each reading of the clock.

    NOTE: ``FAKETIME_FORCE_MONOTONIC_FIX=0``: on glibc libfaketime turns that fix on by
    itself, and with the monotonic clock left alone it makes a timed wait on a monotonic
    condition variable (CPython's GIL, handed between a worker's event loop and its store
    thread) time out at once. A worker waiting for its retries then spun at 60-90 % of a
    core instead of 5 %, and on a busy machine its sweeps and claims came seconds late
    (retries 5.6-8 s after a step that the rule bounds at 5.5)."""
    env = {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }
    if offset is not None:
        env["FAKETIME"] = offset
    if timestamp_file is not None:
        env |= {"FAKETIME_TIMESTAMP_FILE": str(timestamp_file), "FAKETIME_NO_CACHE": "1"}
    return env


# The fixtures of test_processes.py (imported fixtures would shadow test arguments).
@pytest.fixture
def yard(store_url: str) -> Iterator[Yard]:
    with Yard(store_url) as y:
        yield y


@pytest.fixture
def workers(store_url: str, tmp_path: Path, yard: Yard) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(store_url, logs)
    try:
        yield pool
    finally:
        pool.close()


def set_clock(path: Path, offset: str) -> None:
    """Set the time every process reading ``path`` sees, at once: a rename, so that no
    reader finds the file empty (libfaketime would read the true time from it)."""
    new = path.with_suffix(".new")
    new.write_text(f"{offset}\n")
    os.replace(new, path)


def runs_per_key(ledger: Path) -> Counter[str]:
    return Counter(line["key"] for line in read_ledger(ledger) if line["event"] == "start")


def retry_times(ledger: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Per key, on the monotonic clock: when its first attempt asked for a retry, and when
    its second attempt started."""
    asked: dict[str, float] = {}
    second: dict[str, float] = {}
    for line in read_ledger(ledger):
        if line["event"] == "retry":
            asked[line["key"]] = line["mono"]
        elif line["event"] == "start" and line["attempt"] == 2:
            second[line["key"]] = line["mono"]
    return asked, second


def retry_delays(ledger: Path) -> dict[str, float]:
    """Per key: seconds from its first attempt's retry request to its second start."""
    asked, second = retry_times(ledger)
    return {key: second[key] - asked[key] for key in second}


@pytest.mark.parametrize("offset", ["+2h", "-2h"])
def test_a_worker_with_a_wrong_clock_takes_over_no_live_lease(
    yard: Yard, workers: Workers, tmp_path: Path, offset: str
) -> None:
    """Items last several leases on two workers, one of them hours off: none runs twice."""
    ledger = tmp_path / "ledger.jsonl"
    batch = yard.submit(
        TASK,
        [{"id": f"i{n}", "n": n, "sleep": 2 * HELD, "ledger": str(ledger)} for n in range(12)],
    )
    args = ("--lease", str(HELD), "--concurrency", "4")
    normal = workers.start(*args)
    skewed = workers.start(*args, env=faked(offset))
    for proc in (normal, skewed):
        assert workers.finish(proc, 60) == 0, workers.report()
    status = batch.status()
    twice = sorted(key for key, runs in runs_per_key(ledger).items() if runs > 1)
    assert twice == [], f"{len(twice)} item(s) ran twice: {twice}\n{workers.report()}"
    assert status.state is BatchState.COMPLETED, status
    assert status.counts.succeeded == 12
    check_counters(yard, batch.id)


# A process behind the machine's clock is no fault on SQLite (every process shares that
# clock): a retry it asks for comes early there. Its real fault, a step, is tested below.
@pytest.mark.parametrize(
    ("store_url", "offset"),
    [("sqlite", "+2h"), ("postgres", "+2h"), ("postgres", "-2h")],
    indirect=["store_url"],
)
def test_retries_keep_their_backoff_when_their_worker_clock_is_wrong(
    yard: Yard, workers: Workers, tmp_path: Path, offset: str
) -> None:
    """Retries asked by a worker hours off, which then leaves, run after their backoff on
    the worker left (not hours later, nor at once)."""
    ledger, after = tmp_path / "ledger.jsonl", 3.0
    batch = yard.submit(
        TASK, [{"id": f"r{n}", "n": n, "after": after, "ledger": str(ledger)} for n in range(8)]
    )
    args = ("--lease", str(LEASE), "--concurrency", "4")
    skewed = workers.start(*args, "--forever", env=faked(offset))
    wait_for(
        lambda: batch.status().counts.retry_wait + batch.status().counts.succeeded == 8,
        30,
        "the skewed worker to fail every first attempt",
        workers.report,
    )
    # NOTE: the normal worker starts once the skewed one has left. Both alive on SQLite,
    # the normal one rebases the skewed one's retries onto its own clock, which the skewed
    # one (2 h ahead) then finds long due and runs at once: two clocks hours apart on one
    # SQLite file is what the rule does not cover (docs/architecture.md, "Clocks").
    skewed.send_signal(signal.SIGTERM)
    assert workers.finish(skewed, 30) == 0, workers.report()
    ready = tmp_path / "ready"
    normal = workers.start(*args, "--ready", str(ready))
    started = time.monotonic()
    assert workers.finish(normal, 30) == 0, (
        f"retries still waiting {time.monotonic() - started:.1f} s after the skewed worker "
        f"left: {batch.status().counts}\n{workers.report()}"
    )
    # When each retry may start at the latest: on PostgreSQL its backoff after it was asked
    # (the database's clock), or once the normal worker is up if that is later; on SQLite the
    # normal worker's first sweep rebases it onto its own clock, so its backoff after that
    # worker is up. The worker's start-up (a busy machine: seconds) is not the rule's delay.
    up = float(ready.read_text())
    asked, second = retry_times(ledger)
    assert len(second) == 8, second
    due = {
        key: up + after if workers.url.startswith("sqlite") else max(asked[key] + after, up)
        for key in second
    }
    delays = {key: round(second[key] - asked[key], 2) for key in second}
    late = {key: round(second[key] - due[key], 2) for key in second}
    assert all(delay >= after - 0.1 for delay in delays.values()), f"early: {delays}"
    assert all(lateness <= RETRY_SLACK for lateness in late.values()), (
        f"seconds past due: {late} (normal worker up {up - min(asked.values()):.1f} s after "
        "the first retry was asked)"
    )
    assert batch.status().state is BatchState.COMPLETED
    check_counters(yard, batch.id)


@pytest.mark.parametrize("step", ["+2h", "-2h"])
def test_a_clock_step_takes_no_live_lease(
    yard: Yard, workers: Workers, tmp_path: Path, step: str
) -> None:
    """The clock of every worker jumps two hours while items run: none runs twice (nor
    times out: every batch has a timeout)."""
    ledger, clock = tmp_path / "ledger.jsonl", tmp_path / "clock"
    set_clock(clock, "+0")
    batch = yard.submit(
        TASK,
        [{"id": f"i{n}", "n": n, "sleep": 2 * HELD, "ledger": str(ledger)} for n in range(8)],
    )
    args = ("--lease", str(HELD), "--concurrency", "4")
    procs = [workers.start(*args, env=faked(timestamp_file=clock)) for _ in range(2)]
    wait_for(lambda: sum(runs_per_key(ledger).values()) >= 6, 30, "items to start", workers.report)
    set_clock(clock, step)
    for proc in procs:
        assert workers.finish(proc, 60) == 0, workers.report()
    twice = sorted(key for key, runs in runs_per_key(ledger).items() if runs > 1)
    assert twice == [], f"{len(twice)} item(s) ran twice: {twice}\n{workers.report()}"
    assert batch.status().state is BatchState.COMPLETED
    check_counters(yard, batch.id)


def test_a_clock_step_back_strands_no_item_of_a_dead_worker(
    yard: Yard, workers: Workers, tmp_path: Path
) -> None:
    """A worker dies holding items, then the clock goes back two hours: another worker
    takes its items about a lease later, not two hours later."""
    ledger, clock = tmp_path / "ledger.jsonl", tmp_path / "clock"
    set_clock(clock, "+0")
    batch = yard.submit(
        TASK, [{"id": f"d{n}", "n": n, "sleep": 60, "ledger": str(ledger)} for n in range(4)]
    )
    args = ("--lease", str(LEASE), "--concurrency", "4")
    doomed = workers.start(*args, env=faked(timestamp_file=clock))
    wait_for(lambda: len(runs_per_key(ledger)) == 4, 30, "the items to start", workers.report)
    doomed.kill()
    doomed.wait(10)
    set_clock(clock, "-2h")
    killed = time.monotonic()
    heir = workers.start(*args, env=faked(timestamp_file=clock))
    assert workers.finish(heir, 20) == 0, (
        f"items still stranded {time.monotonic() - killed:.1f} s after their worker died: "
        f"{batch.status().counts}\n{workers.report()}"
    )
    assert batch.status().state is BatchState.COMPLETED
    check_counters(yard, batch.id)


def test_a_clock_step_back_delays_no_retry(yard: Yard, workers: Workers, tmp_path: Path) -> None:
    """Items wait for their retry when the clock goes back two hours: they run after their
    backoff (counted again from the step, at worst), not two hours later."""
    ledger, clock, after = tmp_path / "ledger.jsonl", tmp_path / "clock", 3.0
    set_clock(clock, "+0")
    batch = yard.submit(
        TASK, [{"id": f"r{n}", "n": n, "after": after, "ledger": str(ledger)} for n in range(8)]
    )
    worker = workers.start("--lease", str(LEASE), env=faked(timestamp_file=clock))
    wait_for(
        lambda: batch.status().counts.retry_wait == 8, 30, "the retries to wait", workers.report
    )
    set_clock(clock, "-2h")
    stepped = time.monotonic()
    assert workers.finish(worker, 20) == 0, (
        f"retries still waiting {time.monotonic() - stepped:.1f} s after the step: "
        f"{batch.status().counts}\n{workers.report()}"
    )
    delays = retry_delays(ledger)
    assert min(delays.values()) >= after - 0.1, f"retries came early: {delays}"
    since_step = sorted(
        round(line["mono"] - stepped, 2)
        for line in read_ledger(ledger)
        if line["event"] == "start" and line["attempt"] == 2
    )
    # The next sweep (every lease / 2) sees the step; the delay counts from there.
    latest = after + LEASE / 2 + RETRY_SLACK
    assert since_step[-1] <= latest, f"retries started {since_step} s after the step"
    check_counters(yard, batch.id)
