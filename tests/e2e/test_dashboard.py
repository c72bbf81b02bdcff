"""The dashboard in a real browser: Debian's chromium driven by Playwright (never
``playwright install``) against uvicorn on a free loopback port, over a SQLite store that a
worker process shares. Signing in by the link, the history's filters in the URL, the batch
page updating live while the worker finishes items, confirm pages, a viewer's page, hostile
text everywhere, and axe-core's WCAG 2.1 A/AA rules at 320 and 1280 px in both themes.

``BATCHYARD_SCREENSHOTS=docs/screenshots`` keeps the screenshots there (else in tmp)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings
from tests.integration.test_processes import wait_for
from tests.procs.server import Server

playwright_api = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("dashboard")
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
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


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
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


def test_the_login_link_signs_in_and_the_historys_filters_live_in_the_url(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    for n in range(3):
        submit(site, f"history {n}", [{"id": "a", "n": n}])
    tab.goto(site.login("ann"))
    assert tab.url == site.url + "/"
    assert tab.locator("table.batches >> text=history 2").count() >= 1
    tab.fill("#f-q", "history 1")
    tab.click("form.filters button[type=submit]")
    tab.wait_for_url(re.compile(r"/\?q=history\+1&limit=25$"))
    rows = tab.locator("table.batches tbody tr")
    assert rows.count() == 1 and "history 1" in rows.inner_text()
    tab.go_back()
    tab.wait_for_url(site.url + "/")
    assert tab.locator("table.batches tbody tr").count() >= 3
    tab.goto(site.url + "/?q=history+2")
    assert tab.locator("table.batches tbody tr").count() == 1
    tab.goto(site.url + "/?q=history")
    compare = tab.locator("#compare-button")
    assert compare.is_disabled()
    ticks = tab.locator("input.pick")
    ticks.nth(0).check()
    assert compare.is_disabled()
    ticks.nth(1).check()
    assert compare.is_enabled()
    compare.click()
    tab.wait_for_url("**/compare?ids=*")
    assert tab.inner_text("h1") == "Compare 2 batches"
    assert watch.errors == [] and watch.dialogs == []


def test_the_batch_page_updates_live_as_a_worker_process_finishes_items(
    site: Site, page: tuple[Any, Watch], tmp_path: Path
) -> None:
    tab, watch = page
    first, second = tmp_path / "first", tmp_path / "second"
    items = [{"id": f"i{n}", "n": n, "gate": str(first if n < 3 else second)} for n in range(6)]
    batch = submit(site, "live one", items)
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    assert tab.get_attribute("[role=progressbar]", "aria-valuenow") == "0.0"
    # The region comes over the page's SSE stream (not polled) once it is open.
    tab.wait_for_function("() => document.getElementById('live-chip').textContent === 'live'")
    assert tab.locator("#live[hx-trigger]").count() == 0
    tab.evaluate("() => { window.notReloaded = true; }")
    # What the reader is doing survives the repaints: focus in the region, the items filter.
    tab.select_option("#i-state", "running")
    tab.focus("#do-pause")
    worker = threading.Thread(target=run_worker, args=(site,))
    worker.start()
    for gate, percent in ((first, "50.0"), (second, "100.0")):
        gate.touch()
        tab.wait_for_function(
            "(p) => document.querySelector('[role=progressbar]')"
            ".getAttribute('aria-valuenow') === p",
            arg=percent,
            timeout=30_000,
        )
        if percent == "50.0":
            assert tab.evaluate("() => document.activeElement.id") == "do-pause"
            assert "3 items finished since" in tab.inner_text(".refresh")
    worker.join(60)
    assert tab.input_value("#i-state") == "running"
    assert tab.evaluate("() => window.notReloaded === true")
    tab.wait_for_function("() => document.getElementById('live-chip').textContent === 'ended'")
    succeeded = tab.locator(f'a[href="/batches/{batch.id}?state=succeeded#items"] .n')
    assert succeeded.inner_text() == "6"
    assert tab.locator("#do-delete").get_attribute("href") is not None
    assert watch.errors == []


def test_a_hidden_tab_closes_its_stream_and_reopens_it_when_shown(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    batch = submit(site, "watched", [{"id": "h"}])
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    chip = "() => document.getElementById('live-chip').textContent"
    tab.wait_for_function(f"() => ({chip})() === 'live'")
    feed = site.app.state.feed
    streams = feed.subscribers
    assert streams >= 1
    hide = (
        "(hidden) => { Object.defineProperty(document, 'hidden', "
        "{configurable: true, get: () => hidden});"
        "document.dispatchEvent(new Event('visibilitychange')); }"
    )
    tab.evaluate(hide, True)
    assert tab.evaluate(chip) == "paused"
    wait_for(lambda: feed.subscribers == streams - 1, 10, "the hidden tab's stream to close")
    batch.pause()  # a change while hidden: shown again, the page has it
    tab.evaluate(hide, False)
    tab.wait_for_function(f"() => ({chip})() === 'live'")
    wait_for(lambda: feed.subscribers == streams, 10, "the stream to reopen")
    tab.wait_for_selector("#live .badge.st-paused")
    assert watch.errors == []


def test_a_page_whose_stream_cannot_open_polls_instead(site: Site, page: tuple[Any, Watch]) -> None:
    tab, _ = page
    batch = submit(site, "no streams here", [{"id": "p"}])
    tab.route("**/live/events*", lambda route: route.abort())  # as a proxy that refuses SSE
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    chip = "() => document.getElementById('live-chip').textContent"
    tab.wait_for_function(f"() => ({chip})() === 'polling'", timeout=20_000)
    batch.pause()
    tab.wait_for_selector("#live .badge.st-paused", timeout=10_000)
    assert tab.get_attribute("#live", "hx-trigger") == "every 2s"


def test_a_batch_is_made_from_a_file_after_its_bad_line_is_shown(
    site: Site, page: tuple[Any, Watch], tmp_path: Path
) -> None:
    tab, watch = page
    bad, good = tmp_path / "bad.jsonl", tmp_path / "leads.jsonl"
    bad.write_text('{"id": "a"}\n{"id": "b", oops}\n')
    good.write_text("".join(f'{{"id": "l{n}", "n": {n}}}\n' for n in range(7)))
    tab.goto(site.login("ann"))
    tab.click("text=New batch")
    tab.set_input_files("#n-file", str(bad))
    tab.select_option("#n-task", TASK)
    tab.fill("#n-name", "from a file")
    tab.click("text=Make the batch")
    assert tab.inner_text("[role=alert]").startswith("bad.jsonl:2: not valid JSON")
    assert tab.input_value("#n-name") == "from a file"
    tab.set_input_files("#n-file", str(good))
    tab.click("text=Check it and estimate the cost")  # htmx: a multipart post, a fragment back
    tab.wait_for_selector("#check >> text=All 7 rows read")
    assert tab.input_value("#n-name") == "from a file"
    tab.click("text=Make the batch")
    tab.wait_for_url(re.compile(r"/batches/batch_"))
    assert tab.inner_text("h1") == "from a file"
    assert tab.locator("a[href$='#items'] .n").first.inner_text() == "7"
    # The refused form came back as a 422, which the console reports; nothing else did.
    assert [e for e in watch.errors if "status of 422" not in e] == []


def _tab_to(tab: Any, selector: str, most: int = 30) -> None:
    """Press Tab until ``selector`` has the focus (the keyboard's way there)."""
    for _ in range(most):
        if tab.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
        tab.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_a_new_batch_is_made_with_the_keyboard_alone(
    site: Site, page: tuple[Any, Watch], tmp_path: Path
) -> None:
    tab, _ = page
    leads = tmp_path / "keys.jsonl"
    leads.write_text('{"id": "k1"}\n{"id": "k2"}\n')
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/new")
    _tab_to(tab, "#n-file")
    with tab.expect_file_chooser() as chooser:
        tab.keyboard.press("Space")
    chooser.value.set_files(str(leads))
    _tab_to(tab, "#n-task")
    while tab.input_value("#n-task") != TASK:
        tab.keyboard.press("ArrowDown")
    _tab_to(tab, "#n-name")
    tab.keyboard.type("typed")
    _tab_to(tab, "button[hx-post]")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#check >> text=All 2 rows read")
    _tab_to(tab, "button[type=submit]:not(.link)")
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(r"/batches/batch_"))
    assert tab.inner_text("h1") == "typed"


