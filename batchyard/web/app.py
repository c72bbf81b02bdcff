"""``create_app``: the FastAPI application over a Yard: its routers under ``/api/v1``, the
security headers every answer carries, CORS only for named origins, errors as problems, and
what runs beside the routes for the app's lifetime (worker lanes, the feed follower)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import batchyard
from batchyard.web import (
    batches,
    datasets,
    items,
    library,
    limits,
    meta,
    metrics,
    openapi,
    pages,
    problems,
    socket,
    spend,
    streams,
    uploads,
    webhooks,
)
from batchyard.web.feed import FeedFollower
from batchyard.web.lanes import Lanes
from batchyard.web.settings import ServerSettings
from batchyard.webhooks import start_deliveries
from batchyard.yard import Yard

API = "/api/v1"
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the security headers to every HTTP answer (a plain ASGI middleware: it does
    not buffer a streamed answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(yard: Yard, settings: ServerSettings | None = None) -> FastAPI:
    """The server's application over ``yard``. The Yard stays the caller's to close."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lanes = Lanes(yard, settings.workers)
        lanes.start()
        stop_metrics = _metrics_port(app.state.metrics, settings)
        app.state.feed = FeedFollower(
            yard.store, settings, durations=app.state.metrics.durations.observe
        )
        await app.state.feed.start()
        stop_deliveries = start_deliveries(yard.store, clock=yard.clock)
        try:
            yield
        finally:
            stop_deliveries(drain=2.0)
            await app.state.feed.stop()
            stop_metrics()
            lanes.stop()

    app = FastAPI(
        title="batchyard",
        version=batchyard.__version__,
        summary="Durable, observable batches of work: the HTTP API of `batchyard serve`.",
        openapi_url=None,  # served by meta.py's route, behind a token like every route
        docs_url=None,  # no interactive docs: they would load scripts from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.yard = yard
    app.state.settings = settings
    app.state.metrics = metrics.ServerMetrics(yard, streams=lambda: _open_streams(app))
    problems.install(app)
    app.add_middleware(uploads.BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(limits.TargetLimit)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(problems.ClientGone)
    if settings.cors_origin:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    app.include_router(meta.public)
    app.include_router(metrics.router)
    for router in (
        meta.router,
        batches.router,
        items.router,
        streams.router,
        socket.router,
        webhooks.router,
        spend.router,
        library.router,
        datasets.router,
    ):
        app.include_router(router, prefix=API)
    if settings.ui:
        pages.install(app)
    app.openapi = lambda: openapi.document(app, settings)  # type: ignore[method-assign]  # FastAPI's documented hook
    return app


def _open_streams(app: FastAPI) -> int:
    feed = getattr(app.state, "feed", None)
    return 0 if feed is None else int(feed.subscribers)


def _metrics_port(registry: metrics.ServerMetrics, settings: ServerSettings) -> Callable[[], None]:
    """Serve the metrics on their own address (no token) when the settings name a port."""
    if settings.metrics_port is None:
        return lambda: None
    server, thread = start_http_server(
        settings.metrics_port, settings.metrics_host or "127.0.0.1", registry=registry.registry
    )

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return stop
