"""What the server takes in, over real HTTP: text with a NUL character (which PostgreSQL's
text cannot hold) is a 422 naming where it is, from the API and from the dashboard, on
either store; an item whose key holds "/" is read through the API; the dashboard's path
parameters keep the API's limits and answer an over-long one with its error page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from batchyard import Yard
from batchyard.access import MAX_NAME as MAX_TOKEN_NAME
from batchyard.items import MAX_KEY_LENGTH
from batchyard.models import MAX_BATCH_ID
from batchyard.web.schemas import MAX_NAME
from tests.procs.inproc_server import ServerThread, serving

TASK = "tests.procs.tasks:square"
NUL = "a\x00b"
#: What a 422 says of text with a NUL: in words, not the pattern that refused it.
NO_NUL_SAID = "must not contain a NUL character (U+0000)"


@contextmanager
def _served(url: str) -> Iterator[tuple[Yard, ServerThread, str]]:
    """A yard at ``url`` served on loopback, and an admin token's secret."""
    with Yard(url) as yard, serving(yard, allow_task=[TASK]) as server:
        _, secret = yard.tokens.create("root", "admin")
        yield yard, server, secret


@contextmanager
def _signed_in(server: ServerThread, secret: str) -> Iterator[tuple[httpx.Client, str]]:
    """A dashboard session over HTTP (the printed login link) and its CSRF token."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/login", params={"token": secret}).status_code == 303
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
        assert found is not None
        yield client, found.group(1)


def _finished_with_a_failure(yard: Yard) -> str:
    batch = yard.submit(TASK, [{"id": "1", "n": 1}, {"id": "2"}], max_attempts=1, name="done")
    yard.run_until_idle(poll_interval=0.01)
    assert batch.status().counts.failed == 1
    return batch.id


def test_text_with_a_nul_is_a_422_naming_it(store_url: str) -> None:
    """Every free text a request carries to the store: keys in bodies, names, descriptions,
    filters in queries. On PostgreSQL each was a 503 (the database refused the NUL); SQLite
    took most (a batch named with one) and found no item of such a key (a 404)."""
    with _served(store_url) as (yard, server, secret):
        done = _finished_with_a_failure(yard)
        yard.templates.create("tpl", TASK, {})
        items = [{"id": "x", "n": 1}]
        cases: list[tuple[str, str, dict[str, Any], str]] = [
            ("POST", f"/batches/{done}/retry", {"json": {"keys": ["2", NUL]}}, "keys.1"),
            ("POST", f"/batches/{done}/rerun", {"json": {"name": NUL}}, "name"),
            ("POST", "/batches", {"json": {"task": TASK, "dataset": NUL}}, "dataset"),
            (
                "POST",
                "/batches",
                {"json": {"task": TASK, "items": items, "options": {"name": NUL}}},
                "options.name",
            ),
            ("POST", "/templates", {"json": {"name": "t", "task": NUL}}, "task"),
            (
                "POST",
                "/templates",
                {"json": {"name": "t", "task": TASK, "description": NUL}},
                "description",
            ),
            ("POST", "/templates/tpl/versions", {"json": {"description": NUL}}, "description"),
            ("POST", "/templates/tpl/versions", {"json": {"unset": [NUL]}}, "unset.0"),
            *[("GET", "/batches", {"params": {f: NUL}}, f) for f in ("task", "template", "q")],
            ("GET", "/batches", {"params": {"owner": NUL}}, "owner"),
        ]
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.api, headers=auth, timeout=30) as client:
            for method, path, request, field in cases:
                answer = client.request(method, path, **request)
                assert answer.status_code == 422, (path, request, answer.text)
                assert answer.json()["field"] == field, (path, answer.text)
                assert answer.json()["detail"] == f"{field}: {NO_NUL_SAID}", answer.text
            assert yard.batch(done).status().counts.failed == 1  # nothing was retried
            assert [b.name for b in yard.batches(limit=10).rows] == ["done"]
            assert [t.version for t in yard.templates.versions("tpl")] == [1]
            answer = client.post(f"/batches/{done}/retry", json={"keys": ["2"]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["retried"] == 1

        with _signed_in(server, secret) as (client, csrf):
            pages: list[tuple[str, dict[str, Any], str]] = [
                ("/", {"q": NUL}, "q"),
                ("/", {"task": NUL}, "task"),
                ("/compare", {"ids": [done, NUL]}, "ids.1"),
                ("/new/dataset", {"dataset": NUL}, "dataset"),
            ]
            for path, params, field in pages:
                page = client.get(path, params=params)
                assert page.status_code == 422, (path, params, page.text)
                assert page.headers["content-type"].startswith("text/html")
                said = f'<p class="notice bad">{field}: {NO_NUL_SAID}</p>'
                assert said in page.text, page.text
            form = {"csrf": csrf, "name": NUL}
            page = client.post(f"/batches/{done}/actions/rerun", data=form)
            said = f'<p class="notice bad">name: {NO_NUL_SAID}</p>'
            assert page.status_code == 422 and said in page.text, page.text
            assert [b.name for b in yard.batches(limit=10).rows] == ["done"]


@pytest.mark.parametrize("encoded", [False, True], ids=["slash", "percent-2F"])
def test_an_item_whose_key_holds_a_slash_is_read_through_the_api(
    store_url: str, encoded: bool
) -> None:
    """Keys are free text: one holding "/" (sent as is, or as %2F) reaches the item, not a
    404 for a path with parts the route had not."""
    keys = ["docs/a.txt", "a/b/c", "/lead", "trail/", "x%2Fy", "plain"]
    with _served(store_url) as (yard, server, secret):
        batch = yard.submit(TASK, [{"id": k, "n": n} for n, k in enumerate(keys)])
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.api, headers=auth, timeout=30) as client:
            for n, key in enumerate(keys):
                part = quote(key, safe="" if encoded else "/")
                answer = client.get(f"/batches/{batch.id}/items/{part}")
                assert answer.status_code == 200, (key, answer.text)
                assert (answer.json()["key"], answer.json()["payload"]["n"]) == (key, n)
            missing = client.get(f"/batches/{batch.id}/items/docs/b.txt")
            assert missing.status_code == 404, missing.text
            listing = client.get(f"/batches/{batch.id}/items")
            assert [i["key"] for i in listing.json()["items"]] == keys


def test_a_page_path_parameter_over_its_limit_is_the_error_page(tmp_path: Path) -> None:
    """The dashboard's path parameters have the API's limits: one over is the dashboard's
    error page, a 422 naming it and its limit (not a JSON body); one at the limit reaches
    the route, which finds nothing (its 404 page)."""
    limits = {"batch_id": MAX_BATCH_ID, "key": MAX_KEY_LENGTH, "name": MAX_NAME}
    routes = [
        ("/batches/{batch_id}", "batch_id"),
        ("/batches/{batch_id}/live", "batch_id"),
        ("/batches/{batch_id}/live/events", "batch_id"),
        ("/batches/{batch_id}/actions/cancel", "batch_id"),
        ("/batches/{batch_id}/actions/rerun", "batch_id"),
        ("/batches/{batch_id}/items/{key}", "batch_id"),
        ("/batches/{batch_id}/items/{key}", "key"),
        ("/batches/{batch_id}/items/{key}/live", "key"),
        ("/templates/{name}", "name"),
        ("/datasets/{name}", "name"),
        ("/tokens/{token}/revoke", "token"),
    ]
    with (
        _served(f"sqlite:///{tmp_path / 'yard.db'}") as (yard, server, secret),
        _signed_in(server, secret) as (client, csrf),
    ):
        batch = yard.submit(TASK, [{"id": "k", "n": 1}])
        for route, name in routes:
            maximum = MAX_TOKEN_NAME if name == "token" else limits[name]
            for length, status in ((maximum, 404), (maximum + 1, 422)):
                values = {"batch_id": batch.id, "key": "k", "name": "n", "token": "t"}
                values[name] = ("é" if name == "key" else "n") * length
                path = route.format(**{k: quote(v, safe="") for k, v in values.items()})
                page = client.get(path)
                assert page.status_code == status, (route, length, page.text[:500])
                assert page.headers["content-type"].startswith("text/html"), route
                assert 'href="/">Back to the batches</a>' in page.text, route
                if status == 422:
                    field = "name" if name == "token" else name
                    said = f"{field}: String should have at most {maximum} characters"
                    assert f'<p class="notice bad">{said}' in page.text, page.text
        # A form post too (its CSRF token checked first).
        long = "t" * (MAX_TOKEN_NAME + 1)
        page = client.post(f"/tokens/{long}/revoke", data={"csrf": csrf, "confirm_name": "t"})
        said = f"name: String should have at most {MAX_TOKEN_NAME} characters"
        assert page.status_code == 422 and f'<p class="notice bad">{said}' in page.text
