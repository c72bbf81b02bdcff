"""The tokens page (admins only): every token with its role, owner and last use; a form
that makes one and shows its secret once (with its login link); revoking one behind a
confirm page where its name is typed. The same ``yard.tokens`` calls as ``batchyard
token create|list|revoke``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from batchyard import access
from batchyard.access import Role, Token
from batchyard.errors import BatchyardError
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import administering, must_be_admin, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import TokenName
from batchyard.web.problems import Problem, of_error

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _page(
    request: Request,
    who: Caller,
    code: int = 200,
    made: tuple[Token, str] | None = None,
    error: str | None = None,
) -> HTMLResponse:
    tokens = sorted(yard_of(request).tokens.list(), key=lambda t: (t.is_revoked, t.name))
    answer = render.page(
        request,
        "tokens.html",
        who,
        status_code=code,
        tokens=tokens,
        roles=[r.value for r in Role],
        made=made,
        error=error,
        base=str(request.base_url).rstrip("/"),
    )
    answer.headers["Cache-Control"] = "no-store"  # a new token's secret is on it, once
    return answer


def _live(request: Request, name: str) -> Token:
    for token in yard_of(request).tokens.list():
        if token.name == name and not token.is_revoked:
            return token
    raise Problem(404, f"no live token named {name!r}")


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, who: Caller = Depends(signed_in)) -> HTMLResponse:
    must_be_admin(who)
    return _page(request, who)


@router.post("/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    who: Caller = Depends(administering),
    name: str = Form(..., max_length=access.MAX_NAME),
    role: Role = Form(Role.VIEWER),
    owner: str = Form("", max_length=access.MAX_NAME),
) -> HTMLResponse:
    try:
        made = yard_of(request).tokens.create(name.strip(), role, owner.strip() or None)
    except BatchyardError as exc:  # a bad or taken name: said above the form, nothing made
        problem = of_error(exc)
        return _page(request, who, problem.status, error=problem.detail)
    return _page(request, who, 201, made=made)


@router.get("/tokens/{name}/revoke", response_class=HTMLResponse)
def revoke_page(
    name: TokenName, request: Request, who: Caller = Depends(signed_in)
) -> HTMLResponse:
    must_be_admin(who)
    token = _live(request, name)
    return render.page(request, "revoke.html", who, token=token, error=None)


@router.post("/tokens/{name}/revoke")
def revoke_token(
    name: TokenName,
    request: Request,
    who: Caller = Depends(administering),
    confirm_name: str = Form("", max_length=access.MAX_NAME),
) -> Response:
    token = _live(request, name)
    if confirm_name.strip() != name:
        typo = "the name typed is not the token's name: nothing was done"
        return render.page(request, "revoke.html", who, status_code=422, token=token, error=typo)
    yard_of(request).tokens.revoke(name)
    return RedirectResponse("/tokens", status_code=303)
