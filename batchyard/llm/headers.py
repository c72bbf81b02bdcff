"""Provider rate-limit headers read into one value, :class:`RateInfo`, and the pauses they imply.

OpenAI and Groq send ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as Go
durations (``"20ms"``, ``"6m0s"``); Anthropic sends ``anthropic-ratelimit-*`` with resets as
RFC 3339 times; all may send ``retry-after-ms`` or ``retry-after``. A header that cannot be read
becomes ``None``: a provider's odd header never fails a request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_GO_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_ANTHROPIC = "anthropic-ratelimit-"


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a provider said about its limits in one answer; every field may be missing.

    Resets and ``retry_after`` are seconds from when the answer arrived. For Anthropic,
    ``*_tokens`` is the tightest of its tokens, input-tokens and output-tokens limits (the one
    with the fewest remaining), and the input and output limits are also kept on their own.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    limit_input_tokens: int | None = None
    remaining_input_tokens: int | None = None
    reset_input_tokens: float | None = None
    limit_output_tokens: int | None = None
    remaining_output_tokens: int | None = None
    reset_output_tokens: float | None = None
    retry_after: float | None = None


#: (limit, remaining, reset) of one limit.
_Limit = tuple[int | None, int | None, float | None]


def parse_rate_headers(headers: Mapping[str, str], now: float) -> RateInfo:
    """Read the rate-limit headers of an answer (names in any case); never raises.

    ``now`` is the Unix time (``time.time()``) the answer arrived, against which absolute
    times (Anthropic's resets, an HTTP-date ``retry-after``) become seconds from now.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    if any(name.startswith(_ANTHROPIC) for name in lower):
        requests = _anthropic(lower, "requests", now)
        inputs = _anthropic(lower, "input-tokens", now)
        outputs = _anthropic(lower, "output-tokens", now)
        tokens = _tightest(_anthropic(lower, "tokens", now), inputs, outputs)
    else:
        requests, tokens = _openai(lower, "requests", now), _openai(lower, "tokens", now)
        inputs = outputs = (None, None, None)
    return RateInfo(*requests, *tokens, *inputs, *outputs, retry_after=_retry_after(lower, now))


def exhausted_for(info: RateInfo) -> float | None:
    """After a successful answer: how long the key should pause because a limit is used up
    (``remaining == 0``) until it resets, or ``None`` when nothing is used up or the reset
    is unknown."""
    waits = [
        reset
        for remaining, reset in (
            (info.remaining_requests, info.reset_requests),
            (info.remaining_tokens, info.reset_tokens),
        )
        if remaining == 0 and reset is not None
    ]
    return max(waits, default=None)


def next_free_in(info: RateInfo) -> float | None:
    """After a successful answer that used a limit up (``remaining == 0``): about how long
    until the provider frees room for one more request, ``reset / limit`` (limits refill
    across their window: waiting for the full reset would stall a busy key for up to a
    window). ``None`` when nothing is used up or the figures are missing."""
    waits = [
        reset / limit
        for remaining, reset, limit in (
            (info.remaining_requests, info.reset_requests, info.limit_requests),
            (info.remaining_tokens, info.reset_tokens, info.limit_tokens),
        )
        if remaining == 0 and reset is not None and limit
    ]
    return max(waits, default=None)


def pause_for(info: RateInfo) -> float | None:
    """After a 429: how long the whole limiter key should pause. The provider's
    ``retry-after`` when given, else the reset of a used-up limit, else ``None`` (the caller
    falls back to its backoff)."""
    return info.retry_after if info.retry_after is not None else exhausted_for(info)


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration (``"20ms"``, ``"1.5s"``, ``"2m59.56s"``, ``"1h2m3s"``) or a
    bare number of seconds; ``None`` when it is neither."""
    text = text.strip()
    if _GO_DURATION.fullmatch(text):
        return sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART.findall(text))
    return _seconds(text)


def _openai(headers: dict[str, str], what: str, now: float) -> _Limit:
    return (
        _count(headers.get(f"x-ratelimit-limit-{what}")),
        _count(headers.get(f"x-ratelimit-remaining-{what}")),
        _reset(headers.get(f"x-ratelimit-reset-{what}"), now),
    )


def _anthropic(headers: dict[str, str], what: str, now: float) -> _Limit:
    prefix = f"{_ANTHROPIC}{what}-"
    return (
        _count(headers.get(f"{prefix}limit")),
        _count(headers.get(f"{prefix}remaining")),
        _reset(headers.get(f"{prefix}reset"), now),
    )


def _tightest(*limits: _Limit) -> _Limit:
    """The limit with the fewest remaining (the later reset on a tie); without any remaining
    count, the first limit that says anything."""
    counted = [limit for limit in limits if limit[1] is not None]
    if counted:
        return min(counted, key=lambda limit: (limit[1], -(limit[2] or 0.0)))
    return next((limit for limit in limits if limit != (None, None, None)), (None, None, None))


def _retry_after(headers: dict[str, str], now: float) -> float | None:
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    return seconds if seconds is not None else _http_date(value, now)


def _reset(value: str | None, now: float) -> float | None:
    """A reset as a duration, a number of seconds or an RFC 3339 time."""
    if value is None:
        return None
    seconds = parse_duration(value)
    return seconds if seconds is not None else _timestamp(value, now)


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _timestamp(value: str, now: float) -> float | None:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # a time without a zone says nothing about when
        return None
    return max(moment.timestamp() - now, 0.0)


def _http_date(value: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC with the zone unknown
        moment = moment.replace(tzinfo=UTC)
    return max(moment.timestamp() - now, 0.0)
