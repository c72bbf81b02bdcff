"""The ASGI app of the fake OpenAI server: the completions endpoint with its checks in OpenAI's
order (401 key, 400 body, 429 quota, 429 requests, 429 tokens), fault injection, and the
health and stats endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batchyard.testing._chat import (
    REPLY_PRIMING,
    Answer,
    BadRequest,
    ChatRequest,
    compose_answer,
    count_prompt_tokens,
    parse_request,
)
from batchyard.testing._config import FaultKind, ServerConfig, Stats
from batchyard.testing._window import SlidingWindow, Verdict, limit_headers, retry_headers

_SERVER_ERRORS = ("500", "502", "503", "529")
#: OpenAI caches prompt prefixes of at least 1024 tokens, in steps of 128.
_CACHE_MIN, _CACHE_STEP = 1024, 128


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error the way OpenAI shapes it: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Service:
    """The state behind the app: windows per key, counters, the fault generator."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stopping = False
        self._windows: dict[str, SlidingWindow] = {}
        self._stats = Stats(rate_limited={}, faults={})
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._seen_prefixes: set[bytes] = set()

    def stats(self) -> Stats:
        with self._lock:
            return replace(
                self._stats,
                rate_limited=dict(self._stats.rate_limited),
                faults=dict(self._stats.faults),
            )

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)
            self._stats.peak_concurrency = max(self._stats.peak_concurrency, self._stats.in_flight)

    def _tally(self, table: dict[str, int], key: str) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + 1

    async def completions(self, request: Request) -> Response:
        self._count(requests=1)
        key = _bearer(request)
        if self.config.keys is not None and key not in self.config.keys:
            self._count(unauthorized=1)
            return _unauthorized(key)
        window = self._windows.setdefault(
            key, SlidingWindow(self.config.rpm, self.config.tpm, self.config.window)
        )
        try:
            chat = parse_request(await _json(request), self.config.default_max_tokens)
        except BadRequest as exc:
            self._count(bad_requests=1)
            headers = self._headers(window.peek(time.monotonic()))
            return _error(
                400,
                exc.message,
                "invalid_request_error",
                exc.code,
                param=exc.param,
                headers=headers,
            )
        return await self._admit(chat, window)

    async def _admit(self, chat: ChatRequest, window: SlidingWindow) -> Response:
        now = time.monotonic()
        limit = self.config.spend_limit_tokens
        if limit is not None and self._stats.tokens_used >= limit:
            self._tally(self._stats.rate_limited, "insufficient_quota")
            return _error(
                429,
                _QUOTA_MESSAGE,
                "insufficient_quota",
                "insufficient_quota",
                headers=self._headers(window.peek(now)),
            )
        reservation = chat.prompt_tokens + chat.max_tokens
        verdict = window.admit(reservation, now)
        headers = self._headers(verdict)
        if verdict.refused is not None:
            self._tally(self._stats.rate_limited, verdict.refused)
            return _rate_limited(chat, verdict, reservation, headers)
        with self._lock:
            self._stats.accepted += 1
            number = self._stats.accepted
        self._count(reserved_tokens=reservation, in_flight=1)
        try:
            return await self._answer(number, chat, headers)
        finally:
            self._count(in_flight=-1)

    async def _answer(self, number: int, chat: ChatRequest, headers: dict[str, str]) -> Response:
        fault = self._pick_fault(number)
        if fault is not None:
            self._tally(self._stats.faults, fault)
        answer = compose_answer(chat, self.config.answer_tokens)
        delay = self.config.latency + self.config.latency_per_token * answer.completion_tokens
        if fault in _SERVER_ERRORS:
            await self._sleep(self.config.latency)
            return _server_error(fault, headers)
        await self._sleep(delay + (self.config.slow_seconds if fault == "slow" else 0.0))
        if fault == "invalid_json":
            return Response('{"id": "chatcmpl-', media_type="application/json", headers=headers)
        body = self._completion(number, chat, answer)
        if fault == "missing_message":
            del body["choices"][0]["message"]
        return JSONResponse(body, headers=headers)

    def _pick_fault(self, number: int) -> FaultKind | None:
        for fault in self.config.faults:
            if fault.every and number % fault.every == 0:
                return fault.kind
            if fault.rate and self._rng.random() < fault.rate:
                return fault.kind
        return None

    def _completion(self, number: int, chat: ChatRequest, answer: Answer) -> dict[str, Any]:
        prompt_tokens = chat.prompt_tokens
        cached = self._cached_tokens(chat.messages, chat.model)
        self._count(prompt_tokens=prompt_tokens, completion_tokens=answer.completion_tokens)
        return {
            "id": f"chatcmpl-fake{number:010d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "system_fingerprint": "fp_batchyard",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": prompt_tokens + answer.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def _cached_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        """Tokens of the longest whole-message prefix seen before, as OpenAI's prompt cache
        counts them: only from 1024 tokens on, rounded down to a multiple of 128."""
        cached = 0
        digest = hashlib.sha256()
        for end, message in enumerate(messages, start=1):
            digest.update(json.dumps(message, sort_keys=True).encode())
            prefix = digest.digest()
            if prefix in self._seen_prefixes:
                cached = count_prompt_tokens(messages[:end], model) - REPLY_PRIMING
            self._seen_prefixes.add(prefix)
        return cached // _CACHE_STEP * _CACHE_STEP if cached >= _CACHE_MIN else 0

    def _headers(self, verdict: Verdict) -> dict[str, str]:
        return limit_headers(verdict, self.config.rpm, self.config.tpm)

    async def _sleep(self, seconds: float) -> None:
        # Short steps, so that stopping the server never waits out a slow answer.
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(asdict(self.stats()))


_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)"
        ) from exc


