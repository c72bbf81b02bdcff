"""Errors as RFC 9457 problem details (``application/problem+json``), in one place: the
core's errors map to a status here, and no body or log line carries a traceback, a store
URL or a token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from batchyard import errors as E
from batchyard.web.schemas import NO_NUL

log = logging.getLogger("batchyard.web")

MEDIA = "application/problem+json"
#: Seconds a client is told to wait before trying again while the store is out.
RETRY_AFTER = 5

# The status of each error class; the first that matches wins (subclasses first).
_STATUS: tuple[tuple[type[E.BatchyardError], int], ...] = (
    (E.TemplateArchived, 409),
    (E.TemplateNotFound, 404),
    (E.ClusterNotFound, 404),
    (E.TemplateExists, 409),
    (E.TemplateUnchanged, 409),
    (E.TokenExists, 409),
    (E.TaskNotRegistered, 422),
    (E.ConfigError, 422),
    (E.ItemTooLarge, 413),
    (E.InputError, 422),
    (E.BatchNotFound, 404),
    (E.ItemNotFound, 404),
    (E.DatasetNotFound, 404),
    (E.InvalidTransition, 409),
    (E.Conflict, 409),
    (E.TemplateChanged, 409),
    (E.StoreUnavailable, 503),
    (E.StoreError, 503),
    (E.CommandError, 400),
)
_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    414: "URI too long",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Store unavailable",
}


class Problem(Exception):
    """An error answer: ``status``, a ``detail`` for people, and extra members (``line``,
    ``field``, ``batch_id`` ...) for programs."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def response(self) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return JSONResponse(body, self.status, headers=self.headers, media_type=MEDIA)


async def answer(send: Send, problem: Problem) -> None:
    """Send ``problem`` as the whole answer, from an ASGI middleware (before any route)."""
    response = problem.response()
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def of_error(exc: E.BatchyardError) -> Problem:
    """The problem a core error is."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    if isinstance(exc, E.StoreError) and status == 503:
        # The message of a driver error may hold the store's URL: say what a client needs.
        detail = (
            "the store's disk is full; try again when there is room"
            if isinstance(exc, E.DiskFull)
            else "the store is not answering; try again shortly"
        )
        return Problem(503, detail, headers={"Retry-After": str(RETRY_AFTER)})
    extra: dict[str, Any] = {}
    if isinstance(exc, E.InputError):
        extra = {"line": exc.line, "position": exc.position, "key": exc.key}
    return Problem(status, str(exc), **extra)


def install(app: FastAPI) -> None:
    """Answer every error the app meets as a problem."""

    async def problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return exc.response()

    async def core(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, E.BatchyardError)
        return of_error(exc).response()

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return Problem(exc.status_code, detail, headers=headers).response()

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": plainly(e)}
            for e in exc.errors()
        ]
        return Problem(422, field_error(first), field=field, errors=errors).response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # One line, no traceback (it could show a URL or a payload); the class says where.
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return Problem(500, "the server met an unexpected error").response()

    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(E.BatchyardError, core)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


#: What a rule means, for the rules whose own message would show a regular expression.
_PLAINLY = {NO_NUL: "must not contain a NUL character (U+0000)"}


def plainly(error: Mapping[str, Any]) -> str:
    """What is wrong with one invalid value (an error of pydantic's), in words."""
    pattern = (error.get("ctx") or {}).get("pattern")
    return _PLAINLY.get(str(pattern), str(error.get("msg", "invalid")))


def field_error(error: Mapping[str, Any], where: int = 1, whole: str = "request") -> str:
    """One invalid value as "field: what is wrong" (``whole`` if it is no one field).
    ``where``: how many parts of its place say where in the request it was (a query, a
    body), not which field."""
    field = ".".join(str(part) for part in error.get("loc", ())[where:]) or whole
    return f"{field}: {plainly(error)}"


def hung_up(exc: BaseException) -> bool:
    """Whether ``exc`` is only a client gone mid-answer (FastAPI's SSE keep-alive task
    meets a closed stream and its task group raises that in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(hung_up(inner) for inner in exc.exceptions)
    return isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError)


class ClientGone:
    """Ends quietly an answer whose client went away. (An exception handler cannot:
    Starlette's outermost middleware raises the exception again after any handler, and
    uvicorn logs it as 'Exception in ASGI application' with its traceback.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if not hung_up(exc):
                raise
            log.debug("%s: the client went away", scope.get("path"))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path. (Starlette's 405 names only
    those of the first route matching the path, and FastAPI makes a route per method.)"""
    methods: set[str] = set()
    # FastAPI includes routers lazily: iter_route_contexts yields the routes inside them.
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route may answer with."""
    return {
        status: {
            "description": _TITLES.get(status, "Error"),
            "content": {MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
