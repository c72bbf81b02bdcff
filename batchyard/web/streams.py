"""Live streams over Server-Sent Events: ``GET /batches/{id}/events`` (one batch) and
``GET /events`` (every batch the caller may see), fed by the app's ``FeedFollower``.

Named events ``status``, ``item`` and ``end``; each event's ``id`` is its place in the
store's change feed. A client that reconnects with ``Last-Event-ID`` gets what it missed,
read from the store, then the live events: the stream subscribes before it reads, so
nothing falls between the two, and nothing is sent twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event

from batchyard.models import BatchStatus
from batchyard.web.auth import Caller, caller, visible, yard_of
from batchyard.web.feed import FeedFollower
from batchyard.web.paths import BatchId
from batchyard.web.problems import Problem, responses
from batchyard.web.replay import Replay, named_since, replay
from batchyard.web.settings import ServerSettings
from batchyard.web.stream_events import Mark, StreamEvent
from batchyard.web.subscriber import Subscriber

log = logging.getLogger("batchyard.web.streams")
router = APIRouter(tags=["streams"])
_DOC = responses(400, 401, 404, 422, 503)


class _EventStream(StreamingResponse):
    """Only what the OpenAPI schema says of the routes (``text/event-stream``): with
    EventSourceResponse as its response class FastAPI would want the route to be a
    generator of ServerSentEvents, written one at a time (see ``_response``)."""

    media_type = "text/event-stream"


def follower_of(request: Request) -> FeedFollower:
    feed: FeedFollower = request.app.state.feed
    return feed


#: An event id as Mark.parse reads it: a cursor, or cursor:batch:position; empty is none.
EVENT_ID = r"^([0-9]{1,18}(:[A-Za-z0-9_-]{1,100}:[0-9]{1,18})?)?$"


def _since(
    # The pattern is in the schema only: Mark.parse answers a bad one, a 400 naming it.
    last_event_id: Annotated[str | None, Header(json_schema_extra={"pattern": EVENT_ID})] = None,
) -> Mark | None:
    """The ``Last-Event-ID`` header as a mark (400 if it is not an event id)."""
    if last_event_id is None or not last_event_id.strip():
        return None
    try:
        return Mark.parse(last_event_id)
    except ValueError as exc:
        raise Problem(400, f"Last-Event-ID: {exc}", field="Last-Event-ID") from None


async def _watched(
    batch_id: BatchId, request: Request, who: Caller = Depends(caller)
) -> BatchStatus:
    """The batch, if the caller may see it (404 otherwise), checked before the stream
    starts: once it has, its status code is sent."""
    return await follower_of(request).call(visible, yard_of(request), who, batch_id)


@router.get("/batches/{batch_id}/events", response_class=_EventStream, responses=_DOC)
async def batch_events(
    request: Request,
    status: Annotated[BatchStatus, Depends(_watched)],
    since: Annotated[Mark | None, Depends(_since)],
) -> EventSourceResponse:
    """The batch's events as Server-Sent Events: ``status`` (at most 4 a second), ``item``
    (an item changed) and ``end`` (then the stream closes; a batch that has ended already
    gets its status and ``end`` at once). Send ``Last-Event-ID`` to resume."""
    feed = follower_of(request)

    def start() -> tuple[Subscriber, Callable[[], Replay]]:
        sub = feed.subscribe(None, [status.id])
        upto, live = feed.cursor, feed.live_batches
        return sub, lambda: replay(feed.store, [status.id], since, upto, live=live)

    return _response(request, feed, start, close_on_end=True)


@router.get("/events", response_class=_EventStream, responses=_DOC)
async def all_events(
    request: Request,
    who: Annotated[Caller, Depends(caller)],
    since: Annotated[Mark | None, Depends(_since)],
) -> EventSourceResponse:
    """The events of every batch the caller may see (its own; an admin's: all), as
    ``/batches/{id}/events`` sends them; ``end`` does not close this stream. It starts
    with the status of each batch still running."""
    feed = follower_of(request)

    def start() -> tuple[Subscriber, Callable[[], Replay]]:
        sub = feed.subscribe(None if who.is_admin else who.owner, None)
        upto, live = feed.cursor, feed.live_batches

        def read() -> Replay:
            batches = live | named_since(feed.store, since, upto)
            return replay(feed.store, batches, since, upto, live=live, sees=who.can_see)

        return sub, read

    return _response(request, feed, start, close_on_end=False)


def _response(
    request: Request,
    feed: FeedFollower,
    start: Callable[[], tuple[Subscriber, Callable[[], Replay]]],
    *,
    close_on_end: bool,
) -> EventSourceResponse:
    # NOTE: the body is made here, not by a generator of ServerSentEvents: FastAPI writes
    # those one by one, and with 100 subscribers that cost 56 s of lag (bench/
    # server_streams.py). Each event's bytes are made once by the follower, and what a
    # subscriber has queued goes out in one write.
    settings: ServerSettings = request.app.state.settings
    body = _body(feed, start, settings, close_on_end=close_on_end)
    return EventSourceResponse(
        body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _body(
    feed: FeedFollower,
    start: Callable[[], tuple[Subscriber, Callable[[], Replay]]],
    settings: ServerSettings,
    *,
    close_on_end: bool,
) -> AsyncIterator[bytes]:
    """The replay, then the live events, keep-alive comments between them. It subscribes
    as it starts (before it reads the replay), and the subscription ends with it: the
    client gone, or the follower closing it."""
    sub, read = start()
    try:
        done = await feed.call(read)
        sub.since = done.mark
        if done.events:
            yield _chunk(done.events, settings.debug_streams)
        if close_on_end and done.ended:
            return
        while True:
            events = await sub.take(settings.heartbeat)
            ends = [n for n, event in enumerate(events) if event.kind == "end"]
            if close_on_end and ends:
                yield _chunk(events[: ends[0] + 1], settings.debug_streams)
                return
            if events:
                yield _chunk(events, settings.debug_streams)
            elif sub.is_done:
                log.info("a live stream was closed: %s", sub.closed)
                yield format_sse_event(data_str=json.dumps({"reason": sub.closed}), event="closed")
                return
            else:
                yield KEEPALIVE_COMMENT
    finally:
        feed.unsubscribe(sub)


def _chunk(events: list[StreamEvent], debug: bool) -> bytes:
    if debug:
        for event in events:
            log.info("stream: %s %s %s", event.kind, event.id, event.text)
    return b"".join(event.sse for event in events)
