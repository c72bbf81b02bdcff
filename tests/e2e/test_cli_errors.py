"""``batchyard errors``, ``retry --cluster`` and the clusters of ``status --json``, run as a
user runs them: the installed command in a subprocess, on a batch real workers ran."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batches import CLI, jsonl

TASKS = """
import json
from batchyard import task

def parse(text):
    return json.loads(text)

@task(retry_backoff=0)
def price(item):
    if item["kind"] == "price":
        raise ValueError(f"price {item['n']} out of range for {item['id']!r}")
    if item["kind"] == "json":
        return parse(item["text"])
    if item["kind"] == "key":
        return {}[item["id"]]
    return {"ok": item["n"]}
"""
ITEMS: list[dict[str, Any]] = [
    {"id": "p1", "kind": "price", "n": 12},
    {"id": "p2", "kind": "price", "n": 99},
    {"id": "p3", "kind": "price", "n": 7},
    {"id": "j1", "kind": "json", "text": "{"},
    {"id": "k1", "kind": "key"},
    {"id": "ok", "kind": "fine", "n": 1},
]
PRICE = "ValueError: price <num> out of range for <str> @ clustertasks.py:price"
JSON = "JSONDecodeError: Expecting property name enclosed in double quotes: line <num> column"
KEY = "KeyError: <str> @ clustertasks.py:price"


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "clustertasks.py").write_text(TASKS)
    return CLI(tmp_path)


def ran(cli: CLI, attempts: int = 2) -> str:
    batch_id = cli.ok(
        "submit",
        "clustertasks:price",
        jsonl(cli.folder, "in.jsonl", ITEMS),
        "--max-attempts",
        str(attempts),
    ).strip()
    cli.work_until_idle()
    return batch_id


def clusters(cli: CLI, batch_id: str) -> dict[str, dict[str, Any]]:
    found = cli.json("errors", batch_id)
    assert found["batch"] == batch_id
    return {c["text"]: c for c in found["clusters"]}


def test_errors_lists_the_clusters_of_a_batch(cli: CLI) -> None:
    batch_id = ran(cli)
    listed = cli.json("errors", batch_id)
    assert listed["failed"] == 5
    texts = [c["text"] for c in listed["clusters"]]
    assert texts[0] == PRICE  # the most failed items first
    (parsing,) = [text for text in texts if text.startswith(JSON)]
    assert parsing.endswith(" @ clustertasks.py:parse")  # the task's frame, not json's
    assert set(texts) == {PRICE, parsing, KEY}
    price = listed["clusters"][0]
    assert (price["items"], price["attempts"], price["share"]) == (3, 6, 0.6)
    assert price["sample_key"] in {"p1", "p2", "p3"}
    assert price["sample"].startswith("ValueError: price ")
    assert price["first_seen"] <= price["last_seen"]
    assert re.fullmatch(r"[0-9a-f]{10}", price["id"])

    table = cli.ok("errors", batch_id)
    assert f"{batch_id}: 5 failed items, 10 failed attempts in 3 clusters" in table
    assert re.search(rf"{price['id']} +3 +60% +6 .*{re.escape(PRICE)}", table), table
    assert f"  {price['id']}  {price['sample_key']}: ValueError: price " in table
    # The command to copy reaches this store: the --db the command was given.
    assert f"retry one: batchyard --db {cli.db} retry {batch_id} --cluster {price['id']}" in table
    assert len(cli.json("errors", batch_id, "--limit", "1")["clusters"]) == 1

    status = cli.json("status", batch_id)
    assert [c["text"] for c in status["error_clusters"]] == texts


def test_retry_one_cluster(cli: CLI) -> None:
    batch_id = ran(cli, attempts=1)
    price = clusters(cli, batch_id)[PRICE]
    said = cli.ok("retry", batch_id, "--cluster", price["id"][:6])
    assert f"sent 3 failed item(s) of error cluster {price['id'][:6]} of {batch_id}" in said
    states = {i["key"]: i["state"] for i in cli.json("items", batch_id)}
    assert states == {
        "p1": "pending",
        "p2": "pending",
        "p3": "pending",
        "j1": "failed",
        "k1": "failed",
        "ok": "succeeded",
    }
    assert clusters(cli, batch_id)[PRICE]["items"] == 0
    cli.work_until_idle()
    after = clusters(cli, batch_id)[PRICE]
    assert (after["items"], after["attempts"]) == (3, 6)
    assert cli.json("status", batch_id)["counts"]["failed"] == 5


def test_retry_of_an_unknown_cluster_exits_2_and_sends_nothing_back(cli: CLI) -> None:
    batch_id = ran(cli, attempts=1)
    before = cli.json("items", batch_id)
    err = cli.fails(2, "retry", batch_id, "--cluster", "ffffffffff")
    assert f"batch '{batch_id}' has no error cluster 'ffffffffff'" in err
    assert f"batchyard errors {batch_id}" in err
    assert "not an error cluster id" in cli.fails(2, "retry", batch_id, "--cluster", "xyz!")
    err = cli.fails(2, "retry", batch_id, "--cluster", "ab", "--key", "p1")
    assert "a retry of an error cluster takes its failed items only" in err
    assert cli.json("items", batch_id) == before
    assert "no batch 'nope'" in cli.fails(1, "errors", "nope")


def test_a_batch_without_failures_has_no_clusters(cli: CLI) -> None:
    batch_id = cli.ok(
        "submit", "clustertasks:price", jsonl(cli.folder, "ok.jsonl", [ITEMS[-1]])
    ).strip()
    cli.work_until_idle()
    assert cli.ok("errors", batch_id).strip() == f"{batch_id}: no failures recorded"
    assert cli.json("errors", batch_id) == {"batch": batch_id, "failed": 0, "clusters": []}
