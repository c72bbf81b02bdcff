"""The batch page's live stream: Server-Sent Events whose data is the page's live region as
HTML (``_live.html``, the template that rendered it first), for htmx's SSE extension to swap.

It rides on the app's one ``FeedFollower`` (as ``GET /api/v1/batches/{id}/events`` does):
the first event is the region as it stands, so a reconnect needs no replay; then, whenever
the follower reports a status change, the region again, at most once a second however many
changes came, and every ``IDLE_REPAINT`` seconds while none does (two bounded store reads
per repaint and viewer: the status, and the items changed last); ``end`` once the batch has
ended."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from batchyard.models import BatchStatus, Finishes
from batchyard.states import ItemState
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.feed import FeedFollower
from batchyard.web.pages import detail, render
from batchyard.web.pages.guard import signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import BatchId
from batchyard.web.problems import Problem
from batchyard.web.settings import ServerSettings

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: The shortest time between two repaints of one page (the issue's "one a second").
REPAINT = 1.0
#: The longest time between two repaints while nothing changes: the elapsed time, the
#: throughput over time and "stalled" move on even when the batch does not.
IDLE_REPAINT = 10.0
#: The items changed last that a repaint reads (``Store.finishes``) for the stall rule.
RECENT = 100


def _paint(
    status: BatchStatus,
    finishes: Finishes,
    who: Caller,
    shown: detail.ItemFilter,
    seen: int | None,
    trace: detail.Trace,
    cursor: int,
) -> ServerSentEvent:
    now = time.time()
    trace.add(status, now)
    context = detail.live_context(
        status, who, shown, seen, finishes=finishes, streamed=True, trace=trace
    )
    html = render.ENV.get_template("_live.html").render(**context)
    # The id is the feed's cursor the region was read at: a region is the batch as it
    # stands, so a new stream's first event holds all that changed while none was open.
    return ServerSentEvent(event="live", raw_data=html, id=str(cursor))


async def _watched(batch_id: BatchId, request: Request, who: Caller = Depends(signed_in)) -> Caller:
    """The caller, once it is known to see the batch (404 otherwise): checked before the
    stream starts, while its status code can still be sent."""
    feed: FeedFollower | None = getattr(request.app.state, "feed", None)
    if feed is None:  # an app used without its lifespan: its pages poll instead
        raise Problem(503, "this server follows no feed: live streams are off")
    await feed.call(visible, yard_of(request), who, batch_id)
    return who


@router.get("/batches/{batch_id}/live/events", response_class=EventSourceResponse)
async def live_events(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(_watched),
    state: ItemState | None = None,
    seen: int | None = Query(None, ge=0),
) -> AsyncIterator[ServerSentEvent]:
    """The live region of the batch's page (``state``: the item filter its tiles show;
    ``seen``: items finished when its table was read)."""
    feed: FeedFollower = request.app.state.feed
    settings: ServerSettings = request.app.state.settings
    store = yard_of(request).store
    shown = detail.ItemFilter(state)
    sub = feed.subscribe(None, [batch_id])

    async def read() -> tuple[BatchStatus, Finishes]:
        # After the first, only the items changed last (``recent``): the stall rule's
        # inputs; the throughput over time goes on from the repaints' counts.
        status = await feed.call(store.get_batch, batch_id)
        return status, await feed.call(store.finishes, batch_id, 0, RECENT)

    try:
        # Subscribed first: a change made while this reads is in the queue, not lost.
        cursor = feed.cursor
        status = await feed.call(store.get_batch, batch_id)
        finishes = await feed.call(store.finishes, batch_id)
        trace = detail.Trace(status, finishes, time.time())
        yield _paint(status, finishes, who, shown, seen, trace, cursor)
        painted, dirty = time.monotonic(), False
        while not status.is_finished:
            due = painted + (REPAINT if dirty else IDLE_REPAINT)
            events = await sub.take(max(0.0, min(settings.heartbeat, due - time.monotonic())))
            if any(event.kind in ("status", "end") for event in events):
                dirty = True
            if time.monotonic() >= painted + (REPAINT if dirty else IDLE_REPAINT):
                cursor = feed.cursor
                status, finishes = await read()
                yield _paint(status, finishes, who, shown, seen, trace, cursor)
                painted, dirty = time.monotonic(), False
            elif not events and sub.is_done:
                return  # the follower closed it (the server stops): the browser reconnects
            elif not events and not dirty:
                yield ServerSentEvent(comment="keep-alive")
        yield ServerSentEvent(event="end", raw_data="ended")
    finally:
        feed.unsubscribe(sub)
