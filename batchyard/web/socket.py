"""``/ws``: the live events of several batches on one WebSocket.

The ``Origin`` is checked before the connection is accepted (this host, or a configured CORS
origin; a client that sends none, such as a script, is let in). The caller is the session
cookie's, or else the token of the first message ``{"type": "auth", "token": ...}``, never
one in the URL. Then ``{"type": "subscribe", "batch": ID, "cursor": N}`` (``cursor``: the
last event id received, to resume) and ``{"type": "unsubscribe", "batch": ID}``. Events go
out as ``{"type": "status" | "item" | "end", "id": ..., "cursor": ..., ...}``, and
``{"type": "ping"}`` every ``heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from batchyard.access import Token
from batchyard.errors import BatchNotFound
from batchyard.web.auth import COOKIE, Caller, visible
from batchyard.web.feed import FeedFollower
from batchyard.web.replay import replay
from batchyard.web.settings import ServerSettings
from batchyard.web.stream_events import Mark
from batchyard.web.subscriber import Subscriber
from batchyard.yard import Yard

log = logging.getLogger("batchyard.web.streams")
router = APIRouter(tags=["streams"])
#: Seconds a connection without the session cookie has to send its auth message.
AUTH_WAIT = 10.0
#: Close codes: a policy refused (bad origin, no auth), a message that makes no sense, and
#: "try again later" (the server closed a client too slow to keep up, or is stopping).
POLICY, UNSUPPORTED, AGAIN = 1008, 1003, 1013


def origin_allowed(websocket: WebSocket, settings: ServerSettings) -> bool:
    """No Origin (not a browser), this server's own host, or a configured CORS origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    if origin in settings.cors_origin:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    settings: ServerSettings = websocket.app.state.settings
    if not origin_allowed(websocket, settings):
        log.info("a WebSocket from origin %r was refused", websocket.headers.get("origin"))
        await websocket.close(code=POLICY, reason="origin not allowed")
        return
    await websocket.accept()
    feed: FeedFollower = websocket.app.state.feed
    yard: Yard = websocket.app.state.yard
    who = await _authenticate(websocket, feed, yard)
    if who is None:
        return
    await _send(websocket, {"type": "welcome", "name": who.name, "role": who.role.value})
    sub = feed.subscribe(None, [])
    session = _Session(websocket, feed, yard, who, sub, settings)
    try:
        await session.run()
    finally:
        feed.unsubscribe(sub)


async def _authenticate(websocket: WebSocket, feed: FeedFollower, yard: Yard) -> Caller | None:
    """The session cookie's caller, else the first message's token; None (the socket
    closed, saying why) when neither holds."""
    cookie = websocket.cookies.get(COOKIE)
    if cookie is not None:
        session = await feed.call(yard.tokens.session, cookie)
        if session is not None:
            return Caller.of(session.token, session)
    try:
        async with asyncio.timeout(AUTH_WAIT):
            first = await websocket.receive_json()
    except (TimeoutError, WebSocketDisconnect, ValueError, KeyError):
        first = None
    token: Token | None = None
    if isinstance(first, dict) and first.get("type") == "auth":
        secret = first.get("token")
        if isinstance(secret, str):
            token = await feed.call(yard.tokens.authenticate, secret)
    if token is None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(
                code=POLICY,
                reason='authenticate first: {"type": "auth", "token": ...} or the session cookie',
            )
        return None
    return Caller.of(token)


async def _send(websocket: WebSocket, message: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(message, separators=(",", ":")))


class _Session:
    """One authenticated connection: its commands, and its events going out."""

    def __init__(
        self,
        websocket: WebSocket,
        feed: FeedFollower,
        yard: Yard,
        who: Caller,
        sub: Subscriber,
        settings: ServerSettings,
    ) -> None:
        self.websocket, self.feed, self.yard, self.who = websocket, feed, yard, who
        self.sub, self.settings = sub, settings
        # Held while a subscription's replay is sent: live events wait behind it.
        self.sending = asyncio.Lock()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._commands()), asyncio.create_task(self._events())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await task

    async def _commands(self) -> None:
        while True:
            try:
                message = await self.websocket.receive_json()
            except (ValueError, KeyError):
                await self._say({"type": "error", "message": "a message must be a JSON object"})
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "subscribe":
                await self._subscribe(message)
            elif kind == "unsubscribe":
                batch = str(message.get("batch"))
                self.feed.unfollow(self.sub, batch)
                await self._say({"type": "unsubscribed", "batch": batch})
            else:
                await self._say(
                    {
                        "type": "error",
                        "message": f"unknown message type {kind!r} (subscribe, unsubscribe)",
                    }
                )

    async def _subscribe(self, message: dict[str, Any]) -> None:
        batch = message.get("batch")
        cursor = message.get("cursor")
        try:
            if not isinstance(batch, str):
                raise ValueError('subscribe needs a batch id: {"batch": "batch_..."}')
            since = None if cursor is None else Mark.parse(str(cursor))
            await self.feed.call(visible, self.yard, self.who, batch)
        except ValueError as exc:
            await self._say({"type": "error", "batch": batch, "message": str(exc)})
            return
        except BatchNotFound:
            await self._say({"type": "error", "batch": batch, "message": f"no batch {batch}"})
            return
        async with self.sending:
            self.feed.follow(self.sub, batch)
            upto, live = self.feed.cursor, self.feed.live_batches
            self.sub.sent[batch] = Mark(upto)
            done = await self.feed.call(
                functools.partial(replay, self.feed.store, [batch], since, upto, live=live)
            )
            self.sub.sent[batch] = max(self.sub.sent[batch], done.mark, key=Mark.key)
            await self._say({"type": "subscribed", "batch": batch, "cursor": upto})
            for event in done.events:
                await self._out(event.message())

    async def _events(self) -> None:
        while True:
            events = await self.sub.take(self.settings.heartbeat)
            async with self.sending:
                if events:
                    for event in events:
                        await self._out(event.message())
                elif self.sub.is_done:
                    await self._say({"type": "closed", "reason": self.sub.closed})
                    await self.websocket.close(code=AGAIN, reason="closed by the server")
                    return
                else:
                    await self._say({"type": "ping", "cursor": self.feed.cursor})

    async def _say(self, message: dict[str, Any]) -> None:
        await self._out(json.dumps(message, separators=(",", ":")))

    async def _out(self, text: str) -> None:
        if self.settings.debug_streams:
            log.info("stream (ws %s): %s", self.who.name, text)
        await self.websocket.send_text(text)
