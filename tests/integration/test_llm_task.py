"""The built-in llm task end to end: an in-process worker (``run_until_idle``) calling the fake
OpenAI server over real HTTP on loopback, on SQLite and on PostgreSQL where the behaviour is
store code (budget holds, the response cache, the history estimates read).

Prices are checked against OpenAI's list price for gpt-4o-mini, written out here rather than
read from batchyard's price table: $0.15 per 1M input tokens, $0.075 per 1M cached input
tokens, $0.60 per 1M output tokens.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from batchyard import Yard
from batchyard.cli import main as cli_main
from batchyard.errors import ConfigError
from batchyard.llm.estimate import estimate, remaining_items
from batchyard.models import Item
from batchyard.states import BatchState, ItemState
from batchyard.testing.openai import FakeOpenAI, Fault, count_prompt_tokens
from batchyard.yard import Batch
from tests.conftest import FAST

SECRET = "sk-test-SECRET-do-not-leak-123"
WRONG_SECRET = "sk-test-WRONGSECRET-do-not-leak-456"
MODEL = "gpt-4o-mini"
#: USD per 1M tokens: input, cached input, output (OpenAI's list price for gpt-4o-mini).
PRICE_IN, PRICE_CACHED, PRICE_OUT = 0.15, 0.075, 0.60
TEMPLATE = "Tell me about {{ topic }}."
#: No simulated latency: answers as fast as loopback allows.
INSTANT: dict[str, Any] = {"latency": 0.0, "latency_per_token": 0.0}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(**INSTANT, keys=frozenset({SECRET})) as running:
        yield running


@pytest.fixture
def store_yard(store_url: str) -> Iterator[Yard]:
    """A Yard on a fresh SQLite file, then on a fresh PostgreSQL database."""
    with Yard(store_url) as opened:
        yield opened


def params(server: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "template": TEMPLATE,
        "base_url": server.base_url,
        "max_tokens": 100,
        **extra,
    }


def topics(n: int) -> list[dict[str, Any]]:
    return [{"id": f"k{i}", "topic": f"topic number {i}"} for i in range(1, n + 1)]


def run(yard: Yard, concurrency: int = 8) -> None:
    yard.run_until_idle(concurrency=concurrency, **FAST)


def list_price(prompt: int, completion: int, cached: int = 0) -> float:
    return ((prompt - cached) * PRICE_IN + cached * PRICE_CACHED + completion * PRICE_OUT) / 1e6


def item_cost(item: Item) -> float:
    usage = item.result["usage"]
    return list_price(usage["prompt_tokens"], usage["completion_tokens"], usage["cached_tokens"])


# -- a batch that goes well ------------------------------------------------------------------


def test_results_carry_answer_usage_cost_and_latency(store_yard: Yard, server: FakeOpenAI) -> None:
    # A system prompt past 1024 tokens: the server's prompt cache serves it to later calls.
    system = "Answer in the voice of a museum guide. " + "Be precise. " * 400
    batch = store_yard.submit("llm", topics(20), params=params(server, system=system))
    run(store_yard, concurrency=4)

    status = batch.status()
    assert status.state is BatchState.COMPLETED
    items = list(batch.items())
    assert [item.state for item in items] == [ItemState.SUCCEEDED] * 20
    for item in items:
        result = item.result
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Tell me about {item.payload['topic']}."},
        ]
        assert isinstance(result["answer"], str) and result["answer"].endswith(".")
        assert (result["model"], result["finish_reason"], result["cached"]) == (
            MODEL,
            "stop",
            False,
        )
        usage = result["usage"]
        assert usage["prompt_tokens"] == count_prompt_tokens(messages, MODEL)
        assert 16 <= usage["completion_tokens"] <= 100
        assert usage["cached_tokens"] % 128 == 0 and usage["reasoning_tokens"] == 0
        assert result["cost"] == pytest.approx(item_cost(item), rel=1e-9)
        assert 0 < result["latency"] < 5 and item.metrics["latency"] > 0
        assert item.attempts == 1
        assert (item.usage.tokens_in, item.usage.tokens_out, item.usage.calls) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
            1,
        )
        assert item.usage.tokens_cached == usage["cached_tokens"]
        assert item.usage.cost == pytest.approx(result["cost"], rel=1e-9)
    # Four calls in flight at once: the fifth call on went out after one was answered.
    assert sum(1 for item in items if item.result["usage"]["cached_tokens"] >= 1024) >= 16

    total = status.usage
    assert total.calls == 20 and total.cache_hits == 0 and total.saved_cost == 0
    assert total.tokens_in == sum(item.usage.tokens_in for item in items)
    assert total.tokens_out == sum(item.usage.tokens_out for item in items)
    assert total.tokens_cached == sum(item.usage.tokens_cached for item in items) > 0
    assert total.tokens_reasoning == 0
    assert total.cost == pytest.approx(sum(item_cost(item) for item in items), rel=1e-9)
    stats = server.stats()
    assert (stats.requests, stats.prompt_tokens, stats.completion_tokens) == (
        20,
        total.tokens_in,
        total.tokens_out,
    )


def test_json_mode_parses_the_answer_and_a_schema_shapes_it(server: FakeOpenAI, yard: Yard) -> None:
    # Room for the longest answer the server composes (96 tokens of prose, wrapped in JSON).
    plain = yard.submit("llm", topics(3), params=params(server, json=True, max_tokens=400))
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["good", "bad"]}, "score": {"type": "integer"}},
        "required": ["label", "score"],
    }
    shaped = yard.submit("llm", topics(3), params=params(server, json=schema, max_tokens=400))
    run(yard)

    for item in plain.items():
        assert item.state is ItemState.SUCCEEDED
        assert set(item.result["answer"]) == {"answer", "confidence"}
    for item in shaped.items():
        assert item.state is ItemState.SUCCEEDED
        answer = item.result["answer"]
        assert answer["label"] in ("good", "bad") and isinstance(answer["score"], int)


def run_with_faults(yard: Yard, kinds: list[Any], **extra: Any) -> dict[str, tuple[Batch, Any]]:
    """One batch of six items per fault kind, each against a server of its own that fails
    every third call with it, worked together; the batch and its server's stats by kind."""
    with ExitStack() as stack:
        servers = {
            kind: stack.enter_context(FakeOpenAI(**INSTANT, faults=(Fault(kind, every=3),)))
            for kind in kinds
        }
        batches = {
            kind: yard.submit("llm", topics(6), params=params(server, **extra))
            for kind, server in servers.items()
        }
        run(yard, concurrency=32)
        return {kind: (batches[kind], servers[kind].stats()) for kind in kinds}


