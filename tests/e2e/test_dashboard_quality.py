"""The dashboard's safety and accessibility in a real browser (see dashboard_site.py): a
form on another site cannot control a batch, hostile text in every field shows as text and
runs nothing, axe-core finds no WCAG 2.1 A/AA violation on any page at 320 and 1280 px in
either theme, nothing scrolls sideways at 320 px, and the theme toggle.

``BATCHYARD_SCREENSHOTS=docs/screenshots`` takes a screenshot of every page checked, there
(none are taken otherwise)."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.dashboard_site import (
    CHROMIUM,
    HOSTILE,
    SHOWN,
    TASK,
    WCAG,
    Site,
    Watch,
    submit,
)

playwright_api = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


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
        f"{site.url}/compare?ids={batch.id}&ids={prompted.id}",
        f"{site.url}/batches/{batch.id}/actions/retry",
        f"{site.url}/batches/{batch.id}/actions/rerun",
        f"{site.url}/new/dataset?dataset=hostile&picked={quote(key)}&name={quote(HOSTILE)}",
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
        ("new", f"{site.url}/new?template=a11y@1"),
        ("new-rows", f"{site.url}/new/dataset?dataset=a11y&picked=d3&picked=d29&template=a11y@1"),
        ("new-rows-all", f"{site.url}/new/dataset?dataset=a11y&all=1&where=n%3E%3D5&task={TASK}"),
        ("compare", f"{site.url}/compare?{ids}"),
        ("live", f"{site.url}/batches/{waiting.id}"),
        ("history", site.url + "/"),
        ("batch", f"{site.url}/batches/{batch.id}"),
        ("confirm", f"{site.url}/batches/{batch.id}/actions/retry"),
        ("rerun", f"{site.url}/batches/{batch.id}/actions/rerun?items=failed&template=a11y"),
        ("item", f"{site.url}/batches/{batch.id}/items/x"),
    ]


#: What axe checks on every page: every WCAG 2.1 A/AA rule; only violations are gathered
#: in detail (passes and the rest are still run, just not reported node by node).
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]}


def _start_axe(tab: Any) -> None:
    """Start axe on the tab's page without waiting for it (``_axe_found`` collects it): the
    two widths' tabs, in browser contexts (so renderer processes) of their own, then check
    their pages at the same time."""
    tab.evaluate("(options) => { window.axeRun = axe.run(document, options); }", AXE_OPTIONS)


def _axe_found(tab: Any) -> list[str]:
    results = tab.evaluate("() => window.axeRun")
    assert results["testEngine"]["name"] == "axe-core"
    return [f"{v['id']}: {v['help']}" for v in results["violations"]]


def _open(tab: Any, site: Site, name: str, url: str) -> None:
    if name == "signin":
        tab.context.clear_cookies()
    if name == "tokens":
        tab.goto(site.login("root"))
    tab.goto(url)
    _start_axe(tab)


#: Every box in ``main`` that scrolls sideways (its content wider than it): whether it can be
#: reached by Tab (tabindex 0), its role and accessible name (aria-label, or the text of what
#: aria-labelledby names), and whether it shows its edge (a solid border left and right) so
#: a reader sees that the table goes on past it.
SCROLLERS = """() => [...document.querySelectorAll('main *')].filter((box) => {
  const overflow = getComputedStyle(box).overflowX;
  return (overflow === 'auto' || overflow === 'scroll') && box.scrollWidth > box.clientWidth + 1;
}).map((box) => {
  const style = getComputedStyle(box);
  const side = (s) => parseFloat(style[`border${s}Width`]) >= 1
    && style[`border${s}Style`] !== 'none' && style[`border${s}Color`] !== 'rgba(0, 0, 0, 0)';
  const named = (box.getAttribute('aria-labelledby') || '').split(' ').filter(Boolean)
    .map((id) => (document.getElementById(id) || {}).textContent || '').join(' ');
  return {
    box: box.tagName + '.' + box.className,
    tabindex: box.getAttribute('tabindex'),
    role: box.getAttribute('role') || box.tagName.toLowerCase(),
    name: (box.getAttribute('aria-label') || named).trim(),
    edge: side('Left') && side('Right'),
  };
})"""


def _scroll_regions_are_bounded(tab: Any, where: str) -> list[dict[str, Any]]:
    """The page's sideways scrollers, each asserted focusable, named and with a visible edge."""
    scrollers: list[dict[str, Any]] = tab.evaluate(SCROLLERS)
    for box in scrollers:
        assert box["tabindex"] == "0" and box["name"], f"{where}: {box} is not a named stop"
        assert box["role"] in ("region", "pre"), f"{where}: {box} is no region"
        assert box["edge"], f"{where}: {box} hides content sideways with no visible edge"
    return scrollers


