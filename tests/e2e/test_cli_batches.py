"""The installed ``batchyard`` command, run as a subprocess in a fresh folder against real
files and a real SQLite database: submit, seal, list, items, logs and the control commands.

Items are worked by a small worker process driven through the Python API, so these tests do
not depend on the ``worker`` command.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BATCHYARD = Path(sys.executable).parent / "batchyard"

STATUS_KEYS = {
    "id",
    "name",
    "task",
    "state",
    "counts",
    "progress",
    "usage",
    "sealed",
    "concurrency",
    "max_attempts",
    "timeout",
    "priority",
    "metadata",
    "params",
    "round",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "elapsed",
    "throughput",
    "eta",
    "eta_range",
    "stalled",
    "quiet",
    "budget",
    "pause_reason",
    "limits",
    "waiting_on",
    "projected_cost",
    "template",
    "rerun_of",
    "owner",
}
COUNT_KEYS = {
    "pending",
    "running",
    "retry_wait",
    "succeeded",
    "failed",
    "cancelled",
    "waiting",
    "total",
}
ITEM_KEYS = {
    "key",
    "position",
    "state",
    "attempts",
    "duration",
    "error",
    "error_type",
    "started_at",
    "finished_at",
}
CSV_COLUMNS = (
    "id,name,task,state,total,pending,running,retry_wait,succeeded,failed,cancelled,"
    "progress,tokens_in,tokens_out,cost,created_at,started_at,finished_at,template,rerun_of"
)

TASKS = """
def work(item, ctx):
    ctx.log(f"working on {item['id']}")
    ctx.progress(0.5, "half way")
    if item.get("fail"):
        raise ValueError(f"item {item['id']} is bad")
    return {"double": int(item["n"]) * 2}
"""


class CLI:
    """``batchyard --db ... ARGS`` in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = f"sqlite:///{folder / 'yard.db'}"

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BATCHYARD), "--db", self.db, *args],
            cwd=self.folder,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def fails(self, code: int, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stderr

    def batches(self) -> list[dict[str, Any]]:
        """The batches in the store; none when nothing ever created the database file."""
        if not Path(self.db.removeprefix("sqlite:///")).exists():
            return []
        listed: list[dict[str, Any]] = json.loads(self.ok("list", "--format", "json"))
        return listed

    def work_until_idle(self) -> None:
        """Work every queued item in a separate process, through the Python API."""
        script = (
            "import sys; from batchyard import Yard; "
            "Yard(sys.argv[1]).run_until_idle(poll_interval=0.02, control_interval=0.02)"
        )
        subprocess.run(
            [sys.executable, "-c", script, self.db], cwd=self.folder, check=True, timeout=60
        )


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "e2etasks.py").write_text(TASKS)
    return CLI(tmp_path)


def jsonl(folder: Path, name: str, rows: list[dict[str, Any]] | str) -> str:
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    (folder / name).write_text(text)
    return name


def rows(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"k{i}", "n": i, **extra} for i in range(1, n + 1)]


# -- submit --------------------------------------------------------------------------------


def test_submit_prints_the_batch_id_and_status_reads_it(cli: CLI) -> None:
    out = cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "in.jsonl", rows(5)))
    batch_id = out.strip()
    assert batch_id.startswith("batch_") and "\n" not in batch_id

    status = cli.json("status", batch_id)
    assert set(status) == STATUS_KEYS | {"error_clusters"}
    assert status["error_clusters"] == []
    assert set(status["counts"]) == COUNT_KEYS
    assert (status["state"], status["counts"]["pending"], status["task"]) == (
        "queued",
        5,
        "e2etasks:work",
    )
    assert status["metadata"] == {"input": "in.jsonl"}


