"""Signing webhook deliveries and checking their signatures: HMAC-SHA256 over the timestamp
and the body, in a ``Batchyard-Signature: t=<unix seconds>,v1=<hex>`` header (Stripe's
scheme), and where the secret comes from (docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

from batchyard.deliveries import Delivery
from batchyard.errors import SignatureError
from batchyard.store.base import WebhookStore

SIGNATURE = "Batchyard-Signature"
EVENT = "Batchyard-Event"
DELIVERY = "Batchyard-Delivery"
#: Overrides the store's secret, in every process that sends (and so must be the same there).
SECRET_ENV = "BATCHYARD_WEBHOOK_SECRET"
#: The store setting that keeps the secret made on first use.
SECRET_SETTING = "webhook_secret"
#: How far a signature's time may be from the receiver's clock, by default (seconds).
TOLERANCE = 300


def signing_secret(store: WebhookStore) -> str:
    """The secret deliveries are signed with: ``BATCHYARD_WEBHOOK_SECRET`` if set, else the
    store's, made on first use (``whsec_`` and 64 hex digits) and kept there, so every
    process on the store signs alike with no set-up."""
    given = os.environ.get(SECRET_ENV)
    if given:
        return given
    return store.setting(SECRET_SETTING, lambda: f"whsec_{secrets.token_hex(32)}")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Batchyard-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def headers(secret: str, delivery: Delivery, body: bytes, timestamp: int) -> dict[str, str]:
    """Every header a delivery is sent with."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "batchyard-webhooks",
        SIGNATURE: sign(secret, body, timestamp),
        EVENT: delivery.event,
        DELIVERY: delivery.id,
    }


def verify(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance: float = TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check a delivery as a receiver got it: ``header`` is its ``Batchyard-Signature``,
    ``body`` the raw body (bytes as received; a str is taken as its UTF-8). Returns None
    when one ``v1`` signature is the HMAC-SHA256 of ``"<t>.<body>"`` with ``secret`` and
    ``t`` is within ``tolerance`` seconds of ``now`` (the time now by default). Raises
    SignatureError saying which check failed."""
    raw = body.encode() if isinstance(body, str) else body
    timestamp, signatures = _parse(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"{SIGNATURE}: signed at t={timestamp}, {abs(now - timestamp):.0f}s from now "
            f"(tolerance {tolerance:g}s): a replay, or a clock that is off"
        )
    expected = _mac(secret, timestamp, raw)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise SignatureError(
            f"{SIGNATURE}: no v1 signature matches the body (another secret, or a body "
            "changed on the way: check it before parsing it)"
        )


def _parse(header: str | None) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures of a header; SignatureError if it has none."""
    if not header:
        raise SignatureError(f"no {SIGNATURE} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError(f"{SIGNATURE} {header[:80]!r}: expected t=<unix seconds>,v1=<hex>")
    return timestamp, signatures


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
