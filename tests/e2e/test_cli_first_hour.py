"""What a newcomer meets in the first hour, through the installed ``batchyard`` command:
what ``submit --batch`` says it added, a worker in a folder with no database, the age
``prune`` reads back, ``--version``, "did you mean" for flags, ``tasks``, ``status`` with no
id, one item whole (``item``) and the help texts that must say what the code does."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batches import BATCHYARD, CLI, TASKS, jsonl, rows


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "e2etasks.py").write_text(TASKS)
    return CLI(tmp_path)


def bare(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``batchyard ARGS`` with no --db and no $BATCHYARD_DB: the store is the folder's."""
    env = {k: v for k, v in os.environ.items() if k != "BATCHYARD_DB"}
    return subprocess.run(
        [str(BATCHYARD), *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- item 5: what is said is what happened -------------------------------------------------


def test_submit_to_an_open_batch_says_how_many_it_added(cli: CLI) -> None:
    batch_id = cli.ok(
        "submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(2)), "--open"
    ).strip()
    more = jsonl(cli.folder, "b.jsonl", [{"id": "k3", "n": 3}])
    done = cli("submit", "e2etasks:work", more, "--batch", batch_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == batch_id
    assert f"1 item added to {batch_id}, 3 in all" in done.stderr
    assert cli.json("status", batch_id)["counts"]["total"] == 3


def test_worker_in_a_folder_with_no_database_refuses_and_creates_none(tmp_path: Path) -> None:
    done = bare(tmp_path, "worker", "--until-idle")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "no database at batchyard.db" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_prune_says_the_age_in_words(cli: CLI) -> None:
    cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(1)))
    assert cli.ok("prune", "--older-than", "7d").strip() == (
        "deleted 0 finished batches older than 7 days"
    )
    assert cli.ok("prune", "--older-than", "90s").strip().endswith("older than 90 seconds")
    assert cli.json("prune", "--older-than", "7d")["older_than"] == 7 * 86400


# -- item 13: help that says what the code does ---------------------------------------------


def test_submit_help_says_concurrency_caps_the_batch_across_workers(tmp_path: Path) -> None:
    done = bare(tmp_path, "submit", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--concurrency N items of this batch in flight at once, across all workers" in text
    assert "per worker" not in text


@pytest.mark.parametrize("command", ["list", "items", "logs", "status", "submit", "estimate"])
def test_help_has_no_stray_backslash_line(tmp_path: Path, command: str) -> None:
    done = bare(tmp_path, command, "--help")
    assert done.returncode == 0
    assert "\\" not in [line.strip() for line in done.stdout.splitlines()]
    assert "--json" in done.stdout


# -- item 6: what a user reaches for --------------------------------------------------------


def test_version_comes_from_the_installed_package(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = bare(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"batchyard {version('batchyard')}"


def test_a_mistyped_flag_gets_a_suggestion_from_its_command(cli: CLI) -> None:
    err = cli.fails(2, "submit", "e2etasks:work", "in.jsonl", "--concurency", "3")
    assert "usage: batchyard submit" in err
    assert "unrecognized arguments: --concurency 3; did you mean --concurrency?" in err
    err = cli.fails(2, "worker", "--until-idel")
    assert "did you mean --until-idle?" in err
    assert "did you mean" not in cli.fails(2, "status", "--zzzzzz")
    err = cli.fails(2, "status", "-v")
    assert "-v goes before the command: 'batchyard -v ... status ...'" in err
    assert not (cli.folder / "yard.db").exists()


TASK_MODULE = '''
from batchyard import task
from json import dumps  # imported, not defined here: not offered


def enrich(item, ctx):
    """Enrich one lead.

    More than the first paragraph."""
    return item


@task(max_attempts=5)
async def score(item):
    return 1


def _helper(item):
    return item


def no_item():
    return 0
'''


def test_tasks_lists_the_builtins_and_what_a_module_offers(cli: CLI) -> None:
    builtins = {t["name"]: t for t in cli.json("tasks")}
    assert {"llm", "batchyard.demo:score_lead"} <= set(builtins)
    assert builtins["llm"]["description"].startswith("The built-in llm task: one chat completion")
    table = cli.ok("tasks")
    assert "llm" in table and "one chat completion per item" in table

    (cli.folder / "mymod.py").write_text(TASK_MODULE)
    offered = cli.json("tasks", "mymod")
    assert [(t["name"], t["decorated"], t["max_attempts"]) for t in offered] == [
        ("mymod:enrich", False, 3),
        ("mymod:score", True, 5),
    ]
    assert offered[0]["description"] == "Enrich one lead."
    assert cli.json("tasks", "mymod.py") == offered
    lines = cli.ok("tasks", "mymod").splitlines()
    assert lines[1].split()[:2] == ["mymod:enrich", "function"]
    assert lines[2].split()[:2] == ["mymod:score", "@task"]


def test_tasks_of_a_module_that_cannot_be_imported_or_offers_none(cli: CLI) -> None:
    assert "cannot import module 'nosuch'" in cli.fails(2, "tasks", "nosuch")
    (cli.folder / "broken.py").write_text("raise RuntimeError('boom')\n")
    assert "importing module 'broken' failed: RuntimeError: boom" in cli.fails(2, "tasks", "broken")
    (cli.folder / "empty.py").write_text("X = 1\n")
    assert "module 'empty' offers no tasks" in cli.fails(1, "tasks", "empty")


def test_status_without_an_id_shows_the_newest_batch(cli: CLI) -> None:
    first = cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(1))).strip()
    newest = cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "b.jsonl", rows(2))).strip()
    done = cli("status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == newest != first
    assert done.stderr.strip() == f"the newest batch: {newest}"
    assert newest in cli.ok("status").splitlines()[0]


def test_status_without_an_id_on_an_empty_store_says_so(cli: CLI) -> None:
    batch_id = cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(1))).strip()
    cli.ok("cancel", batch_id)
    cli.ok("delete", batch_id)
    err = cli.fails(1, "status")
    assert f"no batches in {cli.folder / 'yard.db'} yet: submit one first" in err


