"""The dashboard's authorisation matrix, beside the API's (test_server_auth.py): every page
route the app has (read from ``app.routes``, so a new page is covered the day it lands)
asked for without a session or with a made-up cookie goes to the sign-in page; a form post
without the session's CSRF token is a 403, and a viewer's post to anything that changes
something is a 403 too; another owner's batch is a 404. None of them changes anything."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.web import ServerSettings, create_app
from batchyard.web.auth import COOKIE
from batchyard.web.pages.route import PageRoute

TASK = "tests.procs.pages:work"
#: Pages anyone may ask for: signing in.
PUBLIC = {("GET", "/signin"), ("POST", "/signin")}
#: Posts any session may make (signing out); every other post changes something.
ANY_SESSION = {("POST", "/signout")}
#: Pages only an operator (or admin) may see: the forms that lead to a change.
OPERATOR_PAGES = {
    "/new",
    "/new/template",
    "/new/dataset",
    "/batches/{batch_id}/actions/{control}",
    "/batches/{batch_id}/actions/rerun",
    "/tokens",
    "/tokens/{name}/revoke",
}


@dataclass
class World:
    yard: Yard
    app: Any
    batch_id: str
    secrets: dict[str, str]

    def snapshot(self) -> tuple[Any, ...]:
        status = self.yard.store.get_batch(self.batch_id)
        batches = len(self.yard.batches(limit=500).rows)
        tokens = [(t.name, t.revoked_at) for t in self.yard.tokens.list()]
        return status.state, status.counts, batches, tokens

    def session(self, name: str) -> tuple[TestClient, str]:
        """A client signed in as ``name``, and its session's CSRF token."""
        client = TestClient(self.app, base_url="http://127.0.0.1")
        client.get("/login", params={"token": self.secrets[name]})
        answer = client.get("/api/v1/session")
        assert answer.status_code == 200, answer.text
        return client, answer.json()["csrf"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as yard:
        secrets = {}
        for name, role, owner in [
            ("alice", "operator", "alice"),
            ("alice-view", "viewer", "alice"),
            ("bob", "admin", None),
            ("carl", "operator", "carl"),
        ]:
            secrets[name] = yard.tokens.create(name, role, owner)[1]
        batch = yard.submit(TASK, [{"id": str(n), "fail": "x"} for n in range(3)], owner="alice")
        yard.run_until_idle(poll_interval=0.01)  # failed: retry and delete would change it
        yard.templates.create("t1", TASK, {})
        yard.datasets.add("d1", [{"id": "a", "n": 1}])
        app = create_app(yard, ServerSettings(workers=0, allow_task=[TASK]))
        with TestClient(app):  # the lifespan: the feed follower the live streams ride on
            yield World(yard, app, batch.id, secrets)


def _pages(world: World) -> list[tuple[str, str]]:
    found = []
    for context in iter_route_contexts(world.app.routes):
        if isinstance(context.original_route, PageRoute) and context.path is not None:
            found += [(m, context.path) for m in sorted(context.methods or ()) if m != "HEAD"]
    return found


def _url(world: World, path: str) -> str:
    name = {"/datasets/": "d1", "/templates/": "t1", "/tokens/": "alice"}
    url = path.replace("{batch_id}", world.batch_id).replace("{key}", "1")
    url = url.replace("{control}", "retry").replace("{key:path}", "1")
    for start, value in name.items():
        if path.startswith(start):
            url = url.replace("{name}", value)
    assert "{" not in url, f"the matrix does not know how to fill {path}"
    return url + ("?ids=x&ids=y" if path == "/compare" else "")


def _ask(client: TestClient, method: str, url: str, data: dict[str, str] | None = None) -> Any:
    return client.request(method, url, data=data, follow_redirects=False)


def test_every_page_sends_a_stranger_to_sign_in(world: World) -> None:
    before = world.snapshot()
    pages = _pages(world)
    assert len(pages) >= 20, pages  # the matrix reads the app, not a list of its own
    with TestClient(world.app, base_url="http://127.0.0.1") as client:
        for method, path in pages:
            if (method, path) in PUBLIC:
                continue
            for who, cookies in (("no session", {}), ("made up", {COOKIE: "x" * 43})):
                client.cookies.clear()
                client.cookies.update(cookies)
                answer = _ask(client, method, _url(world, path), {"csrf": "x"})
                where = f"{method} {path} with {who}"
                assert answer.status_code == 303, (where, answer.text[:200])
                assert answer.headers["location"].startswith("/signin"), where
                assert world.snapshot() == before, f"{where} changed something"


def test_a_post_needs_the_csrf_token_and_a_viewer_may_change_nothing(world: World) -> None:
    before = world.snapshot()
    alice, alice_csrf = world.session("alice")
    viewer, viewer_csrf = world.session("alice-view")
    for method, path in _pages(world):
        url = _url(world, path)
        if method == "GET":
            answer = _ask(viewer, method, url)
            refused = answer.status_code == 403
            assert refused == (path in OPERATOR_PAGES), (f"GET {path} as a viewer", answer.text)
            assert answer.status_code < 500, (f"GET {path} as a viewer", answer.text)
            continue
        if (method, path) in PUBLIC | ANY_SESSION:
            continue
        forged = _ask(alice, method, url, {"csrf": alice_csrf + "x", "confirm_name": "x"})
        assert forged.status_code == 403, (f"{path} without the CSRF token", forged.text[:200])
        as_viewer = _ask(viewer, method, url, {"csrf": viewer_csrf, "confirm_name": "x"})
        assert as_viewer.status_code == 403, (f"{path} as a viewer", as_viewer.text[:200])
        assert world.snapshot() == before, f"{path} changed something"


def test_another_owners_batch_is_not_found_on_any_page(world: World) -> None:
    before = world.snapshot()
    carl, csrf = world.session("carl")
    for method, path in _pages(world):
        if "{batch_id}" not in path:
            continue
        answer = _ask(carl, method, _url(world, path), {"csrf": csrf, "confirm_name": "x"})
        assert answer.status_code == 404, (f"{method} {path} as another owner", answer.text)
    assert world.snapshot() == before
    bob, _ = world.session("bob")  # an admin sees every owner's batch
    assert _ask(bob, "GET", f"/batches/{world.batch_id}").status_code == 200
