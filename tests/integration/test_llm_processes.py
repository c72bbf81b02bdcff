"""The built-in ``llm`` task against the fake OpenAI server over real HTTP on loopback, with
real stores (a SQLite file; a PostgreSQL database, see conftest.py).

1. Four worker processes (the ``batchyard worker`` command, started warm by
   ``tests.procs.llm_worker``) share one limit: the server enforces the very limits the batch
   declares, over a short window (6 s, so the test takes seconds rather than minutes), and
   never has to answer 429, while the workers still use most of the limit. The limit is low
   (a call every 0.3 s) and each answer slow (0.9 s), so the limit, not the machine's speed,
   bounds the rate, and only calls overlapped across the processes can use most of it.
2. A 429 storm is ridden out: the batch sets no limit and the server allows 10 requests a
   second; every 429 pauses the limiter key for the ``retry-after`` it carries, the call
   tries again, and every item still ends succeeded.
3. Items held for the limit are waiting, not running: a worker holds 16 items against a
   limit that admits about 4 a second; the batch's status, read meanwhile, counts what
   runs (no more than the limiter admits) apart from what waits, and names the key.

The tests wait only on files the workers create and on their exit, each with a deadline;
the one assertion about time is a loose share of the limit used (70%; the limiter allows
93%, and calls made one at a time would get at most a third).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import BatchState, BatchStatus, ItemState, Yard
from batchyard.llm.params import read_params
from batchyard.llm.tokens import count_message_tokens
from batchyard.testing.openai import FakeOpenAI, count_prompt_tokens
from batchyard.worker.chores import WAITS_INTERVAL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"
SYSTEM = "Answer briefly."
TEMPLATE = "Reply in one line to prompt {{ n }}."
MAX_TOKENS = 40
#: The server's latency: about what a small model takes for a short answer, shortened.
LATENCY: dict[str, Any] = {"latency": 0.05, "latency_per_token": 0.001}

# -- 1. shared limits: the server's limits over a 6 s window, and the batch's, are the same.
# The limit is low (20 a window: a call every 0.3 s) so that what bounds the rate is the limit,
# not the machine: a worker busy or descheduled for a few tens of milliseconds on a loaded
# machine still meets its turn. Forty items span two windows, so the server's limit bites
# (it refuses the 21st request of any 6 s) and the run takes about as long as a window twice.
WINDOW = 6.0
RPW = 20  # requests per window: about 3.3/s
#: What every request reserves against the token limit: a prompt of 23, max_tokens 40.
RESERVE = 63
#: Tokens per window: 21 requests' worth, so both limits bind at about the same rate. (The
#: window-safe token bucket holds a sixtieth of it, 22, less than a request: each call waits
#: for a full bucket and leaves it in debt, as calls larger than a sixtieth of a TPM do.)
TPW = 21 * RESERVE
WORKERS = 4
#: Per worker: 32 callers against a limit that needs three in flight, so all of it is used;
#: fewer than the items, so each worker holds some from the start.
CONCURRENCY = 8
SHARED_ITEMS = 40  # two windows' worth: about 12.5 s at the limit
#: Each answer takes 0.9 s, three admissions' worth: calls made one at a time (serialised
#: across the processes) could use at most a third of the limit.
SHARED_LATENCY: dict[str, Any] = {"latency": 0.9, "latency_per_token": 0.0}
#: The least share of the limit the workers must use between them. The window-safe limiter
#: admits at most 93% of it (19 a window, plus its bucket of one); 70% leaves each admission
#: about 0.1 s to be late by on a loaded machine (at 10 a second it had 0.05 s).
MIN_SHARE = 0.70

# -- 2. the storm: the server allows 10 requests a second, the batch sets no limit at all
STORM_WINDOW = 1.0
STORM_RPW = 10
STORM_ITEMS = 40
STORM_CONCURRENCY = 16

# -- 3. waiting, not running: 10 requests in any 2 s (window-safe: about 4.4 a second)
WAIT_WINDOW = 2.0
WAIT_RPW = 10
WAIT_ITEMS = 24
WAIT_CONCURRENCY = 16
#: Calls in flight at once at most: the bucket's one, plus one admitted while another is
#: answered, plus one claimed just before its wait is written (every 0.2 s at most).
MOST_RUNNING = 3


def prompts(n: int) -> Iterator[dict[str, Any]]:
    return ({"id": f"p{i:04d}", "n": i} for i in range(n))


def llm_params(base_url: str) -> dict[str, Any]:
    # No API key: the fake server takes requests without one (each key has its own limits,
    # and so does "no key").
    return {
        "model": MODEL,
        "template": TEMPLATE,
        "system": SYSTEM,
        "base_url": base_url,
        "api_key_env": "",
        "max_tokens": MAX_TOKENS,
    }


def reservation(item: dict[str, Any]) -> int:
    """What the llm task reserves for ``item``'s call: its prompt's tokens and max_tokens."""
    messages = read_params(llm_params("http://unused")).prompt.render(item)
    return count_message_tokens(messages, MODEL).tokens + MAX_TOKENS


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    detail: Callable[[], object] = lambda: "",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds,
    saying what was awaited and ``detail()``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(0.01)
    return value


class Workers:
    """Warm worker processes (``tests.procs.llm_worker``: the ``batchyard worker`` command
    after a warm-up) with their stderr in files; none outlives its test."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.go = logs / "go"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, concurrency: int) -> None:
        """Start ``n`` workers and wait until each is warm."""
        for i in range(n):
            with open(self.logs / f"worker{i}.err", "wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "tests.procs.llm_worker",
                            self.url,
                            MODEL,
                            str(self.logs / f"ready{i}"),
                            str(self.go),
                            "--concurrency",
                            str(concurrency),
                        ],
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        wait_for(
            lambda: all((self.logs / f"ready{i}").exists() for i in range(n)),
            30,
            "the workers to warm up",
            lambda: self.report(),
        )

    def serve(self, batch_id: str) -> None:
        """Let the workers work ``batch_id`` (until it is idle)."""
        (self.logs / "go.tmp").write_text(batch_id)
        (self.logs / "go.tmp").replace(self.go)

    def stderr(self, n: int) -> str:
        return (self.logs / f"worker{n}.err").read_text(errors="replace")[-4000:]

    def report(self) -> str:
        return "\n".join(
            f"worker {n} exit {proc.poll()}:\n{self.stderr(n)}" for n, proc in enumerate(self.procs)
        )

    def finish(self, timeout: float) -> list[int]:
        """Wait for every worker to exit; the items each recorded, read from its log."""
        deadline = time.monotonic() + timeout
        for n, proc in enumerate(self.procs):
            try:
                code = proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                report = self.report()
                raise AssertionError(f"workers still running after {timeout}s\n{report}") from None
            assert code == 0, f"worker {n} exited {code}\n{self.report()}"
        return [self.recorded(n) for n in range(len(self.procs))]

    def recorded(self, n: int) -> int:
        found = re.search(r"worker done: (\d+) item\(s\) recorded", self.stderr(n))
        assert found, f"worker {n} did not log its end:\n{self.stderr(n)}"
        return int(found[1])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def workers(store_url: str, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(store_url, logs)
    try:
        yield pool
    finally:
        pool.close()


def test_four_processes_share_the_limit_without_a_429(store_url: str, workers: Workers) -> None:
    # The server counts prompts with the model's tokenizer; loading it takes its first
    # request half a second, during which the calls admitted meanwhile would pile up.
    count_prompt_tokens([{"role": "user", "content": "warm up"}], MODEL)
    workers.start(WORKERS, concurrency=CONCURRENCY)
    with FakeOpenAI(rpm=RPW, tpm=TPW, window=WINDOW, **SHARED_LATENCY) as server:
        with Yard(store_url) as yard:
            batch = yard.submit(
                "llm",
                prompts(SHARED_ITEMS),
                params=llm_params(server.base_url),
                rate_limit=f"{RPW}/{WINDOW:g}s",
                tokens_per_minute=f"{TPW}/{WINDOW:g}s",
            )
            workers.serve(batch.id)
            recorded = workers.finish(timeout=60)
            status = batch.status()
            answered = sorted(item.finished_at or 0.0 for item in batch.items())
        stats = server.stats()
    reserve = {reservation(item) for item in prompts(SHARED_ITEMS)}

    assert status.state == BatchState.COMPLETED, status
    assert status.counts.succeeded == SHARED_ITEMS
    assert status.usage.calls == SHARED_ITEMS
    assert sum(recorded) == SHARED_ITEMS
    assert all(n > 0 for n in recorded), recorded  # every process took a share
    assert stats.rate_limited == {}, stats
    assert stats.accepted == stats.requests == SHARED_ITEMS
    # The workers reserved exactly what the server charged: the same tokenizer, the same rule.
    assert reserve == {RESERVE}
    assert stats.reserved_tokens == RESERVE * SHARED_ITEMS
    # The achieved rate, from the first answer to the last, as a share of each limit.
    span = answered[-1] - answered[0]
    request_share = (SHARED_ITEMS - 1) / span / (RPW / WINDOW)
    token_share = request_share * RESERVE * RPW / TPW
    assert max(request_share, token_share) >= MIN_SHARE, (
        f"{SHARED_ITEMS} answers in {span:.1f}s, {stats.reserved_tokens} tokens: "
        f"{request_share:.0%} of the request limit, {token_share:.0%} of the token limit"
    )


def test_a_storm_of_429s_is_ridden_out(store_url: str) -> None:
    with FakeOpenAI(rpm=STORM_RPW, window=STORM_WINDOW, **LATENCY) as server:
        with Yard(store_url) as yard:
            batch = yard.submit("llm", prompts(STORM_ITEMS), params=llm_params(server.base_url))
            yard.run_until_idle(concurrency=STORM_CONCURRENCY)
            status = batch.status()
            items = list(batch.items())
        stats = server.stats()

    assert status.state == BatchState.COMPLETED, status
    assert status.counts.succeeded == STORM_ITEMS
    assert status.counts.failed == 0
    assert all(item.state == ItemState.SUCCEEDED for item in items)
    assert stats.accepted == STORM_ITEMS  # each item answered once: no call repeated
    assert stats.rate_limited.get("requests", 0) > 0, stats


def test_items_held_for_the_limit_are_waiting_not_running(store_url: str) -> None:
    # Warm the tokenizers (the task's and the server's): loading one takes half a second,
    # during which the items preparing their first call would count as running.
    reservation(next(prompts(1)))
    count_prompt_tokens([{"role": "user", "content": "warm up"}], MODEL)
    seen: list[tuple[float, BatchStatus]] = []
    done = threading.Event()
    with FakeOpenAI(rpm=WAIT_RPW, window=WAIT_WINDOW, **LATENCY) as server:
        with Yard(store_url) as yard:
            batch = yard.submit(
                "llm",
                prompts(WAIT_ITEMS),
                params=llm_params(server.base_url),
                rate_limit=f"{WAIT_RPW}/{WAIT_WINDOW:g}s",
            )

            def watch() -> None:
                while not done.wait(0.05):
                    seen.append((time.monotonic(), batch.status()))

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                yard.run_until_idle(concurrency=WAIT_CONCURRENCY)
            finally:
                done.set()
                watcher.join(10)
            status = batch.status()
        stats = server.stats()

    assert status.state == BatchState.COMPLETED, status
    assert status.counts.succeeded == WAIT_ITEMS
    assert stats.rate_limited == {}, stats  # the limit held: the server never refused
    waiting = [(at, look) for at, look in seen if look.waiting_on is not None]
    assert waiting, [look.counts for _, look in seen]
    key = read_params(llm_params(server.base_url)).limiter_key(None)
    assert {look.waiting_on.key for _, look in waiting if look.waiting_on} == {key}
    assert max(look.counts.waiting for _, look in waiting) >= WAIT_CONCURRENCY // 2
    # From one publication of the waits on (WAITS_INTERVAL: until then the items still
    # preparing their first call, queued for the store, run), what runs is what the
    # limiter admits, not what the worker holds.
    settled = waiting[0][0] + 2 * WAITS_INTERVAL
    running = [look.counts.running for at, look in waiting if at >= settled]
    assert running and max(running) <= MOST_RUNNING, running
    # Once it ends, nothing is left waiting.
    assert (status.counts.waiting, status.waiting_on) == (0, None)
