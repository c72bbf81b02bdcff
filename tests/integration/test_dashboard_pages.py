"""The dashboard's pages in process (FastAPI's TestClient over a real SQLite yard): signing
in and out, the batch history and its filters, a batch's page, its live stream and
controls, an item's page, compare; every page keeping to the owner rule and the CSRF check
of the API. The catalog pages are in test_dashboard_catalog.py, the browser tests in
tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings

TASK = "tests.procs.pages:work"


def dashboard(yard: Yard) -> FastAPI:
    """The app over ``yard``, its worker lanes off (tests run the items), TASK allowed."""
    return create_app(yard, ServerSettings(workers=0, allow_task=[TASK]))


def pick(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in {text[:300]!r}"
    return found.group(1)


def sign_in(
    app: FastAPI, yard: Yard, name: str, role: str = "operator", owner: str | None = None
) -> TestClient:
    _, secret = yard.tokens.create(name, role, owner)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/login", params={"token": secret}, follow_redirects=False).status_code == 303
    return client


def make(yard: Yard, name: str, owner: str = "ann", n: int = 3, fail: int = 0) -> Batch:
    items = [{"id": f"k{i}", "n": i, "fail": "boom" if i < fail else None} for i in range(n)]
    return yard.submit(TASK, items, name=name, owner=owner, max_attempts=1)


def csrf(html: str) -> str:
    return pick(r'<meta name="csrf-token" content="([^"]+)">', html)


def test_a_page_without_a_session_goes_to_sign_in_and_comes_back(app: FastAPI, yard: Yard) -> None:
    _, secret = yard.tokens.create("bob", "viewer")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        away = client.get("/?state=failed", follow_redirects=False)
        assert away.status_code == 303
        assert away.headers["location"] == "/signin?next=%2F%3Fstate%3Dfailed"
        form = client.get(away.headers["location"])
        assert 'type="password"' in form.text
        nonce = pick(r'name="nonce" value="([^"]+)"', form.text)
        wrong = client.post(
            "/signin", data={"token": "by_nope", "nonce": nonce}, follow_redirects=False
        )
        assert wrong.status_code == 401 and "not valid" in wrong.text
        nonce = pick(r'name="nonce" value="([^"]+)"', wrong.text)
        right = client.post(
            "/signin",
            data={"token": secret, "nonce": nonce, "next": "/?state=failed"},
            follow_redirects=False,
        )
        assert right.status_code == 303 and right.headers["location"] == "/?state=failed"
        page = client.get("/?state=failed")
        assert page.status_code == 200 and "bob" in page.text


def test_a_sign_in_posted_from_another_site_is_refused(app: FastAPI, yard: Yard) -> None:
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
    next_url = pick(r'<a href="([^"]+)" rel="next">', first.text)
    second = ann.get(next_url.replace("&amp;", "&"))
    assert second.text.count('class="pick"') == 5 and "batch 00" in second.text
    found = ann.get("/", params={"q": "batch 07", "state": "completed"})
    assert found.text.count('class="pick"') == 1 and "batch 07" in found.text
    assert ann.get("/", params={"state": "failed"}).text.count('class="pick"') == 0
    assert (
        ann.get("/", params={"since": "2001-01-01", "until": "2001-01-02"}).text.count(
            'class="pick"'
        )
        == 0
    )
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


def test_a_batch_page_has_tiles_that_filter_its_items_and_the_controls_that_apply(
    ann: TestClient, yard: Yard
) -> None:
    batch = make(yard, "mixed", n=4, fail=1)
    yard.run_until_idle(poll_interval=0.01)
    page = ann.get(f"/batches/{batch.id}")
    assert page.status_code == 200
    assert 'aria-valuenow="100.0"' in page.text
    assert f'href="/batches/{batch.id}?state=failed#items"><span class="n">1</span>' in page.text
    assert page.text.count("<tr>") == 1 + 4
    failed = ann.get(f"/batches/{batch.id}", params={"state": "failed"})
    assert failed.text.count("<tr>") == 1 + 1 and "boom" in failed.text
    # Partially completed: retry and delete apply, pause, resume and cancel do not.
    assert f'href="/batches/{batch.id}/actions/retry"' in page.text
    assert f'href="/batches/{batch.id}/actions/delete"' in page.text
    assert 'id="do-pause" disabled' in page.text and 'id="do-cancel" disabled' in page.text
    assert "Retry this cluster" in page.text
    # Finished: the live region does not poll.
    assert 'hx-trigger="every 2s"' not in page.text
    running = make(yard, "waiting")
    live = ann.get(f"/batches/{running.id}/live")
    assert live.text.lstrip().startswith("<section") and "<html" not in live.text
    assert 'hx-trigger="every 2s"' in live.text and 'aria-valuenow="0.0"' in live.text
    # The table does not change under the reader: the region says how much it missed.
    stale = ann.get(f"/batches/{batch.id}/live", params={"seen": 1})
    assert "3 items finished since the items table was loaded" in stale.text
    assert "finished since" not in ann.get(f"/batches/{batch.id}/live?seen=4").text
    exports = f"/api/v1/batches/{batch.id}/results?format=csv&amp;state=failed"
    assert exports in failed.text
    assert ann.get(exports.replace("&amp;", "&")).text.count("\n") == 2


def test_a_confirm_page_names_the_count_and_the_post_does_it(ann: TestClient, yard: Yard) -> None:
    batch = make(yard, "to retry", n=5, fail=3)
    yard.run_until_idle(poll_interval=0.01)
    confirm = ann.get(f"/batches/{batch.id}/actions/retry")
    assert "3 failed items go back to the queue" in confirm.text
    assert "Retry: 3 items</button>" in confirm.text
    token = pick(r'name="csrf" value="([^"]+)"', confirm.text)
    assert ann.post(f"/batches/{batch.id}/actions/retry").status_code == 403
    done = ann.post(
        f"/batches/{batch.id}/actions/retry", data={"csrf": token}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].endswith("?done=retry")
    assert batch.status().state.value == "retrying"
    again = ann.get(f"/batches/{batch.id}/actions/retry")
    assert again.status_code == 409 and "no retry now" in again.text


def test_a_cluster_retry_names_the_clusters_count(ann: TestClient, yard: Yard) -> None:
    batch = make(yard, "clustered", n=4, fail=2)
    yard.run_until_idle(poll_interval=0.01)
    (cluster,) = batch.error_clusters()
    confirm = ann.get(f"/batches/{batch.id}/actions/retry", params={"cluster": cluster.id})
    assert "2 failed items of the error cluster" in confirm.text
    assert (
        ann.get(f"/batches/{batch.id}/actions/retry", params={"cluster": "nope"}).status_code == 404
    )
    ann.post(
        f"/batches/{batch.id}/actions/retry",
        data={"csrf": csrf(confirm.text), "cluster": cluster.id},
    )
    assert batch.status().counts.pending == 2


def test_cancel_and_delete_need_the_name_typed(ann: TestClient, yard: Yard) -> None:
    batch = make(yard, "precious", n=3)
    page = ann.get(f"/batches/{batch.id}/actions/cancel")
    assert "3 items not started yet will be cancelled" in page.text
    url, token = f"/batches/{batch.id}/actions/cancel", csrf(page.text)
    typo = ann.post(url, data={"csrf": token, "confirm_name": "precios"})
    assert typo.status_code == 422 and "nothing was done" in typo.text
    assert batch.status().state.value == "queued"
    ann.post(url, data={"csrf": token, "confirm_name": "precious"})
    assert batch.status().state.value == "cancelled"
    gone = ann.post(
        f"/batches/{batch.id}/actions/delete",
        data={"csrf": token, "confirm_name": "precious"},
        follow_redirects=False,
    )
    assert gone.status_code == 303 and gone.headers["location"] == "/"
    assert ann.get(f"/batches/{batch.id}").status_code == 404


def test_a_viewer_sees_no_control_and_a_forged_post_is_refused(app: FastAPI, yard: Yard) -> None:
    batch = make(yard, "look only", owner="team")
    with sign_in(app, yard, "vic", "viewer", owner="team") as vic:
        page = vic.get(f"/batches/{batch.id}")
        assert page.status_code == 200 and "look only" in page.text
        assert "/actions/" not in page.text and "do-pause" not in page.text
        assert vic.get(f"/batches/{batch.id}/actions/pause").status_code == 403
        forged = vic.post(f"/batches/{batch.id}/actions/pause", data={"csrf": csrf(page.text)})
        assert forged.status_code == 403
    assert batch.status().state.value == "queued"
    with sign_in(app, yard, "eve", "operator", owner="other") as eve:
        assert eve.get(f"/batches/{batch.id}").status_code == 404


def test_an_item_page_shows_input_output_and_attempts_newest_first(
    ann: TestClient, yard: Yard
) -> None:
    key = "a/b <c>"
    batch = yard.submit(TASK, [{"id": key, "n": 7, "fail": "it broke"}], owner="ann")
    yard.run_until_idle(poll_interval=0.01)
    batch.retry_failed()
    yard.run_until_idle(poll_interval=0.01)
    page = ann.get(f"/batches/{batch.id}/items/{quote(key, safe='')}")
    assert page.status_code == 200
    assert "Item a/b &lt;c&gt;" in page.text
    assert "&#34;n&#34;: 7" in page.text
    second, first = page.text.index("Attempt 2"), page.text.index("Attempt 1")
    assert second < first and page.text.count("PageFailure") >= 2
    assert ann.get(f"/batches/{batch.id}/items/nope").status_code == 404


def test_the_live_stream_sends_the_region_as_html_and_ends_with_the_batch(
    app: FastAPI, yard: Yard
) -> None:
    batch = make(yard, "streamed", owner="team", fail=1)
    yard.run_until_idle(poll_interval=0.01)
    with sign_in(app, yard, "vic", "viewer", owner="team") as vic:
        page = vic.get(f"/batches/{batch.id}")
        assert "sse-connect" not in page.text  # an ended batch has nothing to follow
        stream = vic.get(f"/batches/{batch.id}/live/events?state=failed")
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.text.startswith("event: live\ndata: ")
        assert 'aria-valuenow="100.0"' in stream.text and "/actions/" not in stream.text
        assert 'state=failed#items" aria-current="true"' in stream.text
        assert stream.text.rstrip().endswith("event: end\ndata: ended")
    with sign_in(app, yard, "eve", "viewer", owner="other") as eve:
        assert eve.get(f"/batches/{batch.id}/live/events").status_code == 404
    running = make(yard, "open", owner="ann")
    with sign_in(app, yard, "ann2", "operator", owner="ann") as ann:
        page = ann.get(f"/batches/{running.id}")
        assert f'sse-connect="/batches/{running.id}/live/events?seen=0"' in page.text
        assert 'hx-trigger="every 2s"' not in page.text


def test_compare_shows_batches_side_by_side_with_new_and_resolved_clusters(
    ann: TestClient, yard: Yard
) -> None:
    before = make(yard, "before", n=4, fail=2)
    after = yard.submit(
        TASK,
        [{"id": "a", "fail": "a new way to fail"}, {"id": "b"}],
        name="after",
        owner="ann",
        max_attempts=1,
    )
    other = make(yard, "someone else's", owner="carl")
    yard.run_until_idle(poll_interval=0.01)
    page = ann.get("/compare", params={"ids": [before.id, after.id]})
    assert page.status_code == 200
    assert "Compare 2 batches" in page.text
    # Each value labelled with its batch (the label a narrow screen shows before it).
    assert '<td class="num" data-label="before">50.0%</td>' in page.text
    assert "new</span> 1 \u00d7 <code>PageFailure: a new way to fail" in page.text
    assert "resolved</span> <code>PageFailure: boom" in page.text
    assert ann.get("/compare", params={"ids": [before.id]}).status_code == 400
    assert ann.get("/compare", params={"ids": [before.id, other.id]}).status_code == 404


def test_compare_counts_the_items_two_batches_share_by_their_state_in_each(
    ann: TestClient, yard: Yard
) -> None:
    before = make(yard, "before", n=4, fail=2)  # k0 k1 fail, k2 k3 succeed
    again = yard.submit(
        TASK,
        [{"id": "k0"}, {"id": "k2", "fail": "boom"}, {"id": "k3"}, {"id": "new"}],
        name="again",
        owner="ann",
        max_attempts=1,
    )
    yard.run_until_idle(poll_interval=0.01)
    page = ann.get("/compare", params={"ids": [before.id, again.id]})
    assert page.status_code == 200
    assert f"Items in both {before.id} and {again.id}" in page.text
    assert "3 items share a key" in page.text
    table = page.text[page.text.index('<table class="outcomes') :]
    table = table[: table.index("</table>")]
    cell = r'<td class="num" data-label="→ (\w+)">(\d+)</td>'
    rows = [re.findall(cell, row) for row in table.split("<tr>")[2:]]
    columns = re.findall(r'<th scope="col"><span class="badge st-(\w+)"', table)
    assert columns == ["succeeded", "failed"]
    # rows: succeeded, failed in "before"; each count labelled with its column's state
    assert rows == [[("succeeded", "1"), ("failed", "1")], [("succeeded", "1"), ("failed", "0")]]
    api = ann.get("/api/v1/compare", params={"ids": f"{before.id},{again.id}"})
    assert api.json()["outcomes"] == [
        {
            "first": before.id,
            "second": again.id,
            "shared": 3,
            "cells": [
                {"first": "succeeded", "second": "succeeded", "items": 1},
                {"first": "succeeded", "second": "failed", "items": 1},
                {"first": "failed", "second": "succeeded", "items": 1},
            ],
        }
    ]


def test_an_llm_items_page_shows_the_prompt_its_template_renders(
    ann: TestClient, yard: Yard
) -> None:
    params = {
        "model": "gpt-4o-mini",
        "template": "Score {{ name }}",
        "system": "Be brief",
        "api_key_env": "",
        "base_url": "http://127.0.0.1:9",
    }
    batch = yard.submit(
        "llm", [{"id": "a", "name": "<b>Ann</b>"}, {"id": "b"}], params=params, owner="ann"
    )
    page = ann.get(f"/batches/{batch.id}/items/a")
    assert '<h3 id="prompt-1">system</h3>' in page.text
    assert "Score &lt;b&gt;Ann&lt;/b&gt;</pre>" in page.text
    missing = ann.get(f"/batches/{batch.id}/items/b")
    assert missing.status_code == 200 and "name" in missing.text.split('id="prompt-h"')[1]
    other = make(yard, "not llm")
    assert 'id="prompt-h"' not in ann.get(f"/batches/{other.id}/items/k0").text


def test_a_retrys_confirm_says_what_it_should_cost_at_the_average_so_far(
    ann: TestClient, yard: Yard
) -> None:
    items = [{"id": f"c{n}", "cost": 0.25, "fail": "no" if n < 2 else None} for n in range(4)]
    batch = yard.submit(TASK, items, owner="ann", max_attempts=1)
    yard.run_until_idle(poll_interval=0.01)
    assert batch.status().usage.cost == 1.0
    confirm = ann.get(f"/batches/{batch.id}/actions/retry")
    assert "2 failed items go back" in confirm.text and "costs about $0.5000" in confirm.text
    free = make(yard, "free", n=2, fail=1)
    yard.run_until_idle(poll_interval=0.01)
    assert "costs about" not in ann.get(f"/batches/{free.id}/actions/retry").text


@pytest.mark.parametrize(
    "away", ["//evil.example/", "/\\evil.example", "https://evil.example/", "/\\/evil", "/a\r\nb"]
)
def test_signing_in_never_sends_the_browser_to_another_site(
    app: FastAPI, yard: Yard, away: str
) -> None:
    _, secret = yard.tokens.create("bob", "viewer")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        form = client.get("/signin")
        nonce = pick(r'name="nonce" value="([^"]+)"', form.text)
        signed = client.post(
            "/signin",
            data={"token": secret, "nonce": nonce, "next": away},
            follow_redirects=False,
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/"


def test_a_name_with_a_direction_control_can_be_typed_as_the_page_shows_it(
    ann: TestClient, yard: Yard
) -> None:
    batch = make(yard, "gnp\u202e.exe")
    page = ann.get(f"/batches/{batch.id}/actions/cancel")
    assert "<strong>gnp[U+202E].exe</strong>" in page.text
    done = ann.post(
        f"/batches/{batch.id}/actions/cancel",
        data={"csrf": csrf(page.text), "confirm_name": "gnp[U+202E].exe"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and batch.status().state.value == "cancelled"
