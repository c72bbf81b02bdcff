"""The batch routes: make one (JSON, or an uploaded file), list them, read one, add items
to an open one, and control it (pause, resume, cancel, retry, rerun, delete, compare)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from batchyard import access, report
from batchyard.clusters import TOP_CLUSTERS
from batchyard.models import BatchStatus, Finishes
from batchyard.states import BatchState
from batchyard.store.base import MAX_IDEMPOTENCY_KEY
from batchyard.views import status_view
from batchyard.web import submissions, uploads
from batchyard.web.auth import Caller, caller, operator, visible, yard_of
from batchyard.web.paths import BatchId
from batchyard.web.problems import responses
from batchyard.web.schemas import ItemsIn, RerunIn, RetryIn, Text

router = APIRouter(tags=["batches"])
_READ = responses(401, 404, 422, 503)
_WRITE = responses(401, 403, 404, 409, 422, 503)
#: The 422 of a request adding items: a body its schema refuses, or an item whose key field
#: holds no key (``schemas.KEY_FIELD``: no schema can say it).
_ITEMS_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        **responses(422)[422],
        "description": "a body its schema refuses, or an item whose key_field holds no key "
        "(a string of 1 to 512 characters or an integer): the problem names the item",
    }
}
_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "an earlier submission with this Idempotency-Key"}
}


def view(status: BatchStatus, finishes: Finishes | None = None, **extra: Any) -> dict[str, Any]:
    return {**status_view(status, time.time(), finishes), **extra}


@router.post(
    "/batches",
    status_code=201,
    openapi_extra=uploads.BODY,
    responses=_REPLAYED | responses(400, 401, 403, 404, 409, 413, 415, 503) | _ITEMS_REFUSED,
)
async def create_batch(
    request: Request,
    response: Response,
    who: Caller = Depends(operator),
    # Visible ASCII, as the core takes it (schemathesis sent "" and met the core's 422).
    idempotency_key: str | None = Header(
        None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[!-~]([ -~]*[!-~])?$"
    ),
) -> dict[str, Any]:
    """Make a batch from a JSON body (``BatchIn``) or an uploaded JSONL, CSV or Parquet
    file (multipart ``file`` plus the same fields as form fields). All items are written or
    none: a bad line is a 422 naming it. ``Idempotency-Key``: the same key and body give
    the same batch (200), the same key with another body a 409."""
    async with uploads.submission(request) as (body, source):
        status, replayed = await run_in_threadpool(
            submissions.submit,
            yard_of(request),
            request.app.state.settings,
            who,
            body,
            source,
            idempotency_key,
        )
    response.status_code = 200 if replayed else 201
    response.headers["Location"] = f"{request.url.path}/{status.id}"
    return view(status, replayed=replayed)


@router.get("/batches", responses=_READ)
def list_batches(
    request: Request,
    who: Caller = Depends(caller),
    state: BatchState | None = None,
    task: Text | None = Query(None, max_length=300),
    template: Text | None = Query(None, max_length=300),
    q: Text | None = Query(None, max_length=200, description="text in the name or id"),
    created_after: float | None = None,
    created_before: float | None = None,
    owner: Text | None = Query(
        None, max_length=access.MAX_NAME, description="admins only: one owner's"
    ),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=40, pattern=r"^p\d{1,19}$"),
) -> dict[str, Any]:
    """Batches newest first, a page at a time (keyset: pass ``next_cursor`` back as
    ``cursor``); a caller sees its owner's, an admin every owner's."""
    page = yard_of(request).batches(
        state=state,
        task=task,
        template=template,
        text=q,
        created_after=created_after,
        created_before=created_before,
        owner=(owner if who.is_admin else who.owner),
        limit=limit,
        after=cursor,
    )
    return {"batches": [view(s) for s in page.rows], "next_cursor": page.next}


@router.get("/batches/{batch_id}", responses=_READ)
def get_batch(batch_id: BatchId, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """A batch's status (``batchyard status --json``): counts, progress, throughput, ETA,
    usage, budget, pause reason, rate-limit wait, the ETA range and whether it has stalled
    (read from ``Store.finishes``), top error clusters."""
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    clusters = yard.store.error_clusters(batch_id, TOP_CLUSTERS)
    finishes = yard.store.finishes(batch_id)
    return view(status, finishes, error_clusters=[c.as_dict() for c in clusters])


@router.post("/batches/{batch_id}/items", responses=_WRITE | responses(413) | _ITEMS_REFUSED)
def add_items(
    batch_id: BatchId,
    body: ItemsIn,
    request: Request,
    who: Caller = Depends(operator),
) -> dict[str, Any]:
    """Add items to an open batch, all or none."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    added = yard.batch(batch_id).add(body.items, key_field=body.key_field)
    return view(yard.store.get_batch(batch_id), added=added)


