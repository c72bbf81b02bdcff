"""The dashboard in a real browser: Debian's chromium driven by Playwright against uvicorn
on a free loopback port, over a SQLite store that a worker process shares (see
dashboard_site.py). Signing in by the link, the history's filters in the URL and Compare,
the batch page updating live while the worker finishes items (and what a hidden tab or a
refused stream does), a new batch from a file or from dataset rows picked on two pages (by
mouse and by keyboard alone), confirm pages, a viewer's page, and ``batchyard serve``
stopping with a page stream open. Safety
and accessibility are in test_dashboard_quality.py."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard import Yard
from tests.e2e.dashboard_site import (
    CHROMIUM,
    TASK,
    Site,
    Watch,
    run_worker,
    submit,
)
from tests.integration.test_processes import wait_for
from tests.procs.server import Server

playwright_api = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def test_the_login_link_signs_in_and_the_historys_filters_live_in_the_url(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    for n in range(3):
        submit(site, f"history {n}", [{"id": "a", "n": n}])
    tab.goto(site.login("ann"))
    assert tab.url == site.url + "/"
    assert tab.locator("table.batches >> text=history 2").count() >= 1
    # Times are UTC on the page; hovering one shows the reader's local time too.
    local = tab.get_attribute("table.batches time", "title") or ""
    assert local.endswith(" UTC") and "(local)" in local
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
    # Three paints at least (as it was, half done, done): a sparkline of the pace between.
    assert tab.locator("#live svg.spark polyline").count() == 1
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


def test_picking_an_older_template_version_shows_what_changed_since(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    site.yard.templates.create("picked", TASK, {"out": "one\ntwo"})
    site.yard.templates.update("picked", {"out": "one\nthree"})
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/new")
    tab.select_option("#n-template", "picked@1")
    tab.wait_for_selector("#template-note >> text=picked@1 is not the latest version (v2)")
    assert tab.locator("#template-note .add", has_text="+three").count() == 1
    tab.select_option("#n-template", "picked")
    tab.wait_for_function("() => !document.getElementById('template-note').textContent.trim()")
    assert watch.errors == []


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
    _choose_file_by_keyboard(tab, leads)
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


def _dataset(site: Site, name: str) -> None:
    """60 leads, every other one SaaS (30: two pages of 25), once per site."""
    if not any(d.name == name for d in site.yard.datasets.list()):
        site.yard.datasets.add(
            name,
            [
                {"id": f"d{n}", "name": f"Lead {n}", "industry": "SaaS" if n % 2 else "Retail"}
                for n in range(60)
            ],
        )


def _keys(tab: Any, site: Site) -> list[str]:
    batch_id = tab.url.split("/batches/")[1].split("?")[0]
    return sorted(item.key for item in site.yard.batch(batch_id).items())


def test_a_batch_is_made_of_dataset_rows_picked_on_two_pages(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    _dataset(site, "picks")
    scorer = {
        "model": "gpt-4o-mini",
        "template": "Score {{ name }}",
        "api_key_env": "",
        "base_url": "http://127.0.0.1:9",
    }
    site.yard.templates.create("picks-scorer", "llm", scorer)
    tab.goto(site.login("ann"))
    tab.click("text=New batch")
    tab.click("text=Rows of a dataset")
    tab.select_option("#d-dataset", "picks")
    tab.click("text=Show its rows")
    tab.wait_for_selector("#rows-h >> text=60 matching rows")
    tab.fill("#r-where", "industry=SaaS")
    tab.click("#r-filter")
    tab.wait_for_selector("#rows-h >> text=30 matching rows")
    tab.check("input[value=d1]")
    tab.check("input[value=d3]")
    tab.click("text=Next page")
    tab.wait_for_selector("text=2 rows picked (2 not on this page)")
    assert tab.locator("input[type=checkbox][name=picked]").count() == 5
    tab.check("input[value=d59]")
    tab.click("text=First page")
    tab.wait_for_selector("text=3 rows picked (1 not on this page)")
    assert tab.is_checked("input[value=d1]") and tab.is_checked("input[value=d3]")
    tab.select_option("#n-template", "picks-scorer")
    tab.fill("#n-name", "three picked")
    tab.click("text=Check it and estimate the cost")
    tab.wait_for_selector("#check >> text=Estimate for 3 items with gpt-4o-mini")
    prompts = tab.locator("#check pre").all_inner_texts()
    assert prompts == ["Score Lead 1", "Score Lead 3", "Score Lead 59"]
    tab.click("#make")
    tab.wait_for_url(re.compile(r"/batches/batch_"))
    assert tab.inner_text("h1") == "three picked"
    assert _keys(tab, site) == ["d1", "d3", "d59"]
    site.yard.batch(tab.url.split("/batches/")[1]).cancel()  # no later worker calls its model
    # Every row that matches, by one button, with a task this time.
    tab.goto(f"{site.url}/new/dataset?dataset=picks&where=industry%3DRetail")
    tab.click("text=Select all 30 matching")
    tab.wait_for_selector("text=All 30 matching rows are picked")
    tab.select_option("#n-task", TASK)
    before = len(site.yard.batches(limit=500).rows)
    tab.dblclick("#make")  # two posts of one form: one batch
    tab.wait_for_url(re.compile(r"/batches/batch_"))
    assert _keys(tab, site) == sorted(f"d{n}" for n in range(0, 60, 2))
    assert len(site.yard.batches(limit=500).rows) == before + 1
    # Nothing picked: said on the form, nothing made.
    before = len(site.yard.batches(limit=500).rows)
    tab.goto(f"{site.url}/new/dataset?dataset=picks&task={TASK}")
    tab.click("#make")
    assert "no row is picked" in tab.inner_text("[role=alert]")
    assert len(site.yard.batches(limit=500).rows) == before
    assert [e for e in watch.errors if "status of 422" not in e] == []


def test_a_batch_of_dataset_rows_is_made_with_the_keyboard_alone(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    _dataset(site, "keyed")
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/new")
    _tab_to(tab, "a[href^='/new/dataset']")
    tab.keyboard.press("Enter")
    tab.wait_for_url("**/new/dataset")
    _tab_to(tab, "#d-dataset")
    while tab.input_value("#d-dataset") != "keyed":
        tab.keyboard.press("ArrowDown")
    _tab_to(tab, "#d-show")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#rows-h >> text=60 matching rows")
    _tab_to(tab, "#r-where")
    tab.keyboard.type("industry=SaaS")
    _tab_to(tab, "#r-filter")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#rows-h >> text=30 matching rows")
    _tab_to(tab, "input[value=d5]", most=40)
    tab.keyboard.press("Space")
    _tab_to(tab, "button[value=next]", most=60)
    tab.keyboard.press("Enter")
    tab.wait_for_selector("text=1 row picked (1 not on this page)")
    _tab_to(tab, "input[value=d51]", most=40)
    tab.keyboard.press("Space")
    _tab_to(tab, "#n-task", most=60)
    while tab.input_value("#n-task") != TASK:
        tab.keyboard.press("ArrowDown")
    _tab_to(tab, "button[hx-post]")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#check >> text=All 2 rows read")
    _tab_to(tab, "#make")
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(r"/batches/batch_"))
    assert _keys(tab, site) == ["d5", "d51"]


def _choose_file_by_keyboard(tab: Any, path: Path) -> None:
    """Space on the focused file input opens the chooser. NOTE: headless chromium now and
    then drops that first key press (CI saw the chooser never open, 1 run in 3): press it
    again, by keyboard still, a few times before giving up."""
    for tries_left in range(2, -1, -1):
        try:
            with tab.expect_file_chooser(timeout=5000) as chooser:
                tab.keyboard.press("Space")
        except playwright_api.TimeoutError:
            if not tries_left:
                raise
            continue
        chooser.value.set_files(str(path))
        return


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
