"""The dashboard's catalog pages in process (FastAPI's TestClient over a real SQLite yard):
a new batch from a file (checked and estimated first), templates, datasets and the tokens
page, each keeping to the roles and the CSRF check of the API. The fixtures and helpers are
those of test_dashboard_pages."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from batchyard import Yard
from tests.integration.test_dashboard_pages import TASK, csrf, pick, sign_in


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
    version = '<td data-label="Version">'
    assert rows.index(f"{version}2") < rows.index(f"{version}1")  # newest first
    used = '<td class="num" data-label="Batches">1</td><td class="num" data-label="Items">2</td>'
    assert used in rows  # v1: 1 batch, 2 items
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
    assert "The first 2 prompts" in estimate and ">Score Bo</pre>" in estimate
    lacking = check(b'{"id": "a", "name": "Ann"}\n{"id": "b"}\n', template="scorer")
    assert "in.jsonl:2: template needs field &#39;name&#39;" in lacking
    assert "All 2 rows read" in check(b'{"id": "a"}\n{"id": "b"}\n', task=TASK)
    assert "in.jsonl:2: not valid JSON" in check(b'{"id": "a"}\nnope\n', task=TASK)
    assert yard.batches(limit=5).rows == []  # a check makes nothing
    stranger = check(b'{"id": "a"}\n', task="os:system")  # refused before any import
    assert "task &#39;os:system&#39; is not allowed on this server" in stranger
    assert "a batch needs a task" in check(b'{"id": "a"}\n')
    forged = ann.post(
        "/new/check", data={"csrf": "x", "task": TASK}, files={"file": ("a.jsonl", b"{}\n")}
    )
    assert forged.status_code == 403


def test_an_older_template_version_is_picked_with_its_diff_and_a_vanished_one_is_refused(
    ann: TestClient, yard: Yard
) -> None:
    yard.templates.create("scorer", TASK, {"out": "one\ntwo"})
    yard.templates.update("scorer", {"out": "one\nthree"})
    form = ann.get("/new")
    assert '<option value="scorer">scorer (latest: v2,' in form.text
    assert '<option value="scorer@1">scorer@1 (older)</option>' in form.text
    note = ann.get("/new/template", params={"template": "scorer@1"})
    assert "scorer@1 is not the latest version (v2)" in note.text
    assert '<span class="add">+three</span>' in note.text
    assert "not the latest" not in ann.get("/new/template", params={"template": "scorer"}).text
    fields = {"csrf": csrf(form.text), "nonce": "n1", "template": "scorer@1"}
    made = ann.post(
        "/new", data=fields, files={"file": ("in.jsonl", b'{"id": "a"}\n')}, follow_redirects=False
    )
    status = yard.batch(made.headers["location"].rsplit("/", 1)[1]).status()
    assert str(status.template) == "scorer@1"
    yard.templates.archive("scorer@1")
    gone = ann.post(
        "/new",
        data={**fields, "nonce": "n2"},
        files={"file": ("in.jsonl", b'{"id": "b"}\n')},
    )
    assert gone.status_code == 409 and "archived" in gone.text
    assert 'role="alert"' in gone.text and len(yard.batches(limit=5).rows) == 1


def test_a_batch_estimated_over_the_limit_is_made_only_once_its_cost_is_accepted(
    ann: TestClient, yard: Yard
) -> None:
    params = {
        "model": "gpt-4o",
        "template": "Hi {{ name }}",
        "max_tokens": 4000,
        "api_key_env": "",
        "base_url": "http://127.0.0.1:9",
    }
    yard.templates.create("pricey", "llm", params)
    many = "".join(f'{{"id": "r{n}", "name": "x"}}\n' for n in range(100)).encode()
    form = ann.get("/new")
    fields = {"csrf": csrf(form.text), "nonce": "n1", "template": "pricey"}
    checked = ann.post("/new/check", data=fields, files={"file": ("in.jsonl", many)})
    assert 'name="accept" value="yes" form="new-form" required' in checked.text
    held = ann.post("/new", data=fields, files={"file": ("in.jsonl", many)})
    assert held.status_code == 200 and "should cost about $2.00" in held.text
    assert 'name="accept" value="yes" required' in held.text
    assert yard.batches(limit=5).rows == []  # nothing made before the cost is accepted
    accepted = ann.post(
        "/new",
        data={**fields, "accept": "yes"},
        files={"file": ("in.jsonl", many)},
        follow_redirects=False,
    )
    assert accepted.status_code == 303
    assert yard.batch(accepted.headers["location"].rsplit("/", 1)[1]).status().counts.total == 100
    # Under the limit: made at once, every line of the file read again after the estimate.
    few = b'{"id": "a", "name": "x"}\n{"id": "b", "name": "y"}\n'
    made = ann.post(
        "/new",
        data={**fields, "nonce": "n2"},
        files={"file": ("in.jsonl", few)},
        follow_redirects=False,
    )
    assert made.status_code == 303
    assert yard.batch(made.headers["location"].rsplit("/", 1)[1]).status().counts.total == 2
