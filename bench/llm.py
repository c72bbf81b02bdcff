"""The LLM rate-limit benchmark: four worker processes against the local OpenAI-compatible
server at 600 requests/min and 40,000 tokens/min for 60 s, and the share of each limit they
achieve (target: at least 95%, with zero 429s), beside the naive baseline of one in-process
limiter per worker at the full limit, in the same run.

Run it by hand, not in the test suite::

    make bench-llm                      # or: .venv/bin/python bench/llm.py
    .venv/bin/python bench/llm.py --db postgresql://postgres@127.0.0.1:5432/bench

How a figure is taken. Each side gets a fresh fake server (``batchyard.testing.openai``, in
this process) enforcing 600 requests and 40,000 tokens in any 60 s window per API key, as
OpenAI does: a request reserves its prompt plus its max_tokens at admission. Every request
reserves 66 tokens (a system and a user message of 26 tokens, and max_tokens 40), so 600
requests are 39,600 tokens and both limits bind together. The window opens at the server's
first request; 60 s later the server's counters are read (requests admitted, tokens
reserved, 429s sent), then the workers get SIGTERM.

- batchyard: ``batchyard submit llm`` (900 items, ``--rate-limit 600/min
  --tokens-per-minute 40000``), then four ``batchyard worker`` processes (concurrency 16
  each) on one store: a SQLite file in a fresh temporary folder, or ``--db``.
- naive: four processes of this script, each calling the server directly with httpx
  (16 callers each) through its own token buckets at the full 600/min and 40,000/min
  (holding a second's worth), and waiting out a 429's ``retry-after`` before trying again.

The table goes to stdout, progress to stderr. It takes about two and a half minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from batchyard.llm.prompts import PromptTemplate
from batchyard.llm.tokens import count_message_tokens
from batchyard.testing.openai import FakeOpenAI, Stats, count_prompt_tokens

RPM = 600
TPM = 40_000
SECONDS = 60.0
WORKERS = 4
CONCURRENCY = 16
ITEMS = 900  # more than 60 s at 600/min: the limit, not the work, is what runs out
MODEL = "gpt-4o-mini"
SYSTEM = "Answer tickets briefly."
TEMPLATE = "Ticket {{ n }}: my order arrived late and damaged."
MAX_TOKENS = 40
#: A small model's latency: 0.3 s, plus 2 ms a token of the answer (16 to 40 tokens).
LATENCY = 0.3
LATENCY_PER_TOKEN = 0.002
API_KEY = "sk-bench-0123456789abcdef"
TARGET_SHARE = 0.95
STOP_GRACE = 2.0  # seconds a stopped batchyard worker lets its calls finish

PROMPT = PromptTemplate(TEMPLATE, SYSTEM)
HERE = Path(__file__).resolve()
BATCHYARD = Path(sys.executable).parent / "batchyard"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def messages(n: int) -> list[dict[str, str]]:
    """Item ``n``'s messages, rendered as the llm task renders them (the same requests)."""
    return PROMPT.render({"id": f"t{n:04d}", "n": n})


def reservation(n: int) -> int:
    """What request ``n`` reserves against tokens per minute: its prompt and max_tokens."""
    return count_message_tokens(messages(n), MODEL).tokens + MAX_TOKENS


@dataclass(frozen=True)
class Window:
    """What one side achieved during the 60 s window, as the server counted it."""

    requests: int  # admitted
    tokens: int  # reserved at admission (prompt + max_tokens): what TPM counts
    used_tokens: int  # prompt + completion, as the answers reported
    rate_limited: int  # 429s sent
    attempts: int  # every request, 429s included
    second_half: int  # admitted in the last 30 s: a limit used evenly, or in a burst

    @classmethod
    def of(cls, stats: Stats, half_way: Stats) -> Window:
        return cls(
            stats.accepted,
            stats.reserved_tokens,
            stats.tokens_used,
            stats.too_many_requests,
            stats.requests,
            stats.accepted - half_way.accepted,
        )


