"""The dashboard's speed (issue 14), by hand: ``.venv/bin/python bench/dashboard.py``.

With 10,000 batches in the history and a 100,000-item batch, each page's answer time (p50
and p95 of 20 requests over real HTTP, after one to warm up) against the issue's 300 ms, and
how long Debian's chromium takes to make the history and the batch page interactive
(DOMContentLoaded, scripts run) against its 2 s. The server is uvicorn on a free loopback
port in this process, over a SQLite file in a scratch folder; nothing runs the items.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from batchyard import Yard
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings
from bench.table import Row, Table, mark
from tests.e2e.dashboard_site import FLAGS

TASK = "tests.procs.pages:work"
ANSWER_TARGET = 0.300  # seconds: a page's answer
INTERACTIVE_TARGET = 2.0  # seconds: DOMContentLoaded in the browser


def fill(yard: Yard, batches: int, items: int) -> str:
    """``batches`` one-item batches and one of ``items`` items; returns the big one's id."""
    for n in range(batches):
        yard.submit(TASK, [{"id": "a", "n": n}], name=f"batch {n}", owner="bench")
    rows = ({"id": f"k{n}", "n": n} for n in range(items))
    return yard.submit(TASK, rows, name="big", owner="bench").id


def serve(yard: Yard) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(yard, ServerSettings(workers=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def answers(client: httpx.Client, path: str, n: int = 20) -> tuple[float, float]:
    client.get(path)
    took = []
    for _ in range(n):
        start = time.perf_counter()
        assert client.get(path).status_code == 200
        took.append(time.perf_counter() - start)
    took.sort()
    return statistics.median(took), took[int(0.95 * (n - 1))]


def interactive(url: str, login: str, paths: list[str]) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    found = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(login)
        for path in paths:
            page.goto(url + path, wait_until="domcontentloaded")
            found[path] = (
                page.evaluate(
                    "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
                )
                / 1000
            )
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="by-dashboard-"))
    table = Table()
    try:
        with Yard(f"sqlite:///{folder / 'bench.db'}") as yard:
            started = time.perf_counter()
            big = fill(yard, args.batches, args.items)
            table.info("setup", f"{time.perf_counter() - started:.1f} s")
            _, secret = yard.tokens.create("bench", "operator")
            url, server, thread = serve(yard)
            paths = [
                "/",
                "/?limit=100",
                "/?q=batch+99",
                f"/batches/{big}",
                f"/batches/{big}?state=pending&cursor={args.items // 2}",
                f"/batches/{big}/items/k{args.items - 1}",
            ]
            with httpx.Client(base_url=url, timeout=30) as client:
                client.get("/login", params={"token": secret})
                for path in paths:
                    p50, p95 = answers(client, path)
                    verdict = mark(p95 < ANSWER_TARGET)
                    table.rows.append(
                        Row(
                            f"GET {path[:40]}",
                            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
                            f"p95 < {ANSWER_TARGET * 1000:.0f} ms",
                            verdict,
                        )
                    )
            login = f"{url}/login?token={secret}"
            for path, took in interactive(url, login, ["/", f"/batches/{big}"]).items():
                table.rows.append(
                    Row(
                        f"interactive {path[:30]}",
                        f"{took:.2f} s",
                        f"< {INTERACTIVE_TARGET} s",
                        mark(took < INTERACTIVE_TARGET),
                    )
                )
            server.should_exit = True
            thread.join(10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"dashboard: {args.batches:,} batches, one of {args.items:,} items")
    table.print()


if __name__ == "__main__":
    main()
