"""Who is looking at a page: the session cookie's caller (pages take no bearer token), the
CSRF check every form post makes, and the roles the dashboard's actions need.

A page asked for without a live session answers with the way to the sign-in page
(``SignInNeeded``, turned into a redirect by ``pages.route``)."""

from __future__ import annotations

import hmac
from urllib.parse import quote

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from batchyard.access import Role
from batchyard.web.auth import COOKIE, CSRF_HEADER, Caller, yard_of
from batchyard.web.problems import Problem

#: What the pages call the caller (always one with a session).
PageCaller = Caller
#: The form field that carries the session's CSRF token.
CSRF_FIELD = "csrf"


class SignInNeeded(Exception):
    """The request has no live session; ``next`` is where to go back after signing in."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next = next_url


def _back_to(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return quote(path, safe="/?=&")


def signed_in(request: Request) -> Caller:
    """The caller behind the session cookie; SignInNeeded without one. (A plain function:
    FastAPI runs it on a thread, so the store's read does not hold the event loop.)"""
    cookie = request.cookies.get(COOKIE)
    session = None if cookie is None else yard_of(request).tokens.session(cookie)
    if session is None:
        raise SignInNeeded(_back_to(request) if request.method == "GET" else "/")
    return Caller.of(session.token, session)


async def posting(request: Request) -> Caller:
    """The caller of a form post (or an htmx request): signed in, and the post carries the
    session's CSRF token as a form field or the X-CSRF-Token header (403 otherwise: a page
    of another site cannot know it)."""
    who = await run_in_threadpool(signed_in, request)
    assert who.session is not None  # signed_in only answers with a session
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if sent is None or not hmac.compare_digest(sent, who.session.csrf):
        raise Problem(403, "this form is out of date or came from another site: reload the page")
    return who


async def operating(request: Request) -> Caller:
    """A form post by an operator (or an admin): 403 for a viewer."""
    who = await posting(request)
    if not who.role.allows(Role.OPERATOR):
        raise Problem(
            403, f"this needs the operator role; token {who.name!r} is a {who.role.value}"
        )
    return who


async def administering(request: Request) -> Caller:
    """A form post by an admin: 403 for anyone else."""
    who = await posting(request)
    must_be_admin(who)
    return who


def must_be_admin(who: Caller) -> None:
    if not who.is_admin:
        raise Problem(403, f"this needs the admin role; token {who.name!r} is a {who.role.value}")


def can_operate(who: Caller) -> bool:
    """Whether the page shows its caller the buttons that change things."""
    return who.role.allows(Role.OPERATOR)
