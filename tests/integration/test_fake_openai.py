"""The local OpenAI-compatible server, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchyard.errors import ConfigError
from batchyard.testing.openai import FakeOpenAI, Fault, count_prompt_tokens

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: No simulated latency: answers as fast as loopback allows.
INSTANT: dict[str, Any] = {"latency": 0.0, "latency_per_token": 0.0}
RESET = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?$")


def chat(text: str = "Name three rivers.", max_tokens: int = 100, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        **extra,
    }


def wait_healthy(url: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > end:
                raise
        time.sleep(0.02)


def reset_seconds(value: str) -> float:
    match = RESET.match(value)
    assert match and value, value
    hours, minutes, secs, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(**INSTANT, keys={KEY}) as running:
        wait_healthy(running.url)
        yield running


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=5.0) as c:
        yield c


def test_a_completion_has_openai_shape_and_usage(client: httpx.Client) -> None:
    request = chat()
    response = client.post("/chat/completions", json=request)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-test"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_prompt_tokens(request["messages"])
    assert 16 <= usage["completion_tokens"] <= 100
    assert usage["completion_tokens"] == -(-len(choice["message"]["content"]) // 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_answers_are_deterministic(client: httpx.Client) -> None:
    first, again, other = (
        client.post("/chat/completions", json=chat(text)).json()
        for text in ("Summarise row 1.", "Summarise row 1.", "Summarise row 2.")
    )
    assert first["choices"] == again["choices"] and first["usage"] == again["usage"]
    assert first["choices"][0]["message"] != other["choices"][0]["message"]


def test_json_answers_and_truncation(client: httpx.Client) -> None:
    by_format = client.post("/chat/completions", json=chat(response_format={"type": "json_object"}))
    assert isinstance(json.loads(by_format.json()["choices"][0]["message"]["content"]), dict)
    by_prompt = client.post("/chat/completions", json=chat("Reply in JSON, please."))
    assert isinstance(json.loads(by_prompt.json()["choices"][0]["message"]["content"]), dict)
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["a", "b"]}, "n": {"type": "integer"}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    typed = json.loads(
        client.post("/chat/completions", json=chat(response_format=fmt)).json()["choices"][0][
            "message"
        ]["content"]
    )
    assert typed["label"] in ("a", "b") and isinstance(typed["n"], int)
    cut = client.post("/chat/completions", json=chat(max_tokens=5)).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 5


def test_long_shared_prefixes_report_cached_tokens(client: httpx.Client) -> None:
    system = {"role": "system", "content": "rules " * 1000}  # 1500 tokens
    ask = [system, {"role": "user", "content": "first"}]
    first = client.post("/chat/completions", json={**chat(), "messages": ask}).json()
    ask[1] = {"role": "user", "content": "second"}
    second = client.post("/chat/completions", json={**chat(), "messages": ask}).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 1408  # 1504 → 128s


def test_requests_per_window_are_enforced_and_retry_after_is_honest() -> None:
    with FakeOpenAI(rpm=3, tpm=1_000_000, window=1.0, **INSTANT) as server:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            for _ in range(3):
                assert client.post("/chat/completions", json=chat()).status_code == 200
            refused = client.post("/chat/completions", json=chat())
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "requests"
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            wait_ms = int(refused.headers["retry-after-ms"])
            assert 0 < wait_ms <= 1000 and int(refused.headers["retry-after"]) == 1
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            time.sleep(wait_ms / 1000)
            assert client.post("/chat/completions", json=chat()).status_code == 200
        stats = server.stats()
    assert (stats.accepted, stats.rate_limited) == (4, {"requests": 1})


def test_tokens_per_window_count_prompt_plus_max_tokens() -> None:
    prompt = count_prompt_tokens(chat()["messages"])
    reservation = prompt + 100
    # A window long enough for five requests on a loaded machine (at 1 s, CI saw the window
    # pass before the third): the test's last request waits for it to empty anyway.
    with FakeOpenAI(rpm=1000, tpm=2 * reservation + 20, window=3.0, **INSTANT) as server:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            first = client.post("/chat/completions", json=chat())
            assert int(first.headers["x-ratelimit-remaining-tokens"]) == reservation + 20
            assert client.post("/chat/completions", json=chat()).status_code == 200
            refused = client.post("/chat/completions", json=chat())
            assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
            assert refused.headers["x-ratelimit-remaining-tokens"] == "20"
            small = client.post("/chat/completions", json=chat(max_tokens=20 - prompt))
            assert small.status_code == 200  # a smaller reservation still fits
            too_large = client.post("/chat/completions", json=chat(max_tokens=10_000))
            assert too_large.status_code == 429 and "retry-after" not in too_large.headers
            assert "Request too large" in too_large.json()["error"]["message"]
            time.sleep(int(refused.headers["retry-after-ms"]) / 1000)
            assert client.post("/chat/completions", json=chat()).status_code == 200
        stats = server.stats()
    assert stats.rate_limited == {"tokens": 2}
    assert stats.reserved_tokens == 3 * reservation + 20


def test_headers_are_on_every_answer_and_consistent(client: httpx.Client) -> None:
    names = (
        "limit-requests",
        "limit-tokens",
        "remaining-requests",
        "remaining-tokens",
        "reset-requests",
        "reset-tokens",
    )
    requests: list[dict[str, Any]] = [chat(), chat(max_tokens=50), {"model": "gpt-test"}]
    seen = []
    for request in requests:
        response = client.post("/chat/completions", json=request)
        headers = {name: response.headers[f"x-ratelimit-{name}"] for name in names}
        assert headers["limit-requests"] == "10000" and headers["limit-tokens"] == "2000000"
        assert 0 < reset_seconds(headers["reset-requests"]) <= 60
        assert 0 < reset_seconds(headers["reset-tokens"]) <= 60
        seen.append(
            (
                response.status_code,
                *(int(headers[f"remaining-{n}"]) for n in ("requests", "tokens")),
            )
        )
    first, second, bad = seen
    assert first == (200, 10000 - 1, 2_000_000 - count_prompt_tokens(requests[0]["messages"]) - 100)
    assert second == (200, 10000 - 2, first[2] - count_prompt_tokens(requests[1]["messages"]) - 50)
    assert bad == (400, *second[1:])  # a refused body reserves nothing


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (360, "6m0s"), (3725.25, "1h2m5.25s")]
)
def test_reset_durations_use_openai_format(seconds: float, text: str) -> None:
    from batchyard.testing._window import format_reset

    assert format_reset(seconds) == text and reset_seconds(text) == pytest.approx(seconds)


def test_each_key_has_its_own_limits() -> None:
    with FakeOpenAI(rpm=1, window=30.0, **INSTANT, keys={"sk-a", "sk-b"}) as server:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            a, b = ({"Authorization": f"Bearer {k}"} for k in ("sk-a", "sk-b"))
            assert client.post("/chat/completions", json=chat(), headers=a).status_code == 200
            assert client.post("/chat/completions", json=chat(), headers=a).status_code == 429
            assert client.post("/chat/completions", json=chat(), headers=b).status_code == 200


def test_insufficient_quota_never_clears() -> None:
    with FakeOpenAI(spend_limit_tokens=1, **INSTANT, window=0.2) as server:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            assert client.post("/chat/completions", json=chat()).status_code == 200
            for _ in range(3):
                refused = client.post("/chat/completions", json=chat())
                assert refused.status_code == 429 and "retry-after" not in refused.headers
                assert refused.json()["error"]["code"] == "insufficient_quota"
                assert refused.json()["error"]["type"] == "insufficient_quota"
                assert "x-ratelimit-remaining-requests" in refused.headers
        assert server.stats().rate_limited == {"insufficient_quota": 3}


def test_every_nth_request_fails_as_configured() -> None:
    faults = (Fault("503", every=3), Fault("529", every=4), Fault("502", every=5))
    with FakeOpenAI(**INSTANT, faults=faults) as server:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            answers = [client.post("/chat/completions", json=chat()) for _ in range(12)]
        stats = server.stats()
    codes = [answer.status_code for answer in answers]
    assert codes == [200, 200, 503, 529, 502, 503, 200, 529, 503, 502, 200, 503]
    assert answers[2].json()["error"]["type"] == "server_error"
    assert answers[3].json()["error"]["type"] == "overloaded_error"
    assert answers[4].headers["content-type"].startswith("text/html")
    assert all("x-ratelimit-remaining-requests" in answer.headers for answer in answers)
    assert stats.faults == {"503": 4, "529": 2, "502": 2}
    assert stats.completion_tokens > 0 and stats.accepted == 12


def test_fault_rates_are_honoured_and_seeded() -> None:
    faults = (
        Fault("500", rate=0.2),
        Fault("missing_message", rate=0.1),
        Fault("invalid_json", rate=0.1),
    )

    def run() -> list[str]:
        outcomes = []
        with FakeOpenAI(**INSTANT, faults=faults, seed=7) as server:
            with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
                for _ in range(300):
                    response = client.post("/chat/completions", json=chat())
                    outcomes.append(classify(response))
        return outcomes

    first = run()
    assert first == run()
    share = {kind: first.count(kind) / len(first) for kind in set(first)}
    assert 0.14 <= share["500"] <= 0.26
    assert 0.05 <= share["missing_message"] <= 0.13  # 0.8 * 0.1 of the requests
    assert 0.04 <= share["invalid_json"] <= 0.12  # 0.8 * 0.9 * 0.1


def classify(response: httpx.Response) -> str:
    if response.status_code == 502:
        assert "502 Bad Gateway" in response.text
        return "502"
    if response.status_code != 200:
        assert response.json()["error"]["type"] == "server_error"
        return str(response.status_code)
    try:
        body = response.json()
    except json.JSONDecodeError:
        return "invalid_json"
    return "ok" if "message" in body["choices"][0] else "missing_message"


def test_slow_answers_trip_client_timeouts_and_do_not_hold_shutdown() -> None:
    started = time.monotonic()
    with FakeOpenAI(**INSTANT, faults=(Fault("slow", every=1),), slow_seconds=30) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.base_url}/chat/completions", json=chat(), timeout=0.3)
    assert time.monotonic() - started < 5


def test_latency_grows_with_the_answer() -> None:
    with FakeOpenAI(latency=0.1, latency_per_token=0.002) as server:
        started = time.monotonic()
        body = httpx.post(f"{server.base_url}/chat/completions", json=chat()).json()
        elapsed = time.monotonic() - started
    assert elapsed >= 0.1 + 0.002 * body["usage"]["completion_tokens"]


def test_concurrent_peak_is_counted() -> None:
    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
            calls = [client.post("/chat/completions", json=chat()) for _ in range(5)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    with FakeOpenAI(latency=0.3) as server:
        assert asyncio.run(burst(server.base_url)) == [200] * 5
        stats = server.stats()
        assert httpx.get(f"{server.url}/stats").json()["peak_concurrency"] == 5
    assert stats.peak_concurrency == 5 and stats.in_flight == 0


def test_unknown_or_missing_keys_get_401(server: FakeOpenAI) -> None:
    url = f"{server.base_url}/chat/completions"
    missing = httpx.post(url, json=chat())
    wrong = httpx.post(url, json=chat(), headers={"Authorization": "Bearer sk-wrong-key-123456"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-123456" not in wrong.text
    assert server.stats().unauthorized == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hello"}, "messages"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        ([1, 2], None),
    ],
)
def test_bad_requests_get_400(client: httpx.Client, body: object, param: str | None) -> None:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


def test_unparseable_bodies_get_400(client: httpx.Client) -> None:
    response = client.post("/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "parse the JSON" in response.json()["error"]["message"]


def test_unknown_paths_get_404(server: FakeOpenAI, client: httpx.Client) -> None:
    assert client.post("/embeddings", json={}).status_code == 404
    assert client.get("/chat/completions").status_code == 405
    assert client.get("/nope").json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        FakeOpenAI(rpm=0)
    with pytest.raises(ConfigError):
        FakeOpenAI(faults=(Fault("500", rate=2.0),))


def test_the_command_line_serves_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "batchyard.testing.openai",
        "--port",
        str(port),
        "--rpm",
        "25",
        "--tpm",
        "5500",
        "--latency",
        "0",
        "--fault",
        "503=every:2",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        first, second = (httpx.post(url, json=chat()) for _ in range(2))
        assert (first.status_code, second.status_code) == (200, 503)
        assert first.headers["x-ratelimit-limit-requests"] == "25"
        assert first.headers["x-ratelimit-limit-tokens"] == "5500"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert f"127.0.0.1:{port}/v1" in err


@pytest.mark.parametrize("missing", ["uvicorn", "starlette"])
def test_the_command_line_without_the_testing_extra_says_what_to_install(missing: str) -> None:
    # A plain install has neither; None in sys.modules makes their import fail as if absent.
    code = (
        f"import runpy, sys; sys.modules[{missing!r}] = None; "
        "runpy.run_module('batchyard.testing.openai', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"python -m batchyard.testing.openai: {missing} is missing; the local OpenAI server "
        "needs the testing extra: pip install 'batchyard[testing]'"
    ]


def test_the_window_slides_rather_than_resetting() -> None:
    from batchyard.testing._window import SlidingWindow

    window = SlidingWindow(rpm=2, tpm=100, window=10.0)
    assert window.admit(10, now=0.0).refused is None
    assert window.admit(10, now=6.0).refused is None
    third = window.admit(10, now=9.0)
    assert (third.refused, third.retry_after) == ("requests", 1.0)
    assert window.admit(10, now=10.0).refused is None  # the request at 0.0 has left
    fourth = window.admit(10, now=15.0)
    assert (fourth.refused, fourth.retry_after) == ("requests", 1.0)  # the one at 6.0 has not
    tokens = SlidingWindow(rpm=10, tpm=100, window=10.0)
    for at, reserved in ((0.0, 30), (1.0, 30), (2.0, 30)):
        assert tokens.admit(reserved, now=at).refused is None
    refused = tokens.admit(50, now=3.0)  # needs the first two reservations gone
    assert (refused.refused, refused.retry_after) == ("tokens", 8.0)
    assert refused.remaining_tokens == 10 and refused.reset_tokens == 9.0
