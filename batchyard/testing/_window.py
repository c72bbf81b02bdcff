"""The fake server's rate limits: a sliding-window log per API key, and OpenAI's header formats.

The window is a log of admitted requests, each with the tokens it reserved (prompt + max_tokens).
A request is admitted when, counting it, the requests and the tokens admitted during the last
``window`` seconds stay within their limits. That is the strictest reading of "N per minute":
no interval of ``window`` seconds ever holds more than the limit, whatever its start.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

#: Which limit turned a request away.
LimitKind = Literal["requests", "tokens"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one admission check, and the state the ``x-ratelimit-*`` headers show.

    ``refused`` is ``None`` for an admitted request. ``retry_after`` is the time until the same
    request would be admitted (``None`` when it never can: it asks for more tokens than the
    limit). ``reset_*`` are the times until the window is empty of requests / of tokens.
    """

    refused: LimitKind | None
    retry_after: float | None
    remaining_requests: int
    remaining_tokens: int
    reset_requests: float
    reset_tokens: float
    used_requests: int
    used_tokens: int


class SlidingWindow:
    """The admitted requests of one API key over the last ``window`` seconds."""

    def __init__(self, rpm: int, tpm: int, window: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self._log: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def admit(self, tokens: int, now: float) -> Verdict:
        """Admit a request reserving ``tokens`` at ``now`` if both limits allow it."""
        self._expire(now)
        refused: LimitKind | None = None
        retry_after: float | None = None
        if len(self._log) + 1 > self.rpm:
            refused, retry_after = "requests", self._log[0][0] + self.window - now
        elif self._tokens + tokens > self.tpm:
            refused, retry_after = "tokens", self._wait_for_tokens(tokens, now)
        else:
            self._log.append((now, tokens))
            self._tokens += tokens
        return self._verdict(refused, retry_after, now)

    def peek(self, now: float) -> Verdict:
        """The current state, without admitting anything."""
        self._expire(now)
        return self._verdict(None, None, now)

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] + self.window <= now:
            self._tokens -= self._log.popleft()[1]

    def _wait_for_tokens(self, tokens: int, now: float) -> float | None:
        if tokens > self.tpm:
            return None
        excess = self._tokens + tokens - self.tpm
        for admitted_at, reserved in self._log:
            excess -= reserved
            if excess <= 0:
                return admitted_at + self.window - now
        return 0.0  # unreachable: the whole log expiring frees every token

    def _verdict(self, refused: LimitKind | None, retry_after: float | None, now: float) -> Verdict:
        newest = self._log[-1][0] + self.window - now if self._log else 0.0
        return Verdict(
            refused=refused,
            retry_after=None if retry_after is None else max(retry_after, 0.0),
            remaining_requests=max(self.rpm - len(self._log), 0),
            remaining_tokens=max(self.tpm - self._tokens, 0),
            reset_requests=newest,
            reset_tokens=newest if self._tokens else 0.0,
            used_requests=len(self._log),
            used_tokens=self._tokens,
        )


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes ``x-ratelimit-reset-*``: ``"20ms"``, ``"1.5s"``, ``"6m0s"``.

    It is Go's duration format: milliseconds below a second, else hours, minutes and seconds
    with up to three decimals.
    """
    millis = math.ceil(max(seconds, 0.0) * 1000)
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def limit_headers(verdict: Verdict, rpm: int, tpm: int) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers every answer of the completions endpoint carries."""
    return {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-limit-tokens": str(tpm),
        "x-ratelimit-remaining-requests": str(verdict.remaining_requests),
        "x-ratelimit-remaining-tokens": str(verdict.remaining_tokens),
        "x-ratelimit-reset-requests": format_reset(verdict.reset_requests),
        "x-ratelimit-reset-tokens": format_reset(verdict.reset_tokens),
    }


def retry_headers(retry_after: float) -> dict[str, str]:
    """``retry-after`` in whole seconds (rounded up) and ``retry-after-ms`` as OpenAI sends them."""
    millis = max(math.ceil(retry_after * 1000), 1)
    return {"retry-after": str(math.ceil(millis / 1000)), "retry-after-ms": str(millis)}
