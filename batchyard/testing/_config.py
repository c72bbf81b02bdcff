"""The settings of the fake OpenAI server, its faults, and the counters it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from batchyard.errors import ConfigError

#: A fault the server can inject into an admitted request.
FaultKind = Literal["500", "502", "503", "529", "invalid_json", "missing_message", "slow"]


@dataclass(frozen=True, slots=True)
class Fault:
    """Inject ``kind`` into a share ``rate`` of admitted requests (drawn from the server's seeded
    random generator), or into every ``every``-th admitted request (1-based), or both."""

    kind: FaultKind
    rate: float = 0.0
    every: int = 0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the fake server does; every field is a keyword of :class:`FakeOpenAI`.

    ``keys`` is the set of accepted API keys (``None``: any key or none, each its own limit).
    Latency is ``latency + latency_per_token * completion_tokens`` seconds. ``window`` is the
    length of the rate-limit window (60 s like OpenAI; shorten it in tests). Once the tokens
    used reach ``spend_limit_tokens`` every request gets a 429 ``insufficient_quota`` for good
    (0 exhausts the quota from the start). Raises :class:`~batchyard.errors.ConfigError` when
    a value is out of range.
    """

    rpm: int = 10_000
    tpm: int = 2_000_000
    window: float = 60.0
    keys: frozenset[str] | None = None
    latency: float = 0.02
    latency_per_token: float = 0.0002
    answer_tokens: tuple[int, int] = (16, 96)
    default_max_tokens: int = 1024
    spend_limit_tokens: int | None = None
    faults: tuple[Fault, ...] = ()
    slow_seconds: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.keys is not None:
            object.__setattr__(self, "keys", frozenset(self.keys))
        object.__setattr__(self, "faults", tuple(self.faults))
        if self.rpm < 1 or self.tpm < 1 or self.window <= 0:
            raise ConfigError("rpm and tpm must be at least 1 and window positive")
        if min(self.latency, self.latency_per_token, self.slow_seconds) < 0:
            raise ConfigError("latencies must not be negative")
        if not 1 <= self.answer_tokens[0] <= self.answer_tokens[1]:
            raise ConfigError("answer_tokens must be (low, high) with 1 <= low <= high")
        for fault in self.faults:
            if fault.kind not in get_args(FaultKind) or not 0 <= fault.rate <= 1 or fault.every < 0:
                raise ConfigError(f"bad fault {fault!r}: rate is 0..1, every is >= 0")


@dataclass(slots=True)
class Stats:
    """A snapshot of the counters since the server started.

    ``requests`` counts every POST to the completions endpoint; ``accepted`` those admitted
    past the key, the body and the limits; ``rate_limited`` the 429s by type (``requests``,
    ``tokens``, ``insufficient_quota``); ``reserved_tokens`` the admission reservations
    (prompt + max_tokens); ``prompt_tokens`` and ``completion_tokens`` the usage reported in
    answers; ``peak_concurrency`` the most requests answered at once.
    """

    requests: int = 0
    accepted: int = 0
    rate_limited: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    bad_requests: int = 0
    unauthorized: int = 0
    reserved_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0

    @property
    def tokens_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def too_many_requests(self) -> int:
        """Every 429 sent, whatever its type."""
        return sum(self.rate_limited.values())