def test_submit_json_prints_the_status_object_with_the_options(cli: CLI) -> None:
    (cli.folder / "prompt.txt").write_text("be brief")
    status = cli.json(
        "submit",
        "json:dumps",
        jsonl(cli.folder, "in.jsonl", rows(3)),
        "--name",
        "nightly",
        "--concurrency",
        "2",
        "--max-attempts",
        "5",
        "--timeout",
        "90s",
        "--priority",
        "-1",
        "--param",
        "model=small",
        "--param",
        "temperature=0.5",
        "--param",
        "prompt=@prompt.txt",
    )
    assert set(status) == STATUS_KEYS
    assert (status["name"], status["concurrency"], status["max_attempts"]) == ("nightly", 2, 5)
    assert (status["timeout"], status["priority"], status["counts"]["total"]) == (90.0, -1, 3)
    assert status["params"] == {"model": "small", "temperature": 0.5, "prompt": "be brief"}


def test_submit_reads_csv_and_stdin(cli: CLI) -> None:
    (cli.folder / "in.csv").write_text('id,n,note\n1,10,"a, b"\n2,20,"two\nlines"\n')
    from_csv = cli.json("submit", "json:dumps", "in.csv")
    from_stdin = cli.json("submit", "json:dumps", "-", stdin='{"id": "x"}\n\n{"id": "y"}\n')
    csv_stdin = cli.json("submit", "json:dumps", "-", "--format", "csv", stdin="id\na\nb\nc\n")
    assert [b["counts"]["total"] for b in (from_csv, from_stdin, csv_stdin)] == [2, 2, 3]
    items = cli.json("items", from_csv["id"])
    assert [item["key"] for item in items] == ["1", "2"]


#: The README's task, fed a CSV: its values are text, so it needs --csv-types.
README_TASK = """
def enrich(item, ctx):
    if item["employees"] == 0:
        raise ValueError(f"{item['name']} has no employees")
    return {"company": item["name"], "score": min(100, item["employees"] // 10)}
"""
LEADS_CSV = "id,name,employees,zip\nlead-1,Acme,120,01234\nlead-2,Globex,0,02139\n"