def assert_retried_once(batch: Batch, stats: Any, kind: str, error: str) -> None:
    # Calls 3 and 6 fail; their retries are calls 7 and 8, which do not.
    assert (stats.requests, stats.faults) == (8, {kind: 2}), (
        kind,
        batch.status().counts,
        [
            (i.key, i.attempts, i.state.value, i.error)
            for i in batch.items()
            if i.state.value != "succeeded"
        ],
    )
    assert batch.status().state is BatchState.COMPLETED, kind
    assert sorted(item.attempts for item in batch.items()) == [1, 1, 1, 1, 2, 2], kind
    for item in batch.items():
        errors = [line.message for line in batch.logs(item.key) if line.kind == "error"]
        assert len(errors) == item.attempts - 1, kind
        assert all(error in text for text in errors), (kind, errors)
    # Only answered calls are billed.
    assert batch.status().usage.calls == 6, kind


def test_server_errors_and_malformed_bodies_are_retried_until_the_item_succeeds(
    yard: Yard,
) -> None:
    # A body that is not JSON at all (invalid_json) or has no message is the server's fault
    # and retried, unlike an answer that is not JSON (below).
    kinds = ["500", "502", "503", "529", "invalid_json", "missing_message"]
    ran = run_with_faults(yard, kinds, json=True, max_tokens=400)
    for kind, (batch, stats) in ran.items():
        error = f"HTTP {kind}" if kind.isdigit() else "HTTP 200 malformed answer"
        assert_retried_once(batch, stats, kind, error)
        assert all(isinstance(item.result["answer"], dict) for item in batch.items())