def _check(tab: Any, width: int, where: str, shots: Path | None) -> list[str]:
    """The violations axe found on the tab's page; at 320 px, that nothing scrolls
    sideways; that what scrolls sideways inside the page is a bounded, named region; a
    full-page screenshot into ``shots`` when it is given."""
    bad = _axe_found(tab)
    if width == 320:
        overflow = tab.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{where} scrolls sideways by {overflow}px at 320 px"
    _scroll_regions_are_bounded(tab, where)
    if shots is not None:
        tab.screenshot(path=str(shots / f"{where}.png"), full_page=True)
    return bad


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_axe_and_fits_320_px(site: Site, browser: Any, scheme: str) -> None:
    kept = os.environ.get("BATCHYARD_SCREENSHOTS")
    shots = Path(kept) if kept else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    # NOTE: one context per width for the whole run, axe put in every page they open by an
    # init script (the browser runs it whatever the CSP says; a <script> tag would be
    # refused), both widths' pages checked at once, and screenshots only when asked for:
    # the same pages and rules in about two thirds of the time (a median of 18 s a theme,
    # from 27, on a busy 2-core machine).
    tabs: dict[int, Any] = {}
    for width in (1280, 320):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        context.add_init_script(script=axe_module.Axe().axe_script)
        tabs[width] = context.new_page()
        tabs[width].goto(site.login("ann"))
    pages = [("signin", f"{site.url}/signin"), *_pages(site), ("tokens", f"{site.url}/tokens")]
    found: dict[str, list[str]] = {}
    try:
        for name, url in pages:
            for tab in tabs.values():
                _open(tab, site, name, url)
            for width, tab in tabs.items():
                bad = _check(tab, width, f"{name}-{width}-{scheme}", shots)
                if bad:
                    found[f"{name} {width}px {scheme}"] = bad
                if name == "signin":
                    tab.goto(site.login("ann"))
    finally:
        for tab in tabs.values():
            tab.context.close()
    assert found == {}


#: Each compare card's lines: the batch each value is of (the label a narrow screen shows
#: before it) and whether the value is inside the viewport.
COMPARE_LINES = """() => [...document.querySelectorAll('.compare-table tbody td')].map((td) => {
  const box = td.getBoundingClientRect();
  return {
    label: getComputedStyle(td, '::before').content,
    inside: box.left >= 0 && box.right <= window.innerWidth,
  };
})"""