def _unauthorized(key: str) -> Response:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _error(401, message, "invalid_request_error", None)
    # NOTE: only the ends of the key are echoed, as OpenAI does, so it never leaks whole.
    masked = f"{key[:3]}***{key[-2:]}" if len(key) > 8 else "***"
    return _error(
        401, f"Incorrect API key provided: {masked}.", "invalid_request_error", "invalid_api_key"
    )


def _rate_limited(
    chat: ChatRequest, verdict: Verdict, requested: int, headers: dict[str, str]
) -> Response:
    if verdict.refused == "requests":
        what, used, asked = "requests per min (RPM)", verdict.used_requests, 1
        limit = used + verdict.remaining_requests
    else:
        what, used, asked = "tokens per min (TPM)", verdict.used_tokens, requested
        limit = used + verdict.remaining_tokens
    if verdict.retry_after is None:
        message = f"Request too large for {chat.model} on {what}: Limit {limit}, Requested {asked}."
        return _error(429, message, "tokens", "rate_limit_exceeded", headers=headers)
    message = (
        f"Rate limit reached for {chat.model} on {what}: Limit {limit}, Used {used}, "
        f"Requested {asked}. Please try again in {verdict.retry_after:.3f}s."
    )
    headers = {**headers, **retry_headers(verdict.retry_after)}
    return _error(
        429, message, verdict.refused or "requests", "rate_limit_exceeded", headers=headers
    )


def _server_error(kind: str, headers: dict[str, str]) -> Response:
    if kind == "502":
        html = (
            "<html><head><title>502 Bad Gateway</title></head>"
            "<body><h1>502 Bad Gateway</h1></body></html>"
        )
        return Response(html, status_code=502, media_type="text/html", headers=headers)
    if kind == "529":
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return JSONResponse(body, status_code=529, headers=headers)
    message = {
        "500": "The server had an error while processing your request. Sorry about that!",
        "503": "The engine is currently overloaded, please try again later.",
    }[kind]
    return _error(int(kind), message, "server_error", None, headers=headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = f"Invalid URL ({request.method} {request.url.path})"
    return _error(status, message, "invalid_request_error", None)


def create_app(config: ServerConfig | None = None) -> Starlette:
    """The ASGI app of the fake server, with its state in ``app.state.service``."""
    service = Service(config or ServerConfig())
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", service.completions, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
            Route("/stats", service.stats_endpoint, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.service = service
    return app
