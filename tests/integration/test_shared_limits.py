"""Rate limits shared by real processes: four worker processes, each with three concurrent
callers, use one SharedLimiter key on one store (a SQLite file; a PostgreSQL database).

Every admission is written to a ledger with the time the store charged the buckets for
it (``Grant.at``: its transaction's ``now``, or later when that clock read lagged behind),
and the ledgers together must keep the token bucket's promise: over any span ``[a, b]`` at
most ``burst + rate * (b - a)`` admissions, across all processes. The processes must also
use at least 90% of that allowance between them: they share one bucket, neither each
getting their own nor starving one another.

The workers are this module run as a program:
``python -m tests.integration.test_shared_limits URL KEY LEDGER GO DURATION [PAUSE_AT]``.
Each says it is ready (a file beside its LEDGER) once its store is open; when all are, the
test writes the common start time to the file GO.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchyard.ratelimit import SharedLimiter
from batchyard.store import Store, open_store

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
CALLERS = 3
RATE = 10.0  # requests a second: "600/min"
BURST = 10  # the request bucket's capacity: it starts full
#: Tokens: 100 a second with a bucket of 1500; each call reserves 100 and really uses 5. Only
#: the settled correction lets the calls run at the request rate: without it, tokens would
#: hold them to 15 at first and one a second after, 21 in 6 s instead of 70.
ESTIMATE = 100
ACTUAL = 5
TOKEN_BURST = 1500
STARTUP = 60.0  # seconds the processes may take to start and open their store
#: From the moment every process is ready to the common start time: they see GO by then.
LEAD = 0.5
PAUSE = 1.5


def limiter_for(url: str, key: str) -> tuple[SharedLimiter, Store]:
    store = open_store(url)
    limiter = SharedLimiter(
        store, key, rpm="600/min", tpm="6000/min", burst=BURST, token_burst=TOKEN_BURST, lease=60.0
    )
    return limiter, store


async def work(
    url: str, key: str, ledger: Path, go: Path, duration: float, pause_at: float | None
) -> None:
    limiter, store = limiter_for(url, key)
    admitted: list[float] = []
    ready(ledger).touch()
    while not go.exists():
        await asyncio.sleep(0.005)
    start = float(go.read_text())
    deadline = start + duration
    await asyncio.sleep(max(0.0, start - time.time()))

    async def caller() -> None:
        while time.time() < deadline:
            async with limiter.slot(ESTIMATE) as slot:
                admitted.append(slot.grant.at)
                await asyncio.sleep(0.01)
                slot.settle(ACTUAL)

    async def pauser(at: float) -> None:
        await asyncio.sleep(max(0.0, start + at - time.time()))
        asked = time.time()
        until = await limiter.pause(PAUSE, "429 Too Many Requests")
        (ledger.parent / "pause.json").write_text(json.dumps({"asked": asked, "until": until}))

    jobs = [caller() for _ in range(CALLERS)]
    if pause_at is not None:
        jobs.append(pauser(pause_at))
    await asyncio.gather(*jobs)
    ledger.write_text("".join(f"{t!r}\n" for t in admitted))
    store.close()


def ready(ledger: Path) -> Path:
    return ledger.with_suffix(".ready")


def run_workers(
    url: str, key: str, tmp_path: Path, duration: float, pause_at: float | None
) -> tuple[float, list[list[float]]]:
    go = tmp_path / f"{key}.go"
    ledgers = [tmp_path / f"{key}-{i}.txt" for i in range(WORKERS)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.test_shared_limits",
                url,
                key,
                str(ledger),
                str(go),
                repr(duration),
                *([repr(pause_at)] if pause_at is not None and i == 0 else []),
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, ledger in enumerate(ledgers)
    ]
    try:
        deadline = time.monotonic() + STARTUP
        while not all(ready(ledger).exists() for ledger in ledgers):
            assert time.monotonic() < deadline, "the workers did not open their store in time"
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"a worker ended before its start: {proc.communicate()}")
            time.sleep(0.01)
        start = time.time() + LEAD
        (tmp_path / "go.tmp").write_text(repr(start))
        (tmp_path / "go.tmp").rename(go)  # whole, at once
        for proc in procs:
            _, err = proc.communicate(timeout=LEAD + duration + 30)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:  # none outlives a failure
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    per_worker = [[float(line) for line in ledger.read_text().split()] for ledger in ledgers]
    return start, per_worker


def assert_within_the_bucket(times: list[float]) -> None:
    """No span [a, b] of admissions holds more than BURST + RATE * (b - a)."""
    times = sorted(times)
    for i, a in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= BURST + RATE * (times[j] - a) + 1e-6, (
                f"{j - i + 1} admissions in {times[j] - a:.3f} s"
            )


@pytest.mark.slow
def test_processes_share_one_request_and_token_budget(store_url: str, tmp_path: Path) -> None:
    duration = 6.0
    start, per_worker = run_workers(store_url, "shared", tmp_path, duration, None)
    times = [t for worker in per_worker for t in worker]
    assert_within_the_bucket(times)
    allowance = BURST + RATE * duration
    used = sum(1 for t in times if start <= t <= start + duration)
    assert used >= 0.9 * allowance, (used, allowance)
    assert all(len(worker) >= 5 for worker in per_worker), [len(w) for w in per_worker]


@pytest.mark.slow
def test_a_pause_stops_every_process_until_it_ends(store_url: str, tmp_path: Path) -> None:
    duration = 4.0
    start, per_worker = run_workers(store_url, "paused", tmp_path, duration, 1.5)
    pause = json.loads((tmp_path / "pause.json").read_text())
    times = sorted(t for worker in per_worker for t in worker)
    assert_within_the_bucket(times)
    # A call admitted by a transaction that read its clock just before the pause's may land
    # a moment after the pause was asked for; none lands after that.
    during = [t for t in times if pause["asked"] + 0.2 < t < pause["until"]]
    assert during == []
    assert any(pause["asked"] - 0.5 < t <= pause["asked"] for t in times)
    after = [t for t in times if t >= pause["until"]]
    assert after and after[0] < pause["until"] + 0.5
    # After the pause the bucket is full: a burst goes at once, then the rate.
    assert len(after) >= 0.9 * (BURST + RATE * (start + duration - pause["until"]))


if __name__ == "__main__":
    url_, key_, ledger_, go_, duration_, *pause_ = sys.argv[1:]
    asyncio.run(
        work(
            url_,
            key_,
            Path(ledger_),
            Path(go_),
            float(duration_),
            float(pause_[0]) if pause_ else None,
        )
    )
