"""The installed ``batchyard`` command with the built-in llm task, run as a subprocess in a
fresh folder against a real SQLite database; the fake OpenAI server runs in the test process
and the command calls it over loopback.

Every command's output is kept, and no test may let the API key into any of it, nor into
the database file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.testing.openai import FakeOpenAI

BATCHYARD = Path(sys.executable).parent / "batchyard"
SECRET = "sk-test-SECRET-do-not-leak-123"
WRONG_SECRET = "sk-test-WRONGSECRET-do-not-leak-456"
MODEL = "gpt-4o-mini"
TEMPLATE = "Tell me about {{ topic }}.\n"
#: No simulated latency: answers as fast as loopback allows.
INSTANT: dict[str, Any] = {"latency": 0.0, "latency_per_token": 0.0}
USAGE_KEYS = {
    "tokens_in",
    "tokens_out",
    "cost",
    "tokens_cached",
    "tokens_reasoning",
    "calls",
    "cache_hits",
    "saved_cost",
    "unpriced_calls",
    "cost_note",
}
ESTIMATE_KEYS = {
    "model",
    "items",
    "cached",
    "calls",
    "input_tokens",
    "input_exact",
    "output_tokens",
    "output_tokens_range",
    "output_source",
    "price",
    "cost",
    "cost_range",
    "duration_seconds",
    "bound_by",
}


class CLI:
    """``batchyard --db ... ARGS`` in one folder, with the API key in its environment; every
    output is kept in ``seen``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = f"sqlite:///{folder / 'yard.db'}"
        self.env = {
            name: value
            for name, value in os.environ.items()
            if name not in ("BATCHYARD_DB", "OPENAI_API_KEY")
        }
        self.env["OPENAI_API_KEY"] = SECRET
        self.seen: list[str] = []

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BATCHYARD), "--db", self.db, *args],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env if env is None else env,
        )
        self.seen += [done.stdout, done.stderr]
        return done

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, code: int, *args: str, env: dict[str, str] | None = None) -> str:
        done = self(*args, env=env)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stderr

    def batches(self) -> list[dict[str, Any]]:
        if not (self.folder / "yard.db").exists():
            return []
        listed: list[dict[str, Any]] = json.loads(self.ok("list", "--format", "json"))
        return listed


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(**INSTANT, keys=frozenset({SECRET})) as running:
        yield running


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[CLI]:
    (tmp_path / "p.j2").write_text(TEMPLATE)
    runner = CLI(tmp_path)
    yield runner
    # Whatever a test did, the key is in no output and nowhere in the database's files.
    for text in runner.seen:
        assert SECRET not in text and WRONG_SECRET not in text
    for path in tmp_path.glob("yard.db*"):
        data = path.read_bytes()
        assert SECRET.encode() not in data and WRONG_SECRET.encode() not in data


