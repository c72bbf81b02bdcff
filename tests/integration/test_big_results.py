"""Oversized results: a result over its limit (16 MiB of JSON by default, or the task's, or
the batch's) fails its item alone, with the size and the limit, and is not kept; listings
never read results, so a batch of big ones lists in flat memory. On both stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from batchyard import ItemState, Yard, task
from batchyard.tasks import MAX_RESULT_BYTES

MIB = 1 << 20


def sized(item: dict[str, Any]) -> str:
    return "x" * int(item["size"])


@task(max_result_bytes=2_000)
def small_limit(item: dict[str, Any]) -> str:
    return "y" * int(item["size"])


def run(yard: Yard) -> None:
    yard.run_until_idle(poll_interval=0.02, control_interval=0.02)


def test_a_result_over_the_default_limit_fails_its_item_alone(store_url: str) -> None:
    with Yard(store_url) as yard:
        yard.task(sized)
        sizes = {"fine": 1_000, "edge": MAX_RESULT_BYTES - 2, "big": MAX_RESULT_BYTES + 1}
        batch = yard.submit(sized, [{"id": k, "size": n} for k, n in sizes.items()])
        run(yard)
        fine, edge, big = (batch.item(key) for key in sizes)
        assert (fine.state, edge.state) == (ItemState.SUCCEEDED, ItemState.SUCCEEDED)
        assert len(edge.result) == MAX_RESULT_BYTES - 2  # "x..." plus its quotes: the limit
        assert big.state is ItemState.FAILED
        assert big.result is None
        assert big.attempts == 1  # no retry: it would return the same
        assert f"the result is {MAX_RESULT_BYTES + 3:,} bytes as JSON" in (big.error or "")
        assert f"the limit is {MAX_RESULT_BYTES:,}" in (big.error or "")


def test_a_task_and_a_batch_set_their_own_limits(store_url: str) -> None:
    with Yard(store_url) as yard:
        yard.task(sized)
        by_task = yard.submit(small_limit, [{"id": "a", "size": 1_500}, {"id": "b", "size": 3_000}])
        by_batch = yard.submit(sized, [{"id": "c", "size": 100}], max_result_bytes=50)
        run(yard)
        assert by_task.item("a").state is ItemState.SUCCEEDED
        assert by_task.item("b").state is ItemState.FAILED
        assert "the limit is 2,000" in (by_task.item("b").error or "")
        assert by_batch.status().limits == {"max_result_bytes": 50}
        assert "the limit is 50 " in (by_batch.item("c").error or "")


def test_listings_do_not_read_payloads_or_results(store_url: str) -> None:
    with Yard(store_url) as yard:
        yard.task(sized)
        batch = yard.submit(sized, [{"id": "k", "size": 10}])
        run(yard)
        (listed,) = batch.items(payloads=False, results=False)
        assert (listed.payload, listed.result, listed.state) == (None, None, ItemState.SUCCEEDED)
        whole = batch.item("k")
        assert whole.payload == {"id": "k", "size": 10} and whole.result == "x" * 10


# The command's own peak: VmHWM belongs to the process's memory map, which exec makes new
# (ru_maxrss would carry this test process's high-water mark over into the child).
PEAK = """
import re, sys
from batchyard.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024, file=sys.stderr)
sys.exit(code)
"""


def _items_peak_mb(db: str, batch_id: str, cwd: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK, "--db", db, "items", batch_id, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"key"') == 6  # every item listed
    return int(done.stderr.strip().splitlines()[-1])


def test_items_json_lists_big_results_in_flat_memory(tmp_path: Path) -> None:
    """`batchyard items --json` of six 10 MiB results peaks as high as of six tiny ones
    (it used to read every result: 234 MB for one of 64 MiB)."""
    db = f"sqlite:///{tmp_path / 'yard.db'}"
    with Yard(db) as yard:
        yard.task(sized)
        big = yard.submit(sized, [{"id": str(n), "size": 10 * MIB} for n in range(6)])
        tiny = yard.submit(sized, [{"id": str(n), "size": 10} for n in range(6)])
        run(yard)
        assert big.status().counts.succeeded == 6
    peaks = {name: _items_peak_mb(db, b.id, tmp_path) for name, b in (("big", big), ("tiny", tiny))}
    assert peaks["big"] - peaks["tiny"] < 20, peaks
