"""The routes about the server itself: health, version, the tasks it allows, and logging
in and out of the dashboard's session."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict

import batchyard
from batchyard.errors import BatchyardError
from batchyard.web import tasks
from batchyard.web.auth import COOKIE, Caller, caller, yard_of
from batchyard.web.problems import Problem, responses

router = APIRouter(tags=["server"])
#: Routes outside /api/v1 (the login link `batchyard serve` prints).
public = APIRouter(include_in_schema=False)
_AUTH = responses(401, 403)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str


@router.get("/health", responses=responses(503))
def health(request: Request) -> dict[str, str]:
    """200 when the store answers, 503 when not. Needs no token."""
    try:
        yard_of(request).store.cursor()
    except BatchyardError as exc:
        raise Problem(503, "the store is not answering", headers={"Retry-After": "5"}) from exc
    return {"status": "ok"}


@router.get("/openapi.json", include_in_schema=False)
def openapi_document(request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    """The OpenAPI description of every route (any token: only /health is public)."""
    document: dict[str, Any] = request.app.openapi()
    return document


@router.get("/version", responses=_AUTH)
def version(_: Caller = Depends(caller)) -> dict[str, str]:
    return {"version": batchyard.__version__, "api": "v1"}


@router.get("/tasks", responses=_AUTH)
def list_tasks(request: Request, _: Caller = Depends(caller)) -> list[dict[str, Any]]:
    """The tasks this server lets clients submit: the built-in ones and those its
    configuration allows (``--allow-task``)."""
    return [entry.as_dict() for entry in tasks.allowed(request.app.state.settings)]


@router.get("/session", responses=_AUTH)
def whoami(who: Caller = Depends(caller)) -> dict[str, Any]:
    """The caller: token name, role, owner; with a session, its CSRF token (to send as
    X-CSRF-Token with every unsafe request made with the cookie)."""
    return _who(who)


@router.post("/session", responses=responses(401, 422))
def log_in(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """Trade a token for the session cookie (HttpOnly, SameSite=Strict)."""
    yard = yard_of(request)
    token = yard.tokens.authenticate(body.token)
    if token is None:
        raise Problem(401, "the token is not valid (unknown or revoked)")
    secret, session = yard.tokens.open_session(token)
    _set_cookie(response, request, secret, session.expires_at - yard.clock.now())
    return _who(Caller.of(token, session))


@router.delete("/session", status_code=204, responses=_AUTH)
def log_out(request: Request, response: Response, _: Caller = Depends(caller)) -> Response:
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        yard_of(request).tokens.close_session(cookie)
    response.delete_cookie(COOKIE, path="/")
    response.status_code = 204
    return response


@public.get("/login")
def login_link(token: str, request: Request) -> Response:
    """The link ``batchyard serve`` prints: sets the session cookie and goes to the
    dashboard (or, without it, to the API's description)."""
    yard = yard_of(request)
    found = yard.tokens.authenticate(token)
    if found is None:
        raise Problem(401, "the token in this link is not valid (unknown or revoked)")
    secret, session = yard.tokens.open_session(found)
    target = "/" if request.app.state.settings.ui else "/api/v1/openapi.json"
    redirect = RedirectResponse(target, status_code=303)
    _set_cookie(redirect, request, secret, session.expires_at - yard.clock.now())
    return redirect


def _who(who: Caller) -> dict[str, Any]:
    return {
        "name": who.name,
        "role": who.role.value,
        "owner": who.owner,
        "csrf": None if who.session is None else who.session.csrf,
    }


def _set_cookie(response: Response, request: Request, value: str, max_age: float) -> None:
    same_site: Literal["strict"] = "strict"
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(max_age),
        path="/",
        httponly=True,
        samesite=same_site,
        secure=request.url.scheme == "https",
    )