def test_csv_types_make_the_readme_task_work_on_a_csv(cli: CLI) -> None:
    (cli.folder / "readme_tasks.py").write_text(README_TASK)
    (cli.folder / "leads.csv").write_text(LEADS_CSV)

    untyped = cli("run", "readme_tasks:enrich", "leads.csv", "--max-attempts", "1", "--json")
    assert untyped.returncode == 1
    errors = {i["key"]: i["error"] for i in cli.json("items", json.loads(untyped.stdout)["id"])}
    assert errors["lead-1"] == "TypeError: unsupported operand type(s) for //: 'str' and 'int'"

    done = cli(
        "run", "readme_tasks:enrich", "leads.csv", "--max-attempts", "1", "--json",
        "--csv-types", "employees=int",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # Globex has no employees, as it should
    status = json.loads(done.stdout)
    assert status["counts"]["succeeded"] == 1 and status["counts"]["failed"] == 1
    rows = [json.loads(line) for line in cli.ok("results", status["id"]).splitlines()]
    assert rows[0]["result"] == {"company": "Acme", "score": 12}
    assert rows[1]["error"] == "ValueError: Globex has no employees"


@pytest.mark.parametrize("command", ["submit", "run", "validate", "estimate"])
def test_a_csv_value_that_does_not_parse_exits_2_and_writes_nothing(cli: CLI, command: str) -> None:
    (cli.folder / "leads.csv").write_text(LEADS_CSV + "lead-3,Initech,many,10001\n")

    # estimate is for the llm task; reading its input comes before any call.
    task = ["llm", "--param", "model=gpt-4o-mini", "--param", "template={{ name }}"]
    task = task if command == "estimate" else ["json:dumps"]
    stderr = cli.fails(2, command, task[0], "leads.csv", *task[1:], "--csv-types", "employees=int")

    assert stderr.startswith(
        "batchyard: error: leads.csv:4: column 'employees' (int): 'many' is not a whole number"
    ), stderr
    assert cli.batches() == []
    assert not (cli.folder / "yard.db").exists()


def test_bad_csv_types_exit_2(cli: CLI) -> None:
    (cli.folder / "leads.csv").write_text(LEADS_CSV)
    (cli.folder / "leads.jsonl").write_text('{"id": 1}\n')

    assert "unknown type 'integer'" in cli.fails(
        2, "submit", "json:dumps", "leads.csv", "--csv-types", "employees=integer"
    )
    assert "--csv-types names 'staff', not a column" in cli.fails(
        2, "submit", "json:dumps", "leads.csv", "--csv-types", "staff=int"
    )
    assert "apply to CSV input; leads.jsonl is read as jsonl" in cli.fails(
        2, "submit", "json:dumps", "leads.jsonl", "--csv-types", "id=int"
    )
    assert cli.batches() == []


BAD_INPUTS = [
    ("bad.jsonl", '{"id": 1}\n\n{"id": 2,}\n', "bad.jsonl:3: not valid JSON"),
    ("bad.jsonl", '{"id": 1}\n[1, 2]\n', "bad.jsonl:2: not a JSON object"),
    ("bad.jsonl", '{"id": 1}\n{"id": 2}\n{"id": 1}\n', "bad.jsonl:3, key '1': duplicate key"),
    ("bad.jsonl", '{"id": 1}\n{"t": "' + "x" * (1 << 20) + '"}\n', "bad.jsonl:2: the line is"),
    ("bad.csv", "id,n\n1,2\n3\n", "bad.csv:3: the record has 1 fields; the header has 2"),
    ("bad.txt", '{"id": 1}\n', "bad.txt: cannot tell the format"),
    ("empty.jsonl", "\n", "empty.jsonl: no items"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_INPUTS)
def test_a_bad_input_exits_2_naming_file_and_line_and_leaves_no_batch(
    cli: CLI, name: str, text: str, message: str
) -> None:
    (cli.folder / name).write_text(text)
    stderr = cli.fails(2, "submit", "json:dumps", name)
    assert stderr.startswith(f"batchyard: error: {message}")
    assert cli.batches() == []


def test_invalid_utf8_exits_2_and_leaves_no_batch(cli: CLI) -> None:
    (cli.folder / "bad.jsonl").write_bytes(b'{"id": 1}\n{"id": "\xff"}\n')
    stderr = cli.fails(2, "submit", "json:dumps", "bad.jsonl")
    assert "bad.jsonl:2: not valid UTF-8 (byte 0xff at column 9)" in stderr
    assert cli.batches() == []


def test_a_bad_line_on_stdin_is_named(cli: CLI) -> None:
    stderr = cli.fails(2, "submit", "json:dumps", "-", stdin='{"id": 1}\n"no"\n')
    assert "<stdin>:2: not a JSON object: the line holds a string" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "argument --concurrency: '0' must be at least 1"),
        (["--max-attempts", "x"], "argument --max-attempts: 'x' is not a whole number"),
        (["--timeout", "soon"], "argument --timeout: 'soon' is not a duration"),
        (["--timeout", "0"], "argument --timeout: '0': the time limit must be more than zero"),
        (["--priority", "high"], "argument --priority: 'high' is not a whole number"),
        (["--param", "novalue"], "argument --param: 'novalue' is not KEY=VALUE"),
        (["--param", "p=@missing.txt"], "cannot read 'missing.txt': No such file"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ],
)
def test_bad_submit_options_exit_2_with_a_clear_message(
    cli: CLI, args: list[str], message: str
) -> None:
    name = jsonl(cli.folder, "in.jsonl", rows(1))
    assert message in cli.fails(2, "submit", "json:dumps", name, *args)
    assert cli.batches() == []


def test_an_unknown_task_or_missing_file_is_refused(cli: CLI) -> None:
    name = jsonl(cli.folder, "in.jsonl", rows(1))
    assert "unknown task 'nosuchmodule:fn'" in cli.fails(2, "submit", "nosuchmodule:fn", name)
    assert "nope.jsonl: cannot open" in cli.fails(2, "submit", "json:dumps", "nope.jsonl")
    assert cli.batches() == []