def _wide_pages(site: Site) -> tuple[list[str], str, str]:
    """Three batches with long names, and a dataset of eight fields with long values: the
    names, the compare page's and the dataset page's URLs."""
    names = [f"lead scoring run {n} with a long descriptive name" for n in range(3)]
    if not any(d.name == "wide" for d in site.yard.datasets.list()):
        for name in names:
            submit(site, name, [{"id": f"w{i}", "fail": "boom" * (i % 2)} for i in range(4)])
        site.yard.run_until_idle(poll_interval=0.01)
        rows = [
            {
                "id": f"lead-{n}",
                "company": f"Acme Widgets International {n}",
                "industry": "SaaS",
                "employees": 100 + n,
                "country": "Germany",
                "website": f"https://www.acme-widgets-international-{n}.example.com/about",
                "email": f"first.last{n}@acme-widgets-international.example.com",
                "notes": "Met at the trade fair; follow up in Q3",
            }
            for n in range(12)
        ]
        site.yard.datasets.add("wide", rows)
    ids = {b.name: b.id for b in site.yard.batches(limit=500).rows}
    query = "&".join(f"ids={ids[name]}" for name in names)
    return names, f"{site.url}/compare?{query}", f"{site.url}/datasets/wide"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_wide_tables_reflow_or_scroll_in_a_bounded_region_at_320_px(
    site: Site, browser: Any, scheme: str
) -> None:
    """Realistic data, wider than the phone: the compare page reflows to a card per figure
    with a line per batch (nothing of it hidden sideways), and a dataset's rows scroll in
    their own bordered, named region that the keyboard scrolls, the row's key kept in view;
    the page itself never scrolls sideways; axe passes at both widths."""
    names, compare_url, rows_url = _wide_pages(site)
    kept = os.environ.get("BATCHYARD_SCREENSHOTS")
    shots = Path(kept) if kept else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    for width in (320, 1280):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        context.add_init_script(script=axe_module.Axe().axe_script)
        tab = context.new_page()
        tab.goto(site.login("ann"))
        tab.goto(compare_url)
        _start_axe(tab)
        if bad := _check(tab, width, f"compare-wide-{width}-{scheme}", shots):
            found[f"compare {width}px"] = bad
        # Nothing of the compare page is hidden sideways: no region of it scrolls, and every
        # value is on screen, with its batch's name before it on a narrow screen.
        assert _scroll_regions_are_bounded(tab, "compare") == []
        lines = tab.evaluate(COMPARE_LINES)
        assert len(lines) == 13 * len(names) and all(line["inside"] for line in lines)
        if width == 320:
            assert {line["label"] for line in lines} == {f'"{n}" / ""' for n in names}
            # Still a table to a screen reader, its labels left out of each cell's text.
            table = tab.locator(".compare-table")
            assert table.get_by_role("rowheader").count() == 13
            assert table.get_by_role("cell", name="4", exact=True).count() == len(names)
        tab.goto(rows_url)
        _start_axe(tab)
        if bad := _check(tab, width, f"dataset-wide-{width}-{scheme}", shots):
            found[f"dataset {width}px"] = bad
        region = tab.locator("main .scroll")
        if width == 320:
            (box,) = _scroll_regions_are_bounded(tab, "dataset")
            assert box["name"] == "12 matching rows"
            # The keyboard scrolls it, and the key of each row stays in view as it does.
            region.focus()
            for _ in range(8):
                tab.keyboard.press("ArrowRight")
            # (Chromium scrolls by key smoothly: wait until it is well past the key's width.)
            scrolled = "() => document.querySelector('main .scroll').scrollLeft >= 200"
            tab.wait_for_function(scrolled)
            key = tab.locator("main .scroll td.key").first.bounding_box()
            edge = region.bounding_box()
            assert key is not None and edge is not None
            assert edge["x"] <= key["x"] and key["x"] + key["width"] <= edge["x"] + edge["width"]
            assert tab.locator("main .scroll td.key").first.inner_text() == "lead-0"
        context.close()
    assert found == {}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_new_batch_check_and_its_cost_confirm_pass_axe(
    site: Site, browser: Any, scheme: str
) -> None:
    """The states the new-batch page reaches by its buttons, not by a URL: the check's
    estimate with the first prompts, and a batch over the cost limit held for its cost to
    be accepted (about $2.00 for 100 rows with room for 4,000 tokens out each)."""
    kept = os.environ.get("BATCHYARD_SCREENSHOTS")
    shots = Path(kept) if kept else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    if not any(d.name == "a11y-many" for d in site.yard.datasets.list()):
        site.yard.datasets.add(
            "a11y-many", [{"id": f"m{n}", "name": f"Lead {n}"} for n in range(100)]
        )
        params = {
            "model": "gpt-4o",
            "template": "Score {{ name }}",
            "max_tokens": 4000,
            "api_key_env": "",
            "base_url": "http://127.0.0.1:9",
        }
        site.yard.templates.create("a11y-llm", "llm", params)
    before = len(site.yard.batches(limit=500).rows)
    axe = axe_module.Axe()
    found: dict[str, list[str]] = {}
    for width in (1280, 320):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        context.add_init_script(script=axe.axe_script)
        tab = context.new_page()
        tab.goto(site.login("ann"))
        form = f"{site.url}/new/dataset?dataset=a11y-many&all=1&template=a11y-llm"
        for name in ("checked", "held"):
            tab.goto(form)
            if name == "checked":
                tab.click("text=Check it and estimate the cost")
                tab.wait_for_selector("#check >> text=Estimate for 100 items with gpt-4o")
                assert tab.locator("#check pre").count() == 5
            else:  # made without a check first: the form comes back asking
                tab.click("#make")
                tab.wait_for_selector("text=This batch should cost about $2.00")
            _start_axe(tab)
            bad = _check(tab, width, f"new-rows-{name}-{width}-{scheme}", shots)
            if bad:
                found[f"new-rows-{name} {width}px {scheme}"] = bad
        context.close()
    assert found == {}
    assert len(site.yard.batches(limit=500).rows) == before  # held: nothing made


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
    results = axe_module.Axe().run(tab, options=AXE_OPTIONS)
    assert results.response["violations"] == []
    toggle.click()
    assert toggle.inner_text() == "Theme: auto" and tab.evaluate(background) == light
    context.close()