def test_an_answer_that_is_not_json_fails_at_once_and_is_kept(
    server: FakeOpenAI, yard: Yard
) -> None:
    # The answer is cut at max_tokens, as a real model's is: the JSON is unfinished.
    batch = yard.submit("llm", topics(3), params=params(server, json=True, max_tokens=5))
    run(yard)

    assert server.stats().requests == 3  # not retried
    status = batch.status()
    assert status.state is BatchState.FAILED and status.counts.failed == 3
    for item in batch.items():
        assert item.attempts == 1 and item.error is not None
        assert item.error.startswith("Fail: the answer is not valid JSON")
        (raw,) = [line.message for line in batch.logs(item.key) if line.kind == "answer"]
        assert raw.startswith('{"answer": "') and raw[:40] in item.error
        # The call was made and paid for, even if its answer is no use.
        assert item.usage.calls == 1 and item.usage.tokens_out == 5 and item.usage.cost > 0
    assert status.usage.calls == 3


# -- what the provider refuses --------------------------------------------------------------


@pytest.mark.parametrize("case", ["401 wrong key", "404 bad path", "400 bad body"])
def test_a_refused_request_fails_its_item_after_one_attempt(case: str, yard: Yard) -> None:
    keys = frozenset({"sk-someone-else-entirely"}) if case.startswith("401") else None
    with FakeOpenAI(**INSTANT, keys=keys) as server:
        given = params(server)
        if case.startswith("404"):
            given["base_url"] = f"{server.url}/nowhere/v1"
        if case.startswith("400"):
            # Sent as it is, ahead of the fields the task sets: the server wants an object.
            given["options"] = {"response_format": "text"}
        batch = yard.submit("llm", topics(4), params=given)
        run(yard)
        stats = server.stats()

    status = batch.status()
    assert status.state is BatchState.FAILED and status.counts.failed == 4
    status_code = case.split()[0]
    # The server counts the calls that reach its endpoint: a 404 did not.
    assert stats.requests == (0 if status_code == "404" else 4)
    for item in batch.items():
        assert item.attempts == 1
        assert item.error is not None and f"HTTP {status_code}" in item.error
        assert item.error_type == "Fail"
    assert status.usage.calls == 0 and status.usage.cost == 0
    # One cause, one cluster: its status stays, and it is placed in the llm task's code.
    (cluster,) = batch.error_clusters()
    assert cluster.text.startswith(f"Fail: HTTP {status_code} "), cluster.text
    assert " @ task.py:" in cluster.text, cluster.text
    assert (cluster.items, cluster.attempts, cluster.share) == (4, 4, 1.0)


def test_429s_pause_the_key_and_the_call_tries_again_in_the_same_attempt(yard: Yard) -> None:
    # Eight calls go out at once, before any answer tells how many requests are left.
    with FakeOpenAI(latency=0.05, latency_per_token=0.0, rpm=4, window=0.2) as server:
        batch = yard.submit("llm", topics(10), params=params(server))
        run(yard)
        stats = server.stats()

    throttled = stats.rate_limited["requests"]
    assert throttled > 0 and stats.requests == 10 + throttled
    assert batch.status().state is BatchState.COMPLETED
    assert [item.attempts for item in batch.items()] == [1] * 10
    assert batch.status().usage.calls == 10
    waits = [
        line.message
        for item in batch.items()
        for line in batch.logs(item.key)
        if line.message.startswith("rate limited, the key pauses")
    ]
    assert len(waits) == throttled


def test_an_item_missing_a_field_fails_and_is_never_sent(server: FakeOpenAI, yard: Yard) -> None:
    batch = yard.submit(
        "llm",
        [{"id": "ok", "topic": "tides"}, {"id": "bad"}],
        params=params(server),
        max_attempts=1,
    )
    run(yard)

    assert server.stats().requests == 1
    bad = batch.item("bad")
    assert bad.state is ItemState.FAILED
    assert bad.error is not None and "'topic'" in bad.error and "lacks" in bad.error
    assert batch.item("ok").state is ItemState.SUCCEEDED


def test_an_item_missing_a_field_is_not_retried(server: FakeOpenAI, yard: Yard) -> None:
    batch = yard.submit("llm", [{"id": "bad"}], params=params(server), max_attempts=2)
    run(yard)

    assert batch.item("bad").attempts == 1


# -- quota and budget -----------------------------------------------------------------------


