"""A batch's page (``/batches/{id}``): its live region (counter tiles, progress, cost, pace,
what it waits on, the controls that apply), its error clusters and its items a page at a
time, filtered through the URL. ``/batches/{id}/live`` answers the live region alone,
rendered by the same template, for the page to swap in every 2 seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from batchyard import progress
from batchyard.clusters import TOP_CLUSTERS
from batchyard.controls import Control, controls, displayed
from batchyard.models import BatchStatus, Finishes
from batchyard.progress import Meter, pace
from batchyard.states import ItemState
from batchyard.views import status_view
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import can_operate, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import BatchId
from batchyard.web.schemas import Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: Items shown on one page of a batch's table.
ITEMS_PAGE = 50
#: The tiles, in order: a count of the batch's items and the state it filters by.
TILES = (
    ("total", ""),
    ("pending", "pending"),
    ("running", "running"),
    ("waiting", "running"),
    ("retry_wait", "retry_wait"),
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
)


class Trace:
    """A page stream's picture of a batch's pace: its throughput over time, read from the
    store when the stream opens (``progress.history``) and extended with the finished count
    of each repaint; the recent pace (the core's ``Meter``) for the ETA."""

    def __init__(self, status: BatchStatus, finishes: Finishes, now: float) -> None:
        self.meter = Meter()
        self.history = progress.history(status, finishes, now)
        self.finished = status.counts.finished

    def add(self, status: BatchStatus, now: float) -> None:
        self.meter.add(now, status.counts.finished)
        if self.history is None and status.started_at is not None:
            self.history = progress.History(status.started_at, progress.MIN_WIDTH, (0.0,), now)
        if self.history is not None:
            # A retry sends finished items back (the count falls): nothing finished then.
            ended = max(0, status.counts.finished - self.finished)
            self.history = self.history.added(now, ended)
        self.finished = status.counts.finished

    @property
    def rate(self) -> float | None:
        return self.meter.rate


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """The items table's query parameters."""

    state: ItemState | None = None
    cluster: str | None = None
    cursor: int = 0

    def url(self, batch_id: str, **changes: Any) -> str:
        params = {"state": self.state, "cluster": self.cluster, "cursor": self.cursor}
        params.update(changes)
        query = urlencode({k: v for k, v in params.items() if v not in (None, "", 0)})
        return f"/batches/{batch_id}" + (f"?{query}" if query else "") + "#items"


def has_stream(request: Request) -> bool:
    """Whether the app follows the store's feed (it does while its lifespan runs): then
    the page's live region comes over SSE (``pages.live``), else it is polled."""
    return getattr(request.app.state, "feed", None) is not None


def live_context(
    status: BatchStatus,
    who: Caller,
    shown: ItemFilter,
    seen: int | None = None,
    *,
    finishes: Finishes,
    streamed: bool = False,
    trace: Trace | None = None,
) -> dict[str, Any]:
    """What the live region shows: the status as ``GET /api/v1/batches/{id}`` has it (with
    ``finishes``: its ETA range and whether it has stalled), the controls that apply (none
    for a viewer), the tiles' links, and how many items finished since the page's table
    was read (``seen`` finished then); ``streamed``: it comes over the page's SSE stream
    (else the region polls for itself), whose ``trace`` holds its throughput over time
    (else it is drawn from ``finishes``) and a recent pace (the ETA then follows it, as the
    CLI's live view does)."""
    offered = controls(status) if can_operate(who) else frozenset()
    tiles = [
        {
            "name": name,
            "n": status.counts.total if name == "total" else getattr(status.counts, name),
            "url": ItemFilter(ItemState(state) if state else None).url(status.id),
            "current": (shown.state.value if shown.state else "total") == name,
        }
        for name, state in TILES
    ]
    now = time.time()
    view = status_view(status, now, finishes)
    going = progress.history(status, finishes, now) if trace is None else trace.history
    if trace is not None:
        view["eta"] = pace(status, now, trace.rate).eta or None
        span = progress.eta_range(status, going, now)
        view["eta_range"] = None if span is None else list(span)
    return {
        "s": status,
        "view": view,
        "spark": render.sparkline(going.rates()) if going is not None else "",
        "spark_span": None if going is None else going.until - going.start,
        "offered": offered,
        "operator": can_operate(who),
        "controls": displayed(status),
        "tiles": tiles,
        "live_url": f"/batches/{status.id}/live" + live_query(shown.state, seen),
        "shown": shown,
        "poll": not streamed,
        "since_table": 0 if seen is None else max(0, status.counts.finished - seen),
        "estimated": estimated(status),
    }


def estimated(status: BatchStatus) -> dict[str, float] | None:
    """The cost estimated before the batch was made (its metadata's ``estimate``, which the
    new-batch page keeps: ``cost`` and ``cost_range``), or None when it has none that reads
    as one (metadata is the submitter's: anything else there is not shown)."""
    kept = status.metadata.get("estimate")
    if not isinstance(kept, dict):
        return None
    cost, span = kept.get("cost"), kept.get("cost_range")
    numbers = [cost, *(span if isinstance(span, list) and len(span) == 2 else ())]
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        return None
    found = {"cost": float(numbers[0])}
    if len(numbers) == 3:
        found |= {"low": float(numbers[1]), "high": float(numbers[2])}
    return found


def live_query(state: ItemState | None, seen: int | None) -> str:
    """The query of the live region's URLs: the table's state filter, and ``seen``."""
    params: dict[str, str | int] = {} if state is None else {"state": state.value}
    if seen is not None:
        params["seen"] = seen
    return f"?{urlencode(params)}" if params else ""


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(signed_in),
    state: ItemState | None = None,
    cluster: Text | None = Query(None, max_length=64),
    cursor: int = Query(0, ge=0, le=2**31),
    done: Control | None = None,
) -> HTMLResponse:
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    shown = ItemFilter(state, cluster, cursor)
    streamed = has_stream(request) and not status.is_finished
    seen = status.counts.finished
    rows = yard.store.items(
        batch_id,
        state=state,
        cluster=cluster,
        after=cursor,
        limit=ITEMS_PAGE,
        payloads=False,
        results=False,
    )
    more = len(rows) == ITEMS_PAGE
    return render.page(
        request,
        "detail.html",
        who,
        **live_context(
            status, who, shown, seen, finishes=yard.store.finishes(batch_id), streamed=streamed
        ),
        stream_url=(f"/batches/{batch_id}/live/events" + live_query(state, seen))
        if streamed
        else None,
        clusters=yard.store.error_clusters(batch_id, TOP_CLUSTERS),
        items=rows,
        item_states=[s.value for s in ItemState],
        next_url=shown.url(batch_id, cursor=rows[-1].position) if more else None,
        first_url=shown.url(batch_id, cursor=0) if cursor else None,
        done=done,
    )


@router.get("/batches/{batch_id}/live", response_class=HTMLResponse)
def live_region(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(signed_in),
    state: ItemState | None = None,
    seen: int | None = Query(None, ge=0),
) -> HTMLResponse:
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    finishes = yard.store.finishes(batch_id)
    return render.fragment(
        "_live.html", **live_context(status, who, ItemFilter(state), seen, finishes=finishes)
    )
