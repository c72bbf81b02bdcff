"""Templates and re-runs through the installed ``batchyard`` command, in a fresh folder
against a real SQLite database; the local OpenAI server runs in the test process."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.testing.openai import FakeOpenAI
from tests.e2e.test_cli_llm import CLI, INSTANT, MODEL, SECRET, prompts

PROMPT = "Write about {{ topic }}.\nBe brief.\n"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(**INSTANT, keys=frozenset({SECRET})) as running:
        yield running


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "prompt.j2").write_text(PROMPT)
    return CLI(tmp_path)


def create(cli: CLI, server: FakeOpenAI, name: str = "lead-report", *extra: str) -> str:
    return cli.ok(
        "template",
        "create",
        name,
        "--task",
        "llm",
        "--param",
        "template=@prompt.j2",
        "--param",
        f"model={MODEL}",
        "--param",
        f"base_url={server.base_url}",
        "--author",
        "ann",
        *extra,
    )


def count_templates(cli: CLI) -> int:
    if not (cli.folder / "yard.db").exists():
        return 0
    return len(cli.json("template", "list", "--archived"))


def test_create_update_list_show_diff_and_archive(cli: CLI, server: FakeOpenAI) -> None:
    assert cli.ok("template", "list") == "no templates\n"  # and no database made for that
    assert cli.json("template", "list") == []
    assert not (cli.folder / "yard.db").exists()
    assert create(cli, server, "lead-report", "--description", "first") == (
        "lead-report@1 created (task llm, by ann)\n"
    )
    (cli.folder / "prompt2.j2").write_text("Write about {{ topic }}.\nBe very brief.\n")
    out = cli.ok(
        "template", "update", "lead-report", "--param", "template=@prompt2.j2",
        "--param", "max_tokens=50", "--author", "bo",
    )  # fmt: skip
    assert out == "lead-report@2 written (task llm, by bo)\n"
    v2 = cli.json("template", "show", "lead-report")
    assert (v2["ref"], v2["author"], v2["description"]) == ("lead-report@2", "bo", "first")
    assert v2["params"]["max_tokens"] == 50 and v2["params"]["model"] == MODEL
    assert [v["version"] for v in v2["versions"]] == [1, 2]
    assert cli.json("template", "show", "lead-report@1")["params"].get("max_tokens") is None

    diff = cli.ok("template", "diff", "lead-report", "1", "2")
    assert "-Be brief." in diff and "+Be very brief." in diff
    assert re.search(r"max_tokens\s+\(not set\)\s+50", diff), diff
    shown = cli.json("template", "diff", "lead-report", "1", "2")
    assert [c["name"] for c in shown["changes"]] == ["max_tokens"]

    listed = cli.ok("template", "list")
    assert "lead-report@2" in listed and "lead-report@1" not in listed
    assert cli.ok("template", "archive", "lead-report@2").startswith("lead-report@2 archived")
    text = cli.ok("template", "show", "lead-report")
    assert "lead-report@1" in text.splitlines()[0]  # the latest not archived
    assert re.search(r"2 archived", text), text
    assert cli.json("template", "list")[0]["ref"] == "lead-report@1"


def test_bad_templates_are_refused_and_nothing_is_written(cli: CLI, server: FakeOpenAI) -> None:
    base = ["template", "create", "x", "--task", "llm", "--param", f"model={MODEL}"]
    error = cli.fails(2, *base, "--param", "template=@prompt.j2", "--param", "temprature=1")
    assert "no parameter 'temprature'; did you mean 'temperature'?" in error
    error = cli.fails(2, *base, "--param", "template=Hello\n{{ topic }")
    assert "prompt template, line 2, column 10: unexpected '}'" in error
    error = cli.fails(2, "template", "create", "x", "--task", "no_such_module:fn")
    assert "unknown task" in error
    assert count_templates(cli) == 0
    assert not (cli.folder / "yard.db").exists()  # a failed first command leaves no file

    create(cli, server, "x")
    assert "exists already" in cli.fails(2, *base, "--param", "template=@prompt.j2")
    error = cli.fails(2, "template", "update", "x", "--param", "max_tokns=3")
    assert "did you mean 'max_tokens'?" in error
    error = cli.fails(2, "template", "update", "x", "--param", "system={% if %}")
    assert "system prompt, line 1, column" in error
    assert "nothing to update" in cli.fails(2, "template", "update", "x")
    assert "no template 'xx'; did you mean 'x'?" in cli.fails(2, "template", "show", "xx")
    assert "has no version 7" in cli.fails(2, "template", "show", "x@7")
    assert count_templates(cli) == 1


def test_submit_runs_a_version_with_overrides_and_records_it(cli: CLI, server: FakeOpenAI) -> None:
    create(cli, server)
    cli.ok("template", "update", "lead-report", "--param", "max_tokens=40")
    leads = prompts(cli, "leads.jsonl", 3)
    done = cli("submit", "--template", "lead-report", leads, "--param", "temperature=0.5")
    assert done.returncode == 0, done.stderr
    assert "(task llm, template lead-report@2)" in done.stderr
    batch = done.stdout.strip()
    status = cli.json("status", batch)
    assert status["template"] == "lead-report@2"
    assert (status["params"]["max_tokens"], status["params"]["temperature"]) == (40, 0.5)
    assert re.search(r"template\s+lead-report@2", cli.ok("status", batch))
    assert re.search(r"lead-report@2\s+queued", cli.ok("list"))
    rows = list(csv.DictReader(io.StringIO(cli.ok("list", "--format", "csv"))))
    assert (rows[0]["template"], rows[0]["rerun_of"]) == ("lead-report@2", "")

    older = cli.ok("submit", "--template", "lead-report@1", leads).strip()
    assert cli.json("status", older)["template"] == "lead-report@1"
    assert "max_tokens" not in cli.json("status", older)["params"]

    cli.ok("template", "archive", "lead-report@1")
    before = len(cli.batches())
    error = cli.fails(2, "submit", "--template", "lead-report@1", leads)
    assert error.strip() == (
        "batchyard: error: template 'lead-report' version 1 is archived; the latest is 2: "
        "use lead-report@2 or lead-report"
    )
    assert "has no version 9; the latest is 2" in cli.fails(
        2, "submit", "--template", "lead-report@9", leads
    )
    error = cli.fails(2, "submit", "--template", "lead-report", leads, "--param", "modl=x")
    assert "did you mean 'model'?" in error
    (cli.folder / "tasks.py").write_text("def echo(item):\n    return item\n")
    error = cli.fails(2, "submit", "tasks:echo", leads, "--template", "lead-report")
    assert "template lead-report@2 is for task llm, not tasks:echo" in error
    assert len(cli.batches()) == before


def test_rerun_failed_items_with_a_new_version_and_compare(cli: CLI, server: FakeOpenAI) -> None:
    create(cli, server)
    leads = prompts(cli, "leads.jsonl", 5, missing=(2, 4))  # these two fail to render
    done = cli("run", "--template", "lead-report", leads, "--param", "max_tokens=30")
    assert done.returncode == 1, done.stderr  # it ended with failures
    first = re.match(r"batch (batch_\w+): ", done.stdout)
    assert first, done.stdout
    old = first[1]
    assert server.stats().requests == 3
    (cli.folder / "prompt.j2").write_text("About {{ topic | default('a company') }}.\n")
    cli.ok("template", "update", "lead-report", "--param", "template=@prompt.j2")
    guess = cli.json("estimate", "--template", "lead-report", leads)
    assert (guess["items"], guess["calls"]) == (5, 5)
    assert (
        guess["output_source"] == "3 earlier answers (1 batch) of lead-report@1, the version before"
    )

    done = cli("rerun", old, "--state", "failed", "--template", "lead-report", "--name", "fix")
    assert done.returncode == 0, done.stderr
    new = done.stdout.strip()
    assert f"2 items of {old} queued as {new} (template lead-report@2)" in done.stderr
    status = cli.json("status", new)
    assert (status["rerun_of"], status["template"], status["name"]) == (old, "lead-report@2", "fix")
    assert status["params"]["max_tokens"] == 30  # the old command line's parameter is kept
    assert [i["key"] for i in cli.json("items", new)] == ["k2", "k4"]
    cli.ok("worker", "--until-idle", "--batch", new)
    assert cli.json("status", new)["counts"]["succeeded"] == 2
    assert server.stats().requests == 5

    table = cli.ok("compare", new)
    header = table.splitlines()[0]
    assert header.index(old) < header.index(new)
    assert re.search(r"template\s+lead-report@1\s+lead-report@2", table), table
    assert re.search(rf"re-run of\s+-\s+{old}", table), table
    assert cli.json("report", new, "--no-save")["batch"]["rerun_of"] == old
    shown = cli.json("template", "show", "lead-report")
    usage = {v["version"]: v["usage"] for v in shown["versions"]}
    assert (usage[1]["items"], usage[1]["succeeded"], usage[1]["failed"]) == (5, 3, 2)
    assert (usage[2]["items"], usage[2]["success_rate"]) == (2, 1.0)
    assert usage[2]["cost_per_item"] > 0 and usage[2]["tokens_per_item"] > 0
    text = cli.ok("template", "show", "lead-report")
    assert re.search(r"\*2\s+\S+ \S+\s+\S+\s+1\s+2\s+100\.0%\s+\d+\s+\$0\.\d{6}", text), text

    again = cli.ok("rerun", new).strip()  # the same version: every answer is cached
    cli.ok("worker", "--until-idle", "--batch", again)
    assert server.stats().requests == 5
    assert cli.json("status", again)["usage"]["cache_hits"] == 2


def test_rerun_refuses_what_it_cannot_do(cli: CLI, server: FakeOpenAI) -> None:
    create(cli, server)
    leads = prompts(cli, "leads.jsonl", 2)
    batch = cli.ok("submit", "--template", "lead-report", leads).strip()
    before = len(cli.batches())
    assert "nothing to re-run" in cli.fails(1, "rerun", batch, "--state", "failed")
    assert "no template 'nope'" in cli.fails(2, "rerun", batch, "--template", "nope")
    assert "no batch 'batch_0_x'" in cli.fails(1, "rerun", "batch_0_x")
    assert "is not a re-run" in cli.fails(2, "compare", batch)
    assert len(cli.batches()) == before
    assert json.loads(cli.ok("rerun", batch, "--json"))["rerun_of"] == batch