def prompts(cli: CLI, name: str, n: int, *, missing: tuple[int, ...] = ()) -> str:
    """A JSONL file of ``n`` rows; the rows numbered in ``missing`` lack their topic."""
    rows = [
        {"id": f"k{i}"} if i in missing else {"id": f"k{i}", "topic": f"topic number {i}"}
        for i in range(1, n + 1)
    ]
    (cli.folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return name


def llm_params(server: FakeOpenAI, *extra: str) -> list[str]:
    pairs = [f"model={MODEL}", "template=@p.j2", f"base_url={server.base_url}", *extra]
    return [arg for pair in pairs for arg in ("--param", pair)]


def batch_id_of(run_output: str) -> str:
    match = re.match(r"batch (batch_\w+): ", run_output)
    assert match, run_output
    return match[1]


# -- validate -------------------------------------------------------------------------------


def test_validate_names_the_line_and_the_field_a_row_lacks(cli: CLI) -> None:
    bad = prompts(cli, "prompts.jsonl", 5, missing=(4,))
    args = ["validate", "llm", bad, "--param", f"model={MODEL}", "--param", "template=@p.j2"]
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert "prompts.jsonl:line 4: template needs field 'topic'" in done.stdout
    assert "5 rows checked: 1 cannot render" in done.stdout

    shown = json.loads(cli(*args, "--json").stdout)
    assert (shown["task"], shown["checked"], shown["ok"], shown["complete"]) == (
        "llm",
        5,
        False,
        True,
    )
    (problem,) = shown["problems"]
    assert problem["line"] == 4 and "'topic'" in problem["message"]

    # A file where every row renders; no key is needed to check that.
    good = prompts(cli, "good.jsonl", 5)
    no_key = {name: value for name, value in cli.env.items() if name != "OPENAI_API_KEY"}
    done = cli("validate", "llm", good, *args[3:], env=no_key)
    assert done.returncode == 0, done.stderr
    assert "5 rows checked: every row renders" in done.stdout
    assert cli.batches() == []  # validating creates nothing


# -- run, status, estimate ------------------------------------------------------------------


def test_run_completes_and_status_shows_the_cost(cli: CLI, server: FakeOpenAI) -> None:
    name = prompts(cli, "prompts.jsonl", 6)
    out = cli.ok(
        "run", "llm", name, *llm_params(server), "--rate-limit", "600/min", "--budget", "1"
    )
    batch = batch_id_of(out)
    assert server.stats().requests == 6

    text = cli.ok("status", batch)
    assert re.search(r"cost\s+\$0\.\d{4} for 6 calls", text), text
    assert re.search(r"budget\s+\$1\.0000\s+\(\$0\.9\d{3} left\)", text), text
    assert re.search(r"usage\s+\d+ tokens in\s+\d+ out", text), text

    status = cli.json("status", batch)
    assert (status["state"], status["counts"]["succeeded"]) == ("completed", 6)
    assert set(status["usage"]) == USAGE_KEYS
    usage = status["usage"]
    assert (usage["calls"], usage["cache_hits"]) == (6, 0)
    stats = server.stats()
    assert (usage["tokens_in"], usage["tokens_out"]) == (
        stats.prompt_tokens,
        stats.completion_tokens,
    )
    expected = (usage["tokens_in"] * 0.15 + usage["tokens_out"] * 0.60) / 1e6
    assert usage["cost"] == pytest.approx(expected, rel=1e-9)
    assert (status["budget"], status["limits"]) == (1.0, {"rate_limit": "600/min"})
    assert status["pause_reason"] is None

    results = [json.loads(line) for line in cli.ok("results", batch).splitlines()]
    assert [row["key"] for row in results] == [f"k{i}" for i in range(1, 7)]
    assert all(row["result"]["model"] == MODEL and row["result"]["answer"] for row in results)

    # The same input again is answered from the cache, unless --no-cache.
    again = batch_id_of(cli.ok("run", "llm", name, *llm_params(server)))
    assert cli.json("status", again)["usage"]["cache_hits"] == 6
    fresh = batch_id_of(cli.ok("run", "llm", name, *llm_params(server), "--no-cache"))
    assert cli.json("status", fresh)["usage"]["calls"] == 6
    assert server.stats().requests == 12


def test_a_generation_batch_renders_its_prompt_from_vars(cli: CLI, server: FakeOpenAI) -> None:
    question = "template=Write question {{ n }} about {{ topic }}, {{ difficulty }}."
    params = [f"model={MODEL}", question, f"base_url={server.base_url}"]
    args = [arg for pair in params for arg in ("--param", pair)]
    # Without the variables each item lacks topic and difficulty, and fails without a call.
    failed = cli("run", "llm", "--count", "3", *args)
    assert failed.returncode == 1, failed.stderr  # the batch ended with failed items
    bare = cli.json("status", batch_id_of(failed.stdout))
    assert (bare["counts"]["failed"], bare["usage"]["calls"]) == (3, 0)
    errors = [item["error"] for item in cli.json("items", bare["id"])]
    assert all("fields 'difficulty', 'topic'" in error for error in errors), errors
    variables = json.dumps({"topic": "tides", "difficulty": "hard"})
    out = cli.ok("run", "llm", "--count", "3", *args, "--param", f"vars={variables}")
    status = cli.json("status", batch_id_of(out))
    assert (status["counts"]["succeeded"], status["usage"]["calls"]) == (3, 3)
    assert server.stats().requests == 3


def test_a_model_with_no_price_shows_its_cost_as_unknown_not_zero(
    cli: CLI, server: FakeOpenAI
) -> None:
    name = prompts(cli, "prompts.jsonl", 3)
    unpriced = "acme-local-7b"  # in no price table, and given no --param prices
    params = [f"model={unpriced}", "template=@p.j2", f"base_url={server.base_url}"]
    out = cli.ok("run", "llm", name, *(arg for p in params for arg in ("--param", p)))
    batch = batch_id_of(out)
    assert server.stats().requests == 3
    unknown = f"cost unknown (no price for {unpriced})"
    assert re.search(rf"usage +\d+ tokens in +\d+ out +{re.escape(unknown)}   per item", out), out
    assert "$0.0000" not in out

    assert re.search(rf"cost +{re.escape(unknown)} for 3 calls", cli.ok("status", batch))
    usage = cli.json("status", batch)["usage"]
    assert set(usage) == USAGE_KEYS
    assert (usage["cost"], usage["cost_note"]) == (None, f"no price for {unpriced}")
    assert (usage["calls"], usage["unpriced_calls"]) == (3, 3) and usage["tokens_in"] > 0

    report = json.loads(cli.ok("report", batch, "--json", "--no-save"))
    assert report["usage"]["cost"] is None and report["usage"]["per_item"]["cost"] is None
    assert report["usage"]["cost_note"] == f"no price for {unpriced}"
    results = [json.loads(line) for line in cli.ok("results", batch).splitlines()]
    assert all(r["result"]["cost"] is None and r["usage"]["cost"] is None for r in results)
    assert cli.json("estimate", "--batch", batch)["spent"] is None
    assert "cost unknown (no price)" in cli.ok("item", batch, "k1")
    assert f"(spent so far: {unknown})" in cli.ok("estimate", "--batch", batch)


def test_estimate_prints_the_documented_keys_and_a_pilot_runs_first(
    cli: CLI, server: FakeOpenAI
) -> None:
    name = prompts(cli, "prompts.jsonl", 30)
    blind = cli.json("estimate", "llm", name, *llm_params(server), "--rate-limit", "60/min")
    assert set(blind) == ESTIMATE_KEYS
    assert set(blind["price"]) == {"input", "output", "cached_input", "source"}
    assert (blind["model"], blind["items"], blind["cached"], blind["calls"]) == (MODEL, 30, 0, 30)
    assert blind["input_exact"] is True and blind["output_source"].startswith("no earlier answers")
    assert (blind["price"]["input"], blind["price"]["output"]) == (0.15, 0.6)
    low, high = blind["cost_range"]
    assert low <= blind["cost"] <= high
    # 30 calls at 60 a minute (a little under, to stay below the provider's window).
    assert 30 <= blind["duration_seconds"] <= 32
    assert blind["bound_by"] == "requests per minute"
    assert server.stats().requests == 0 and cli.batches() == []

    piloted = cli.json("estimate", "llm", name, *llm_params(server), "--pilot", "3")
    assert server.stats().requests == 3
    assert (piloted["items"], piloted["cached"], piloted["calls"]) == (30, 3, 27)
    assert piloted["output_source"].startswith("a pilot of 3 answers")
    (pilot,) = cli.batches()
    assert (pilot["name"], pilot["state"], pilot["counts"]["total"]) == ("pilot", "completed", 3)
    assert piloted["output_source"].endswith(f"(batch {pilot['id']})")
    # With a measured mean, the range is narrower than "anything from 0 to max_tokens".
    assert piloted["cost_range"][1] - piloted["cost_range"][0] < high - low


def test_a_budget_pauses_the_run_and_resume_with_a_bigger_one_finishes_it(
    cli: CLI, server: FakeOpenAI
) -> None:
    name = prompts(cli, "prompts.jsonl", 20)
    # Each call may cost up to ~0.00006 (100 tokens of answer): about three fit.
    done = cli("run", "llm", name, *llm_params(server, "max_tokens=100"), "--budget", "0.0002")
    assert done.returncode == 1, (done.stdout, done.stderr)
    batch = batch_id_of(done.stdout)
    assert f"paused: batch {batch}: budget reached: 0.0002 allowed" in done.stderr
    assert f"batchyard resume {batch} --budget AMOUNT" in done.stderr
    assert "Traceback" not in done.stderr

    paused = cli.json("status", batch)
    assert paused["state"] == "paused" and paused["pause_reason"].startswith("budget reached")
    assert 0 < paused["usage"]["cost"] <= 0.0002
    assert paused["counts"]["failed"] == 0 and 0 < paused["counts"]["pending"] < 20
    assert "paused" in cli.ok("status", batch)

    left = cli.json("estimate", "--batch", batch)
    assert (left["batch"], left["items"]) == (batch, paused["counts"]["pending"])
    assert left["spent"] == pytest.approx(paused["usage"]["cost"])

    resumed = cli.json("resume", batch, "--budget", "1")
    assert (resumed["budget"], resumed["pause_reason"]) == (1.0, None)
    assert resumed["state"] != "paused"
    cli.ok("worker", "--batch", batch, "--until-idle")
    final = cli.json("status", batch)
    assert (final["state"], final["counts"]["succeeded"]) == ("completed", 20)
    assert final["usage"]["calls"] == 20 == server.stats().requests
    assert final["usage"]["cost"] <= 1


def test_a_wrong_key_fails_the_run_without_showing_the_key(cli: CLI, server: FakeOpenAI) -> None:
    name = prompts(cli, "prompts.jsonl", 3)
    cli.env["OPENAI_API_KEY"] = WRONG_SECRET
    done = cli("-v", "run", "llm", name, *llm_params(server))
    assert done.returncode == 1, (done.stdout, done.stderr)
    batch = batch_id_of(done.stdout)
    assert server.stats().unauthorized == 3

    items = cli.json("items", batch)
    assert [item["attempts"] for item in items] == [1, 1, 1]
    assert all("HTTP 401 invalid_api_key" in item["error"] for item in items)
    logs = cli.ok("logs", batch, "k1")
    assert "Incorrect API key provided" in logs
    cli.ok("results", batch)
    cli.ok("report", batch, "--no-save")
    # The cli fixture then scans every output and the database files for the key.


# -- refused before anything runs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate-limit", "banana"], "cannot read the rate limit 'banana'"),
        (["--tokens-per-minute", "lots"], "cannot read the rate limit 'lots'"),
        (["--budget", "-1"], "argument --budget: '-1': a budget is an amount of at least 0"),
        (["--budget", "nan"], "argument --budget: 'nan'"),
        (["--param", "foo=1"], "the llm task has no parameter 'foo'"),
        (["--param", "max_tokens=0"], "--param max_tokens must be a whole number"),
        (["--param", "temperature=hot"], "--param temperature must be a number, not 'hot'"),
    ],
)
def test_bad_options_exit_2_with_one_clear_line(
    cli: CLI, server: FakeOpenAI, flags: list[str], message: str
) -> None:
    name = prompts(cli, "prompts.jsonl", 2)
    stderr = cli.fails(2, "run", "llm", name, *llm_params(server), *flags)
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], stderr
    assert cli.batches() == [] and server.stats().requests == 0
    # Not even an empty database file is left behind by a typo.
    assert not (cli.folder / "yard.db").exists()


