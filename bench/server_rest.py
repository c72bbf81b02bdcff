"""The server's REST figures (issue 13), by hand: ``.venv/bin/python bench/server_rest.py``.

- ``GET /batches/{id}`` p50/p95 with 50 concurrent clients, on a batch of 1,000,000 items,
  beside the same on a batch of one item in the same run (a status is O(1): the size of the
  batch must not show; what 50 clients queue for on two cores shows in both);
- the upload rate of a 1,000,000-line JSONL file through ``POST /batches`` (multipart), beside
  ``batchyard submit`` of the same file in the same run, and the server's peak RSS meanwhile.

The server runs as ``batchyard serve --workers 0`` (nothing runs the items) in a subprocess on
a SQLite file in a scratch folder; the clients are httpx in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench.table import Row, Table, mark, per_second
from tests.procs.server import BATCHYARD, Server

TASK = "tasks:noop"
GET_RATIO_TARGET = 1.2  # p95 on the big batch over p95 on a one-item batch
UPLOAD_RATIO_TARGET = 0.8  # the upload's rate over the CLI's
RSS_TARGET = 300 * 2**20  # bytes: flat, whatever the file's size


def write_input(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for n in range(lines):
            out.write(f'{{"id": "k{n}", "n": {n}, "text": "lead number {n}"}}\n')


def cli_submit(folder: Path, db: str, path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BATCHYARD), "--db", db, "submit", TASK, str(path), "--json"],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def upload(server: Server, token: str, path: Path) -> tuple[float, str, int]:
    """Seconds to upload, the batch id, and the server's peak RSS meanwhile."""
    peak, done = 0, threading.Event()
    process = psutil.Process(server.proc.pid)

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    with server.client(token) as client, path.open("rb") as file:
        client.timeout = httpx.Timeout(600)
        made = client.post("/batches", files={"file": (path.name, file)}, data={"task": TASK})
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    made.raise_for_status()
    return elapsed, str(made.json()["id"]), peak


async def get_latencies(
    url: str, token: str, batch_id: str, clients: int, each: int
) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def one_client() -> None:
            for _ in range(each):
                started = time.perf_counter()
                answer = await client.get(f"/api/v1/batches/{batch_id}")
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="by-bench-server-"))
    try:
        (folder / "tasks.py").write_text("def noop(item):\n    return None\n")
        path = folder / "leads.jsonl"
        write_input(path, args.lines)
        cli = cli_submit(folder, f"sqlite:///{folder / 'cli.db'}", path)
        db = f"sqlite:///{folder / 'server.db'}"
        server = Server(db, folder, "--workers", "0", "--allow-task", TASK)
        try:
            assert server.token is not None
            up, big_id, peak = upload(server, server.token, path)
            with server.client(server.token) as client:
                one = client.post("/batches", json={"task": TASK, "items": [{"n": 1}]})
                small_id = str(one.json()["id"])
            big, small = (
                sorted(
                    asyncio.run(
                        get_latencies(server.url, server.token, b, args.clients, args.requests)
                    )
                )
                for b in (big_id, small_id)
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(args, cli, up, peak, big, small)


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]


def report(
    args: argparse.Namespace, cli: float, up: float, peak: int, big: list[float], small: list[float]
) -> None:
    table = Table()
    cli_rate, up_rate = args.lines / cli, args.lines / up
    ratio = up_rate / cli_rate
    table.rows.append(
        Row(
            f"upload of {args.lines:,} lines (POST /batches)",
            per_second(up_rate),
            f"CLI submit {per_second(cli_rate)}",
            f"{ratio:.2f}x (target >= {UPLOAD_RATIO_TARGET}x) {mark(ratio >= UPLOAD_RATIO_TARGET)}",
        )
    )
    table.rows.append(
        Row(
            "server peak RSS during the upload",
            f"{peak / 2**20:.0f} MiB",
            f"target < {RSS_TARGET / 2**20:.0f} MiB",
            mark(peak < RSS_TARGET),
        )
    )
    (p50, p95), (s50, s95) = percentiles(big), percentiles(small)
    ratio = p95 / s95
    table.rows.append(
        Row(
            f"GET /batches/ID, {args.clients} clients, {args.lines:,}-item batch",
            f"p50 {p50 * 1000:.1f} ms  p95 {p95 * 1000:.1f} ms",
            f"1-item batch: p50 {s50 * 1000:.1f} ms  p95 {s95 * 1000:.1f} ms",
            f"{ratio:.2f}x (target <= {GET_RATIO_TARGET}x) {mark(ratio <= GET_RATIO_TARGET)}",
        )
    )
    table.info(
        f"GET throughput ({args.clients} clients)", per_second(len(big) / sum(big) * args.clients)
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {len(big)} GETs per batch")
    table.print()


if __name__ == "__main__":
    main()