def test_an_exhausted_quota_pauses_the_batch_without_spending_attempts(yard: Yard) -> None:
    with FakeOpenAI(**INSTANT, spend_limit_tokens=150) as server:
        port = server.port
        batch = yard.submit("llm", topics(10), params=params(server))
        run(yard, concurrency=1)

        status = batch.status()
        assert status.state is BatchState.PAUSED
        assert status.pause_reason is not None and "quota" in status.pause_reason
        done = status.counts.succeeded
        assert 1 <= done < 10 and status.counts.failed == 0
        assert status.counts.pending == 10 - done
        # One refusal pauses the batch (an item the worker had already taken may see one).
        assert 1 <= server.stats().rate_limited["insufficient_quota"] <= 2
        assert max(item.attempts for item in batch.items()) == 1

        # More resumes than the task's 5 attempts, the quota still spent: nothing fails.
        for _ in range(6):
            assert batch.resume().state is not BatchState.PAUSED
            run(yard, concurrency=1)
            again = batch.status()
            assert again.state is BatchState.PAUSED and again.counts.failed == 0
        assert again.counts.succeeded == done

    # The account is topped up: the same endpoint answers again.
    with FakeOpenAI(**INSTANT, port=port) as topped_up:
        resumed = batch.resume()
        assert resumed.state is BatchState.PROCESSING and resumed.pause_reason is None
        run(yard)
        assert topped_up.stats().requests == 10 - done
    final = batch.status()
    assert final.state is BatchState.COMPLETED and final.usage.calls == 10


def test_a_budget_pauses_the_batch_and_a_bigger_one_finishes_it(
    store_yard: Yard, server: FakeOpenAI
) -> None:
    budget = 0.0004  # about six calls' worst case, at most ten answers
    batch = store_yard.submit("llm", topics(30), params=params(server), budget=budget)
    run(store_yard)

    status = batch.status()
    assert status.state is BatchState.PAUSED and status.budget == budget
    assert status.pause_reason is not None and status.pause_reason.startswith("budget reached")
    assert f"batchyard resume {batch.id} --budget" in status.pause_reason
    assert 0 < status.usage.cost <= budget
    assert 0 < status.counts.succeeded < 30 and status.counts.failed == 0
    assert status.counts.pending == 30 - status.counts.succeeded
    assert server.stats().requests == status.usage.calls == status.counts.succeeded

    bigger = 0.01
    assert batch.resume(budget=bigger).budget == bigger
    run(store_yard)
    final = batch.status()
    assert final.state is BatchState.COMPLETED and final.pause_reason is None
    assert final.usage.calls == 30 == server.stats().requests
    assert budget < final.usage.cost <= bigger
    assert final.usage.cost == pytest.approx(
        sum(item_cost(item) for item in batch.items()), rel=1e-9
    )


def test_calls_in_flight_hold_the_budget_so_it_is_never_passed(
    store_yard: Yard, server: FakeOpenAI
) -> None:
    # Worst cases of about 0.0001 each; 32 lanes would overshoot by far without the holds.
    budget = 0.0003
    batch = store_yard.submit(
        "llm", topics(64), params=params(server, max_tokens=160), budget=budget
    )
    run(store_yard, concurrency=32)

    status = batch.status()
    assert status.state is BatchState.PAUSED
    assert 0 < status.usage.cost <= budget
    assert server.stats().requests == status.usage.calls == status.counts.succeeded


def test_a_budget_needs_a_price_which_an_override_gives(server: FakeOpenAI, yard: Yard) -> None:
    unpriced = params(server, model="house-model-7b")
    with pytest.raises(ConfigError, match="house-model-7b") as raised:
        yard.submit("llm", topics(2), params=unpriced, budget=1.0)
    assert "prices" in str(raised.value)
    assert list(yard.batches().rows) == []

    priced = {**unpriced, "prices": {"house-model-7b": {"input": 2.0, "output": 8.0}}}
    batch = yard.submit("llm", topics(4), params=priced, budget=1.0)
    run(yard)
    assert batch.status().state is BatchState.COMPLETED
    for item in batch.items():
        usage = item.result["usage"]
        expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
        assert item.result["cost"] == pytest.approx(expected, rel=1e-9) and expected > 0