# -- item 7: one item, whole -----------------------------------------------------------------

ITEM_TASKS = """
from batchyard import task


@task(retry_backoff=0.01, retry_backoff_max=0.02)
def flaky(item, ctx):
    ctx.log(f"attempt {ctx.attempt} on {item['id']}")
    ctx.usage(tokens_in=10, tokens_out=4, cost=0.001)
    ctx.metric("size", len(item.get("text", "")))
    if item.get("fail") or ctx.attempt == 1:
        raise ValueError(f"{item['id']} went wrong on attempt {ctx.attempt}")
    return {"echo": item.get("text", "")[:5], "tags": ["a", "b"]}
"""


@pytest.fixture
def worked(cli: CLI) -> tuple[CLI, str]:
    """A finished batch of three items: k1 succeeds on its second attempt, k2 fails twice,
    big has a large payload and succeeds on its second attempt."""
    (cli.folder / "itemtasks.py").write_text(ITEM_TASKS)
    items: list[dict[str, Any]] = [
        {"id": "k1", "text": "hello world"},
        {"id": "k2", "fail": True},
        {"id": "big", "text": "x" * 200_000, "rows": [{"n": n} for n in range(2000)]},
    ]
    batch_id = cli.ok(
        "submit", "itemtasks:flaky", jsonl(cli.folder, "in.jsonl", items), "--max-attempts", "2"
    ).strip()
    cli.work_until_idle()
    return cli, batch_id


def test_item_json_has_the_payload_result_usage_and_every_attempt(
    worked: tuple[CLI, str],
) -> None:
    cli, batch_id = worked
    item = cli.json("item", batch_id, "k1")
    assert (item["key"], item["state"], item["attempts"]) == ("k1", "succeeded", 2)
    assert item["payload"] == {"id": "k1", "text": "hello world"}
    assert item["result"] == {"echo": "hello", "tags": ["a", "b"]}
    assert item["usage"]["tokens_in"] == 20 and item["metrics"] == {"size": 11.0}
    first, second = item["runs"]
    assert first["attempt"] == 1 and "went wrong on attempt 1" in first["error"]
    # Every attempt says when and where it ran, the failed first one too.
    assert first["started_at"] <= first["finished_at"] and first["duration"] >= 0
    assert first["worker"] and first["worker"] == second["worker"] == item["worker"]
    assert [log["message"] for log in first["logs"] if log["kind"] == "log"] == ["attempt 1 on k1"]
    assert (second["attempt"], second["error"]) == (2, None)
    assert second["started_at"] == item["started_at"] and second["duration"] == item["duration"]
    assert [log["message"] for log in second["logs"]] == ["attempt 2 on k1"]


def test_item_text_shows_input_result_error_and_attempts(worked: tuple[CLI, str]) -> None:
    cli, batch_id = worked
    text = cli.ok("item", batch_id, "k2")
    assert text.startswith(f"item      k2  (position 2 of {batch_id})\n")
    assert "state     failed  after 2 attempts" in text
    assert "\nerror\n  ValueError: k2 went wrong on attempt 2\n" in text
    assert '\npayload\n  {\n    "id": "k2",\n    "fail": true\n  }\n' in text
    assert "\nresult\n  -\n" in text
    attempts = text.split("\nattempts\n", 1)[1]
    assert "  #1  started " in attempts and "  #2  started " in attempts
    assert attempts.splitlines()[0].endswith(f"  on {cli.json('item', batch_id, 'k2')['worker']}")
    assert "attempt 1 on k2" in attempts and "attempt 2 on k2" in attempts
    # Each attempt's traceback ends with its error, which is not printed a second time.
    assert attempts.count("ValueError: k2 went wrong on attempt 1") == 1
    assert attempts.count("Traceback (most recent call last)") == 2


