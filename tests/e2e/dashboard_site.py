"""What the dashboard's browser tests stand on: a served yard (uvicorn on a free loopback
port in a thread, over a SQLite file a worker process can share, with an operator, a viewer
and an admin token), Debian's chromium launched by Playwright (never ``playwright install``)
with DEVELOPERS.md's flags, a tab that records what it must not do, and the hostile text."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings
from tests.integration.test_processes import wait_for

CHROMIUM = shutil.which("chromium")
TASK = "tests.procs.pages:work"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Text that would run, inject or reorder if any page treated it as markup or a template.
HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>{{ 7*7 }}\u202egnp.exe"
#: How the pages show it: the direction override made visible, the rest as it is.
SHOWN = HOSTILE.replace("\u202e", "[U+202E]")
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@dataclass
class Site:
    url: str
    db: str
    yard: Yard
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def login(self, name: str) -> str:
        return f"{self.url}/login?token={self.tokens[name]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(folder: Path) -> Iterator[Site]:
    """The dashboard over a fresh yard in ``folder``, served until the block ends."""
    db = f"sqlite:///{folder / 'by.db'}"
    with Yard(db) as yard:
        port = _free_port()
        # A short heartbeat: a stream whose page went away is noticed at the next one.
        app = create_app(yard, ServerSettings(workers=0, heartbeat=0.5, allow_task=[TASK]))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 20, "uvicorn to start")
        site = Site(f"http://127.0.0.1:{port}", db, yard, app)
        for name, role, owner in (
            ("ann", "operator", "ann"),
            ("vic", "viewer", "ann"),
            ("root", "admin", None),
        ):
            site.tokens[name] = yard.tokens.create(name, role, owner)[1]
        try:
            yield site
        finally:
            server.should_exit = True
            thread.join(10)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watch:
    """What a page did that it must not: dialogs opened, script errors, console errors
    (a CSP violation is one)."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@contextmanager
def watched_tab(browser: Any) -> Iterator[tuple[Any, Watch]]:
    """A tab 1280 px wide in a context of its own, and what it must not do."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    watch = Watch()
    tab.on("dialog", watch.dialog)
    tab.on("pageerror", lambda error: watch.errors.append(str(error)))
    tab.on("console", watch.console)
    try:
        yield tab, watch
    finally:
        context.close()


def submit(site: Site, name: str, items: list[dict[str, Any]], owner: str = "ann") -> Batch:
    return site.yard.submit(TASK, items, name=name, owner=owner, max_attempts=1)


def run_worker(site: Site) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.procs.worker", site.db, "--concurrency", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
