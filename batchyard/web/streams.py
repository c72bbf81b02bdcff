"""Live streams over Server-Sent Events: ``GET /batches/{id}/events`` (one batch) and
``GET /events`` (every batch the caller may see), fed by the app's ``FeedFollower``.

Named events ``status``, ``item`` and ``end``; each event's ``id`` is its place in the
store's change feed. A client that reconnects with ``Last-Event-ID`` gets what it missed,
read from the store, then the live events: the stream subscribes before it reads, so
nothing falls between the two, and nothing is sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from batchyard.models import BatchStatus
from batchyard.web.auth import Caller, caller, visible, yard_of
from batchyard.web.feed import FeedFollower
from batchyard.web.problems import Problem, responses
from batchyard.web.replay import Replay, named_since, replay
from batchyard.web.settings import ServerSettings
from batchyard.web.stream_events import Mark, StreamEvent
from batchyard.web.subscriber import Subscriber

log = logging.getLogger("batchyard.web.streams")
router = APIRouter(tags=["streams"])
_DOC = responses(400, 401, 404, 503)


def follower_of(request: Request) -> FeedFollower:
    feed: FeedFollower = request.app.state.feed
    return feed


def _since(last_event_id: Annotated[str | None, Header()] = None) -> Mark | None:
    """The ``Last-Event-ID`` header as a mark (400 if it is not an event id)."""
    if last_event_id is None or not last_event_id.strip():
        return None
    try:
        return Mark.parse(last_event_id)
    except ValueError as exc:
        raise Problem(400, f"Last-Event-ID: {exc}", field="Last-Event-ID") from None


async def _watched(batch_id: str, request: Request, who: Caller = Depends(caller)) -> BatchStatus:
    """The batch, if the caller may see it (404 otherwise), checked before the stream
    starts: once it has, its status code is sent."""
    return await follower_of(request).call(visible, yard_of(request), who, batch_id)


@router.get("/batches/{batch_id}/events", response_class=EventSourceResponse, responses=_DOC)
async def batch_events(
    request: Request,
    status: Annotated[BatchStatus, Depends(_watched)],
    since: Annotated[Mark | None, Depends(_since)],
) -> AsyncIterator[ServerSentEvent]:
    """The batch's events as Server-Sent Events: ``status`` (at most 4 a second), ``item``
    (an item changed) and ``end`` (then the stream closes; a batch that has ended already
    gets its status and ``end`` at once). Send ``Last-Event-ID`` to resume."""
    feed = follower_of(request)
    sub = feed.subscribe(None, [status.id])
    upto, live = feed.cursor, feed.live_batches

    def read() -> Replay:
        return replay(feed.store, [status.id], since, upto, live=live)

    async for event in _send(request, feed, sub, read, close_on_end=True):
        yield event


@router.get("/events", response_class=EventSourceResponse, responses=_DOC)
async def all_events(
    request: Request,
    who: Annotated[Caller, Depends(caller)],
    since: Annotated[Mark | None, Depends(_since)],
) -> AsyncIterator[ServerSentEvent]:
    """The events of every batch the caller may see (its own; an admin's: all), as
    ``/batches/{id}/events`` sends them; ``end`` does not close this stream. It starts
    with the status of each batch still running."""
    feed = follower_of(request)
    sub = feed.subscribe(None if who.is_admin else who.owner, None)
    upto = feed.cursor
    live = feed.live_batches

    def read() -> Replay:
        batches = live | named_since(feed.store, since, upto)
        return replay(feed.store, batches, since, upto, live=live, sees=who.can_see)

    async for event in _send(request, feed, sub, read, close_on_end=False):
        yield event


async def _send(
    request: Request,
    feed: FeedFollower,
    sub: Subscriber,
    read: Callable[[], Replay],
    *,
    close_on_end: bool,
) -> AsyncIterator[ServerSentEvent]:
    """The replay, then the live events, keep-alive comments between them; the stream's
    subscription ends with it (a client gone, or the follower closing it)."""
    settings: ServerSettings = request.app.state.settings
    debug = settings.debug_streams
    try:
        done = await feed.call(read)
        sub.since = done.mark
        for replayed in done.events:
            yield _sse(replayed, debug)
        if close_on_end and done.ended:
            return
        while True:
            event = await sub.next(settings.heartbeat)
            if event is not None:
                yield _sse(event, debug)
                if close_on_end and event.kind == "end":
                    return
            elif sub.is_done:
                log.info("a live stream was closed: %s", sub.closed)
                yield ServerSentEvent(event="closed", data={"reason": sub.closed})
                return
            else:
                yield ServerSentEvent(comment="keep-alive")
    finally:
        feed.unsubscribe(sub)


def _sse(event: StreamEvent, debug: bool) -> ServerSentEvent:
    if debug:
        log.info("stream: %s %s %s", event.kind, event.id, event.text)
    return ServerSentEvent(event=event.kind, id=event.id, raw_data=event.text)