class _CharTokens(BaseHTTPRequestHandler):
    """A provider whose tokenizer counts one token a character (as CJK text often is), where
    batchyard can only estimate four characters a token for a model it does not know."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = sum(len(message["content"]) for message in body["messages"])
        answer = {
            "id": "chatcmpl-chars",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 1},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def char_tokens_url() -> Iterator[str]:
    provider = ThreadingHTTPServer(("127.0.0.1", 0), _CharTokens)
    thread = threading.Thread(target=provider.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{provider.server_address[1]}/v1"
    finally:
        provider.shutdown()
        provider.server_close()
        thread.join()


def test_a_budget_holds_even_when_the_provider_counts_more_tokens_than_estimated(
    char_tokens_url: str, yard: Yard
) -> None:
    given = {
        "model": "house-model",
        "template": "{{ text }}",
        "base_url": char_tokens_url,
        "max_tokens": 1,
        "prices": {"house-model": {"input": 1000.0, "output": 0.0}},
    }
    rows = [{"id": f"k{i}", "text": f"{i:03d} " + "数据" * 200} for i in range(10)]
    # Each call costs ~0.4 here; without the model's tokenizer the hold is the most its
    # prompt could count (a token per UTF-8 byte: ~1.2), so the cap holds whatever happens.
    batch = yard.submit("llm", rows, params=given, budget=3.0)
    run(yard, concurrency=1)

    status = batch.status()
    assert status.state is BatchState.PAUSED and status.usage.calls > 0
    assert status.usage.cost <= 3.0


# -- the response cache ----------------------------------------------------------------------


def test_the_cache_answers_what_was_asked_before(store_yard: Yard, server: FakeOpenAI) -> None:
    rows = topics(200)
    first = store_yard.submit("llm", rows, params=params(server))
    run(store_yard, concurrency=64)
    assert server.stats().requests == 200
    answers = {item.key: item.result for item in first.items()}

    changed = [dict(row) for row in rows]
    for row in changed[::20]:
        row["topic"] += " (revised)"
    second = store_yard.submit("llm", changed, params=params(server))
    run(store_yard, concurrency=64)

    assert server.stats().requests == 210
    status = second.status()
    assert status.state is BatchState.COMPLETED
    assert (status.usage.calls, status.usage.cache_hits) == (10, 190)
    unchanged_cost = sum(
        answers[row["id"]]["cost"] for row in changed if "revised" not in row["topic"]
    )
    assert status.usage.saved_cost == pytest.approx(unchanged_cost, rel=1e-9) and unchanged_cost > 0
    assert status.usage.cost == pytest.approx(
        sum(item.result["cost"] for item in second.items() if not item.result["cached"]), rel=1e-9
    )
    hit = second.item("k2")
    assert hit.result["cached"] is True and hit.result["cost"] == 0.0
    assert hit.result["answer"] == answers["k2"]["answer"]
    assert hit.result["saved_cost"] == answers["k2"]["cost"]
    assert hit.usage.calls == 0 and hit.usage.cache_hits == 1
    assert second.item("k1").result["cached"] is False  # revised: asked again

    uncached = store_yard.submit("llm", changed[:50], params=params(server, cache=False))
    run(store_yard, concurrency=64)
    assert server.stats().requests == 260
    assert (uncached.status().usage.calls, uncached.status().usage.cache_hits) == (50, 0)


def test_a_different_request_is_not_answered_from_the_cache(server: FakeOpenAI, yard: Yard) -> None:
    yard.submit("llm", topics(2), params=params(server))
    run(yard)
    for changed in ({"max_tokens": 101}, {"system": "Be brief."}, {"temperature": 0.2}):
        batch = yard.submit("llm", topics(2), params=params(server, **changed))
        run(yard)
        assert batch.status().usage.cache_hits == 0, changed
    assert server.stats().requests == 8


# -- estimates -------------------------------------------------------------------------------


def corpus(n: int) -> list[dict[str, Any]]:
    """Notes of varied length (10 to 200 words), each different."""
    words = "river valley harbour council budget letter railway orchard festival archive".split()
    return [
        {
            "id": f"n{i}",
            "topic": f"note {i}: "
            + " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(10 + i * 37 % 190)),
        }
        for i in range(n)
    ]


def test_an_estimate_from_a_pilot_lands_within_5_percent(store_yard: Yard) -> None:
    rows = corpus(300)
    with FakeOpenAI(**INSTANT, answer_tokens=(40, 60)) as server:
        given = params(
            server, template="Summarise this note in a line: {{ topic }}", max_tokens=200
        )
        found = store_yard.estimate("llm", rows, params=given, pilot=20)
        assert server.stats().requests == 20
        # The pilot's answers are cached: the run reuses them, so they cost nothing more.
        assert (found.items, found.cached, found.calls) == (300, 20, 280)
        assert found.input_exact and "pilot of 20 answers" in found.output_source
        assert found.cost is not None and found.cost_low is not None and found.cost_high is not None

        batch = store_yard.submit("llm", rows, params=given)
        run(store_yard, concurrency=32)
        assert server.stats().requests == 300

    status = batch.status()
    assert status.state is BatchState.COMPLETED
    assert (status.usage.calls, status.usage.cache_hits) == (280, 20)
    actual = status.usage.cost
    assert abs(found.cost - actual) / actual <= 0.05, (found.cost, actual)
    assert found.cost_low <= actual <= found.cost_high
    # Input tokens are counted exactly, as the provider counts them.
    assert found.input_tokens == status.usage.tokens_in


def test_estimating_a_batch_counts_only_the_items_it_still_has_to_do(
    store_yard: Yard, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = store_yard.submit("llm", topics(30), params=params(server), budget=0.0004)
    run(store_yard)
    status = batch.status()
    assert status.state is BatchState.PAUSED
    left = status.counts.pending
    assert 0 < left < 30

    found = estimate(store_yard.store, status.params, remaining_items(store_yard.store, batch.id))
    assert (found.items, found.cached, found.calls) == (left, 0, left)
    # The answers so far are the history: a mean answer length, not half of max_tokens.
    assert "earlier answers" in found.output_source
    assert found.cost is not None and found.cost < left * list_price(40, 100)

    assert cli_main(["--db", store_yard.url, "estimate", "--batch", batch.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["batch"], shown["items"], shown["calls"]) == (batch.id, left, left)
    assert shown["spent"] == pytest.approx(status.usage.cost)
    assert shown["cost"] == pytest.approx(found.cost)


# -- the API key -----------------------------------------------------------------------------


def everything_stored(url: str) -> str:
    """Every value of every table of the store, as text."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return "\n".join(conn.iterdump())
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        assert "items" in tables and "batches" in tables
        dumped = [
            conn.execute(
                f"SELECT COALESCE(string_agg(t::text, chr(10)), '') FROM \"{name}\" t"
            ).fetchone()[0]  # type: ignore[index]  # an aggregate always returns a row
            for name in tables
        ]
    return "\n".join(dumped)