def test_item_with_a_large_payload_prints_it_whole(worked: tuple[CLI, str]) -> None:
    cli, batch_id = worked
    item = cli.json("item", batch_id, "big")
    assert len(item["payload"]["text"]) == 200_000 and len(item["payload"]["rows"]) == 2000
    text = cli.ok("item", batch_id, "big")
    assert '    "rows": [\n      {\n        "n": 0\n      },' in text
    assert text.count('"n": ') == 2000


def test_item_with_an_unknown_key_names_the_key_and_the_batch(worked: tuple[CLI, str]) -> None:
    cli, batch_id = worked
    err = cli.fails(1, "item", batch_id, "nope")
    assert f"batch '{batch_id}' has no item with key 'nope'" in err
    assert "no batch 'batch_missing'" in cli.fails(1, "item", "batch_missing", "k1")


def test_items_json_with_payload_adds_each_input(worked: tuple[CLI, str]) -> None:
    cli, batch_id = worked
    plain = cli.json("items", batch_id)
    assert all("payload" not in row for row in plain)
    rows = cli.json("items", batch_id, "--payload")
    assert [row["payload"].get("text", "")[:5] for row in rows] == ["hello", "", "xxxxx"]
    assert [{k: v for k, v in row.items() if k != "payload"} for row in rows] == plain
    err = cli.fails(2, "items", batch_id, "--payload")
    assert "--payload goes with --json" in err


# -- a key field that no row can have ------------------------------------------------------


def test_key_field_missing_from_a_csv_header_is_refused_and_creates_nothing(cli: CLI) -> None:
    (cli.folder / "orders.csv").write_text("order_id,qty\no1,2\no2,3\n")
    err = cli.fails(2, "submit", "e2etasks:work", "orders.csv", "--key-field", "orderid")
    assert (
        "orders.csv:1: --key-field 'orderid' is not a column of the header "
        "(its columns: order_id, qty)"
    ) in err
    assert cli.batches() == []
    err = cli.fails(2, "dataset", "add", "orders", "orders.csv", "--key-field", "orderid")
    assert "orders.csv:1: --key-field 'orderid' is not a column" in err
    # The default key field, id, may be absent: then items are keyed by their position.
    batch_id = cli.ok("submit", "e2etasks:work", "orders.csv").strip()
    assert [row["key"] for row in cli.json("items", batch_id)] == ["1", "2"]
    batch_id = cli.ok("submit", "e2etasks:work", "orders.csv", "--key-field", "order_id").strip()
    assert [row["key"] for row in cli.json("items", batch_id)] == ["o1", "o2"]


def test_key_field_with_count_or_dataset_is_refused_not_ignored(cli: CLI) -> None:
    err = cli.fails(2, "submit", "e2etasks:work", "--count", "3", "--key-field", "x")
    assert "--key-field cannot be used with --count" in err
    err = cli.fails(2, "submit", "e2etasks:work", "--dataset", "d", "--key-field", "x")
    assert "--key-field cannot be used with --dataset" in err
    assert cli.batches() == []


def test_token_list_of_an_empty_store_suggests_a_command_for_that_store(cli: CLI) -> None:
    cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(1)))
    said = cli.ok("token", "list")
    assert said.strip() == (
        f"no tokens in {cli.db} yet: 'batchyard --db {cli.db} token create NAME --role operator'"
    )


def test_run_of_an_open_batch_says_it_waits_for_a_seal_and_ends_after_one(cli: CLI) -> None:
    jsonl(cli.folder, "a.jsonl", rows(2))
    run = subprocess.Popen(
        [str(BATCHYARD), "--db", cli.db, "run", "e2etasks:work", "a.jsonl", "--open"],
        cwd=cli.folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        first = run.stdout.readline()
        assert first.startswith("batch batch_"), first
        batch_id = first.split()[1].rstrip(":")
        said = run.stdout.readline().strip()
        assert said == (
            f"the batch is open: run waits for more items ('batchyard --db {cli.db} submit ... "
            f"--batch {batch_id}') until 'batchyard --db {cli.db} seal {batch_id}'"
        )
        cli.ok("seal", batch_id)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert re.search(r"^items +2: 2 succeeded", out, re.M), out


def test_validate_of_a_task_without_a_row_check_does_not_say_rows_render(cli: CLI) -> None:
    said = cli.ok("validate", "e2etasks:work", jsonl(cli.folder, "a.jsonl", rows(3)))
    assert said.strip() == (
        "3 rows read: every row is valid input; e2etasks:work has no check of its own for a row"
    )


def test_help_names_open_only_for_the_commands_that_take_it(tmp_path: Path) -> None:
    for name in ("submit", "run"):
        text = " ".join(bare(tmp_path, name, "--help").stdout.split())
        assert "Empty input is an error unless --open." in text, name
    commands: list[tuple[str, ...]] = [("validate",), ("estimate",), ("dataset", "add")]
    for command in commands:
        done = bare(tmp_path, *command, "--help")
        assert done.returncode == 0
        assert "--open" not in done.stdout, command
        assert "creates no batch" not in " ".join(done.stdout.split()), command
