"""Webhooks: a batch names URLs that are POSTed its status, signed, when it ends, is paused
or needs attention (docs/webhooks.md). ``verify`` is the check for receivers in Python;
``start_deliveries`` sends a store's deliveries from a thread of this process."""

from __future__ import annotations

from batchyard.deliveries import EVENTS, Backoff, Delivery, DeliveryState
from batchyard.errors import SignatureError
from batchyard.webhooks.deliverer import Deliverer, DeliveryConfig, start_deliveries
from batchyard.webhooks.signing import (
    DELIVERY,
    EVENT,
    SECRET_ENV,
    SIGNATURE,
    sign,
    signing_secret,
    verify,
)

__all__ = [
    "DELIVERY",
    "EVENT",
    "EVENTS",
    "SECRET_ENV",
    "SIGNATURE",
    "Backoff",
    "Deliverer",
    "Delivery",
    "DeliveryConfig",
    "DeliveryState",
    "SignatureError",
    "sign",
    "signing_secret",
    "start_deliveries",
    "verify",
]
