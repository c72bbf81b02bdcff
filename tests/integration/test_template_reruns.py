"""A re-run pays only for what changed: the same template version is answered by the
response cache (zero provider calls), a new version calls for every item. 2,000 items in the
suite (``BATCHYARD_RERUN_ITEMS=20000`` for the issue's full size, run by hand: 40,000 calls
take minutes on two cores), an in-process worker, and the local OpenAI server in a process
of its own (so the two use two cores) over loopback HTTP; its ``/stats`` counts the calls."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from batchyard import Yard
from batchyard.states import BatchState
from tests.conftest import FAST
from tests.integration.test_fake_openai import wait_healthy

SECRET = "sk-test-SECRET-do-not-leak-123"
N = int(os.environ.get("BATCHYARD_RERUN_ITEMS", "2000"))


class Server:
    """``python -m batchyard.testing.openai`` with no latency and limits no run nears."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        command = [sys.executable, "-m", "batchyard.testing.openai", "--port", str(port)]
        command += ["--rpm", str(10**8), "--tpm", str(10**11), "--key", SECRET]
        command += ["--latency", "0", "--latency-per-token", "0"]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_healthy(self.url)

    def requests(self) -> int:
        count: int = httpx.get(f"{self.url}/stats").json()["requests"]
        return count

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    running = Server()
    try:
        yield running
    finally:
        running.stop()


def run(yard: Yard, batch_id: str) -> None:
    yard.run_until_idle(concurrency=16, batches=(batch_id,), **FAST)
    assert yard.batch(batch_id).status().state is BatchState.COMPLETED


@pytest.mark.timeout(1800)  # 4,000 HTTP calls (40,000 at the full size)
def test_a_rerun_calls_nothing_for_the_same_version_and_everything_for_a_new_one(
    yard: Yard, server: Server
) -> None:
    params = {"model": "gpt-4o-mini", "base_url": server.base_url, "max_tokens": 16}
    yard.templates.create("lead-report", "llm", {**params, "template": "About {{ topic }}."})
    first = yard.submit(
        items=({"id": i, "topic": f"company {i}"} for i in range(N)), template="lead-report"
    )
    run(yard, first.id)
    assert server.requests() == N

    same = first.rerun()
    run(yard, same.id)
    status = same.status()
    assert server.requests() == N  # not one call more
    assert (status.usage.cache_hits, status.usage.calls, status.usage.cost) == (N, 0, 0.0)
    assert (str(status.template), status.rerun_of) == ("lead-report@1", first.id)

    yard.templates.update("lead-report", {"template": "Tell me about {{ topic }}."})
    new = first.rerun(template="lead-report")
    run(yard, new.id)
    status = new.status()
    assert server.requests() == 2 * N
    assert (status.usage.calls, status.usage.cache_hits) == (N, 0)
    assert str(status.template) == "lead-report@2"
    by_version = {u.version: u for u in yard.templates.usage("lead-report")}
    assert (by_version[1].batches, by_version[1].items, by_version[1].cache_hits) == (2, 2 * N, N)
    assert by_version[1].paid == N  # the free re-run does not halve version 1's cost per item
    assert by_version[1].cost_per_item == pytest.approx(first.status().usage.cost / N)
