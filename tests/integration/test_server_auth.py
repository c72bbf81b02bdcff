"""The server's authorisation matrix: every route and method the app has (read from
``app.routes``, so a new route is covered the day it lands) called with no token, a
garbage token, a revoked token, a viewer's token (for the methods that change things) and
another owner's operator token (on a batch it does not own): each gets its status (401,
401, 401, 403, 404) and leaves the batch and its items as they were. Then the session
cookie and its CSRF token, the security headers, no CORS, and no secret in any answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.web import ServerSettings, auth, create_app
from batchyard.web.pages.route import PageRoute

TASK = "tests.procs.tasks:square"
#: Routes that take no token: health and logging in.
PUBLIC = {
    ("GET", "/api/v1/health"),
    ("POST", "/api/v1/session"),
    ("GET", "/login"),
}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
#: Bodies that would change something if the request were let through.
BODIES: dict[str, Any] = {
    "/api/v1/batches": {"task": TASK, "items": [{"n": 9}]},
    "/api/v1/batches/{batch_id}/items": {"items": [{"id": "new", "n": 9}]},
    "/api/v1/batches/{batch_id}/retry": {"states": ["failed"]},
    "/api/v1/batches/{batch_id}/rerun": {"state": "all"},
}
HEADERS = {
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass
class World:
    yard: Yard
    client: TestClient
    batch_id: str
    secrets: dict[str, str]
    db: str

    def snapshot(self) -> tuple[Any, ...]:
        status = self.yard.store.get_batch(self.batch_id)
        items = [(i.key, i.state, i.payload) for i in self.yard.batch(self.batch_id).items()]
        batches = self.yard.batches(limit=500).rows
        templates = [(t.name, t.version, t.archived) for t in self.yard.templates.list()]
        datasets = [(d.name, d.rows) for d in self.yard.datasets.list()]
        tokens = [(t.name, t.revoked_at) for t in self.yard.tokens.list()]
        return status.state, status.counts, items, len(batches), templates, datasets, tokens


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = f"sqlite:///{tmp_path / 'yard.db'}"
    with Yard(db) as yard:
        secrets = {}
        for name, role, owner in [
            ("alice", "operator", "alice"),
            ("alice-view", "viewer", "alice"),
            ("bob", "operator", "bob"),
            ("gone", "admin", "gone"),
        ]:
            secrets[name] = yard.tokens.create(name, role, owner)[1]
        yard.tokens.revoke("gone")
        batch = yard.submit(TASK, [{"id": str(n), "n": n} for n in range(3)], owner="alice")
        batch.pause()  # so resume and cancel would change it
        yard.templates.create("t1", TASK, {})
        yard.datasets.add("d1", [{"id": "a", "n": 1}])
        app = create_app(yard, ServerSettings(workers=0, allow_task=[TASK]))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            yield World(yard, client, batch.id, secrets, db)


def _routes(world: World) -> list[tuple[str, str, APIRoute | None]]:
    found = []
    # FastAPI includes routers lazily: iter_route_contexts yields the routes inside them.
    for context in iter_route_contexts(world.client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, PageRoute):
            continue  # the dashboard's pages: their own matrix, test_dashboard_auth.py
        for method in sorted(context.methods or ()):
            if method != "HEAD" and context.path is not None:
                found.append((method, context.path, route if isinstance(route, APIRoute) else None))
    return found


def _url(world: World, path: str) -> str:
    name = "d1" if path.startswith("/api/v1/datasets/") else "t1"
    url = path.replace("{batch_id}", world.batch_id).replace("{key:path}", "1")
    url = url.replace("{name}", name).replace("{version}", "1")
    assert "{" not in url, f"the matrix does not know how to fill {path}"
    if path == "/api/v1/compare":
        url += f"?ids={world.batch_id},{world.batch_id}"
    return url


def _needs_role(route: APIRoute | None) -> bool:
    """Whether the route asks for operator or admin (a viewer is refused it)."""
    if route is None:
        return False
    stack, calls = [route.dependant], set()
    while stack:
        dependant = stack.pop()
        calls.add(dependant.call)
        stack.extend(dependant.dependencies)
    return bool(calls & {auth.operator, auth.admin})


def _call(world: World, method: str, path: str, headers: dict[str, str]) -> Any:
    body = BODIES.get(path)
    return world.client.request(
        method,
        _url(world, path),
        headers=headers,
        json=body if method in UNSAFE else None,
        follow_redirects=False,
    )


def _check_answer(world: World, answer: Any, where: str) -> None:
    for name, part in HEADERS.items():
        assert part in answer.headers.get(name, ""), (where, name, answer.headers)
    assert not any(h.lower().startswith("access-control-") for h in answer.headers), where
    for secret in world.secrets.values():
        assert secret not in answer.text, where
    assert world.db.split("///")[1] not in answer.text, where


def test_every_route_refuses_every_wrong_caller(world: World) -> None:
    before = world.snapshot()
    routes = _routes(world)
    assert len(routes) >= 20, routes  # the matrix reads the app, not a list of its own
    checked = 0
    for method, path, route in routes:
        if (method, path) in PUBLIC:
            continue
        as_ = {
            name: {"Authorization": f"Bearer {secret}"} for name, secret in world.secrets.items()
        }
        cases = [
            ("no token", {}, 401),
            ("garbage", {"Authorization": "Bearer by_admin_" + "0" * 32}, 401),
            ("not bearer", {"Authorization": "Basic YWxpY2U6eA=="}, 401),
            ("revoked", as_["gone"], 401),
        ]
        if method in UNSAFE and _needs_role(route):
            cases.append(("viewer", as_["alice-view"], 403))
        if "{batch_id}" in path or path == "/api/v1/compare":
            cases.append(("other owner", as_["bob"], 404))
        for who, headers, status in cases:
            where = f"{method} {path} as {who}"
            answer = _call(world, method, path, {"Origin": "http://evil.example", **headers})
            assert answer.status_code == status, (where, answer.text)
            assert answer.headers["content-type"] == "application/problem+json", where
            if status == 401:
                assert answer.headers.get("www-authenticate") == "Bearer", where
            _check_answer(world, answer, where)
            assert world.snapshot() == before, f"{where} changed the batch"
            checked += 1
    assert checked >= 100, checked


def test_the_owner_and_an_admin_get_through(world: World) -> None:
    """The matrix's statuses are about who calls: the same requests by the owner are let
    through (so a 404 above is not a route that 404s for everyone)."""
    alice = {"Authorization": f"Bearer {world.secrets['alice']}"}
    for path in ("/api/v1/batches/{batch_id}", "/api/v1/batches/{batch_id}/items"):
        answer = _call(world, "GET", path, alice)
        assert answer.status_code == 200, answer.text
        _check_answer(world, answer, path)
    assert _call(world, "POST", "/api/v1/batches/{batch_id}/resume", alice).status_code == 200


def test_the_session_cookie_needs_its_csrf_token(world: World) -> None:
    client = world.client
    login = client.post("/api/v1/session", json={"token": world.secrets["alice"]})
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"]
    assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
    csrf = login.json()["csrf"]
    _check_answer(world, login, "POST /session")
    before = world.snapshot()
    pause = f"/api/v1/batches/{world.batch_id}/cancel"
    refused = client.post(pause)
    assert refused.status_code == 403, refused.text
    assert "X-CSRF-Token" in refused.json()["detail"]
    wrong = client.post(pause, headers={auth.CSRF_HEADER: csrf + "x"})
    assert wrong.status_code == 403, wrong.text
    assert world.snapshot() == before
    assert client.get(f"/api/v1/batches/{world.batch_id}").status_code == 200  # reads need none
    allowed = client.post(pause, headers={auth.CSRF_HEADER: csrf})
    assert allowed.status_code == 200, allowed.text
    assert world.yard.store.get_batch(world.batch_id).state == "cancelled"
    assert client.delete("/api/v1/session", headers={auth.CSRF_HEADER: csrf}).status_code == 204
    assert client.get(f"/api/v1/batches/{world.batch_id}").status_code == 401


def test_a_revoked_token_ends_its_sessions(world: World) -> None:
    login = world.client.post("/api/v1/session", json={"token": world.secrets["alice"]})
    assert login.status_code == 200
    world.yard.tokens.revoke("alice")
    answer = world.client.get(f"/api/v1/batches/{world.batch_id}")
    assert answer.status_code == 401, answer.text


def test_cors_only_for_a_named_origin(world: World) -> None:
    app = create_app(world.yard, ServerSettings(workers=0, cors_origin=["https://ok.example"]))
    with TestClient(app) as client:
        for origin, allowed in (("https://ok.example", True), ("https://evil.example", False)):
            answer = client.options(
                "/api/v1/batches",
                headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            )
            got = answer.headers.get("access-control-allow-origin")
            assert (got == origin) is allowed, (origin, answer.headers)
