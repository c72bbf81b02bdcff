"""An item's page (``/batches/{id}/items/{key}``): its input as indented JSON, for the llm
task the prompt it renders, its output, every attempt newest first with its error (a
traceback for an unexpected exception) and logs, from the same ``item_view`` as
``GET /api/v1/batches/{id}/items/{key}``. While the item runs, its live region (state,
output, attempts) is swapped in every 2 seconds from ``.../live``, rendered by the same
template."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from batchyard.errors import BatchyardError
from batchyard.llm.params import read_params
from batchyard.models import BatchStatus, Item
from batchyard.views import item_view
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import BatchId, ItemKey

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def prompt_of(status: BatchStatus, item: Item) -> dict[str, Any] | None:
    """The chat messages an ``llm`` batch's item is (or was) sent, rendered by the task's
    own prompt template (``messages``), or why they cannot be (``error``); None for a batch
    of another task."""
    if status.task != "llm":
        return None
    try:
        messages = read_params(status.params).prompt.render(item.payload)
    except BatchyardError as exc:
        return {"messages": [], "error": str(exc)}
    return {"messages": messages, "error": None}


def _context(request: Request, who: Caller, batch_id: str, key: str) -> dict[str, Any]:
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    batch = yard.batch(batch_id)
    item = batch.item(key)
    view = item_view(item, batch.logs(key))
    return {
        "s": status,
        "it": item,
        "view": view,
        "runs": list(reversed(view["runs"])),
        "prompt": prompt_of(status, item),
        "live_url": f"/batches/{batch_id}/items/{render.path_part(key)}/live",
    }


@router.get("/batches/{batch_id}/items/{key:path}/live", response_class=HTMLResponse)
def item_live(
    batch_id: BatchId, key: ItemKey, request: Request, who: Caller = Depends(signed_in)
) -> HTMLResponse:
    return render.fragment("_item_live.html", **_context(request, who, batch_id, key))


@router.get("/batches/{batch_id}/items/{key:path}", response_class=HTMLResponse)
def item_page(
    batch_id: BatchId, key: ItemKey, request: Request, who: Caller = Depends(signed_in)
) -> HTMLResponse:
    return render.page(request, "item.html", who, **_context(request, who, batch_id, key))