def sqlite_cells(path: str) -> Iterator[str]:
    """Every text or blob cell of every table of a SQLite file."""
    with sqlite3.connect(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        yield cell.decode("utf-8", "replace")
                    elif isinstance(cell, str):
                        yield cell


def test_the_api_key_is_never_stored_or_shown(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTHER_KEY", WRONG_SECRET)
    secrets = (SECRET, WRONG_SECRET, "SECRET-do-not-leak")
    with Yard(store_url) as yard, FakeOpenAI(**INSTANT, keys=frozenset({SECRET})) as server:
        refused = yard.submit("llm", topics(3), params=params(server, api_key_env="OTHER_KEY"))
        flaky = params(server, json=True, max_tokens=5)
        answered = yard.submit("llm", topics(3), params=params(server), budget=5.0)
        malformed = yard.submit("llm", topics(2), params=flaky)
        run(yard)
        assert refused.status().state is BatchState.FAILED
        assert answered.status().state is BatchState.COMPLETED
        assert malformed.status().state is BatchState.FAILED
        assert server.stats().unauthorized == 3

        seen: list[str] = []
        for batch in (refused, answered, malformed):
            seen.append(repr(batch.status()))
            for item in batch.items():
                seen.append(json.dumps(item.as_dict()))
                seen.extend(line.message for line in batch.logs(item.key))
            seen.extend(json.dumps(event.data) for event in batch.events())
        capsys.readouterr()
        for batch in (refused, answered, malformed):
            for argv in (
                ["status", batch.id],
                ["status", batch.id, "--json"],
                ["items", batch.id, "--json"],
                ["results", batch.id],
                ["report", batch.id, "--no-save"],
                ["-v", "logs", batch.id, "k1"],
            ):
                assert cli_main(["--db", store_url, *argv]) == 0, argv
        printed = capsys.readouterr()
        seen += [printed.out, printed.err]
    assert "HTTP 401" in printed.out and "Incorrect API key" in printed.out  # what was scanned

    stored = everything_stored(store_url)
    assert refused.id in stored and "Incorrect API key" in stored  # what was scanned
    if store_url.startswith("sqlite:"):
        seen.extend(sqlite_cells(store_url.removeprefix("sqlite:///")))
    for secret in secrets:
        assert secret not in stored
        assert not [text for text in seen if secret in text]
