"""The batch page's live behaviour in a real browser (see dashboard_site.py): a stream the
server drops is opened again after 1, 2, 4, 8 and 16 s (the page's clock is Playwright's
fake one, so the schedule is checked to the millisecond without waiting for it) and shows
what changed meanwhile, and what the reader is doing (the scroll position, an open dialog,
a confirm page's typed name) survives any number of repaints; a running batch's page shows
its pace since it started and a range for the time left, and its tables as cards at 320 px.

``BATCHYARD_SCREENSHOTS=docs/screenshots`` keeps screenshots of the running batch there."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchyard import FakeClock, TaskContext, Yard
from batchyard.errors import PauseBatch
from tests.e2e.dashboard_site import CHROMIUM, Site, Watch, submit
from tests.integration.test_processes import wait_for

playwright_api = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

CHIP = "() => document.getElementById('live-chip').getAttribute('data-state')"
TRIES = "() => Number(document.getElementById('live-chip').getAttribute('data-tries'))"


def run_worker(site: Site) -> None:
    """A worker process until the store is idle. NOTE: a 30 s lease, not dashboard_site's
    1 s: with 1 s, items it prefetched behind gated ones lost their leases and ran again
    (20 outcomes refused, a 10 s wait), which is not what these tests are about."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.procs.worker",
            site.db,
            "--concurrency",
            "2",
            "--lease",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_dropped_stream_reconnects_after_1_2_4_8_16_s_and_shows_what_it_missed(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    batch = submit(site, "dropped", [{"id": "d"}])
    refused: list[str] = []
    refuse = {"now": False}

    def stream(route: Any) -> None:
        if refuse["now"]:
            refused.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    tab.route("**/live/events*", stream)
    tab.clock.install()
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    tab.wait_for_function(f"() => ({CHIP})() === 'live'")
    assert tab.evaluate(TRIES) == 1
    tab.clock.pause_at(tab.evaluate("() => Date.now()") / 1000 + 1)
    refuse["now"] = True
    site.app.state.feed.end_streams()  # the server drops every stream
    retry = "() => document.getElementById('live-chip').getAttribute('data-retry')"
    tab.wait_for_function(f"() => ({retry})() === '1000'", polling=50)
    assert tab.evaluate(CHIP) == "reconnecting"
    schedule = (1000, 2000, 4000, 8000, 16000, 16000)
    for delay, following in zip(schedule, (*schedule[1:], 16000), strict=True):
        tries = tab.evaluate(TRIES)
        tab.clock.run_for(delay - 20)
        assert tab.evaluate(TRIES) == tries, f"opened again before {delay} ms"
        tab.clock.run_for(40)
        assert tab.evaluate(TRIES) == tries + 1, f"not opened again at {delay} ms"
        # The refusal arrives (the attempt cleared the chip's retry): the next delay starts.
        tab.wait_for_function(f"(d) => ({retry})() === String(d)", arg=following, polling=50)
        assert tab.evaluate(CHIP) == "reconnecting"
    assert len(refused) == len(schedule)
    # A change while no stream was open, then the server takes the stream again: the first
    # event shows it, and later changes come live as before.
    batch.pause()
    refuse["now"] = False
    tab.clock.run_for(16000)
    tab.wait_for_function(f"() => ({CHIP})() === 'live'", polling=50)
    tab.wait_for_selector("#live .badge.st-paused")
    tab.clock.resume()
    batch.resume()
    tab.wait_for_selector("#live .badge.st-queued", timeout=10_000)
    assert tab.locator("#live-wrap").count() == 1 and tab.locator("#live").count() == 1
    # htmx logs each htmx:sseError (the drop, then six refusals) to the console; nothing else.
    assert [e for e in watch.errors if e != "[object Event]" and "ERR_FAILED" not in e] == []
    assert watch.errors.count("[object Event]") == 7


def test_the_reader_keeps_their_place_their_selection_and_the_table_through_repaints(
    site: Site, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    # 6 s of work on two lanes: several repaints even when a busy machine starts late.
    items = [{"id": f"row{n:02d}", "sleep": 0.2} for n in range(60)]
    batch = submit(site, "scrolled", items)
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    tab.wait_for_function(f"() => ({CHIP})() === 'live'")
    # Down at the items table, a row's key selected, a row marked (a re-rendered table
    # would lose the mark), the focus on a link in the table.
    tab.evaluate(
        "() => { const t = document.querySelector('table.items');"
        " window.scrollTo(0, t.getBoundingClientRect().top + window.scrollY - 40);"
        " t.querySelector('tbody tr:nth-child(5)').marked = true;"
        " const key = t.querySelector('tbody tr:nth-child(3) td.name a');"
        " const range = document.createRange(); range.selectNodeContents(key);"
        " getSelection().removeAllRanges(); getSelection().addRange(range);"
        " t.querySelector('tbody tr:nth-child(7) a').focus({preventScroll: true}); }"
    )
    where = "() => Math.round(document.querySelector('table.items').getBoundingClientRect().top)"
    top, scrolled = tab.evaluate(where), tab.evaluate("() => window.scrollY")
    assert scrolled > 0
    bar = "() => document.querySelector('.refresh').textContent"
    worker = threading.Thread(target=run_worker, args=(site,))
    worker.start()
    repaints, said = 0, tab.evaluate(bar)
    try:
        while tab.evaluate(CHIP) != "ended":
            # Each repaint while items finish says a new count: check after every one.
            tab.wait_for_function(
                f"(said) => ({bar})() !== said || ({CHIP})() === 'ended'", arg=said
            )
            said, repaints = tab.evaluate(bar), repaints + 1
            assert tab.evaluate(where) == top, "the table moved under the reader"
            assert tab.evaluate("() => window.scrollY") == scrolled
            assert tab.evaluate("() => getSelection().toString()") == "row02"
            assert tab.evaluate("() => document.activeElement.textContent") == "row06"
            assert tab.evaluate(
                "() => document.querySelector('table.items tbody tr:nth-child(5)').marked"
            )
    finally:
        worker.join(60)
    assert repaints >= 2 and "60 items finished" in said
    # The rows still say what they said when loaded (pending); the bar offers the refresh.
    assert tab.locator("table.items .badge.st-pending").count() == 50
    tab.click(".refresh a")
    tab.wait_for_selector("table.items .badge.st-succeeded")
    assert tab.url.endswith("#items")
    assert watch.errors == []


def test_a_confirm_page_typed_into_while_the_batch_moves_does_what_it_said(
    site: Site, page: tuple[Any, Watch], tmp_path: Path
) -> None:
    tab, watch = page
    gate = tmp_path / "gate"
    items = [{"id": f"c{n}", "gate": str(gate) if n >= 2 else None} for n in range(6)]
    batch = submit(site, "to cancel", items)
    tab.goto(site.login("ann"))
    tab.goto(f"{site.url}/batches/{batch.id}")
    tab.wait_for_function(f"() => ({CHIP})() === 'live'")
    tab.click("#do-cancel")
    tab.wait_for_url(f"**/batches/{batch.id}/actions/cancel")
    tab.fill("#confirm-name", "to can")
    worker = threading.Thread(target=run_worker, args=(site,))
    worker.start()
    try:
        # Two items end while the dialog is open; what was typed stays, and the form works.
        wait_for(lambda: batch.status().counts.succeeded == 2, 30, "two items to end")
        assert tab.input_value("#confirm-name") == "to can"
        tab.locator("#confirm-name").press_sequentially("cel")
        tab.click(".confirm button[type=submit]")
        tab.wait_for_url(f"**/batches/{batch.id}?done=cancel")
        # The worker stops the gated items it runs (it checks the batch's state every so
        # often); only then does their gate open.
        wait_for(lambda: batch.status().counts.running == 0, 30, "the running items to stop")
    finally:
        gate.touch()
        worker.join(60)
    status = batch.status()
    assert status.state.value == "cancelled"
    assert (status.counts.succeeded, status.counts.cancelled) == (2, 4)
    assert watch.errors == []


def _ran_before(site: Site, started_ago: float, took: list[float], left: int) -> str:
    """A batch (owner ann) whose first items took ``took`` s each from ``started_ago`` s
    ago (a ``FakeClock`` set in the past), with ``left`` to run, processing again."""
    clock = FakeClock(time.time() - started_ago)
    with Yard(site.db, clock=clock) as yard:

        @yard.task(name="paced", concurrency=1, max_attempts=1)
        def paced(item: dict[str, Any], ctx: TaskContext) -> None:
            if item.get("stop"):
                raise PauseBatch("stop here")
            clock.advance(item["took"])

        items: list[dict[str, Any]] = [{"id": f"a{n}", "took": t} for n, t in enumerate(took)]
        items += [{"id": f"b{n}", "stop": n == 0} for n in range(left)]
        batch = yard.submit("paced", items, name="leads, this morning", owner="ann")
        yard.run_until_idle(concurrency=1, poll_interval=0.01)
        batch.resume()
        return batch.id


def test_a_running_batch_shows_its_pace_since_it_started_and_a_range_for_the_rest(
    site: Site, browser: Any
) -> None:
    took = [1.5] * 12 + [4.0 + (n % 3) * 0.5 for n in range(12)]  # faster, then slower
    batch = _ran_before(site, started_ago=sum(took) + 2, took=took, left=9)
    # One item taken now: running, not stalled.
    assert site.yard.store.claim("w", {"paced": 1}, 1, time.time(), 600.0)
    kept = os.environ.get("BATCHYARD_SCREENSHOTS")
    for scheme in ("light", "dark"):
        for width in (1280, 320):
            context = browser.new_context(
                viewport={"width": width, "height": 900}, color_scheme=scheme
            )
            tab = context.new_page()
            tab.goto(site.login("ann"))
            tab.goto(f"{site.url}/batches/{batch}")
            tab.wait_for_function(f"() => ({CHIP})() === 'live'")
            # The line spans the minute and more before the page opened, on first paint.
            points = tab.get_attribute("#live svg.spark polyline", "points") or ""
            assert len(points.split()) >= 6  # a stream's own samples: one or two by now
            assert " to " in tab.inner_text("#eta")
            assert tab.locator("#stalled").count() == 0
            assert tab.locator("#live .badge.st-processing").count() == 1
            if width == 320:
                # The items table as cards: each cell a labelled field, nothing sideways.
                label = tab.evaluate(
                    "() => getComputedStyle(document.querySelector"
                    "('table.items td[data-label=State]'), '::before').content"
                )
                assert "State" in label
                assert (
                    tab.evaluate(
                        "() => getComputedStyle(document.querySelector('table.items tr')).display"
                    )
                    == "block"
                )
                assert (
                    tab.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
                    <= 0
                )
            if kept:
                tab.screenshot(path=f"{kept}/running-{width}-{scheme}.png", full_page=True)
                if width == 320 and scheme == "light":
                    tab.goto(site.url + "/")
                    tab.screenshot(path=f"{kept}/history-320-light.png", full_page=True)
            context.close()
