"""The webhook route: a batch's deliveries (``batchyard webhooks ID --json``), for whoever may
see the batch; and the deliveries by state for ``/metrics``. Sending them is
``batchyard.webhooks.start_deliveries``, run by the server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client.core import GaugeMetricFamily, Metric

from batchyard.web.auth import Caller, caller, visible, yard_of
from batchyard.web.paths import BatchId
from batchyard.web.problems import responses
from batchyard.yard import Yard

router = APIRouter(tags=["webhooks"])


@router.get("/batches/{batch_id}/webhooks", responses=responses(401, 404, 422, 503))
def batch_webhooks(
    batch_id: BatchId, request: Request, who: Caller = Depends(caller)
) -> dict[str, Any]:
    """The batch's webhook deliveries, oldest first (``{"batch", "deliveries"}``, each
    delivery as ``batchyard webhooks ID --json`` shows it: event, URL, state, attempts, the
    last try's status, error and duration, the next try, when it was delivered). A 404 for
    a batch the caller may not see."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    deliveries = yard.store.webhook_deliveries(batch_id)
    return {"batch": batch_id, "deliveries": [d.as_dict() for d in deliveries]}


def delivery_metrics(yard: Yard) -> Iterator[Metric]:
    """``batchyard_webhook_deliveries{state}``: the store's deliveries by state (pending,
    delivered, failed), one indexed count per scrape; for the server's ``/metrics``."""
    family = GaugeMetricFamily(
        "batchyard_webhook_deliveries", "Webhook deliveries by state.", labels=["state"]
    )
    for state, count in yard.store.delivery_counts().items():
        family.add_metric([state.value], count)
    yield family
