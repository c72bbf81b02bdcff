"""``batchyard serve`` as a user runs it: a subprocess on a free loopback port, over real
HTTP: the first admin token it prints, an upload worked by its own worker lanes, results,
metrics, a bad line refused whole, tokens made with ``batchyard token``, and a clean stop."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_processes import wait_for
from tests.procs.server import BATCHYARD, Server
from tests.procs.tasks import expected

TASK = "tests.procs.tasks:square"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    db = f"sqlite:///{tmp_path / 'by.db'}"
    server = Server(db, tmp_path, "--workers", "2", "--allow-task", TASK)
    try:
        yield server, db
    finally:
        assert server.stop() == 0, "".join(server.output)


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_first_start_prints_an_admin_token_that_works_and_a_login_link(
    served: tuple[Server, str],
) -> None:
    server, _ = served
    text = "".join(server.output)
    assert server.token is not None, text
    assert f"{server.url}/login?token={server.token}" in text
    assert "4 worker lanes" not in text and "2 worker lanes" in text
    with server.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        refused = anonymous.get("/batches")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"] == "Bearer"
    with server.client(server.token) as admin:
        assert admin.get("/version").json()["api"] == "v1"
        login = httpx.get(f"{server.url}/login", params={"token": server.token})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_an_upload_runs_on_the_servers_lanes_and_its_results_stream_back(
    served: tuple[Server, str],
) -> None:
    server, _ = served
    rows = [{"id": f"k{n}", "n": n} for n in range(50)]
    with server.client(server.token) as admin:
        made = admin.post(
            "/batches",
            files={"file": ("leads.jsonl", jsonl(rows))},
            data={"task": TASK, "options": json.dumps({"name": "leads"})},
        )
        assert made.status_code == 201, made.text
        batch = made.json()
        assert (batch["name"], batch["counts"]["total"], batch["owner"]) == ("leads", 50, "admin")
        assert made.headers["location"].endswith(f"/batches/{batch['id']}")
        done = wait_for(
            lambda: admin.get(f"/batches/{batch['id']}").json()["state"] == "completed",
            60,
            "the server's lanes to finish the batch",
            lambda: admin.get(f"/batches/{batch['id']}").text,
        )
        assert done
        results = admin.get(f"/batches/{batch['id']}/results", params={"format": "jsonl"})
        lines = [json.loads(line) for line in results.text.splitlines()]
        assert [line["key"] for line in lines] == [row["id"] for row in rows]
        assert lines[7]["result"] == expected(7)
        metrics = admin.get(server.url + "/metrics").text
        assert 'batchyard_items{state="succeeded"} 50.0' in metrics
        assert 'batchyard_batches{state="completed"} 1.0' in metrics


def test_a_bad_line_is_a_422_naming_it_and_nothing_is_written(served: tuple[Server, str]) -> None:
    server, _ = served
    body = jsonl([{"id": f"k{n}", "n": n} for n in range(6)]) + b'{"id": "k6", "n": \n'
    with server.client(server.token) as admin:
        refused = admin.post("/batches", files={"file": ("in.jsonl", body)}, data={"task": TASK})
        assert refused.status_code == 422
        problem = refused.json()
        assert problem["line"] == 7 and "in.jsonl:7" in problem["detail"], problem
        assert admin.get("/batches").json()["batches"] == []
        not_allowed = admin.post("/batches", json={"task": "os:system", "items": [{"a": 1}]})
        assert not_allowed.status_code == 422
        assert not_allowed.json()["allowed"] == ["llm", TASK]


def test_tokens_made_with_the_cli_have_their_role_and_owner(
    served: tuple[Server, str], tmp_path: Path
) -> None:
    server, db = served

    def token(name: str, role: str) -> str:
        made = subprocess.run(
            [str(BATCHYARD), "--db", db, "token", "create", name, "--role", role, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return str(json.loads(made.stdout)["token"])

    viewer, ann, bob = (
        token("viewer1", "viewer"),
        token("ann", "operator"),
        token("bob", "operator"),
    )
    with server.client(ann) as as_ann, server.client(bob) as as_bob, server.client(viewer) as v:
        mine = as_ann.post("/batches", json={"task": TASK, "items": [{"id": "a", "n": 1}]})
        assert mine.status_code == 201
        batch_id = mine.json()["id"]
        assert as_bob.get(f"/batches/{batch_id}").status_code == 404
        assert as_bob.post(f"/batches/{batch_id}/cancel").status_code == 404
        assert [b["id"] for b in as_ann.get("/batches").json()["batches"]] == [batch_id]
        assert as_bob.get("/batches").json()["batches"] == []
        assert v.post("/batches", json={"task": TASK, "items": [{"n": 1}]}).status_code == 403
    revoked = subprocess.run(
        [str(BATCHYARD), "--db", db, "token", "revoke", "ann"], capture_output=True, text=True
    )
    assert revoked.returncode == 0, revoked.stderr
    with server.client(ann) as as_ann:
        assert as_ann.get("/batches").status_code == 401
    listed = subprocess.run(
        [str(BATCHYARD), "--db", db, "token", "list", "--json"], capture_output=True, text=True
    )
    names = {t["name"]: t for t in json.loads(listed.stdout)}
    assert names["ann"]["revoked_at"] is not None and names["bob"]["revoked_at"] is None
    assert "by_" not in listed.stdout  # never a secret


def test_a_second_start_makes_no_token_and_a_busy_port_is_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'by.db'}"
    first = Server(db, tmp_path)
    try:
        assert first.token is not None
        port = first.url.rsplit(":", 1)[1]
        busy = subprocess.run(
            [str(BATCHYARD), "--db", db, "serve", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert busy.returncode == 2
        assert busy.stderr.strip().startswith(
            f"batchyard: error: cannot listen on 127.0.0.1:{port}"
        )
        assert "Traceback" not in busy.stderr
    finally:
        assert first.stop() == 0
    second = Server(db, tmp_path)
    try:
        assert second.token is None and "first start" not in "".join(second.output)
    finally:
        assert second.stop() == 0
