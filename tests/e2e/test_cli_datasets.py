"""The ``dataset`` commands and ``submit --dataset`` / ``submit --count`` through the installed
``batchyard``, as a user runs them: real files, a real SQLite database, a worker process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batches import CLI, jsonl

TASKS = """
def question(item, ctx):
    return {"q": f"question {item['n']} about {ctx.params['topic']}"}

def report(item, ctx):
    return {"lead": item["name"]}
"""

LEADS_CSV = """id,name,industry,employees
l1,Acme Corp,SaaS,120
l2,Globex,Retail,40
l3,Initech,SaaS,15
l4,ACME Labs,SaaS,900
l5,Umbrella,Health,2500
"""


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "e2etasks.py").write_text(TASKS)
    (tmp_path / "leads.csv").write_text(LEADS_CSV)
    return CLI(tmp_path)


def add_leads(cli: CLI) -> None:
    said = cli("dataset", "add", "leads", "leads.csv", "--csv-types", "employees=int")
    assert said.returncode == 0, said.stderr
    assert said.stderr.strip() == (
        "5 rows stored as dataset 'leads'; fields: id, name, industry, employees"
    )


def show(cli: CLI, *args: str) -> dict[str, Any]:
    shown: dict[str, Any] = cli.json("dataset", "show", "leads", *args)
    return shown


def datasets(cli: CLI) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = cli.json("dataset", "list")
    return listed


def test_add_list_show_and_delete(cli: CLI) -> None:
    add_leads(cli)
    (listed,) = datasets(cli)
    assert (listed["name"], listed["rows"], listed["key_field"]) == ("leads", 5, "id")
    assert listed["fields"][3] == {"name": "employees", "types": ["number"]}
    table = cli.ok("dataset", "list")
    assert "leads" in table and "id, name, industry, employees" in table

    picked = show(cli, "--where", "industry=SaaS", "--where", "employees>=100")
    assert (picked["count"], picked["next"]) == (2, None)
    assert [r["key"] for r in picked["rows"]] == ["l1", "l4"]
    assert picked["rows"][1]["data"] == {
        "id": "l4",
        "name": "ACME Labs",
        "industry": "SaaS",
        "employees": 900,
    }
    assert [r["key"] for r in show(cli, "--where", "name~acme")["rows"]] == ["l1", "l4"]
    assert [r["key"] for r in show(cli, "--where", "industry=Retail|Health")["rows"]] == [
        "l2",
        "l5",
    ]
    # Sorted pages, followed by their cursors.
    keys: list[str] = []
    cursor: str | None = None
    while True:
        more: list[str] = ["--cursor", cursor] if cursor else []
        page = show(cli, "--sort", "employees:desc", "--limit", "2", *more)
        assert page["count"] == 5
        keys += [r["key"] for r in page["rows"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert keys == ["l5", "l4", "l1", "l2", "l3"]

    done = cli("dataset", "show", "leads", "--where", "industry=SaaS", "--sort", "employees")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["id", "name", "industry", "employees"]
    assert done.stdout.splitlines()[1].split() == ["l3", "Initech", "SaaS", "15"]
    assert done.stderr.strip() == "3 shown; 3 of 5 rows match"
    narrow = cli.ok("dataset", "show", "leads", "--fields", "name,employees", "--limit", "1")
    assert narrow.split() == ["KEY", "name", "employees", "l1", "Acme", "Corp", "120"]
    error = cli.fails(2, "dataset", "show", "leads", "--fields", "name,size")
    assert "no row of 'leads' has a field 'size'" in error
    paged = cli("dataset", "show", "leads", "--limit", "1")
    assert paged.stderr.startswith("1 shown of 5 rows; next page: --cursor ")

    said = cli("dataset", "delete", "leads")
    assert said.returncode == 0 and "deleted dataset 'leads' (5 rows)" in said.stderr
    assert datasets(cli) == []
    assert "no dataset 'leads'" in cli.fails(1, "dataset", "show", "leads")


def test_append_and_replace(cli: CLI) -> None:
    add_leads(cli)
    more = jsonl(cli.folder, "more.jsonl", [{"id": "l6", "name": "Hooli", "city": "Palo Alto"}])
    said = cli("dataset", "add", "leads", more, "--append")
    assert said.stderr.strip() == (
        "1 row added to dataset 'leads' (6 in all); fields: id, name, industry, employees, city"
    )
    assert [r["key"] for r in show(cli, "--where", "city~alto")["rows"]] == ["l6"]
    error = cli.fails(2, "dataset", "add", "leads", "leads.csv")
    assert "dataset 'leads' exists already: --append adds rows to it" in error
    again = jsonl(cli.folder, "again.jsonl", [{"sku": "a"}, {"sku": "b"}])
    said = cli("dataset", "add", "leads", again, "--replace", "--key-field", "sku")
    assert said.stderr.strip() == "2 rows replaced by dataset 'leads'; fields: sku"
    assert [r["key"] for r in show(cli)["rows"]] == ["a", "b"]
    assert "no dataset 'nope'" in cli.fails(1, "dataset", "add", "nope", more, "--append")


def test_bad_input_writes_nothing(cli: CLI) -> None:
    bad = jsonl(cli.folder, "bad.jsonl", '{"id": "a"}\n\n{"id": "b"}\nnot json\n')
    error = cli.fails(2, "dataset", "add", "leads", bad)
    assert error.startswith("batchyard: error: bad.jsonl:4: ")
    dup = jsonl(cli.folder, "dup.jsonl", '{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    error = cli.fails(2, "dataset", "add", "leads", dup)
    assert "dup.jsonl:3, key 'a': duplicate key (first used on line 1)" in error
    empty = jsonl(cli.folder, "empty.jsonl", "")
    assert "empty.jsonl: no rows: the input is empty" in cli.fails(
        2, "dataset", "add", "leads", empty
    )
    error = cli.fails(2, "dataset", "add", "leads", "leads.csv", "--csv-types", "employees=bool")
    assert "leads.csv:2" in error and "employees" in error
    nul = jsonl(cli.folder, "nul.jsonl", [{"id": "a"}, {"id": "b", "f\x00": 1}])
    error = cli.fails(2, "dataset", "add", "leads", nul)
    assert "nul.jsonl:2, key 'b': field name 'f\\x00' holds a NUL character (U+0000)" in error
    assert not (cli.folder / "yard.db").exists()  # nothing written, not even the file
    add_leads(cli)
    # An append that fails on its second row leaves the dataset as it was.
    clash = jsonl(cli.folder, "clash.jsonl", [{"id": "l9"}, {"id": "l2"}])
    error = cli.fails(2, "dataset", "add", "leads", clash, "--append")
    assert "clash.jsonl:2, key 'l2': duplicate key" in error
    assert datasets(cli)[0]["rows"] == 5
    assert "not a dataset name" in cli.fails(2, "dataset", "add", "no/pe", "leads.csv")


def test_filters_that_cannot_be_answered_are_refused(cli: CLI) -> None:
    add_leads(cli)
    error = cli.fails(2, "dataset", "show", "leads", "--where", "industy=SaaS")
    assert error.strip() == (
        "batchyard: error: no row of 'leads' has a field 'industy'; its fields: id, name, "
        "industry, employees"
    )
    error = cli.fails(2, "dataset", "show", "leads", "--where", "employees>=lots")
    assert "'employees' holds numbers, and 'lots' is not a number" in error
    assert "is not a condition" in cli.fails(2, "dataset", "show", "leads", "--where", "bare")
    # CSV is text unless typed: a number compared with text is refused with the way out.
    cli.ok("dataset", "add", "raw", "leads.csv")
    error = cli.fails(2, "dataset", "show", "raw", "--where", "employees>=100")
    assert "holds text, so '>=' would compare text" in error
    assert "dataset add --csv-types employees=int" in error
    assert "not a page cursor" in cli.fails(2, "dataset", "show", "leads", "--cursor", "zz")


def test_submit_a_dataset_selection(cli: CLI) -> None:
    add_leads(cli)
    status = cli.json("submit", "e2etasks:report", "--dataset", "leads", "--where", "industry=SaaS")
    assert status["counts"]["total"] == 3
    assert status["metadata"] == {"dataset": "leads", "where": ["industry=SaaS"], "rows": 3}
    items = cli.json("items", status["id"], "--payload")
    assert [(i["key"], i["position"]) for i in items] == [("l1", 1), ("l3", 2), ("l4", 3)]
    assert items[2]["payload"]["employees"] == 900
    said = cli("submit", "e2etasks:report", "--dataset", "leads", "--keys", "l5,l2")
    assert said.returncode == 0 and "2 items queued as" in said.stderr
    cli.work_until_idle()
    results = [json.loads(line) for line in cli.ok("results", said.stdout.strip()).splitlines()]
    assert [(r["key"], r["result"]) for r in results] == [
        ("l2", {"lead": "Globex"}),
        ("l5", {"lead": "Umbrella"}),
    ]
    # Under an idempotency key the same selection makes one batch, another is refused.
    keyed = ["submit", "e2etasks:report", "--dataset", "leads", "--keys", "l1", "--idempotency-key"]
    first = cli.ok(*keyed, "d1").strip()
    again = cli(
        "submit", "e2etasks:report", "--dataset", "leads", "--keys", "l1", "--idempotency-key", "d1"
    )
    assert again.stdout.strip() == first and "nothing written" in again.stderr
    assert "d1" in cli.fails(
        1,
        "submit",
        "e2etasks:report",
        "--dataset",
        "leads",
        "--keys",
        "l2",
        "--idempotency-key",
        "d1",
    )
    # The dataset can go; its batches keep their items.
    cli.ok("dataset", "delete", "leads")
    assert cli.json("status", status["id"])["counts"]["total"] == 3


def test_a_dataset_submission_that_picks_nothing_is_refused(cli: CLI) -> None:
    add_leads(cli)
    refusals = [
        (["--where", "industry=Mining"], "no rows of 'leads' match industry=Mining"),
        (
            ["--where", "industry=SaaS", "--where", "employees>5000"],
            "no rows of 'leads' match industry=SaaS and employees>5000",
        ),
        (["--keys", "l1,l77"], "'leads' has no row with key 'l77'"),
        (["--where", "size=3"], "no row of 'leads' has a field 'size'; its fields: id, name"),
    ]
    for extra, message in refusals:
        error = cli.fails(2, "submit", "e2etasks:report", "--dataset", "leads", *extra)
        assert message in error, error
    error = cli.fails(2, "submit", "e2etasks:report", "leads.csv", "--dataset", "leads")
    assert "--dataset takes the items from the dataset: give no INPUT file" in error
    error = cli.fails(2, "submit", "e2etasks:report", "leads.csv", "--where", "a=1")
    assert "--where and --keys pick rows of a dataset: add --dataset NAME" in error
    error = cli.fails(2, "submit", "e2etasks:report", "--dataset", "leads", "--open")
    assert "--open cannot be used with --dataset" in error
    assert "no dataset 'nope'" in cli.fails(1, "submit", "e2etasks:report", "--dataset", "nope")
    assert cli.batches() == []


def test_generation_batches_with_count(cli: CLI) -> None:
    status = cli.json("submit", "e2etasks:question", "--count", "2200", "--param", "topic=owls")
    assert status["counts"]["total"] == 2200
    assert (status["params"], status["metadata"]) == ({"topic": "owls"}, {"count": 2200})
    cli.work_until_idle()
    results = [json.loads(line) for line in cli.ok("results", status["id"]).splitlines()]
    assert [r["key"] for r in results[:3]] == ["0", "1", "2"]
    assert results[-1] == {
        **results[-1],
        "key": "2199",
        "result": {"q": "question 2199 about owls"},
    }
    assert len(results) == 2200
    # The same count and options with an idempotency key: one batch.
    command = ["submit", "e2etasks:question", "--count", "5", "--param", "topic=x"]
    first = cli.ok(*command, "--idempotency-key", "q1").strip()
    assert cli.ok(*command, "--idempotency-key", "q1").strip() == first
    # run works a generation batch here and now.
    done = cli("run", "e2etasks:question", "--count", "3", "--param", "topic=moss", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["succeeded"] == 3


def test_bad_counts_are_refused_and_write_nothing(cli: CLI) -> None:
    for count in ("0", "-3", "many"):
        error = cli.fails(2, "submit", "e2etasks:question", "--count", count)
        assert f"argument --count: '{count}'" in error, error
    error = cli.fails(2, "submit", "e2etasks:question", "leads.csv", "--count", "5")
    assert "--count makes the items: give no INPUT file (leads.csv was given)" in error
    error = cli.fails(2, "submit", "e2etasks:question", "--count", "5", "--dataset", "x")
    assert "--dataset and --count cannot be used together" in error
    error = cli.fails(2, "submit", "e2etasks:question")
    assert "name an INPUT file (or -), --dataset NAME or --count N" in error
    assert not (cli.folder / "yard.db").exists()
