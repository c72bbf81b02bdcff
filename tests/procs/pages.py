"""Tasks for the dashboard's tests, named ``tests.procs.pages:<function>``: they run in a
worker process or in the test's own yard."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


class PageFailure(Exception):
    """The error an item marked ``fail`` raises, with the item's ``fail`` text."""


async def work(item: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Reports ``progress`` (with ``message``) if given; waits ``sleep`` seconds, or until
    the file ``gate`` exists; records a call that cost ``cost`` if given; fails with the
    text of ``fail`` when it has one; otherwise echoes ``n`` and ``out``."""
    if "progress" in item:
        ctx.progress(item["progress"], item.get("message"))
    if gate := item.get("gate"):
        while not Path(gate).exists():
            await asyncio.sleep(0.02)
    await asyncio.sleep(item.get("sleep", 0))
    if cost := item.get("cost"):
        ctx.usage(10, 5, cost, calls=1)
    if item.get("fail"):
        raise PageFailure(item["fail"])
    return {"n": item.get("n"), "out": item.get("out")}
