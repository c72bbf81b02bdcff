"""The demo: a batch of sample sales leads scored by a built-in task, shown live, then reported.

``batchyard demo`` (or ``make demo``) writes ~300 fake leads to ``demo-leads.jsonl``, submits
them, runs a worker in this process while the live view (``batchyard.live``) follows the
batch in the store, then prints a report. ``python -m batchyard.demo`` does the same in a
fresh SQLite file of its own. The task does real work with realistic latency, and some of its
attempts fail: a few transiently (retried), two items for good.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from batchyard.context import TaskContext
from batchyard.errors import Fail
from batchyard.report_text import ending
from batchyard.tasks import task
from batchyard.yard import Yard

DEFAULT_DB = "batchyard-demo.db"
#: The sample input the demo writes, in the current folder.
SAMPLE = Path("demo-leads.jsonl")
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


# -- running it ---------------------------------------------------------------------------


def write_sample(path: Path, count: int, seed: int = 7) -> Path:
    """Write ``count`` sample leads to ``path`` as JSONL (replacing it); returns the path."""
    with path.open("wb") as out:
        for lead in sample_leads(count, seed):
            out.write(orjson.dumps(lead) + b"\n")
    return path


def play(
    url: str,
    *,
    items: int | None = None,
    concurrency: int = 8,
    seed: int = 7,
    sample: Path = SAMPLE,
    out: TextIO | None = None,
    cli: str = "batchyard",
) -> int:
    """The demo: write the sample input, submit it to the store at ``url``, work it here
    with the live view, print a report and the commands (``cli``) to look further. Returns
    0 once the batch ended (however it ended: two leads fail on purpose), 130 when a signal
    stopped it first."""
    from batchyard.inputs import open_input
    from batchyard.live import work_and_follow

    out = out or sys.stdout
    count = items or _default_items()
    write_sample(sample, count, seed)
    with Yard(url) as yard, open_input(str(sample)) as leads:
        batch = yard.submit(
            score_lead,
            leads,
            name=f"demo: score {count} leads",
            concurrency=concurrency,
            params={"seed": seed, "failure_rate": 0.05},
            metadata={"input": str(sample)},
        )
        status = batch.status()
        out.write(
            f"batchyard demo: scoring {count} sample leads from {sample} in {yard.url}\n"
            f"batch {batch.id}, task {status.task}, concurrency {concurrency}\n"
        )
        out.flush()
        final = asyncio.run(work_and_follow(yard, batch.id, concurrency=concurrency, out=out))
        out.write(f"\n{ending(batch.report(), cli)}\n")
        out.write(
            f"in a browser: {cli} serve, open the login link it prints, then /batches/{batch.id}\n"
        )
        out.flush()
    return 0 if final.is_finished else 130


def _default_items() -> int:
    raw = os.environ.get(ITEMS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_ITEMS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchyard.demo",
        description="Score sample leads in a batch, with live progress and a report "
        "(the same as 'batchyard demo', in a fresh database file of its own).",
    )
    parser.add_argument("--items", type=int, default=None, help="how many leads")
    parser.add_argument("--db", default=DEFAULT_DB, help="SQLite file, replaced if present")
    parser.add_argument("--concurrency", type=int, default=8, help="items run at once")
    parser.add_argument("--seed", type=int, default=7, help="fixes the input and the failures")
    return parser


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``python -m batchyard.demo``: the demo in a fresh SQLite file."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.items is not None and args.items < 1) or args.concurrency < 1:
        parser.error("--items and --concurrency must be at least 1")
    db = Path(args.db)
    _fresh(db)
    url = f"sqlite:///{db}"
    return play(
        url,
        items=args.items,
        concurrency=args.concurrency,
        seed=args.seed,
        out=out,
        cli=f"batchyard --db {url}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