def test_a_missing_api_key_variable_is_named(cli: CLI, server: FakeOpenAI) -> None:
    name = prompts(cli, "prompts.jsonl", 2)
    stderr = cli.fails(2, "run", "llm", name, *llm_params(server, "api_key_env=MY_LLM_KEY"))
    assert stderr.count("\n") == 1
    assert "the environment variable MY_LLM_KEY" in stderr and "is not set" in stderr
    no_key = {name: value for name, value in cli.env.items() if name != "OPENAI_API_KEY"}
    stderr = cli.fails(2, "submit", "llm", name, *llm_params(server), env=no_key)
    assert "the environment variable OPENAI_API_KEY" in stderr
    assert cli.batches() == [] and server.stats().requests == 0


def test_an_endpoint_without_keys_needs_no_key_variable(cli: CLI) -> None:
    name = prompts(cli, "prompts.jsonl", 2)
    no_key = {name: value for name, value in cli.env.items() if name != "OPENAI_API_KEY"}
    with FakeOpenAI(**INSTANT) as keyless:
        args = ["run", "llm", name, *llm_params(keyless, "api_key_env=")]
        done = cli(*args, env=no_key)
        assert done.returncode == 0, done.stderr
        assert keyless.stats().requests == 2
    (batch,) = cli.batches()
    assert batch["state"] == "completed" and batch["params"]["api_key_env"] == ""


def test_prune_with_cache_forgets_old_answers_so_they_are_asked_again(
    cli: CLI, server: FakeOpenAI
) -> None:
    name = prompts(cli, "prompts.jsonl", 3)
    cli.ok("run", "llm", name, *llm_params(server))
    kept = cli.json("prune", "--older-than", "1h", "--cache")
    assert kept == {"deleted": 0, "older_than": 3600.0, "cached_answers": 0}
    cli.ok("run", "llm", name, *llm_params(server))
    assert server.stats().requests == 3  # the second run was answered from the cache
    forgotten = cli.json("prune", "--older-than", "0s", "--cache")
    assert forgotten["cached_answers"] == 3 and forgotten["deleted"] == 2
    cli.ok("run", "llm", name, *llm_params(server))
    assert server.stats().requests == 6


def test_an_estimate_in_a_new_folder_leaves_no_database(cli: CLI, server: FakeOpenAI) -> None:
    name = prompts(cli, "prompts.jsonl", 1)
    found = cli.json("estimate", "llm", name, *llm_params(server))
    assert found["calls"] == 1 and found["duration_seconds"] >= 1.0  # one call takes a latency
    assert not (cli.folder / "yard.db").exists()
