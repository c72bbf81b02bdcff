"""Who is calling: a bearer token, or the dashboard's session cookie (whose unsafe
requests must also carry its CSRF token), and what that caller may see and do.

A caller sees its owner's batches (an admin: every batch). Another owner's batch is a 404,
exactly as a batch that does not exist, so ids cannot be probed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from batchyard.access import Role, Session, Token
from batchyard.errors import BatchNotFound
from batchyard.models import BatchStatus
from batchyard.web.problems import Problem
from batchyard.yard import Yard

COOKIE = "batchyard_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# auto_error=False: a missing token is our 401 problem, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="a token from `batchyard token create`")


@dataclass(frozen=True, slots=True)
class Caller:
    """The token behind a request, and whether it came through the session cookie."""

    name: str
    role: Role
    owner: str
    session: Session | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_see(self, status: BatchStatus) -> bool:
        return self.is_admin or status.owner == self.owner

    @classmethod
    def of(cls, token: Token, session: Session | None = None) -> Caller:
        return cls(token.name, token.role, token.owner, session)


def yard_of(request: Request) -> Yard:
    yard: Yard = request.app.state.yard
    return yard


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Caller:
    """The caller of a request; 401 without a live token or session, 403 for an unsafe
    request made with the cookie but without its CSRF token. (A plain function: FastAPI
    runs it on a thread, so the store's read does not hold the event loop.)"""
    yard = yard_of(request)
    if credentials is not None:
        token = yard.tokens.authenticate(credentials.credentials)
        if token is None:
            raise _unauthenticated("the token is not valid (unknown or revoked)")
        return Caller.of(token)
    cookie = request.cookies.get(COOKIE)
    if cookie is None:
        raise _unauthenticated(
            "this needs a token: send 'Authorization: Bearer TOKEN' "
            "(make one with 'batchyard token create NAME --role operator')"
        )
    session = yard.tokens.session(cookie)
    if session is None:
        raise _unauthenticated("the session has ended: log in again")
    if request.method not in _SAFE and request.headers.get(CSRF_HEADER) != session.csrf:
        raise Problem(403, f"a request made with the session cookie needs its {CSRF_HEADER}")
    return Caller.of(session.token, session)


def at_least(role: Role) -> Callable[[Caller], Caller]:
    """A dependency: the caller, who must hold ``role`` or a higher one (403 otherwise)."""

    def check(who: Caller = Depends(caller)) -> Caller:
        if not who.role.allows(role):
            raise Problem(
                403, f"this needs the {role.value} role; token {who.name!r} is a {who.role.value}"
            )
        return who

    return check


viewer = caller
operator = at_least(Role.OPERATOR)
admin = at_least(Role.ADMIN)


def visible(yard: Yard, who: Caller, batch_id: str) -> BatchStatus:
    """The batch's status if the caller may see it; a 404 otherwise (as for no batch)."""
    status = yard.store.get_batch(batch_id)
    if not who.can_see(status):
        raise BatchNotFound(batch_id)
    return status
