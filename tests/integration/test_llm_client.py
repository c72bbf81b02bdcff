"""The chat-completions client over real HTTP, against the fake OpenAI server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchyard.errors import ConfigError
from batchyard.llm.client import ChatClient, ChatResult, ProviderError
from batchyard.llm.headers import pause_for
from batchyard.testing.openai import FakeOpenAI, Fault, count_prompt_tokens

KEY = "sk-test-0123456789abcdef"
WRONG_KEY = "sk-wrong-fedcba9876543210"
#: No simulated latency: answers as fast as loopback allows.
INSTANT: dict[str, Any] = {"latency": 0.0, "latency_per_token": 0.0}


def chat(text: str = "Name three rivers.", max_tokens: int = 100, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        **extra,
    }


def complete(
    base_url: str, *bodies: dict[str, Any], key: str | None = KEY, timeout: float = 5.0
) -> list[ChatResult | ProviderError]:
    """Send ``bodies`` one after another; a result or the ProviderError for each."""

    async def run() -> list[ChatResult | ProviderError]:
        outcomes: list[ChatResult | ProviderError] = []
        async with ChatClient(base_url, key, timeout=timeout) as client:
            for body in bodies:
                try:
                    outcomes.append(await client.complete(body))
                except ProviderError as exc:
                    outcomes.append(exc)
        return outcomes

    return asyncio.run(run())


def fail(base_url: str, body: dict[str, Any] | None = None, **options: Any) -> ProviderError:
    (outcome,) = complete(base_url, body or chat(), **options)
    assert isinstance(outcome, ProviderError), outcome
    return outcome


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(**INSTANT, keys={KEY}) as running:
        yield running


def test_a_completion_with_usage_and_rate_headers(server: FakeOpenAI) -> None:
    system = {"role": "system", "content": "rules " * 1000}  # long enough to be cached
    first, second = (
        {**chat(), "messages": [system, {"role": "user", "content": ask}]}
        for ask in ("first", "second")
    )
    outcomes = complete(server.base_url, first, second)
    assert all(isinstance(outcome, ChatResult) for outcome in outcomes)
    uncached, cached = outcomes
    assert isinstance(uncached, ChatResult) and isinstance(cached, ChatResult)
    assert cached.content and cached.model == "gpt-test" and cached.finish_reason == "stop"
    assert cached.prompt_tokens == count_prompt_tokens(second["messages"])
    assert 16 <= cached.completion_tokens <= 100
    assert (uncached.cached_tokens, cached.cached_tokens) == (0, 1408)
    assert cached.reasoning_tokens == 0
    assert cached.raw_id is not None and cached.raw_id.startswith("chatcmpl-")
    assert 0 < cached.latency < 5
    assert (cached.rate.limit_requests, cached.rate.remaining_requests) == (10_000, 9_998)
    assert cached.rate.reset_requests is not None and 0 < cached.rate.reset_requests <= 60
    stats = server.stats()
    assert stats.completion_tokens == uncached.completion_tokens + cached.completion_tokens


def test_requests_over_the_limit_are_rate_limited_with_a_pause() -> None:
    with FakeOpenAI(rpm=2, window=30.0, **INSTANT) as server:
        *admitted, refused = complete(server.base_url, chat(), chat(), chat())
    assert all(isinstance(outcome, ChatResult) for outcome in admitted)
    assert isinstance(refused, ProviderError)
    assert (refused.kind, refused.status, refused.retryable) == ("rate_limited", 429, True)
    assert (refused.code, refused.type) == ("rate_limit_exceeded", "requests")
    assert refused.message.startswith("HTTP 429 rate_limit_exceeded: Rate limit reached for")
    assert refused.rate is not None and refused.rate.remaining_requests == 0
    assert refused.rate.retry_after is not None and 29 < refused.rate.retry_after <= 30
    assert pause_for(refused.rate) == refused.rate.retry_after


def test_a_request_larger_than_the_token_limit_is_fatal() -> None:
    with FakeOpenAI(tpm=500, **INSTANT) as server:
        error = fail(server.base_url, chat(max_tokens=10_000))
    assert (error.kind, error.status, error.retryable) == ("fatal", 429, False)
    assert "Request too large" in error.message


def test_insufficient_quota_is_quota() -> None:
    with FakeOpenAI(spend_limit_tokens=0, **INSTANT) as server:
        error = fail(server.base_url)
    assert (error.kind, error.status, error.retryable) == ("quota", 429, False)
    assert error.code == error.type == "insufficient_quota"
    assert "exceeded your current quota" in error.message


def test_a_wrong_key_is_fatal_and_never_shown(server: FakeOpenAI) -> None:
    error = fail(server.base_url, key=WRONG_KEY)
    assert (error.kind, error.status, error.code) == ("fatal", 401, "invalid_api_key")
    assert not error.retryable
    for text in (error.message, str(error), repr(error), repr(error.args)):
        assert WRONG_KEY not in text
    assert server.stats().unauthorized == 1


def test_a_bad_request_is_fatal(server: FakeOpenAI) -> None:
    error = fail(server.base_url, chat(max_tokens=0))
    assert (error.kind, error.status, error.type) == ("fatal", 400, "invalid_request_error")
    assert error.message.startswith("HTTP 400 ")
    assert server.stats().bad_requests == 1


def test_an_unknown_route_is_fatal(server: FakeOpenAI) -> None:
    error = fail(f"{server.url}/v2")
    assert (error.kind, error.status) == ("fatal", 404)
    expected = "HTTP 404 invalid_request_error: Invalid URL (POST /v2/chat/completions)"
    assert error.message == expected


@pytest.mark.parametrize(
    ("fault", "type_"),
    [("500", "server_error"), ("502", None), ("503", "server_error"), ("529", "overloaded_error")],
)
def test_server_errors_are_retryable(fault: Any, type_: str | None) -> None:
    with FakeOpenAI(**INSTANT, faults=(Fault(fault, every=1),)) as server:
        error = fail(server.base_url)
    assert (error.kind, error.status, error.type, error.retryable) == (
        "retryable",
        int(fault),
        type_,
        True,
    )
    assert error.rate is not None and error.rate.limit_requests == 10_000
    if fault == "502":  # an HTML page, kept as one line of text
        assert error.message == (
            "HTTP 502: <html><head><title>502 Bad Gateway</title></head>"
            "<body><h1>502 Bad Gateway</h1></body></html>"
        )


@pytest.mark.parametrize("fault", ["invalid_json", "missing_message"])
def test_malformed_answers_are_retryable(fault: Any) -> None:
    with FakeOpenAI(**INSTANT, faults=(Fault(fault, every=1),)) as server:
        error = fail(server.base_url)
    assert (error.kind, error.status, error.retryable) == ("retryable", 200, True)
    assert "malformed answer" in error.message


def test_a_closed_port_is_retryable_and_never_shows_the_key() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fail(f"http://127.0.0.1:{port}/v1")
    assert (error.kind, error.status, error.rate) == ("retryable", None, None)
    assert error.message.startswith("request failed (ConnectError")
    assert KEY not in str(error) and KEY not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_a_slow_answer_times_out_as_retryable() -> None:
    faults = (Fault("slow", every=1),)
    with FakeOpenAI(**INSTANT, faults=faults, slow_seconds=30) as server:
        error = fail(server.base_url, timeout=0.2)
    assert (error.kind, error.status) == ("retryable", None)
    assert error.message.startswith("timed out after 0.2s (ReadTimeout")
    assert KEY not in error.message


def test_the_client_hides_its_key_and_sends_extra_headers(server: FakeOpenAI) -> None:
    seen: list[httpx.Request] = []

    async def run() -> ChatResult:
        async with httpx.AsyncClient(event_hooks={"request": [seen_request]}) as http:
            client = ChatClient(server.base_url, KEY, http=http, headers={"X-Trace": "t1"})
            assert KEY not in repr(client) and KEY not in str(client)
            async with client:
                result = await client.complete(chat())
            assert not http.is_closed  # a shared client stays open
            return result

    async def seen_request(request: httpx.Request) -> None:
        seen.append(request)

    assert asyncio.run(run()).content
    (request,) = seen
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-trace"] == "t1"
    assert str(request.url) == f"{server.base_url}/chat/completions"


def test_without_a_key_no_authorization_is_sent(server: FakeOpenAI) -> None:
    error = fail(server.base_url + "/", key=None)  # a trailing slash is fine
    assert (error.status, error.kind) == (401, "fatal")
    assert "didn't provide an API key" in error.message


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://example.com/v1", "http://"])
def test_a_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        ChatClient(url, KEY)


def test_a_key_echoed_by_the_provider_is_scrubbed() -> None:
    body = {"error": {"message": f"Bad key {KEY}.", "type": "auth", "code": "bad_key"}}
    error = mocked(httpx.Response(401, json=body))
    assert error.message == "HTTP 401 bad_key: Bad key ***."
    assert KEY not in repr(error)


def openai_error(code: str | None, message: str = "no", type_: str = "x") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (403, openai_error("insufficient_quota"), "quota", "HTTP 403 insufficient_quota: no"),
        (400, openai_error("billing_hard_limit_reached"), "quota", None),
        (429, openai_error(None, type_="billing_not_active"), "quota", None),
        (402, {"error": "Insufficient credits"}, "quota", "HTTP 402: Insufficient credits"),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API.",
                },
            },
            "quota",
            None,
        ),
        (400, openai_error(None, "You have hit your monthly spend limit."), "quota", None),
        (408, openai_error(None), "retryable", None),
        (409, openai_error(None), "retryable", None),
        (422, {"detail": "field required"}, "fatal", "HTTP 422: field required"),
        (
            400,
            {"object": "error", "message": "too\n long", "type": "BadRequestError", "code": 400},
            "fatal",
            "HTTP 400 BadRequestError: too long",
        ),
        (403, ["not", "an", "object"], "fatal", 'HTTP 403: ["not","an","object"]'),
        (418, openai_error(None), "fatal", "HTTP 418 x: no"),
    ],
)
def test_error_bodies_are_classified(
    status: int, body: Any, kind: str, message: str | None
) -> None:
    error = mocked(httpx.Response(status, json=body))
    assert (error.status, error.kind) == (status, kind)
    if message is not None:
        assert error.message == message


def test_a_non_json_error_body_keeps_its_first_300_characters() -> None:
    error = mocked(httpx.Response(503, text="busy " * 200))
    assert error.kind == "retryable" and len(error.message) <= len("HTTP 503: ") + 300


def mocked(response: httpx.Response) -> ProviderError:
    async def run() -> ProviderError:
        transport = httpx.MockTransport(lambda request: response)
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(ProviderError) as caught:
                await ChatClient("http://provider.test/v1", KEY, http=http).complete(chat())
        return caught.value

    return asyncio.run(run())
