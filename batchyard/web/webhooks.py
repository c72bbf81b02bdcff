"""The webhook route: a batch's deliveries (``batchyard webhooks ID --json``), for whoever may
see the batch. Sending them is ``batchyard.webhooks.start_deliveries``, run by the server."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from batchyard.web.auth import Caller, caller, visible, yard_of
from batchyard.web.problems import responses

router = APIRouter(tags=["webhooks"])


@router.get("/batches/{batch_id}/webhooks", responses=responses(401, 404, 422, 503))
def batch_webhooks(
    batch_id: str, request: Request, who: Caller = Depends(caller)
) -> dict[str, Any]:
    """The batch's webhook deliveries, oldest first (``{"batch", "deliveries"}``, each
    delivery as ``batchyard webhooks ID --json`` shows it: event, URL, state, attempts, the
    last try's status, error and duration, the next try, when it was delivered). A 404 for
    a batch the caller may not see."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    deliveries = yard.store.webhook_deliveries(batch_id)
    return {"batch": batch_id, "deliveries": [d.as_dict() for d in deliveries]}