def _control(action: str, doc: str) -> None:
    def control(
        batch_id: BatchId, request: Request, who: Caller = Depends(operator)
    ) -> dict[str, Any]:
        yard = yard_of(request)
        visible(yard, who, batch_id)
        batch = yard.batch(batch_id)
        status: BatchStatus = getattr(batch, action)()
        return view(status)

    control.__doc__ = doc
    router.add_api_route(
        f"/batches/{{batch_id}}/{action}",
        control,
        methods=["POST"],
        name=f"{action}_batch",
        responses=_WRITE,
    )


_control("pause", "Stop claiming the batch's items; running ones finish.")
_control("resume", "Carry on after a pause.")
_control("cancel", "Cancel: no more claims, waiting items cancelled, running ones told to stop.")
_control("seal", "Close an open batch to new items: it ends once they are done.")


@router.post("/batches/{batch_id}/retry", responses=_WRITE)
def retry_batch(
    batch_id: BatchId,
    request: Request,
    body: RetryIn | None = None,
    who: Caller = Depends(operator),
) -> dict[str, Any]:
    """Send a finished batch's failed (or cancelled) items back to the queue."""
    body = body or RetryIn()
    yard = yard_of(request)
    visible(yard, who, batch_id)
    batch = yard.batch(batch_id)
    retried = batch.retry_failed(keys=body.keys, states=body.states, cluster=body.cluster)
    return view(batch.status(), retried=retried)


@router.post("/batches/{batch_id}/rerun", status_code=201, responses=_WRITE)
def rerun_batch(
    batch_id: BatchId,
    request: Request,
    body: RerunIn | None = None,
    who: Caller = Depends(operator),
) -> dict[str, Any]:
    """A new batch of this batch's items (all, or those in ``state``), linked to it, with
    its template version or ``template``; the items are copied inside the store."""
    body = body or RerunIn()
    yard = yard_of(request)
    visible(yard, who, batch_id)
    if body.template is not None:
        submissions.check_template(yard, request.app.state.settings, body.template)
    new = yard.batch(batch_id).rerun(template=body.template, state=body.state, name=body.name)
    return view(new.status())


@router.delete("/batches/{batch_id}", status_code=204, responses=_WRITE)
def delete_batch(batch_id: BatchId, request: Request, who: Caller = Depends(operator)) -> Response:
    """Delete a batch and everything recorded about it (a running one: cancel it first)."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    yard.batch(batch_id).delete()
    return Response(status_code=204)


@router.get("/compare", responses=_READ)
def compare(
    request: Request,
    # The pattern says "2 to 20 ids" in the schema (schemathesis sent one long id, valid by
    # a bare max_length, and met a 400 the schema did not foretell). Ids are ASCII: a
    # class such as [^,\s] means other things to other regex engines (U+0085).
    ids: str = Query(
        ...,
        max_length=2000,
        pattern=r"^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+){1,19}$",
        description="2 to 20 batch ids, comma-separated",
    ),
    who: Caller = Depends(caller),
) -> dict[str, Any]:
    """Batches side by side (``batchyard compare --json``)."""
    wanted = ids.split(",")
    yard = yard_of(request)
    for batch_id in wanted:
        visible(yard, who, batch_id)
    return report.compare([yard.batch(b) for b in wanted])[1]
