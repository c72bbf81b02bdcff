"""Webhook deliveries as values, and their rules that are not SQL: which change of a batch is
announced as which event, which URLs a batch may name, and when a failed delivery is tried
again (exponential backoff with jitter, capped, for up to a day). Pure; the store keeps the
rows and ``batchyard.webhooks`` sends them (docs/webhooks.md)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from batchyard.errors import InputError
from batchyard.models import JSON
from batchyard.retry import RetryPolicy
from batchyard.states import BatchState

#: The most URLs one batch may name.
MAX_WEBHOOKS = 10
#: The longest URL a batch may name.
MAX_URL = 2048
#: A failed delivery is tried again until this long after its event, then given up.
GIVE_UP_AFTER = 86_400.0


class DeliveryState(StrEnum):
    PENDING = "pending"  #: waiting for its next try, or being tried (leased)
    DELIVERED = "delivered"  #: the receiver answered 2xx
    FAILED = "failed"  #: given up: no 2xx within a day of the event


#: What a receiver is told happened (the ``Batchyard-Event`` header), besides
#: ``batch.<end state>`` for each end state.
PAUSED = "batch.paused"
NEEDS_ATTENTION = "batch.needs_attention"
EVENTS = (
    *(f"batch.{state.value}" for state in BatchState if state.is_terminal),
    PAUSED,
    NEEDS_ATTENTION,
)


def event_for(new: BatchState, pause_reason: str | None) -> str | None:
    """The event a batch's move to ``new`` is announced as, None for a move that is not
    announced. An end is ``batch.<state>``. A pause with a reason is batchyard's own (the
    budget is spent, the provider refused for quota or billing, a task raised PauseBatch):
    someone has to act before it goes on, so it ``needs_attention``; a pause without one
    was asked for by a person (``batchyard pause``), announced as ``batch.paused``."""
    if new.is_terminal:
        return f"batch.{new.value}"
    if new is BatchState.PAUSED:
        return NEEDS_ATTENTION if pause_reason else PAUSED
    return None


def new_delivery_id() -> str:
    """A delivery's id (``whd_`` and 24 random hex digits)."""
    return f"whd_{secrets.token_hex(12)}"


def check_webhooks(urls: Iterable[str]) -> tuple[str, ...]:
    """The URLs a batch names, checked: each an absolute http or https URL with a host, at
    most MAX_URL characters, at most MAX_WEBHOOKS of them; repeats dropped, order kept.
    Raises InputError naming the URL and what is wrong with it."""
    if isinstance(urls, str):
        raise InputError("webhooks: give a list of URLs, not one string")
    checked: list[str] = []
    for url in urls:
        if not isinstance(url, str):
            raise InputError(f"webhook {url!r}: a URL is a string")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"webhook {url!r}: not an http:// or https:// URL with a host")
        if len(url) > MAX_URL or any(c.isspace() for c in url):
            raise InputError(f"webhook {url[:60]!r}...: over {MAX_URL} characters or has spaces")
        if url not in checked:
            checked.append(url)
    if len(checked) > MAX_WEBHOOKS:
        raise InputError(f"webhooks: {len(checked)} URLs; a batch names at most {MAX_WEBHOOKS}")
    return tuple(checked)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one URL, as the store keeps it: ``attempts`` tries so far, the last
    one's HTTP status (None when no answer came), error and duration, and ``next_at``, when
    it is tried next (while a try is under way: when its lease ends), None once done."""

    pk: int
    #: Sent as ``Batchyard-Delivery``: the same on every try, so a receiver can drop repeats.
    id: str
    batch_id: str
    event: str
    url: str
    state: DeliveryState
    attempts: int
    created_at: float
    next_at: float | None
    last_status: int | None
    last_error: str | None
    last_duration: float | None
    delivered_at: float | None
    #: The body: the batch's status as ``status --json`` shows it, at the event.
    payload: str

    def as_dict(self) -> dict[str, JSON]:
        """The delivery for ``webhooks --json`` and the server (the body left out)."""
        return {
            "id": self.id,
            "batch_id": self.batch_id,
            "event": self.event,
            "url": self.url,
            "state": self.state.value,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "next_at": self.next_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_duration": self.last_duration,
            "delivered_at": self.delivered_at,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one try went: the HTTP status (None when no answer came), the error if it
    failed, and how long it took in seconds."""

    status: int | None
    error: str | None
    duration: float

    @property
    def is_ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Backoff:
    """When a failed delivery is tried next: ``base * 2**(attempts-1)`` seconds capped at
    ``cap``, the upper half random (``RetryPolicy``'s equal jitter), until
    ``give_up_after`` seconds from its event; then never (it has failed)."""

    base: float = 10.0
    cap: float = 3600.0
    give_up_after: float = GIVE_UP_AFTER

    def next_try(
        self, attempts: int, created_at: float, now: float, draw: float | None = None
    ) -> float | None:
        """The time of the try after ``attempts`` tries, None when that is past the limit."""
        at = now + RetryPolicy(self.base, self.cap).delay(attempts, draw)
        return None if at > created_at + self.give_up_after else at
