"""The batch page's live behaviour in a real browser (see dashboard_site.py): a stream the
server drops is opened again after 1, 2, 4, 8 and 16 s (the page's clock is Playwright's
fake one, so the schedule is checked to the millisecond without waiting for it) and shows
what changed meanwhile, and what the reader is doing (the scroll position, an open dialog,
a confirm page's typed name) survives any number of repaints."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.e2e.dashboard_site import CHROMIUM, Site, Watch, submit

playwright_api = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

CHIP = "() => document.getElementById('live-chip').getAttribute('data-state')"
TRIES = "() => Number(document.getElementById('live-chip').getAttribute('data-tries'))"


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