def fake_server() -> FakeOpenAI:
    return FakeOpenAI(
        rpm=RPM,
        tpm=TPM,
        window=SECONDS,
        latency=LATENCY,
        latency_per_token=LATENCY_PER_TOKEN,
        answer_tokens=(16, MAX_TOKENS),
    )


def measure(server: FakeOpenAI, procs: list[subprocess.Popen[bytes]]) -> Window:
    """Wait for the server's first request, then read its counters SECONDS later (and
    half-way)."""
    deadline = time.monotonic() + 60
    while server.stats().requests == 0:
        if time.monotonic() > deadline or all(proc.poll() is not None for proc in procs):
            raise RuntimeError("no request reached the server within 60 s")
        time.sleep(0.002)
    opened = time.monotonic()
    say(f"  first request; reading the server's counters in {SECONDS:g} s")
    sleep_until(opened + SECONDS / 2)
    half_way = server.stats()
    sleep_until(opened + SECONDS)
    return Window.of(server.stats(), half_way)


def sleep_until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 0.01))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(STOP_GRACE + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- batchyard ------------------------------------------------------------------------------


def run_batchyard(db: str | None, tmp: Path) -> Window:
    url = db or f"sqlite:///{tmp / 'bench.db'}"
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    prompts = tmp / "prompts.jsonl"
    lines = (json.dumps({"id": f"t{n:04d}", "n": n}) + "\n" for n in range(ITEMS))
    prompts.write_text("".join(lines))
    (tmp / "prompt.j2").write_text(TEMPLATE)
    with fake_server() as server:
        submitted = subprocess.run(
            [
                str(BATCHYARD),
                "--db",
                url,
                "submit",
                "llm",
                str(prompts),
                "--param",
                f"model={MODEL}",
                "--param",
                f"template=@{tmp / 'prompt.j2'}",
                "--param",
                f"system={SYSTEM}",
                "--param",
                f"base_url={server.base_url}",
                "--param",
                f"max_tokens={MAX_TOKENS}",
                "--rate-limit",
                f"{RPM}/min",
                "--tokens-per-minute",
                str(TPM),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if submitted.returncode != 0:
            raise RuntimeError(f"batchyard submit failed:\n{submitted.stderr}")
        batch_id = submitted.stdout.split()[-1]
        say(f"batchyard: batch {batch_id}, {WORKERS} worker processes x {CONCURRENCY}")
        worker = [str(BATCHYARD), "--db", url, "worker", "--batch", batch_id]
        options = ["--concurrency", str(CONCURRENCY), "--grace", str(STOP_GRACE)]
        procs = [subprocess.Popen([*worker, *options], env=env) for _ in range(WORKERS)]
        try:
            window = measure(server, procs)
        finally:
            stop(procs)
        after = server.stats()
    if after.too_many_requests != window.rate_limited:
        say(f"  (429s by the time the workers stopped: {after.too_many_requests})")
    return window


# -- naive ----------------------------------------------------------------------------------


class Bucket:
    """A plain in-process token bucket: refills at ``per_minute / 60`` a second, holds a
    second's worth, starts full."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = self.rate
        self.level = self.capacity
        self.updated = time.monotonic()

    async def take(self, amount: float) -> None:
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
            need = min(amount, self.capacity)
            if self.level >= need:
                self.level -= amount
                return
            await asyncio.sleep((need - self.level) / self.rate)


def retry_after(response: httpx.Response) -> float:
    if "retry-after-ms" in response.headers:
        return float(response.headers["retry-after-ms"]) / 1000
    return float(response.headers.get("retry-after", "1"))


async def naive_worker(base_url: str, first: int, count: int) -> None:
    """One naive process: CONCURRENCY callers over items ``first .. first + count``."""
    requests, tokens = Bucket(RPM), Bucket(TPM)
    todo = list(range(first, first + count))
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def caller(http: httpx.AsyncClient) -> None:
        while todo:
            n = todo.pop()
            body = {
                "model": MODEL,
                "messages": messages(n),
                "max_tokens": MAX_TOKENS,
            }
            while True:
                await requests.take(1)
                await tokens.take(reservation(n))
                response = await http.post(f"{base_url}/chat/completions", json=body)
                if response.status_code != 429:
                    response.raise_for_status()
                    break
                await asyncio.sleep(retry_after(response))

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as http:
        callers = [asyncio.create_task(caller(http)) for _ in range(CONCURRENCY)]
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        waiting = asyncio.create_task(stopped.wait())
        await asyncio.wait([waiting, *callers], return_when=asyncio.FIRST_COMPLETED)
        for task in [waiting, *callers]:
            task.cancel()
        await asyncio.gather(waiting, *callers, return_exceptions=True)


def run_naive() -> Window:
    say(f"naive: {WORKERS} processes x {CONCURRENCY}, each its own {RPM}/min, {TPM:,}/min")
    share = ITEMS // WORKERS
    with fake_server() as server:
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE), "--naive-worker", server.base_url, str(i * share)],
                stdout=subprocess.DEVNULL,
            )
            for i in range(WORKERS)
        ]
        try:
            return measure(server, procs)
        finally:
            stop(procs)


# -- the run ----------------------------------------------------------------------------------


def table(ours: Window, naive: Window) -> str:
    def share(value: float, limit: float) -> str:
        return f"{value / limit:.1%}"

    rows = [
        ("figure (60 s window)", "batchyard", "naive", "target"),
        ("requests admitted", f"{ours.requests:,}", f"{naive.requests:,}", f"{RPM:,}"),
        (
            f"  share of {RPM}/min",
            share(ours.requests, RPM),
            share(naive.requests, RPM),
            f">= {TARGET_SHARE:.0%}",
        ),
        ("tokens reserved", f"{ours.tokens:,}", f"{naive.tokens:,}", f"{TPM:,}"),
        (
            f"  share of {TPM:,}/min",
            share(ours.tokens, TPM),
            share(naive.tokens, TPM),
            f">= {TARGET_SHARE:.0%}",
        ),
        ("tokens used (prompt + answer)", f"{ours.used_tokens:,}", f"{naive.used_tokens:,}", ""),
        (
            "requests admitted in 30-60 s",
            f"{ours.second_half:,}",
            f"{naive.second_half:,}",
            f"~{RPM // 2:,}",
        ),
        ("requests sent (429s included)", f"{ours.attempts:,}", f"{naive.attempts:,}", ""),
        ("429s", f"{ours.rate_limited:,}", f"{naive.rate_limited:,}", "0"),
        (
            "  429s per admitted request",
            f"{ours.rate_limited / max(ours.requests, 1):.2f}",
            f"{naive.rate_limited / max(naive.requests, 1):.2f}",
            "0",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}"
        for a, b, c, d in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def verdict(ours: Window) -> str:
    met = (
        ours.requests >= TARGET_SHARE * RPM
        and ours.tokens >= TARGET_SHARE * TPM
        and ours.rate_limited == 0
    )
    return (
        f"target: batchyard at >= {TARGET_SHARE:.0%} of each limit with zero 429s: "
        f"{'meets' if met else 'MISSES'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="the store (default: a SQLite file in a temporary folder)")
    parser.add_argument("--naive-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_worker:
        base_url, first = args.naive_worker
        asyncio.run(naive_worker(base_url, int(first), ITEMS // WORKERS))
        return 0
    reserve = {reservation(n) for n in range(ITEMS)}
    say(f"each request reserves {sorted(reserve)} tokens (prompt + max_tokens {MAX_TOKENS})")
    # The server counts prompts with the model's tokenizer: load it before its first request,
    # or that request holds up the server's loop while it loads.
    count_prompt_tokens([{"role": "user", "content": "warm up"}], MODEL)
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-llm-") as tmp:
        ours = run_batchyard(args.db, Path(tmp))
    naive = run_naive()
    print(
        f"\nbatchyard LLM rate-limit benchmark ({WORKERS} worker processes, {RPM} requests/min, "
        f"{TPM:,} tokens/min, {SECONDS:g} s; {os.cpu_count()} CPUs)"
    )
    print(table(ours, naive))
    print(verdict(ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
