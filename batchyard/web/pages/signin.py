"""Signing in and out of the dashboard: a page where a token is pasted (the link
``batchyard serve`` prints does the same in one step), and signing out.

The sign-in form has no session to take a CSRF token from, so it carries one of its own,
also set as a SameSite=Strict cookie on this path: a form posted from another site comes
without the cookie and is refused (no one can be signed in as someone else)."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from batchyard.web import meta
from batchyard.web.auth import COOKIE, Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import posting
from batchyard.web.pages.route import SIGN_IN, PageRoute
from batchyard.web.problems import Problem

router = APIRouter(route_class=PageRoute, include_in_schema=False)
_FORM_COOKIE = "batchyard_signin"


def _local(next_url: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host``, nor
    ``/\\host``, which browsers read as ``//host``)."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    if "\\" in next_url or any(ord(c) < 0x20 for c in next_url) or urlsplit(next_url).netloc:
        return "/"
    return next_url


def _form(request: Request, next_url: str, error: str | None = None, code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(16)
    answer = render.page(
        request, "signin.html", None, status_code=code, nonce=nonce, next=next_url, error=error
    )
    answer.set_cookie(
        _FORM_COOKIE,
        nonce,
        max_age=3600,
        path=SIGN_IN,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.get(SIGN_IN)
def sign_in_page(request: Request, next: str | None = None) -> Response:
    return _form(request, _local(next))


@router.post(SIGN_IN)
async def sign_in(
    request: Request,
    token: str = Form(..., max_length=500),
    nonce: str = Form(..., max_length=100),
    next: str | None = Form(None, max_length=2000),
) -> Response:
    cookie = request.cookies.get(_FORM_COOKIE)
    if cookie is None or not hmac.compare_digest(cookie, nonce):
        raise Problem(403, "this sign-in form is out of date or came from another site")
    redirect = RedirectResponse(_local(next), status_code=303)
    try:
        await run_in_threadpool(meta.log_in, meta.Login(token=token.strip()), request, redirect)
    except Problem as exc:
        return _form(request, _local(next), exc.detail, exc.status)
    redirect.delete_cookie(_FORM_COOKIE, path=SIGN_IN)
    return redirect


@router.post("/signout")
def sign_out(request: Request, _: Caller = Depends(posting)) -> Response:
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        yard_of(request).tokens.close_session(cookie)
    redirect = RedirectResponse(SIGN_IN, status_code=303)
    redirect.delete_cookie(COOKIE, path="/")
    return redirect
