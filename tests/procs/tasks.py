"""Tasks the worker subprocesses run, named ``tests.procs.tasks:<function>``.

Each returns ``expected(n)`` for its item's ``n``, so a test can check every recorded result
against its input. Tasks that must leave a trace outside the store append one line per
execution to a ledger file (opened in append mode, one write per line), which several
processes can share.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from batchyard import Retry


def expected(n: int) -> dict[str, Any]:
    """The result every task here records for input ``n``."""
    return {"n": n, "square": n * n, "digest": hashlib.sha256(str(n).encode()).hexdigest()[:16]}


def append_line(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line to a ledger shared by processes (O_APPEND, one write)."""
    with open(path, "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(record) + "\n")
        ledger.flush()


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def square(item, ctx):
    """A little real work: a short sleep, then a computed result."""
    await asyncio.sleep(item.get("sleep", 0.005))
    return expected(item["n"])


async def ledgered(item, ctx):
    """Like ``square``, but every execution leaves a line in the item's ledger."""
    append_line(item["ledger"], {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid()})
    await asyncio.sleep(item.get("sleep", 0.005))
    return expected(item["n"])


async def poison(item, ctx):
    """An item marked ``poison`` kills its own worker process; the others succeed."""
    if item.get("poison"):
        append_line(item["ledger"], {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid()})
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.002)
    return expected(item["n"])


def gated(item, ctx):
    """A sync task whose first attempt waits for the ``gate`` file to exist.

    It ignores ``ctx.cancelled`` on purpose: a zombie that finishes its work whatever it is
    told, so its late outcome reaches the store and must be refused there.
    """
    append_line(
        item["ledger"],
        {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid(), "event": "start"},
    )
    if ctx.attempt == 1:
        gate = Path(item["gate"])
        while not gate.exists():
            time.sleep(0.01)
    append_line(
        item["ledger"],
        {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid(), "event": "end"},
    )
    return {**expected(item["n"]), "attempt": ctx.attempt, "pid": os.getpid()}


async def slow_first(item, ctx):
    """Sleeps ``sleep`` seconds on its first attempt only; leaves a ledger line per start."""
    append_line(item["ledger"], {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid()})
    if ctx.attempt == 1:
        await asyncio.sleep(item["sleep"])
    return expected(item["n"])


async def clocked(item, ctx):
    """Sleeps ``sleep`` seconds on its first attempt; with ``after``, it then asks to be retried
    ``after`` seconds later. Each start and each retry request leaves a ledger line with the
    machine's monotonic time (the clock tests keep libfaketime off it), so a test can time
    retries across processes whose wall clocks disagree."""
    line = {"key": ctx.key, "attempt": ctx.attempt, "pid": os.getpid()}
    append_line(item["ledger"], {**line, "event": "start", "mono": time.monotonic()})
    await asyncio.sleep(item.get("sleep", 0.0) if ctx.attempt == 1 else 0.0)
    if ctx.attempt == 1 and "after" in item:
        append_line(item["ledger"], {**line, "event": "retry", "mono": time.monotonic()})
        raise Retry(after=item["after"])
    return expected(item["n"])
