"""The dashboard's pages in process (FastAPI's TestClient over a real SQLite yard): signing
in and out, the batch history and its filters, and that every page keeps to the owner rule
and the CSRF check of the API. The browser tests are in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings

TASK = "tests.procs.pages:work"


@pytest.fixture
def app(yard: Yard) -> FastAPI:
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


@pytest.fixture
def ann(app: FastAPI, yard: Yard) -> Iterator[TestClient]:
    with sign_in(app, yard, "ann") as client:
        yield client


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
    assert '<td class="num">50.0%</td>' in page.text
    assert "new</span> 1 \u00d7 <code>PageFailure: a new way to fail" in page.text
    assert "resolved</span> <code>PageFailure: boom" in page.text
    assert ann.get("/compare", params={"ids": [before.id]}).status_code == 400
    assert ann.get("/compare", params={"ids": [before.id, other.id]}).status_code == 404


def test_an_admin_makes_and_revokes_tokens_and_no_one_else_can(
    app: FastAPI, yard: Yard, ann: TestClient
) -> None:
    assert ann.get("/tokens").status_code == 403
    assert 'href="/tokens"' not in ann.get("/").text
    assert (
        ann.post("/tokens", data={"csrf": csrf(ann.get("/").text), "name": "x"}).status_code == 403
    )
    with sign_in(app, yard, "root", "admin") as root:
        page = root.get("/")
        assert 'href="/tokens"' in page.text
        token = csrf(page.text)
        made = root.post("/tokens", data={"csrf": token, "name": "ci", "role": "viewer"})
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        secret = pick(r'<pre id="secret"[^>]*>(by_viewer_[0-9a-f]+)</pre>', made.text)
        assert f"/login?token={secret}" in made.text
        assert yard.tokens.authenticate(secret) is not None
        assert secret not in root.get("/tokens").text  # shown once
        taken = root.post("/tokens", data={"csrf": token, "name": "ci"})
        assert taken.status_code == 409 and 'class="notice bad" role="alert"' in taken.text
        assert root.post("/tokens", data={"name": "sneaky"}).status_code == 403
        confirm = root.get("/tokens/ci/revoke")
        assert "Type the token's name" in confirm.text
        typo = root.post("/tokens/ci/revoke", data={"csrf": token, "confirm_name": "c"})
        assert typo.status_code == 422 and yard.tokens.authenticate(secret) is not None
        done = root.post(
            "/tokens/ci/revoke", data={"csrf": token, "confirm_name": "ci"}, follow_redirects=False
        )
        assert done.status_code == 303 and yard.tokens.authenticate(secret) is None
        assert root.get("/tokens/ci/revoke").status_code == 404


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


def test_the_new_batch_page_makes_one_batch_from_a_file_or_names_the_bad_line(
    ann: TestClient, yard: Yard
) -> None:
    form = ann.get("/new")
    assert form.status_code == 200 and 'type="file"' in form.text
    fields = {
        "csrf": csrf(form.text),
        "nonce": pick(r'name="nonce" value="([^"]+)"', form.text),
        "task": TASK,
        "name": "uploaded",
    }
    good = b'{"id": "a", "n": 1}\n{"id": "b", "n": 2}\n'
    made = ann.post("/new", data=fields, files={"file": ("in.jsonl", good)}, follow_redirects=False)
    assert made.status_code == 303
    batch_id = made.headers["location"].rsplit("/", 1)[1]
    status = yard.batch(batch_id).status()
    assert status.name == "uploaded" and status.counts.total == 2 and status.owner == "ann"
    again = ann.post(
        "/new", data=fields, files={"file": ("in.jsonl", good)}, follow_redirects=False
    )
    assert again.headers["location"] == made.headers["location"]  # a double click: one batch
    bad = b'{"id": "a"}\nnot json\n'
    fields["nonce"] = "another"
    refused = ann.post("/new", data=fields, files={"file": ("in.jsonl", bad)})
    assert refused.status_code == 422 and "2" in refused.text and 'role="alert"' in refused.text
    assert 'value="uploaded"' in refused.text  # the form keeps what was given
    assert len(yard.batches(limit=10).rows) == 1
    stranger = ann.post(
        "/new", data={**fields, "task": "os:system"}, files={"file": ("in.jsonl", good)}
    )
    assert stranger.status_code == 422 and "not allowed" in stranger.text
    forged = ann.post("/new", data={**fields, "csrf": "x"}, files={"file": ("in.jsonl", good)})
    assert forged.status_code == 403 and len(yard.batches(limit=10).rows) == 1


def test_a_viewer_has_no_new_batch_page(app: FastAPI, yard: Yard) -> None:
    with sign_in(app, yard, "vic", "viewer") as vic:
        assert 'href="/new"' not in vic.get("/").text
        assert vic.get("/new").status_code == 403


def test_template_pages_show_versions_usage_and_a_diff(ann: TestClient, yard: Yard) -> None:
    yard.templates.create("scorer", TASK, {"out": "one\ntwo"}, description="<b>first</b>")
    yard.templates.update("scorer", {"out": "one\nthree", "n": 2})
    yard.submit(template="scorer@1", items=[{"id": "a"}, {"id": "b", "fail": "x"}], owner="ann")
    yard.run_until_idle(poll_interval=0.01)
    listing = ann.get("/templates")
    assert 'href="/templates/scorer"' in listing.text and "<b>first" not in listing.text
    assert "&lt;b&gt;first&lt;/b&gt;" in listing.text
    page = ann.get("/templates/scorer")
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.index("<td>2") < rows.index("<td>1")  # newest first
    assert '<td class="num">1</td><td class="num">2</td>' in rows  # v1: 1 batch, 2 items
    assert '<span class="del">-two</span>' in page.text
    assert '<span class="add">+three</span>' in page.text
    assert "<td>n</td>" in page.text  # a parameter added, beside the text diff
    same = ann.get("/templates/scorer", params={"old": 2, "new": 2})
    assert "Pick two different versions" in same.text
    assert 'href="/new?template=scorer"' in page.text
    chosen = ann.get("/new", params={"template": "scorer"})
    assert '<option value="scorer" selected>' in chosen.text
    assert ann.get("/templates/nope").status_code == 404


def test_dataset_pages_filter_rows_in_the_url_and_start_batches_of_them(
    ann: TestClient, yard: Yard
) -> None:
    rows = [{"id": f"r{n}", "n": n, "industry": "SaaS" if n % 2 else "Retail"} for n in range(60)]
    yard.datasets.add("leads", rows)
    listing = ann.get("/datasets")
    assert 'href="/datasets/leads"' in listing.text and '<td class="num">60</td>' in listing.text
    page = ann.get("/datasets/leads", params={"where": "industry=SaaS\nn>=10", "limit": 25})
    assert "25 matching rows" in page.text and page.text.count('name="keys"') == 25
    assert 'rel="next"' not in page.text
    first = ann.get("/datasets/leads", params={"where": "industry=SaaS"})
    assert "30 matching rows" in first.text and first.text.count('name="keys"') == 25
    next_url = pick(r'<a href="([^"]+)" rel="next">', first.text).replace("&amp;", "&")
    assert ann.get(next_url).text.count('name="keys"') == 5
    token = csrf(page.text)
    ticked = ann.post(
        "/datasets/leads/batch",
        data={"csrf": token, "scope": "ticked", "keys": ["r1", "r3"], "task": TASK},
        follow_redirects=False,
    )
    assert ticked.status_code == 303
    made = yard.batch(ticked.headers["location"].rsplit("/", 1)[1]).status()
    assert made.counts.total == 2 and made.owner == "ann"
    every = ann.post(
        "/datasets/leads/batch",
        data={"csrf": token, "scope": "all", "where": "industry=SaaS", "task": TASK},
        follow_redirects=False,
    )
    assert yard.batch(every.headers["location"].rsplit("/", 1)[1]).status().counts.total == 30
    none = ann.post("/datasets/leads/batch", data={"csrf": token, "scope": "ticked", "task": TASK})
    assert none.status_code == 422 and "no row is ticked" in none.text
    nothing = ann.post(
        "/datasets/leads/batch",
        data={"csrf": token, "scope": "all", "where": "industry=Mining", "task": TASK},
    )
    assert nothing.status_code == 422 and "no rows of" in nothing.text
    assert ann.post("/datasets/leads/batch", data={"scope": "all", "task": TASK}).status_code == 403
    assert ann.get("/datasets/nope").status_code == 404
    assert ann.get("/datasets/leads", params={"where": "n>>3"}).status_code == 422


def test_the_new_batch_check_estimates_an_llm_batch_or_reads_every_row(
    ann: TestClient, yard: Yard
) -> None:
    params = {
        "model": "gpt-4o-mini",
        "template": "Score {{ name }}",
        "api_key_env": "",
        "base_url": "http://127.0.0.1:9",
    }
    yard.templates.create("scorer", "llm", params)
    form = ann.get("/new")
    fields = {"csrf": csrf(form.text), "nonce": "n"}

    def check(file: bytes, **chosen: str) -> str:
        answer = ann.post(
            "/new/check", data={**fields, **chosen}, files={"file": ("in.jsonl", file)}
        )
        assert answer.status_code == 200 and answer.text.startswith('<div id="check"')
        return answer.text

    estimate = check(b'{"id": "a", "name": "Ann"}\n{"id": "b", "name": "Bo"}\n', template="scorer")
    assert "Estimate for 2 items with gpt-4o-mini" in estimate and "<dt>Cost</dt>" in estimate
    lacking = check(b'{"id": "a", "name": "Ann"}\n{"id": "b"}\n', template="scorer")
    assert "in.jsonl:2: template needs field &#39;name&#39;" in lacking
    assert "All 2 rows read" in check(b'{"id": "a"}\n{"id": "b"}\n', task=TASK)
    assert "in.jsonl:2: not valid JSON" in check(b'{"id": "a"}\nnope\n', task=TASK)
    assert yard.batches(limit=5).rows == []  # a check makes nothing
    forged = ann.post(
        "/new/check", data={"csrf": "x", "task": TASK}, files={"file": ("a.jsonl", b"{}\n")}
    )
    assert forged.status_code == 403