def test_an_open_batch_takes_more_items_until_sealed(cli: CLI) -> None:
    empty = jsonl(cli.folder, "empty.jsonl", "")
    opened = cli.json("submit", "json:dumps", empty, "--open")
    assert (opened["sealed"], opened["counts"]["total"]) == (False, 0)
    batch_id = opened["id"]

    cli.ok("submit", "json:dumps", jsonl(cli.folder, "a.jsonl", rows(3)), "--batch", batch_id)
    more = cli.json("submit", "json:dumps", "-", "--batch", batch_id, stdin='{"id": "z"}\n')
    assert (more["id"], more["counts"]["total"]) == (batch_id, 4)

    stderr = cli.fails(2, "submit", "json:dumps", "a.jsonl", "--batch", batch_id)
    assert "a.jsonl:1, key 'k1': duplicate key (first used by item 1)" in stderr
    stderr = cli.fails(2, "submit", "json:dumps", "a.jsonl", "--batch", batch_id, "--name", "x")
    assert "--name cannot be used with --batch" in stderr

    sealed = cli.json("seal", batch_id)
    assert (sealed["sealed"], sealed["counts"]["total"]) == (True, 4)
    assert "takes no items" in cli.fails(
        1, "submit", "json:dumps", "-", "--batch", batch_id, stdin='{"id": "w"}\n'
    )


# -- list ----------------------------------------------------------------------------------


def test_list_is_newest_first_in_every_format(cli: CLI) -> None:
    ids = [
        cli.ok("submit", "json:dumps", jsonl(cli.folder, f"{i}.jsonl", rows(i + 1))).strip()
        for i in range(3)
    ]
    listed = cli.batches()
    assert [b["id"] for b in listed] == ids[::-1]
    assert all(set(b) == STATUS_KEYS for b in listed)
    assert [b["id"] for b in json.loads(cli.ok("list", "--json", "--limit", "2"))] == ids[:0:-1]

    table = cli.ok("list")
    assert table.index(ids[2]) < table.index(ids[1]) < table.index(ids[0])

    exported = list(csv.DictReader(io.StringIO(cli.ok("list", "--format", "csv"))))
    assert ",".join(exported[0]) == CSV_COLUMNS
    assert [(r["id"], r["total"], r["state"]) for r in exported] == [
        (ids[2], "3", "queued"),
        (ids[1], "2", "queued"),
        (ids[0], "1", "queued"),
    ]
    assert exported[0]["created_at"].endswith("+00:00")

    cli.ok("cancel", ids[1])
    assert [b["id"] for b in json.loads(cli.ok("list", "--json", "--state", "cancelled"))] == [
        ids[1]
    ]


def test_list_refuses_bad_values(cli: CLI) -> None:
    assert "'0' must be at least 1" in cli.fails(2, "list", "--limit", "0")
    assert "invalid choice: 'done'" in cli.fails(2, "list", "--state", "done")
    assert json.loads(cli.ok("list", "--json")) == []
    assert "no batches" in cli.ok("list")


# -- working, items, logs, control -----------------------------------------------------------


