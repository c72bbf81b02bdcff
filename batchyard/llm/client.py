"""One chat-completions request to an OpenAI-compatible provider: a :class:`ChatResult`, or a
:class:`ProviderError` saying what kind of failure it was.

The client neither retries nor rate-limits: the worker's retry policy and the shared limiter
decide what happens next, from :attr:`ProviderError.kind` and the :class:`RateInfo` read from
the provider's headers. The API key never appears in a message, a ``repr`` or a log line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx

from batchyard.errors import BatchyardError, ConfigError
from batchyard.llm.headers import RateInfo, parse_rate_headers

#: What a failed request means for the caller.
ErrorKind = Literal["rate_limited", "quota", "retryable", "fatal"]

#: Error codes and types that mean the account is out of money, not momentarily throttled.
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
_QUOTA_WORDS = re.compile(
    r"exceeded your current quota|billing hard limit|spend(?:ing)? limit|credit balance is too low",
    re.IGNORECASE,
)
#: OpenAI's 429 for a request bigger than the whole tokens-per-minute limit: waiting never helps.
_TOO_LARGE = re.compile(r"^request too large", re.IGNORECASE)
_TEXT_LIMIT = 300


class ProviderError(BatchyardError):
    """A chat-completions request failed; ``kind`` says what the caller should do.

    - ``"rate_limited"``: a 429 throttle; pause the limiter key (see ``headers.pause_for``)
      and retry.
    - ``"quota"``: the account is out of credit or over its spend limit; retrying is futile
      until a human acts.
    - ``"retryable"``: a transient failure (408, 409, 5xx, 529, a connection error, a timeout,
      a malformed answer); retry with backoff.
    - ``"fatal"``: the request itself is wrong (400, 401, 403, 404, 422, other 4xx).

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` and ``type`` come
    from the provider's error body, ``rate`` from its headers when there was an answer.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,  # the provider's own name for the field
        rate: RateInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.rate = rate

    @property
    def retryable(self) -> bool:
        """Whether trying the same request again later can succeed."""
        return self.kind in ("rate_limited", "retryable")


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A successful completion: the first choice's text, the usage the provider reported,
    the wall time of the request (``latency``, seconds) and the rate-limit headers."""

    content: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    latency: float
    rate: RateInfo
    raw_id: str | None


class ChatClient:
    """Sends chat-completions requests to ``{base_url}/chat/completions``.

    ``base_url`` is the provider's API root (``"https://api.openai.com/v1"``); ``api_key``, if
    given, goes out as ``Authorization: Bearer``; ``headers`` are added to every request;
    ``timeout`` (seconds) bounds each phase of a request (connect, write, each read). Pass
    ``http`` to share a connection pool: the client then leaves it open on close. Use it as
    ``async with ChatClient(...) as client:`` or call :meth:`aclose`. Raises
    :class:`~batchyard.errors.ConfigError` when ``base_url`` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 600.0,
        http: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.url = _endpoint(base_url)
        self.timeout = timeout
        # NOTE: the key goes on each request, never on a shared client's default headers.
        self._api_key = api_key
        self._headers = dict(headers or {})
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        """POST ``body`` (a chat-completions request, sent as is) and read the first choice.

        Raises :class:`ProviderError` for an error status, a connection failure, a timeout or
        an answer without ``choices[0].message.content``. The call's ``timeout`` replaces the
        one of a shared ``http`` client.
        """
        started = time.monotonic()
        try:
            response = await self._http.post(
                self.url, json=body, headers=self._request_headers(), timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            raise self._transport_error(f"timed out after {self.timeout:g}s", exc) from None
        except httpx.RequestError as exc:
            raise self._transport_error("request failed", exc) from None
        latency = time.monotonic() - started
        rate = parse_rate_headers(response.headers, time.time())
        if not response.is_success:
            raise self._status_error(response, rate)
        return _read_result(response, body, latency, rate)

    def _request_headers(self) -> dict[str, str]:
        if self._api_key is None:
            return self._headers
        return {**self._headers, "Authorization": f"Bearer {self._api_key}"}

    def _transport_error(self, what: str, exc: httpx.HTTPError) -> ProviderError:
        # NOTE: built from the exception's class and text only: httpx exceptions carry the
        # request, headers included, and the error (with `from None`) must not drag it along.
        detail = _one_line(str(exc))
        text = f"{what} ({type(exc).__name__}{': ' + detail if detail else ''}) POST {self.url}"
        return ProviderError("retryable", self._scrub(text))

    def _status_error(self, response: httpx.Response, rate: RateInfo) -> ProviderError:
        message, code, error_type = _error_fields(response)
        status = response.status_code
        # A numeric code (vLLM's) only repeats the status; the type says more.
        name = code if code and not code.isdigit() else error_type
        label = f"HTTP {status} {name}" if name else f"HTTP {status}"
        return ProviderError(
            classify(status, code, error_type, message),
            self._scrub(f"{label}: {message}" if message else label),
            status=status,
            code=code,
            type=error_type,
            rate=rate,
        )

    def _scrub(self, text: str) -> str:
        # Belt and braces: a provider may echo the key (OpenAI masks it; others may not).
        return text.replace(self._api_key, "***") if self._api_key else text


def _endpoint(base_url: str) -> str:
    url = f"{base_url.rstrip('/')}/chat/completions"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"not an http(s) base URL: {base_url!r}")
    return url


def classify(status: int, code: str | None, type_: str | None, message: str) -> ErrorKind:
    """The kind of an error answer, from its status and the provider's error body."""
    if status == 402 or code in _QUOTA_CODES or type_ in _QUOTA_CODES:
        return "quota"
    if _QUOTA_WORDS.search(message):
        return "quota"
    if status == 429:
        return "fatal" if _TOO_LARGE.search(message) else "rate_limited"
    if status in (408, 409) or status >= 500:
        return "retryable"
    return "fatal"


def _error_fields(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """(message, code, type) from an OpenAI (``{"error": {...}}``), Anthropic (``{"type":
    "error", "error": {...}}``) or vLLM-style (fields at the top) body, else the text."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)[:_TEXT_LIMIT], None, None
    if not isinstance(body, dict):
        return _one_line(response.text)[:_TEXT_LIMIT], None, None
    error = body.get("error")
    if isinstance(error, str):
        return _one_line(error), None, None
    fields = error if isinstance(error, dict) else body
    message = fields.get("message") or fields.get("detail")
    if not isinstance(message, str):
        message = response.text[:_TEXT_LIMIT]
    return _one_line(message), _text(fields.get("code")), _text(fields.get("type"))


def _read_result(
    response: httpx.Response, request: dict[str, Any], latency: float, rate: RateInfo
) -> ChatResult:
    try:
        body = response.json()
    except ValueError:
        raise _malformed("the body is not JSON", response, rate) from None
    choice = _first_choice(body)
    message = choice.get("message") if choice is not None else None
    content = message.get("content") if isinstance(message, dict) else None
    if choice is None or not isinstance(content, str):
        raise _malformed("no choices[0].message.content", response, rate)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return ChatResult(
        content=content,
        model=_text(body.get("model")) or _text(request.get("model")) or "",
        finish_reason=_text(choice.get("finish_reason")),
        prompt_tokens=_tokens(usage, "prompt_tokens"),
        completion_tokens=_tokens(usage, "completion_tokens"),
        cached_tokens=_tokens(usage.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_tokens(usage.get("completion_tokens_details"), "reasoning_tokens"),
        latency=latency,
        rate=rate,
        raw_id=_text(body.get("id")),
    )


def _first_choice(body: Any) -> dict[str, Any] | None:
    choices = body.get("choices") if isinstance(body, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _malformed(why: str, response: httpx.Response, rate: RateInfo) -> ProviderError:
    status = response.status_code
    return ProviderError(
        "retryable", f"HTTP {status} malformed answer: {why}", status=status, rate=rate
    )


def _tokens(section: object, name: str) -> int:
    value = section.get(name) if isinstance(section, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())
