"""A re-run pays only for what changed: the same template version is answered by the
response cache (zero provider calls), a new version calls for every item. 20,000 items, an
in-process worker and the local OpenAI server over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batchyard import Yard
from batchyard.states import BatchState
from batchyard.testing.openai import FakeOpenAI
from tests.conftest import FAST

SECRET = "sk-test-SECRET-do-not-leak-123"
N = 20_000
#: No simulated latency, and limits no run of this test comes near.
UNLIMITED: dict[str, Any] = {"latency": 0.0, "latency_per_token": 0.0, "rpm": 10**8, "tpm": 10**11}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(**UNLIMITED, keys=frozenset({SECRET})) as running:
        yield running


def run(yard: Yard, batch_id: str) -> None:
    yard.run_until_idle(concurrency=32, batches=(batch_id,), **FAST)
    assert yard.batch(batch_id).status().state is BatchState.COMPLETED


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 40,000 HTTP calls in one process: minutes on a busy machine
def test_a_rerun_calls_nothing_for_the_same_version_and_everything_for_a_new_one(
    yard: Yard, server: FakeOpenAI
) -> None:
    params = {"model": "gpt-4o-mini", "base_url": server.base_url, "max_tokens": 16}
    yard.templates.create("lead-report", "llm", {**params, "template": "About {{ topic }}."})
    first = yard.submit(
        items=({"id": i, "topic": f"company {i}"} for i in range(N)), template="lead-report"
    )
    run(yard, first.id)
    assert server.stats().requests == N

    same = first.rerun()
    run(yard, same.id)
    status = same.status()
    assert server.stats().requests == N  # not one call more
    assert (status.usage.cache_hits, status.usage.calls, status.usage.cost) == (N, 0, 0.0)
    assert (str(status.template), status.rerun_of) == ("lead-report@1", first.id)

    yard.templates.update("lead-report", {"template": "Tell me about {{ topic }}."})
    new = first.rerun(template="lead-report")
    run(yard, new.id)
    status = new.status()
    assert server.stats().requests == 2 * N
    assert (status.usage.calls, status.usage.cache_hits) == (N, 0)
    assert str(status.template) == "lead-report@2"
    by_version = {u.version: u for u in yard.templates.usage("lead-report")}
    assert (by_version[1].batches, by_version[1].items, by_version[1].cache_hits) == (2, 2 * N, N)
    assert by_version[1].paid == N  # the free re-run does not halve version 1's cost per item
    assert by_version[1].cost_per_item == pytest.approx(first.status().usage.cost / N)
