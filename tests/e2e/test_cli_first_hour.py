"""What a newcomer meets in the first hour, through the installed ``batchyard`` command:
what ``submit --batch`` says it added, a worker in a folder with no database, the age
``prune`` reads back, ``--version``, "did you mean" for flags, ``tasks``, ``status`` with no
id, one item whole (``item``) and the help texts that must say what the code does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
