"""The server's live streams (issue 13), by hand: ``.venv/bin/python bench/server_streams.py``
(``--postgres`` for a scratch database on ``BATCHYARD_TEST_PG`` instead of SQLite).

- event latency p50/p95 with 100 concurrent SSE subscribers of one batch while a worker in
  another process drains it: from an item's ``finished_at`` (the worker's clock as its task
  ended: it includes the worker's group commit) to the ``item`` event at a client;
  target p95 < 100 ms;
- what following the feed costs the server while nothing happens (SQLite: the cursor poll),
  with no subscriber and with 100, as CPU share of one core.

The server is ``batchyard serve --workers 0`` in a subprocess, the worker ``batchyard worker``
in another, the clients httpx in two more (``--client`` mode of this script).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench.table import Row, Table, mark
from tests.procs.server import BATCHYARD, Server

TASK = "tasks:nap"
TARGET_P95 = 0.100
CLIENT_PROCESSES = 2


# A succeeded item's event, read straight from the bytes: the clients must cost less than
# the server they measure (json.loads on 400,000 events made them the bottleneck).
_DONE = re.compile(rb'"state":"succeeded".*?"finished_at":([0-9.e+]+)')


async def subscribe(url: str, token: str, batch: str, ready: asyncio.Event) -> list[float]:
    """One SSE subscriber: latencies of the succeeded items it hears about, until ``end``.
    A bare HTTP/1.1 request on an asyncio stream: httpx's machinery per chunk made the
    clients, not the server, the bottleneck (its writes come whole events at a time, so
    the chunked encoding's size lines fall between events)."""
    latencies: list[float] = []
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        f"GET /api/v1/batches/{batch}/events HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    rest = b""
    try:
        while chunk := await reader.read(1 << 16):
            now = time.time()
            whole, _, rest = (rest + chunk).rpartition(b"\n\n")
            if b"event: status" in whole:
                ready.set()
            latencies.extend(now - float(at) for at in _DONE.findall(whole))
            if b"event: end" in whole:
                break
    finally:
        writer.close()
    return latencies


async def clients(url: str, token: str, batch: str, n: int) -> list[float]:
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(subscribe(url, token, batch, r)) for r in readies]
    for ready in readies:
        await ready.wait()
    print("ready", flush=True)
    return [x for got in await asyncio.gather(*tasks) for x in got]


def client_main(url: str, token: str, batch: str, n: int) -> None:
    latencies = asyncio.run(clients(url, token, batch, n))
    print(json.dumps({"lat": latencies, "cpu": time.process_time()}), flush=True)


def cpu_share(proc: psutil.Process, seconds: float) -> float:
    before = sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(proc.cpu_times()[:2]) - before) / seconds


def start_clients(server: Server, token: str, batch: str, n: int) -> list[subprocess.Popen[str]]:
    per = n // CLIENT_PROCESSES
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", server.url, token, batch, str(per)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CLIENT_PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "a client process did not start"
    return procs


def run(db: str, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    server = Server(db, folder, "--workers", "0", "--allow-task", TASK)
    try:
        assert server.token is not None
        token = server.token
        process = psutil.Process(server.proc.pid)
        idle = cpu_share(process, args.idle)
        items = [{"n": n, "sleep": args.sleep} for n in range(args.items)]
        with server.client(token) as client:
            batch = client.post("/batches", json={"task": TASK, "items": items}).json()["id"]
        procs = start_clients(server, token, batch, args.subscribers)
        idle_subscribed = cpu_share(process, args.idle)
        started = time.perf_counter()
        worker = subprocess.Popen(
            [str(BATCHYARD), "--db", db, "worker", "--until-idle", "--concurrency", "8"],
            cwd=folder,
            stderr=subprocess.DEVNULL,
        )
        watched = {"server": [process], "worker": [psutil.Process(worker.pid)]}
        before = {k: _cpu(ps) for k, ps in watched.items()}
        latencies: list[float] = []
        cpu = {"clients": 0.0}
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            got = json.loads(out.strip().splitlines()[-1])
            latencies += got["lat"]
            cpu["clients"] += got["cpu"]
        drained = time.perf_counter() - started
        cpu.update({k: _cpu(ps) - before[k] for k, ps in watched.items()})
        worker.wait(60)
    finally:
        server.stop()
    return {
        "idle": idle,
        "subscribed": idle_subscribed,
        "lat": latencies,
        "drain": drained,
        "cpu": cpu,
    }


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            total += sum(proc.cpu_times()[:2])
        except psutil.NoSuchProcess:  # it ended: its children's times are gone with it
            pass
    return total


def scratch_postgres() -> tuple[str, str]:
    import psycopg

    base = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"by_bench_streams_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base, base.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.01, help="each item's task, seconds")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of CPU sampling")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        url, token, batch, n = args.client
        client_main(url, token, batch, int(n))
        return
    folder = Path(tempfile.mkdtemp(prefix="by-bench-streams-"))
    (folder / "tasks.py").write_text(
        "import asyncio\n\n\nasync def nap(item):\n"
        "    await asyncio.sleep(item['sleep'])\n    return {'n': item['n']}\n"
    )
    base = None
    try:
        if args.postgres:
            base, db = scratch_postgres()
        else:
            db = f"sqlite:///{folder / 'streams.db'}"
        figures = run(db, folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if base is not None:
            import psycopg

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {db.rsplit('/', 1)[1]} WITH (FORCE)")
    report(args, figures, "postgres" if args.postgres else "sqlite")


def report(args: argparse.Namespace, figures: dict[str, object], store: str) -> None:
    latencies = sorted(figures["lat"])  # type: ignore[call-overload]
    p50 = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    table = Table()
    table.rows.append(
        Row(
            f"item event latency, {args.subscribers} SSE subscribers ({store})",
            f"p50 {p50 * 1000:.1f} ms  p95 {p95 * 1000:.1f} ms",
            f"target p95 < {TARGET_P95 * 1000:.0f} ms",
            f"{p95 / TARGET_P95:.2f}x {mark(p95 < TARGET_P95)}",
        )
    )
    table.info("events measured", f"{len(latencies):,}", f"max {latencies[-1] * 1000:.0f} ms")
    table.info("batch drained in", f"{figures['drain']:.1f} s", f"{args.items:,} items")
    for key, what in (("idle", "no subscriber"), ("subscribed", f"{args.subscribers} idle")):
        share = float(figures[key])  # type: ignore[arg-type]
        table.info(f"server CPU while idle, {what}", f"{share * 100:.1f}% of a core")
    cpu: dict[str, float] = figures["cpu"]  # type: ignore[assignment]
    spent = ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
    table.info("CPU spent while the batch drained", spent)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, store {store}")
    table.print()


if __name__ == "__main__":
    main()