def test_a_confirm_page_names_the_count_before_anything_happens(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    batch = submit(
        site, "retry me", [{"id": f"r{n}", "fail": "nope" if n < 2 else None} for n in range(5)]
    )
    site.yard.run_until_idle(poll_interval=0.01)
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    tab.click("#do-retry")
    assert "2 failed items go back to the queue" in tab.inner_text("#confirm-text")
    assert batch.status().state.value == "partially_completed"
    tab.click("text=Retry: 2 items")
    tab.wait_for_url(f"**/batches/{batch.id}?done=retry")
    assert batch.status().state.value == "retrying"


def test_a_viewer_sees_no_control_and_a_forged_post_gets_403(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    batch = submit(site, "viewer's", [{"id": "v"}])
    tab.goto(site.login("vic"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    assert tab.locator("text=viewer's").count() >= 1
    assert tab.locator("a[href*='/actions/'], .controls button").count() == 0
    csrf = tab.get_attribute("meta[name=csrf-token]", "content")
    forged = tab.request.post(
        f"{site.url}/batches/{batch.id}/actions/pause", form={"csrf": csrf or ""}
    )
    assert forged.status == 403
    assert batch.status().state.value == "queued"


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site: a page whose form posts to a control of the dashboard."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form method="post" action="{self.target}">'
            '<input name="csrf" value="guess"><input name="confirm_name" value="x">'
            '<button id="go">win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_form_on_another_site_cannot_control_a_batch(site: Site, page: tuple[Any, Watch]) -> None:
    tab, _ = page
    batch = submit(site, "targeted", [{"id": "t"}])
    tab.goto(site.login("ann"))  # signed in: the session cookie is in this browser
    _Attacker.target = f"{site.url}/batches/{batch.id}/actions/pause"
    # localhost is another site than 127.0.0.1: the SameSite=Strict cookie stays home.
    evil = http.server.HTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        tab.goto(f"http://localhost:{evil.server_port}/")
        with tab.expect_navigation():
            tab.click("#go")
        # It arrived without the session: the dashboard asked for a sign-in.
        assert tab.url.startswith(f"{site.url}/signin?next=%2F")
    finally:
        evil.shutdown()
        evil.server_close()
    assert batch.status().state.value == "queued"
    # And a post from the dashboard's own origin without the session's token: 403.
    tab.goto(f"{site.url}/batches/{batch.id}")
    forged = tab.request.post(_Attacker.target, form={"csrf": "guess"})
    assert forged.status == 403 and batch.status().state.value == "queued"


def test_hostile_text_shows_as_text_on_every_page_and_runs_nothing(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    key = f"k{HOSTILE}"
    batch = submit(site, HOSTILE, [{"id": key, "text": HOSTILE, "fail": HOSTILE}, {"id": "ok"}])
    site.yard.run_until_idle(poll_interval=0.01)
    params = {
        "model": "m",
        "template": "Hi {{ name }}",
        "api_key_env": "",
        "base_url": "http://127.0.0.1:9",
    }
    prompted = site.yard.submit("llm", [{"id": "p", "name": HOSTILE}], params=params, owner="ann")
    site.yard.datasets.add("hostile", [{"id": key, HOSTILE: HOSTILE}])
    site.yard.templates.create("hostile", TASK, {"out": HOSTILE}, description=HOSTILE)
    tab.goto(site.login("ann"))
    item_url = f"{site.url}/batches/{batch.id}/items/{quote(key, safe='')}"
    for url in (
        site.url + "/",
        f"{site.url}/batches/{batch.id}",
        f"{site.url}/batches/{batch.id}/actions/delete",
        item_url,
        f"{site.url}/batches/{prompted.id}/items/p",
        f"{site.url}/datasets/hostile",
        f"{site.url}/templates/hostile",
    ):
        tab.goto(url)
        text = tab.inner_text("main")
        assert SHOWN in text and "\u202e" not in text, url
        assert tab.evaluate("() => document.querySelectorAll('main img, main script').length") == 0
        assert "49" not in tab.inner_text("h1")
    assert watch.dialogs == [] and watch.errors == []
    prompted.cancel()  # no worker of a later test should try to call its endpoint


def _pages(site: Site) -> list[tuple[str, str]]:
    batch = submit(site, "a11y", [{"id": "x", "fail": "bad"}, {"id": "y", "n": 1}])
    site.yard.run_until_idle(poll_interval=0.01)
    waiting = submit(site, "a11y waiting", [{"id": "w"}])
    ids = f"ids={batch.id}&ids={waiting.id}"
    if not any(t.name == "a11y" for t in site.yard.templates.list()):
        site.yard.templates.create("a11y", TASK, {"out": "one\ntwo"}, description="checks")
        site.yard.templates.update("a11y", {"out": "one\nthree"})
    if not any(d.name == "a11y" for d in site.yard.datasets.list()):
        rows = [{"id": f"d{n}", "n": n, "note": HOSTILE} for n in range(30)]
        site.yard.datasets.add("a11y", rows)
    return [
        ("datasets", f"{site.url}/datasets"),
        ("dataset", f"{site.url}/datasets/a11y"),
        ("templates", f"{site.url}/templates"),
        ("template", f"{site.url}/templates/a11y"),
        ("new", f"{site.url}/new"),
        ("compare", f"{site.url}/compare?{ids}"),
        ("live", f"{site.url}/batches/{waiting.id}"),
        ("history", site.url + "/"),
        ("batch", f"{site.url}/batches/{batch.id}"),
        ("confirm", f"{site.url}/batches/{batch.id}/actions/retry"),
        ("item", f"{site.url}/batches/{batch.id}/items/x"),
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_axe_and_fits_320_px(
    site: Site, browser: Any, scheme: str, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("BATCHYARD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    axe = axe_module.Axe()
    found: dict[str, list[str]] = {}
    for width in (1280, 320):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        tab = context.new_page()
        pages = [("signin", f"{site.url}/signin")]
        tab.goto(site.login("ann"))
        pages += _pages(site)
        for name, url in pages:
            if name == "signin":
                tab.context.clear_cookies()
            tab.goto(url)
            results = axe.run(tab, options={"runOnly": {"type": "tag", "values": WCAG}})
            assert results.response["testEngine"]["name"] == "axe-core"
            bad = [f"{v['id']}: {v['help']}" for v in results.response["violations"]]
            if bad:
                found[f"{name} {width}px {scheme}"] = bad
            if width == 320:
                overflow = tab.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at 320 px"
            tab.screenshot(path=str(shots / f"{name}-{width}-{scheme}.png"), full_page=True)
            if name == "signin":
                tab.goto(site.login("ann"))
        tab.goto(site.login("root"))
        tab.goto(f"{site.url}/tokens")
        results = axe.run(tab, options={"runOnly": {"type": "tag", "values": WCAG}})
        bad = [f"{v['id']}: {v['help']}" for v in results.response["violations"]]
        if bad:
            found[f"tokens {width}px {scheme}"] = bad
        if width == 320:
            assert (
                tab.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
            )
        tab.screenshot(path=str(shots / f"tokens-{width}-{scheme}.png"), full_page=True)
        context.close()
    assert found == {}


def test_the_theme_toggle_overrides_the_system_and_is_remembered(site: Site, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    tab = context.new_page()
    tab.goto(site.login("ann"))
    background = "() => getComputedStyle(document.body).backgroundColor"
    light = tab.evaluate(background)
    toggle = tab.locator("#theme-toggle")
    assert toggle.inner_text() == "Theme: auto"
    toggle.click()
    toggle.click()
    assert toggle.inner_text() == "Theme: dark"
    assert tab.evaluate(background) != light
    tab.reload()
    assert tab.get_attribute("html", "data-theme") == "dark"
    assert tab.evaluate(background) != light
    results = axe_module.Axe().run(tab, options={"runOnly": {"type": "tag", "values": WCAG}})
    assert results.response["violations"] == []
    toggle.click()
    assert toggle.inner_text() == "Theme: auto" and tab.evaluate(background) == light
    context.close()


def test_batchyard_serve_serves_the_dashboard_and_stops_with_a_page_stream_open(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'served.db'}"
    with Yard(db) as yard:
        batch = yard.submit(TASK, [{"id": "s", "gate": str(tmp_path / "never")}], name="held")
    server = Server(db, tmp_path, "--workers", "0")
    try:
        assert server.token is not None
        with httpx.Client(base_url=server.url, timeout=10) as browser:
            assert browser.get("/login", params={"token": server.token}).status_code == 303
            assert "<h1>Batches</h1>" in browser.get("/").text
            with browser.stream("GET", f"/batches/{batch.id}/live/events") as stream:
                first = next(stream.iter_lines())
                assert first == "event: live"
                started = time.monotonic()
                assert server.stop() == 0, "".join(server.output)
                assert time.monotonic() - started < 10
    finally:
        server.stop()