def test_items_logs_and_retry_after_a_real_run(cli: CLI) -> None:
    items = rows(4)
    items[2]["fail"] = True
    batch_id = cli.ok(
        "submit", "e2etasks:work", jsonl(cli.folder, "in.jsonl", items), "--max-attempts", "1"
    ).strip()
    cli.work_until_idle()

    listed = cli.json("items", batch_id)
    assert all(set(item) == ITEM_KEYS for item in listed)
    assert [(i["key"], i["state"], i["attempts"]) for i in listed] == [
        ("k1", "succeeded", 1),
        ("k2", "succeeded", 1),
        ("k3", "failed", 1),
        ("k4", "succeeded", 1),
    ]
    assert listed[2]["error"] == "ValueError: item k3 is bad"  # one line; the trace is logged
    assert listed[2]["error_type"] == "ValueError"
    assert [i["key"] for i in cli.json("items", batch_id, "--state", "failed")] == ["k3"]
    assert len(cli.json("items", batch_id, "--limit", "2")) == 2
    table = cli.ok("items", batch_id)
    assert "k3" in table and "ValueError: item k3 is bad" in table

    retried = cli.json("retry", batch_id)
    assert retried["retried"] == 1 and set(retried) == STATUS_KEYS | {"retried"}
    cli.work_until_idle()

    logs = cli.json("logs", batch_id, "k3")
    assert set(logs) == {"batch_id", "key", "state", "attempts", "error", "logs"}
    assert (logs["key"], logs["state"], logs["attempts"]) == ("k3", "failed", 2)
    kinds = [(line["attempt"], line["kind"], line["message"]) for line in logs["logs"]]
    for attempt in (1, 2):
        assert (attempt, "log", "working on k3") in kinds
        assert (attempt, "progress", "half way") in kinds
        errors = [m for a, k, m in kinds if (a, k) == (attempt, "error")]
        assert errors == ["ValueError: item k3 is bad"]
        traces = [m for a, k, m in kinds if (a, k) == (attempt, "traceback")]
        assert len(traces) == 1 and traces[0].startswith("Traceback (most recent call last)")
        assert traces[0].endswith("ValueError: item k3 is bad\n")
    assert all(set(line) == {"at", "attempt", "kind", "message"} for line in logs["logs"])
    text = cli.ok("logs", batch_id, "k3")
    assert "working on k3" in text and "item k3 is bad" in text

    assert "has no item with key 'nope'" in cli.fails(1, "logs", batch_id, "nope")


def test_pause_resume_cancel_delete_and_prune(cli: CLI) -> None:
    name = jsonl(cli.folder, "in.jsonl", rows(3))
    batch_id = cli.ok("submit", "json:dumps", name).strip()

    assert cli.json("pause", batch_id)["state"] == "paused"
    assert "paused" in cli.ok("status", batch_id)
    assert cli.json("resume", batch_id)["state"] == "queued"
    assert "cancel it before deleting it" in cli.fails(1, "delete", batch_id)
    cancelled = cli.json("cancel", batch_id)
    assert (cancelled["state"], cancelled["counts"]["cancelled"]) == ("cancelled", 3)
    assert "now cancelled" in cli.ok("cancel", batch_id)

    assert cli.json("delete", batch_id) == {"id": batch_id, "deleted": True}
    assert f"no batch '{batch_id}'" in cli.fails(1, "status", batch_id)

    done = cli.ok("submit", "json:dumps", name).strip()
    cli.work_until_idle()
    assert "only a failed or partially completed batch retries" in cli.fails(1, "retry", done)
    assert cli.json("prune", "--older-than", "7d") == {"deleted": 0, "older_than": 604800.0}
    assert [b["id"] for b in cli.batches()] == [done]
    assert cli.json("prune", "--older-than", "0s") == {"deleted": 1, "older_than": 0.0}
    assert cli.batches() == []
    assert "is not a duration" in cli.fails(2, "prune", "--older-than", "a week")
    assert "required: --older-than" in cli.fails(2, "prune")


def test_control_of_an_unknown_batch_exits_1(cli: CLI) -> None:
    # No database yet: said so, and none is created by asking.
    assert "no database at" in cli.fails(1, "status", "batch_nope")
    assert cli.batches() == []
    cli.ok("submit", "json:dumps", jsonl(cli.folder, "in.jsonl", rows(1)))
    for command in ("seal", "retry", "cancel", "pause", "resume", "delete", "items", "status"):
        assert "no batch 'batch_nope'" in cli.fails(1, command, "batch_nope")


# -- a million lines -------------------------------------------------------------------------

