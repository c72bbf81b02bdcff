"""Instructions per item, counted by valgrind (cachegrind), for the floor and batchyard's
async and sync no-op runs of bench/core.py: submit to drained, every thread of the process.

Wall-clock figures move with the machine's load; these counts do not (within a percent or
two: how many rounds a run takes depends a little on timing), so they compare two versions
of the code on a shared machine. They count user-space instructions only: what threads
cost in the kernel (context switches, waits for the GIL) is not in them, and a count says
nothing about how well the store thread and the event loop overlap. Use it beside
bench/core.py, not instead of it::

    .venv/bin/python bench/instructions.py             # needs valgrind (apt install valgrind)
    .venv/bin/python bench/instructions.py --items 5000

Each figure is a run's count minus a run that only loads the items and opens the store,
divided by the number of items. A run under valgrind takes about 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import floor
from bench.core import make_item, open_yard
from bench.table import Row, Table

N_ITEMS = 20_000
HERE = Path(__file__).resolve()
SIDES = {
    "floor": "bench/floor.py, 512 per round",
    "guarded": "bench/floor.py --guarded: keys, leases, feed, counters",
    "async": "batchyard, concurrency 512",
    "sync": "batchyard, concurrency 64",
}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(side: str, db: str, items_file: str, skip: str) -> None:
    """In the child: load the items, open the store, and (unless ``skip``) run them."""
    items = json.loads(Path(items_file).read_text())
    if side in ("floor", "guarded"):
        if skip != "skip":
            floor.run(Path(db), items, guarded=side == "guarded")
        return
    yard = open_yard(Path(db))
    try:
        if skip != "skip":
            task, concurrency = ("bench.noop", 512) if side == "async" else ("bench.noop_sync", 64)
            batch = yard.submit(task, items)
            yard.run_until_idle(concurrency=concurrency)
            if batch.status().counts.succeeded != len(items):
                raise RuntimeError("not every no-op succeeded")
    finally:
        yard.close()


def count(side: str, items_file: Path, tmp: Path, *, skip: bool) -> int:
    """Instructions of one child run under cachegrind."""
    db = tmp / f"{side}.db"
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(HERE),
        "--child",
        side,
        str(db),
        str(items_file),
        "skip" if skip else "run",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for leftover in tmp.glob(f"{db.name}*"):
        leftover.unlink()
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{side} failed under valgrind:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=N_ITEMS, help="no-op items per run")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 1
    per_item: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="batchyard-instr-") as tmp:
        items = Path(tmp) / "items.json"
        items.write_text(json.dumps([make_item(i) for i in range(args.items)]))
        for side in SIDES:
            print(f"  .. {side}", file=sys.stderr, flush=True)
            ran = count(side, items, Path(tmp), skip=False)
            baseline = count(side, items, Path(tmp), skip=True)
            per_item[side] = (ran - baseline) / args.items
    table = Table()
    for side, setting in SIDES.items():
        figure = f"{side}: {args.items:,} no-ops, submit + drain ({setting})"
        ratio = f"{per_item[side] / per_item['floor']:.2f}x the floor's"
        table.rows.append(Row(figure, f"{per_item[side]:,.0f}", "instructions/item", ratio))
    print(f"\ninstructions per item (cachegrind, Python {sys.version.split()[0]})")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
