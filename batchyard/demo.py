"""The demo: a batch of sample sales leads scored by a built-in task, shown live, then reported.

``python -m batchyard.demo`` (or ``make demo``) makes ~300 fake leads, submits them to a fresh
SQLite file, runs a worker in this process and redraws the batch's progress as read from the
store, then prints a report. The task does real work with realistic latency, and some of its
attempts fail: a few transiently (retried), two items for good.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import random
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from batchyard.context import TaskContext
from batchyard.errors import Fail
from batchyard.models import BatchStatus
from batchyard.tasks import task
from batchyard.worker import Worker
from batchyard.yard import Batch, Yard

DEFAULT_DB = "batchyard-demo.db"
DEFAULT_ITEMS = 300
#: Set to a number to change the default item count (the tests make the demo small with it).
ITEMS_ENV = "BATCHYARD_DEMO_ITEMS"

# -- the sample input -----------------------------------------------------------------

_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan")
_SURNAMES = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie")
_PREFIXES = ("North", "Blue", "Iron", "Silver", "Quantum", "Harbor", "Pine", "Atlas", "Nimbus")
_SUFFIXES = ("Labs", "Logistics", "Analytics", "Foods", "Robotics", "Health", "Systems")
_TITLES = ("CEO", "CTO", "VP Engineering", "Head of Data", "Procurement Manager", "Analyst")
_COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE", "PL", "ES", "JP", "BR")
_INDUSTRIES = {"software": 1.0, "fintech": 0.9, "health": 0.8, "logistics": 0.6, "retail": 0.4}
_NOTES = (
    "Met at the trade fair in spring.",
    "They have budget approved for this quarter.",
    "Asked for a pilot with two teams.",
    "Currently expanding to three new countries.",
    "Uses a competitor but the contract ends soon.",
    "Urgent: their current vendor is shutting down.",
    "No budget until next year.",
    "Replied once, then went quiet.",
)
_SIGNALS = {"budget approved": 12, "pilot": 8, "expanding": 6, "urgent": 10, "no budget": -15}


def sample_leads(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` fake leads, the same for the same seed. Two of them (a third and two thirds
    of the way in) lack a field the task needs, so they fail for good."""
    rng = random.Random(seed)
    broken = {max(1, count // 3): "email", max(2, 2 * count // 3): "employees"}
    for n in range(1, count + 1):
        first, last = rng.choice(_NAMES), rng.choice(_SURNAMES)
        company = f"{rng.choice(_PREFIXES)} {rng.choice(_SUFFIXES)}"
        lead: dict[str, Any] = {
            "id": f"lead-{n:04d}",
            "company": company,
            "contact": f"{first} {last}",
            "title": rng.choice(_TITLES),
            "email": f"{first}.{last}@{company.replace(' ', '').lower()}.example".lower(),
            "industry": rng.choice(list(_INDUSTRIES)),
            "country": rng.choice(_COUNTRIES),
            "employees": int(rng.lognormvariate(4.5, 1.5)) + 1,
            "notes": " ".join(rng.sample(_NOTES, rng.randint(1, 4))),
        }
        if n in broken:
            lead[broken[n]] = None
        yield lead


# -- the demo task ----------------------------------------------------------------------


def score(lead: dict[str, Any]) -> dict[str, Any]:
    """A lead's score from 0 to 100 with its tier, the signals found in its notes, the notes'
    word count and a fingerprint of the company and contact."""
    notes = str(lead.get("notes", "")).lower()
    signals = [phrase for phrase in _SIGNALS if phrase in notes]
    size = min(40.0, 12 * math.log10(max(1, int(lead["employees"]))))
    fit = 25 * _INDUSTRIES.get(str(lead.get("industry")), 0.3)
    title = str(lead.get("title", ""))
    seniority = 20 if title.startswith(("C", "VP", "Head")) else 5
    total = size + fit + seniority + sum(_SIGNALS[s] for s in signals)
    value = max(0, min(100, round(total)))
    digest = hashlib.sha256(f"{lead['company']}|{lead['email']}".encode()).hexdigest()
    return {
        "company": lead["company"],
        "score": value,
        "tier": "A" if value >= 70 else "B" if value >= 45 else "C",
        "signals": signals,
        "words": len(notes.split()),
        "fingerprint": digest[:12],
    }


def _draw(seed: int, key: str, attempt: int) -> float:
    """A number in [0, 1) fixed by seed, item and attempt: the same runs fail the same way."""
    digest = hashlib.sha256(f"{seed}:{key}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@task(max_attempts=4, retry_backoff=0.2, retry_backoff_max=2.0, timeout=10)
async def score_lead(lead: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Score one lead as if a model had read it: wait for a (simulated) API, fail now and
    then like one, record tokens, cost and metrics."""
    ctx.progress(0.1, "checking fields")
    for needed in ("email", "employees"):
        if not lead.get(needed):
            raise Fail(f"lead {lead.get('id')} has no {needed}; nothing to score")
    await asyncio.sleep(random.uniform(0.02, 0.2))  # the API call
    failure_rate = float(ctx.params.get("failure_rate", 0.05))
    if _draw(int(ctx.params.get("seed", 0)), ctx.key, ctx.attempt) < failure_rate:
        raise ConnectionError("enrichment API timed out (a simulated transient failure)")
    ctx.progress(0.8, "scoring")
    result = score(lead)
    tokens_in = 180 + 4 * result["words"] // 3
    tokens_out = 40 + result["score"] // 2
    ctx.usage(tokens_in, tokens_out, cost=tokens_in * 0.15e-6 + tokens_out * 0.60e-6)
    ctx.metric("score", result["score"])
    ctx.metric("words", result["words"])
    ctx.progress(1.0, f"tier {result['tier']}")
    return result


# -- live progress ------------------------------------------------------------------------


class Meter:
    """Items per second over the last few seconds, and the time left at that pace."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, finished: int) -> None:
        self._samples.append((at, finished))
        while len(self._samples) > 2 and at - self._samples[0][0] > self.window:
            self._samples.popleft()

    @property
    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, remaining: int) -> float | None:
        rate = self.rate
        return remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _counts(status: BatchStatus) -> list[str]:
    c = status.counts
    shown = [
        f"ok {c.succeeded}",
        f"failed {c.failed}",
        f"running {c.running}",
        f"retry {c.retry_wait}",
        f"pending {c.pending}",
    ]
    return [*shown, f"cancelled {c.cancelled}"] if c.cancelled else shown


def _drop_one(counts: list[str]) -> bool:
    """Drop the least telling count to make room: pending (the rest imply it), then retry.
    By label, not by value, so the line keeps its layout while the numbers change."""
    for label in ("pending", "retry", "running"):
        for i, text in enumerate(counts):
            if text.startswith(label):
                del counts[i]
                return True
    return False


def live_line(status: BatchStatus, meter: Meter, width: int, fancy: bool = True) -> str:
    """One line for a terminal: a bar, the pace, the time left and the counts per state,
    fitted to ``width`` (the bar shrinks first, then the least telling counts go)."""
    c = status.counts
    pace = f"{meter.rate:5.1f}/s ETA {_clock(meter.eta(c.remaining))}"
    pad = len(str(c.total))  # the count keeps its width, so the bar does not jump
    counts = _counts(status)
    while True:
        done = f"{c.finished:>{pad}}/{c.total}"
        text = f" {status.progress:4.0%} {done}  {pace}  {'  '.join(counts)}"
        room = width - 1 - max(10, len(status.state.value)) - 3 - len(text)
        if room >= 8 or not _drop_one(counts):
            break
    room = max(8, min(30, room))
    full, empty = ("\u2588", "\u2591") if fancy else ("#", ".")
    filled = int(status.progress * room)
    line = f"{status.state.value:<10} |{full * filled}{empty * (room - filled)}|{text}"
    return line[: max(1, width - 1)]


def plain_line(status: BatchStatus, meter: Meter, elapsed: float) -> str:
    """One status line for a log or a pipe."""
    c = status.counts
    eta = _clock(meter.eta(c.remaining))
    return (
        f"[{elapsed:6.1f}s] {status.state.value} {c.finished}/{c.total} ({status.progress:.0%})  "
        f"{'  '.join(_counts(status))}  {meter.rate:.1f} items/s  ETA {eta}"
    )


class Display:
    """Shows a batch's status: redrawn in place on a terminal, a plain line every
    ``interval`` seconds otherwise (never a cursor code then)."""

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = _is_terminal(out) if tty is None else tty
        self.interval = 0.1 if self.tty else 2.0
        self.fancy = _can_encode(out, "\u2588\u2591")
        self.meter = Meter()
        self._started = time.monotonic()
        self._width = 0

    def show(self, status: BatchStatus) -> None:
        now = time.monotonic()
        self.meter.add(now, status.counts.finished)
        if self.tty:
            columns = shutil.get_terminal_size((100, 24)).columns
            line = live_line(status, self.meter, columns, self.fancy)
            # Pad over the previous line instead of a clear-line code: works on any console.
            self.out.write("\r" + line.ljust(min(self._width, columns - 1)))
            self._width = len(line)
        else:
            self.out.write(plain_line(status, self.meter, now - self._started) + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()

    async def follow(self, batch: Batch, done: asyncio.Event) -> None:
        """Show the batch's status from the store until ``done`` is set, then once more."""
        while True:
            finished = done.is_set()
            self.show(await asyncio.to_thread(batch.status))
            if finished:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.interval)
        self.close()


def _is_terminal(out: TextIO) -> bool:
    return out.isatty() and os.environ.get("TERM") != "dumb"


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(out.encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


# -- the report ---------------------------------------------------------------------------


def report(batch: Batch) -> list[str]:
    """A few lines on how a finished batch went, read from the store."""
    status = batch.status()
    durations: list[float] = []
    retries = 0
    failed: list[str] = []
    metrics: dict[str, list[float]] = {}
    for item in batch.items():
        retries += max(0, item.attempts - 1)
        for name, value in item.metrics.items():
            metrics.setdefault(name, []).append(value)
        if item.duration is not None:
            durations.append(item.duration)
        if item.error is not None and item.state.is_terminal:
            failed.append(f"    {item.key}: {_last_line(item.error)}")
    c, u = status.counts, status.usage
    took = (status.finished_at or time.time()) - (status.started_at or status.created_at)
    durations.sort()
    p95 = durations[max(0, math.ceil(0.95 * len(durations)) - 1)] if durations else 0.0
    mean = sum(durations) / len(durations) if durations else 0.0
    return [
        f"batch {status.id} {'ended' if status.is_finished else 'is still'} {status.state.value}",
        f"  items       {c.total}: {c.succeeded} succeeded, {c.failed} failed, "
        f"{c.cancelled} cancelled",
        f"  duration    {took:.2f} s, {c.finished / took if took > 0 else 0:.1f} items/s",
        f"  per item    mean {mean * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (last attempt)",
        f"  retries     {retries} (transient failures the worker retried)",
        f"  usage       {u.tokens_in:,} tokens in, {u.tokens_out:,} out, ${u.cost:.4f}",
        *(
            f"  {name:<11} mean {sum(v) / len(v):.1f}, min {min(v):g}, max {max(v):g}"
            for name, v in sorted(metrics.items())
        ),
        f"  failed      {len(failed)} item(s)" + (":" if failed else ""),
        *failed,
    ]


def _last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error


# -- running it ---------------------------------------------------------------------------


async def run(yard: Yard, batch: Batch, display: Display, concurrency: int) -> bool:
    """Work the batch in this process while ``display`` follows it; True unless stopped."""
    worker = yard.worker(concurrency=concurrency)
    _stop_on_signals(worker)
    done = asyncio.Event()
    follower = asyncio.create_task(display.follow(batch, done))
    try:
        await worker.run(until_idle=True)
    finally:
        done.set()
        await follower
    return not worker.stopping


def _stop_on_signals(worker: Worker) -> None:
    """Ctrl-C or SIGTERM: the first lets running items finish, a second stops at once."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        worker.stop(immediately=worker.stopping)

    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers: Ctrl-C then ends the demo the default way.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)


def _default_items() -> int:
    raw = os.environ.get(ITEMS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_ITEMS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchyard.demo",
        description="Score sample leads in a batch, with live progress and a report.",
    )
    parser.add_argument("--items", type=int, default=_default_items(), help="how many leads")
    parser.add_argument("--db", default=DEFAULT_DB, help="SQLite file, replaced if present")
    parser.add_argument("--concurrency", type=int, default=8, help="items run at once")
    parser.add_argument("--seed", type=int, default=7, help="fixes the input and the failures")
    return parser


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; 0 when its batch ended (however it ended), 1 when it was stopped."""
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    if args.items < 1 or args.concurrency < 1:
        _parser().error("--items and --concurrency must be at least 1")
    db = Path(args.db)
    _fresh(db)
    with Yard(f"sqlite:///{db}") as yard:
        batch = yard.submit(
            score_lead,
            sample_leads(args.items, args.seed),
            name=f"demo: score {args.items} leads",
            concurrency=args.concurrency,
            params={"seed": args.seed, "failure_rate": 0.05},
        )
        out.write(
            f"batchyard demo: scoring {args.items} sample leads in {db}\n"
            f"batch {batch.id}, task {batch.status().task}, concurrency {args.concurrency}\n"
        )
        out.flush()
        completed = asyncio.run(run(yard, batch, Display(out), args.concurrency))
        out.write("\n".join(["", *report(batch), ""]))
        if not completed:
            out.write(f"stopped early: the unfinished items wait in {db} for a worker\n")
        out.flush()
    return 0 if completed else 1


if __name__ == "__main__":
    raise SystemExit(main())