PEAK_RSS = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps([done.returncode, peak_kib, done.stdout, done.stderr]))
"""


def test_a_million_line_file_submits_with_flat_memory(cli: CLI) -> None:
    path = cli.folder / "million.jsonl"
    with path.open("w") as out:
        for start in range(0, 1_000_000, 50_000):
            out.write(
                "".join(
                    f'{{"id": "item-{i}", "n": {i}, "text": "some words here"}}\n'
                    for i in range(start, start + 50_000)
                )
            )
    command = [str(BATCHYARD), "--db", cli.db, "submit", "json:dumps", path.name, "--json"]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command],
        cwd=cli.folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    code, peak_kib, stdout, stderr = json.loads(done.stdout)
    assert code == 0, stderr
    # Linux reports KiB. A whole-file read would need several hundred MB for these items.
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    status = cli.json("status", json.loads(stdout)["id"])
    assert status["counts"]["total"] == 1_000_000


def test_retry_chosen_items_by_key(cli: CLI) -> None:
    items = rows(4)
    items[1]["fail"] = items[2]["fail"] = True
    batch_id = cli.ok(
        "submit", "e2etasks:work", jsonl(cli.folder, "in.jsonl", items), "--max-attempts", "1"
    ).strip()
    cli.work_until_idle()
    assert "item k1 is succeeded; only failed items retry" in cli.fails(
        1, "retry", batch_id, "--key", "k1"
    )
    assert "nope" in cli.fails(1, "retry", batch_id, "--key", "k3", "--key", "nope")
    assert "invalid choice: 'running'" in cli.fails(2, "retry", batch_id, "--state", "running")
    said = cli.ok("retry", batch_id, "--key", "k3")
    assert f"sent 1 failed item(s) of {batch_id} back to the queue" in said
    states = {i["key"]: i["state"] for i in cli.json("items", batch_id)}
    assert states == {"k1": "succeeded", "k2": "failed", "k3": "pending", "k4": "succeeded"}


# -- how run and worker end ------------------------------------------------------------------


def test_run_ends_with_the_report_and_the_commands_to_look_further(cli: CLI) -> None:
    items = rows(4)
    items[2]["fail"] = True
    done = cli("run", "e2etasks:work", jsonl(cli.folder, "in.jsonl", items), "--max-attempts", "1")

    assert done.returncode == 1, done.stderr  # one item failed
    (batch,) = cli.batches()
    report = cli.ok("report", batch["id"], "--no-save")
    assert "4: 3 succeeded, 1 failed, 0 cancelled  (partially_completed)" in report
    here = f"batchyard --db {cli.db}"
    # The report is the one `report` prints, bar the moment it was made (elapsed is fixed
    # once a batch has ended, so the whole text is).
    assert done.stdout.endswith(
        f"\n{report}\n"
        f"look further: {here} report {batch['id']}\n"
        f"              {here} items {batch['id']} --state failed\n"
        f"              {here} errors {batch['id']}\n"
        f"              {here} results {batch['id']} -o results.jsonl\n"
    ), done.stdout


def test_run_json_prints_the_final_status_and_the_rest_on_stderr(cli: CLI) -> None:
    done = cli("run", "e2etasks:work", jsonl(cli.folder, "in.jsonl", rows(3)), "--json")

    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status) == STATUS_KEYS
    assert status["state"] == "completed" and status["counts"]["succeeded"] == 3
    assert status["eta"] is None and status["progress"] == 1.0
    assert f"look further: batchyard --db {cli.db} report {status['id']}" in done.stderr


def test_worker_prints_a_line_per_batch_it_starts_and_ends(cli: CLI) -> None:
    failing = rows(3)
    failing[0]["fail"] = True
    first = cli.ok(
        "submit", "e2etasks:work", jsonl(cli.folder, "a.jsonl", failing), "--max-attempts", "1"
    ).strip()
    second = cli.ok("submit", "e2etasks:work", jsonl(cli.folder, "b.jsonl", rows(2))).strip()

    done = cli("worker", "--until-idle")

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert sorted(line for line in lines if "started" in line) == sorted(
        [
            f"worker: started {first} (task e2etasks:work, 3 items)",
            f"worker: started {second} (task e2etasks:work, 2 items)",
        ]
    )
    ended = {line.split()[1]: line for line in lines if "started" not in line}
    assert set(ended) == {first, second} and len(lines) == 4
    assert re.fullmatch(
        rf"worker: {first} partially_completed: 2 succeeded, 1 failed in \S+ m?s", ended[first]
    )
    assert re.fullmatch(
        rf"worker: {second} completed: 2 succeeded, 0 failed in \S+ m?s", ended[second]
    )
