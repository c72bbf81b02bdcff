"""The dashboard's pages in process (FastAPI's TestClient over a real SQLite yard): signing
in and out, the batch history and its filters, and that every page keeps to the owner rule
and the CSRF check of the API. The browser tests are in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings

TASK = "tests.procs.tasks:square"


@pytest.fixture
def app(yard: Yard):
    return create_app(yard, ServerSettings(workers=0))


def sign_in(app, yard: Yard, name: str, role: str = "operator", owner: str | None = None):
    _, secret = yard.tokens.create(name, role, owner)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/login", params={"token": secret}, follow_redirects=False).status_code == 303
    return client


@pytest.fixture
def ann(app, yard: Yard) -> Iterator[TestClient]:
    with sign_in(app, yard, "ann") as client:
        yield client


def make(yard: Yard, name: str, owner: str = "ann", n: int = 3):
    return yard.submit(TASK, [{"id": f"k{i}", "n": i} for i in range(n)], name=name, owner=owner)


def csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, html[:500]
    return found.group(1)


def test_a_page_without_a_session_goes_to_sign_in_and_comes_back(app, yard: Yard) -> None:
    _, secret = yard.tokens.create("bob", "viewer")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        away = client.get("/?state=failed", follow_redirects=False)
        assert away.status_code == 303
        assert away.headers["location"] == "/signin?next=%2F%3Fstate%3Dfailed"
        form = client.get(away.headers["location"])
        assert 'type="password"' in form.text
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
        wrong = client.post(
            "/signin", data={"token": "by_nope", "nonce": nonce}, follow_redirects=False
        )
        assert wrong.status_code == 401 and "not valid" in wrong.text
        nonce = re.search(r'name="nonce" value="([^"]+)"', wrong.text).group(1)
        right = client.post(
            "/signin",
            data={"token": secret, "nonce": nonce, "next": "/?state=failed"},
            follow_redirects=False,
        )
        assert right.status_code == 303 and right.headers["location"] == "/?state=failed"
        page = client.get("/?state=failed")
        assert page.status_code == 200 and "bob" in page.text


def test_a_sign_in_posted_from_another_site_is_refused(app, yard: Yard) -> None:
    _, secret = yard.tokens.create("bob", "viewer")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        # Another site's form cannot read or send the form's SameSite cookie.
        forged = client.post("/signin", data={"token": secret, "nonce": "guess"})
        assert forged.status_code == 403
        assert "batchyard_session" not in client.cookies
        away = client.post(
            "/signin", data={"token": secret, "nonce": "x", "next": "//evil.example/"}
        )
        assert away.status_code == 403


def test_sign_out_needs_the_csrf_token_and_ends_the_session(ann: TestClient) -> None:
    page = ann.get("/")
    assert ann.post("/signout", follow_redirects=False).status_code == 403
    out = ann.post("/signout", data={"csrf": csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert ann.get("/", follow_redirects=False).status_code == 303


def test_history_shows_the_callers_batches_with_running_ones_pinned(
    ann: TestClient, yard: Yard
) -> None:
    done = make(yard, "finished one")
    yard.run_until_idle(poll_interval=0.01)
    running = make(yard, "still going")
    make(yard, "not yours", owner="carl")
    page = ann.get("/")
    assert page.status_code == 200
    assert "finished one" in page.text and "still going" in page.text
    assert "not yours" not in page.text
    assert "<title>(1 running) Batches · batchyard</title>" in page.text
    pinned = page.text.split('id="pinned-h"')[1].split('id="all-h"')[0]
    assert running.id in pinned and done.id not in pinned
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_history_filters_and_pages_come_from_the_url(ann: TestClient, yard: Yard) -> None:
    for n in range(30):
        make(yard, f"batch {n:02d}", n=1)
    yard.run_until_idle(poll_interval=0.01)
    first = ann.get("/")
    assert first.text.count('class="pick"') == 25
    assert "batch 29" in first.text and "batch 04" not in first.text
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1)
    second = ann.get(next_url.replace("&amp;", "&"))
    assert second.text.count('class="pick"') == 5 and "batch 00" in second.text
    found = ann.get("/", params={"q": "batch 07", "state": "completed"})
    assert found.text.count('class="pick"') == 1 and "batch 07" in found.text
    assert ann.get("/", params={"state": "failed"}).text.count('class="pick"') == 0
    assert ann.get("/", params={"since": "2001-01-01", "until": "2001-01-02"}).text.count(
        'class="pick"'
    ) == 0
    assert ann.get("/", params={"limit": 50}).text.count('class="pick"') == 30


def test_bad_filters_are_a_page_saying_which(ann: TestClient) -> None:
    bad = ann.get("/", params={"state": "sleeping"})
    assert bad.status_code == 422 and "state: not a batch state" in bad.text
    assert "text/html" in bad.headers["content-type"]
    assert ann.get("/", params={"since": "yesterday"}).status_code == 422
    assert ann.get("/", params={"limit": 7}).status_code == 422


def test_the_static_files_are_served_and_the_ui_can_be_turned_off(
    ann: TestClient, yard: Yard
) -> None:
    script = ann.get("/static/vendor/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:200]
    assert ann.get("/static/dashboard.css").status_code == 200
    bare = create_app(yard, ServerSettings(workers=0, ui=False))
    with TestClient(bare) as client:
        assert client.get("/").status_code == 404
        assert client.get("/static/dashboard.css").status_code == 404
