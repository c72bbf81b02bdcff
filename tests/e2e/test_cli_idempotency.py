"""`submit --idempotency-key` through the real command: twenty processes submitting one file
at once make one batch and all print its id; the same key with another file is refused
with one line and writes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli_batches import BATCHYARD, CLI, TASKS, jsonl, rows


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "e2etasks.py").write_text(TASKS)
    return CLI(tmp_path)


def test_twenty_concurrent_submits_make_one_batch(cli: CLI) -> None:
    name = jsonl(cli.folder, "leads.jsonl", rows(3_000))
    command = [str(BATCHYARD), "--db", cli.db, "submit", "e2etasks:work", name]
    command += ["--idempotency-key", "q3-leads"]
    procs = [
        subprocess.Popen(
            command,
            cwd=cli.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 20, [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1, ids
    (batch_id,) = ids
    listed = cli.batches()
    assert [b["id"] for b in listed] == [batch_id]
    assert listed[0]["counts"]["total"] == 3_000
    said = [err for _, err in outputs]
    assert sum("queued as" in err for err in said) == 1, said
    assert sum("nothing written" in err for err in said) == 19, said


def test_the_same_key_with_other_input_is_refused(cli: CLI) -> None:
    first = jsonl(cli.folder, "a.jsonl", rows(3))
    other = jsonl(cli.folder, "b.jsonl", rows(4))
    batch_id = cli.ok("submit", "e2etasks:work", first, "--idempotency-key", "k").strip()
    # Again with the same file: the same batch, nothing written.
    assert cli.ok("submit", "e2etasks:work", first, "--idempotency-key", "k").strip() == batch_id
    error = cli.fails(1, "submit", "e2etasks:work", other, "--idempotency-key", "k")
    assert f"batch {batch_id}" in error and "'k'" in error and "other input" in error
    assert len(error.strip().splitlines()) == 1, error
    # Other options are other input too.
    cli.fails(1, "submit", "e2etasks:work", first, "--idempotency-key", "k", "--priority", "3")
    assert [b["id"] for b in cli.batches()] == [batch_id]
    assert cli.batches()[0]["counts"]["total"] == 3


def test_a_key_is_refused_with_an_append(cli: CLI) -> None:
    name = jsonl(cli.folder, "a.jsonl", rows(2))
    batch_id = cli.ok("submit", "e2etasks:work", name, "--open").strip()
    error = cli.fails(
        2, "submit", "e2etasks:work", name, "--batch", batch_id, "--idempotency-key", "k"
    )
    assert "--idempotency-key cannot be used with --batch" in error
