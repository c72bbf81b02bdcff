"""The server's templates, datasets, estimate and validate routes, through FastAPI's
TestClient over a real store: SQLite on tmp_path everywhere, PostgreSQL too for the paths
that write."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no hints
import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no hints
import pytest
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.web import ServerSettings, create_app
from tests.e2e.test_cli_llm import ESTIMATE_KEYS

API = "/api/v1"
#: What the TestClient answers with: httpx2's Response where httpx2 is installed (starlette
#: prefers it), httpx's otherwise.
Reply = Any
ALLOWED = "tests.procs.tasks:square"
MODEL = "gpt-4o-mini"
PROMPT = "Tell me about {{ topic }}.\n"
LLM = {"model": MODEL, "template": PROMPT}
LEADS = [
    {"id": "a", "name": "Acme", "industry": "SaaS", "employees": 120},
    {"id": "b", "name": "Bolt", "industry": "Retail", "employees": 40},
    {"id": "c", "name": "Crane", "industry": "SaaS", "employees": 900},
]


@dataclass
class Api:
    """A TestClient on the app, with a token of each role."""

    client: TestClient
    yard: Yard
    secrets: dict[str, str]

    def call(self, method: str, path: str, role: str | None = "operator", **kw: Any) -> Reply:
        headers = {} if role is None else {"Authorization": f"Bearer {self.secrets[role]}"}
        headers.update(kw.pop("headers", {}))
        return self.client.request(method, API + path, headers=headers, **kw)

    def get(self, path: str, role: str | None = "viewer", **kw: Any) -> Reply:
        return self.call("GET", path, role, **kw)

    def post(self, path: str, role: str | None = "operator", **kw: Any) -> Reply:
        return self.call("POST", path, role, **kw)

    def upload(
        self,
        name: str | None,
        data: bytes,
        filename: str = "leads.jsonl",
        role: str = "operator",
        **fields: str,
    ) -> Reply:
        form = {**fields, **({} if name is None else {"name": name})}
        return self.post("/datasets", role, data=form, files={"file": (filename, data)})


def make_api(url: str) -> Iterator[Api]:
    with Yard(url) as yard:
        secrets = {
            role: yard.tokens.create(f"{role}-token", role, owner=f"{role}-team")[1]
            for role in ("viewer", "operator", "admin")
        }
        app = create_app(yard, ServerSettings(workers=0, allow_task=[ALLOWED]))
        with TestClient(app) as client:
            yield Api(client, yard, secrets)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """On SQLite."""
    yield from make_api(f"sqlite:///{tmp_path / 'yard.db'}")


@pytest.fixture
def both(store_url: str) -> Iterator[Api]:
    """On SQLite, then on PostgreSQL."""
    yield from make_api(store_url)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def problem(response: Reply, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# -- templates ----------------------------------------------------------------------------


def test_a_template_is_created_updated_diffed_and_archived(both: Api) -> None:
    made = both.post(
        "/templates",
        json={"name": "leads", "task": "llm", "params": LLM, "description": "first"},
    )
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"{API}/templates/leads/versions/1"
    first = made.json()
    assert (first["ref"], first["task"], first["author"]) == ("leads@1", "llm", "operator-token")
    assert first["params"] == LLM and first["archived"] is False

    # Only what changes is sent; the description is kept when left out.
    second = both.post("/templates/leads/versions", json={"params": {"temperature": 0.2}})
    assert second.status_code == 201, second.text
    assert second.json()["params"] == {**LLM, "temperature": 0.2}
    assert second.json()["description"] == "first"

    shown = both.get("/templates/leads").json()
    assert shown["ref"] == "leads@2"
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert all(v["usage"] is None for v in shown["versions"])
    one = both.get("/templates/leads/versions/1").json()
    assert (one["ref"], one["params"], one["usage"]) == ("leads@1", LLM, None)

    diff = both.get("/templates/leads/diff", params={"from": 1, "to": 2}).json()
    assert (diff["old"], diff["new"], diff["texts"]) == ("leads@1", "leads@2", {})
    (change,) = diff["changes"]
    assert (change["name"], change["old_set"], change["new"]) == ("temperature", False, 0.2)

    archived = both.post("/templates/leads/versions/2/archive")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert [t["ref"] for t in both.get("/templates").json()] == ["leads@1"]
    listed = both.get("/templates", params={"archived": "true"}).json()
    assert [(t["ref"], t["archived"]) for t in listed] == [("leads@2", True)]
    # An archived version is not one to run.
    refused = both.post("/batches", json={"template": "leads@2", "items": [{"topic": "x"}]})
    assert "archived" in problem(refused, 409)["detail"]


def test_template_errors_name_what_is_wrong(api: Api) -> None:
    assert api.post("/templates", json={"name": "t", "task": ALLOWED}).status_code == 201
    taken = api.post("/templates", json={"name": "t", "task": ALLOWED})
    assert "exists already" in problem(taken, 409)["detail"]

    refused = api.post("/templates", json={"name": "u", "task": "llm", "params": {"modle": 1}})
    assert "modle" in problem(refused, 422)["detail"]
    same = api.post("/templates/t/versions", json={"params": {}})
    assert "nothing to update" in problem(same, 409)["detail"]
    bad_name = api.post("/templates", json={"name": "no spaces", "task": ALLOWED})
    assert problem(bad_name, 422)["field"] == "name"
    lax = api.post("/templates", json={"name": "v", "task": ALLOWED, "params": [1]})
    problem(lax, 422)

    assert "no template 'nope'" in problem(api.get("/templates/nope"), 404)["detail"]
    assert "no version 9" in problem(api.get("/templates/t/versions/9"), 404)["detail"]
    problem(api.get("/templates/t/diff", params={"from": 1, "to": 9}), 404)
    problem(api.post("/templates/t/versions/9/archive"), 404)
    problem(api.post("/templates/nope/versions", json={"params": {"x": 1}}), 404)
    problem(api.get("/templates/t/diff", params={"from": 0, "to": 1}), 422)
    assert [t["name"] for t in api.get("/templates").json()] == ["t"]


def test_a_template_task_must_be_allowed_on_this_server(api: Api) -> None:
    refused = api.post("/templates", json={"name": "t", "task": "os:system"})
    body = problem(refused, 422)
    assert body["allowed"] == ["llm", ALLOWED] and body["field"] == "task"
    assert "os:system" in body["detail"] and ALLOWED in body["detail"]
    assert api.get("/templates").json() == []
    # A template made outside the server, for a task it does not allow, is not updated here.
    api.yard.templates.create("local", "tests.procs.tasks:gated", {})
    update = api.post("/templates/local/versions", json={"params": {"x": 1}})
    assert problem(update, 422)["allowed"] == ["llm", ALLOWED]
    assert len(api.yard.templates.versions("local")) == 1


def test_a_viewer_reads_templates_and_writes_none(api: Api) -> None:
    api.post("/templates", json={"name": "t", "task": ALLOWED, "params": {"x": 1}})
    writes = [
        ("/templates", {"name": "u", "task": ALLOWED}),
        ("/templates/t/versions", {"params": {"x": 2}}),
        ("/templates/t/versions/1/archive", None),
    ]
    for path, body in writes:
        assert "operator role" in problem(api.post(path, "viewer", json=body), 403)["detail"]
        problem(api.post(path, None, json=body), 401)
    assert api.get("/templates/t").json()["versions"][0]["archived"] is False
    assert [t["ref"] for t in api.get("/templates").json()] == ["t@1"]
    problem(api.get("/templates", None), 401)


# -- datasets -----------------------------------------------------------------------------


def test_a_dataset_is_loaded_paged_appended_replaced_and_deleted(both: Api) -> None:
    loaded = both.upload("leads", jsonl(LEADS))
    assert loaded.status_code == 201, loaded.text
    assert loaded.headers["location"] == f"{API}/datasets/leads"
    body = loaded.json()
    assert (body["name"], body["rows"], body["added"], body["key_field"]) == ("leads", 3, 3, "id")
    fields = {f["name"]: f["types"] for f in body["fields"]}
    assert fields["employees"] == ["number"] and fields["name"] == ["string"]
    assert both.get("/datasets/leads").json() == {k: v for k, v in body.items() if k != "added"}
    assert [d["name"] for d in both.get("/datasets").json()] == ["leads"]

    query = {"where": "industry=SaaS", "sort": "employees:desc", "limit": 1}
    page = both.get("/datasets/leads/rows", params=query).json()
    assert (page["dataset"], page["count"]) == ("leads", 2)
    assert [(r["key"], r["position"]) for r in page["rows"]] == [("c", 3)]
    rest = both.get("/datasets/leads/rows", params={**query, "cursor": page["next"]}).json()
    assert [r["data"]["name"] for r in rest["rows"]] == ["Acme"] and rest["next"] is None
    picked = both.get("/datasets/leads/rows", params={"keys": "a,b", "where": "employees<100"})
    assert [r["key"] for r in picked.json()["rows"]] == ["b"]
    every = [("where", "industry=SaaS"), ("where", "employees>=200")]
    assert [r["key"] for r in both.get("/datasets/leads/rows", params=every).json()["rows"]] == [
        "c"
    ]

    more = both.upload("leads", jsonl([{"id": "d", "name": "Dune"}]), mode="append")
    assert more.status_code == 200, more.text
    assert (more.json()["rows"], more.json()["added"]) == (4, 1)
    # Replacing and deleting shared rows takes an admin.
    refused = both.upload("leads", jsonl(LEADS[:1]), mode="replace")
    assert "admin" in problem(refused, 403)["detail"]
    problem(both.call("DELETE", "/datasets/leads", "operator"), 403)
    assert both.get("/datasets/leads").json()["rows"] == 4
    replaced = both.upload("leads", jsonl(LEADS[:1]), role="admin", mode="replace")
    assert (replaced.status_code, replaced.json()["rows"]) == (200, 1)

    deleted = both.call("DELETE", "/datasets/leads", "admin")
    assert deleted.status_code == 200 and deleted.json() == {"name": "leads", "rows": 1}
    problem(both.get("/datasets/leads"), 404)


def test_a_bad_line_is_a_422_naming_it_and_nothing_is_written(both: Api) -> None:
    data = jsonl(LEADS[:1]) + b"{not json\n" + jsonl(LEADS[1:])
    body = problem(both.upload("leads", data), 422)
    assert body["line"] == 2 and body["detail"].startswith("leads.jsonl:2: not valid JSON")
    problem(both.get("/datasets/leads"), 404)
    assert both.get("/datasets").json() == []


def test_csv_and_parquet_uploads_load_as_jsonl_does(api: Api) -> None:
    csv = b"id,name,employees\na,Acme,120\nb,Bolt,40\n"
    assert api.upload("from-csv", csv, "leads.csv").json()["rows"] == 2
    # Text unless csv_types says otherwise, as with `dataset add --csv-types`.
    texts = api.get("/datasets/from-csv/rows", params={"where": "employees>=100"})
    assert "holds text" in problem(texts, 422)["detail"]
    typed = api.upload("typed", csv, "leads.csv", csv_types="employees=int")
    assert {f["name"]: f["types"] for f in typed.json()["fields"]}["employees"] == ["number"]
    rows = api.get("/datasets/typed/rows", params={"where": "employees>=100"}).json()
    assert [r["key"] for r in rows["rows"]] == ["a"]
    bad = api.upload("typo", csv, "leads.csv", csv_types="employees=integer")
    assert problem(bad, 422)["field"] == "csv_types"
    cell = api.upload("cell", b"id,employees\na,many\n", "leads.csv", csv_types="employees=int")
    assert problem(cell, 422)["line"] == 2
    assert problem(api.upload("j", jsonl(LEADS), csv_types="employees=int"), 422)["field"] == (
        "csv_types"
    )
    assert [d["name"] for d in api.get("/datasets").json()] == ["from-csv", "typed"]
    table = pa.Table.from_pylist(LEADS)
    out = io.BytesIO()
    pq.write_table(table, out)
    parquet = api.upload("from-parquet", out.getvalue(), "leads.parquet")
    assert parquet.status_code == 201, parquet.text
    rows = api.get("/datasets/from-parquet/rows", params={"where": "employees>=120"}).json()
    assert [r["key"] for r in rows["rows"]] == ["a", "c"]
    named = api.upload("named", jsonl(LEADS), "leads.txt", format="jsonl")
    assert named.json()["rows"] == 3
    unknown = api.upload("unnamed", jsonl(LEADS), "leads.txt")
    assert problem(unknown, 422)["field"] == "format"


def test_dataset_errors(api: Api) -> None:
    api.upload("leads", jsonl(LEADS))
    taken = api.upload("leads", jsonl(LEADS))
    assert "mode=append" in problem(taken, 409)["detail"]
    assert api.get("/datasets/leads").json()["rows"] == 3
    assert problem(api.upload(None, jsonl(LEADS)), 422)["field"] == "name"
    problem(api.upload("bad name", jsonl(LEADS)), 422)
    problem(api.upload("x", jsonl(LEADS), mode="merge"), 422)
    problem(api.upload("none", jsonl(LEADS), mode="append"), 404)
    problem(api.post("/datasets", json={"name": "x"}), 415)
    problem(api.upload("empty", b""), 422)

    problem(api.get("/datasets/nope"), 404)
    problem(api.get("/datasets/nope/rows"), 404)
    problem(api.call("DELETE", "/datasets/nope", "admin"), 404)
    assert (
        "field"
        in problem(api.get("/datasets/leads/rows", params={"where": "size>1"}), 422)["detail"]
    )
    problem(api.get("/datasets/leads/rows", params={"cursor": "garbage"}), 422)
    problem(api.get("/datasets/leads/rows", params={"limit": 0}), 422)
    problem(api.get("/datasets/leads/rows", params={"limit": 1001}), 422)


def test_a_viewer_reads_datasets_and_loads_none(api: Api) -> None:
    api.upload("leads", jsonl(LEADS))
    assert (
        "operator role" in problem(api.upload("more", jsonl(LEADS), role="viewer"), 403)["detail"]
    )
    problem(api.call("DELETE", "/datasets/leads", "viewer"), 403)
    problem(api.get("/datasets", None), 401)
    assert [d["name"] for d in api.get("/datasets").json()] == ["leads"]
    assert api.get("/datasets/leads/rows").json()["count"] == 3


# -- estimate and validate ----------------------------------------------------------------


def topics(n: int, missing: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {"id": f"k{i}"} if i in missing else {"id": f"k{i}", "topic": f"topic {i}"}
        for i in range(1, n + 1)
    ]


def test_validate_names_the_line_a_row_fails_on_and_creates_nothing(both: Api) -> None:
    body = {"task": "llm", "items": topics(5, missing=(4,)), "options": {"params": LLM}}
    found = both.post("/validate", "viewer", json=body)
    assert found.status_code == 200, found.text
    shown = found.json()
    assert (shown["task"], shown["checked"], shown["ok"], shown["complete"]) == (
        "llm",
        5,
        False,
        True,
    )
    (row,) = shown["problems"]
    assert row["line"] == 4 and "'topic'" in row["message"]

    # A file's rows are named by their line in it (a blank line counts).
    data = jsonl(topics(2)) + b"\n" + jsonl([{"id": "x"}])
    form = {"task": "llm", "options": json.dumps({"params": LLM})}
    upload = both.post("/validate", data=form, files={"file": ("p.jsonl", data)}).json()
    assert [p["line"] for p in upload["problems"]] == [4]

    # By a template, over a dataset.
    both.post("/templates", json={"name": "t", "task": "llm", "params": LLM})
    both.upload("topics", jsonl(topics(3)))
    good = both.post("/validate", json={"template": "t", "dataset": "topics"}).json()
    assert (good["ok"], good["checked"]) == (True, 3)
    assert both.get("/batches").json()["batches"] == []


def test_estimate_answers_the_cli_shape_and_creates_nothing(both: Api) -> None:
    body = {"task": "llm", "items": topics(30), "options": {"params": LLM, "rate_limit": "60/min"}}
    found = both.post("/estimate", "viewer", json=body)
    assert found.status_code == 200, found.text
    shown = found.json()
    assert set(shown) == ESTIMATE_KEYS
    assert (shown["model"], shown["items"], shown["calls"], shown["cached"]) == (MODEL, 30, 30, 0)
    assert shown["bound_by"] == "requests per minute" and 30 <= shown["duration_seconds"] <= 32

    both.upload("topics", jsonl(topics(12)))
    both.post("/templates", json={"name": "t", "task": "llm", "params": LLM})
    picked = {"template": "t", "dataset": "topics", "where": ["topic~1"]}
    assert both.post("/estimate", json=picked).json()["items"] == 4  # 1, 10, 11, 12
    data = jsonl(topics(7))
    form = {"task": "llm", "options": json.dumps({"params": LLM})}
    upload = both.post("/estimate", data=form, files={"file": ("p.jsonl", data)})
    assert upload.json()["items"] == 7
    assert both.get("/batches").json()["batches"] == []
    # A batch of a dataset's rows under an Idempotency-Key is made once.
    once = {"Idempotency-Key": "topics-1"}
    rows: dict[str, Any] = {"task": ALLOWED, "dataset": "topics", "where": ["topic~1"]}
    made = both.post("/batches", json=rows, headers=once)
    again = both.post("/batches", json=rows, headers=once)
    assert (made.status_code, again.status_code) == (201, 200), made.text
    assert again.json()["replayed"] and again.json()["id"] == made.json()["id"]
    other = both.post("/batches", json={**rows, "where": ["topic~2"]}, headers=once)
    assert "topics-1" in problem(other, 409)["detail"]
    assert len(both.yard.batches(limit=5).rows) == 1


def test_estimate_and_validate_check_what_a_submission_does(api: Api) -> None:
    for route in ("/estimate", "/validate"):
        refused = api.post(route, json={"task": "os:system", "items": [{"a": 1}]})
        assert problem(refused, 422)["allowed"] == ["llm", ALLOWED]
        none = api.post(route, json={"task": "llm", "options": {"params": LLM, "open": True}})
        assert problem(none, 422)["field"] == "items"
        two = api.post(route, json={"task": "llm", "items": [{"a": 1}], "count": 2})
        assert problem(two, 422)["field"] == "count"
        problem(api.post(route, json={"template": "nope", "items": [{"a": 1}]}), 404)
        nope = {"task": "llm", "dataset": "nope", "options": {"params": LLM}}
        assert "'nope'" in problem(api.post(route, json=nope), 404)["detail"]
        problem(api.post(route, content=b"task=llm"), 415)
        problem(api.post(route, None, json={"task": "llm", "items": [{"a": 1}]}), 401)
    plain = api.post("/estimate", json={"task": ALLOWED, "items": [{"n": 1}]})
    assert "llm task" in problem(plain, 422)["detail"]
    counted = api.post("/validate", json={"task": ALLOWED, "count": 3}).json()
    assert (counted["task"], counted["checked"], counted["ok"]) == (ALLOWED, 3, True)
    bad_line = jsonl([{"n": 1}]) + b"[1, 2]\n"
    upload = api.post("/validate", data={"task": ALLOWED}, files={"file": ("x.jsonl", bad_line)})
    assert problem(upload, 422)["line"] == 2


def test_the_openapi_describes_every_route_and_its_errors(api: Api) -> None:
    assert api.get("/openapi.json", role=None).status_code == 401  # only /health is public
    paths = api.get("/openapi.json").json()["paths"]
    wanted = {
        ("get", "/templates"): {"401", "422"},
        ("post", "/templates"): {"401", "403", "409", "422"},
        ("get", "/templates/{name}"): {"401", "404"},
        ("post", "/templates/{name}/versions"): {"403", "404", "409", "422"},
        ("get", "/templates/{name}/versions/{version}"): {"404"},
        ("get", "/templates/{name}/diff"): {"404", "422"},
        ("post", "/templates/{name}/versions/{version}/archive"): {"403", "404"},
        ("get", "/datasets"): {"401"},
        ("post", "/datasets"): {"200", "403", "409", "413", "415", "422"},
        ("get", "/datasets/{name}"): {"404"},
        ("get", "/datasets/{name}/rows"): {"404", "422"},
        ("delete", "/datasets/{name}"): {"403", "404"},
        ("post", "/estimate"): {"404", "413", "415", "422"},
        ("post", "/validate"): {"404", "413", "415", "422"},
    }
    for (method, path), statuses in wanted.items():
        operation = paths[API + path][method]
        assert statuses <= set(operation["responses"]), (method, path)
    upload = paths[f"{API}/datasets"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file", "name", "format"]
    # Each takes a submission's body, with the tasks it takes (an estimate: the llm task).
    for route, name in (("/estimate", "EstimateIn"), ("/validate", "CheckIn")):
        content = paths[API + route]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
