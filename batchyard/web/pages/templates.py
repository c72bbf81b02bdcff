"""The template pages: every template's latest version (``/templates``), and one template
(``/templates/{name}``) with each version newest first, what its batches did (usage and
cost per version) and the diff of any two versions, from the same ``yard.templates`` calls
as ``batchyard template list|show|diff``. Not ``templates.py`` of ``web/``: that name is
the folder of page templates."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import can_operate, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import TemplateName

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, who: Caller = Depends(signed_in)) -> HTMLResponse:
    latest = yard_of(request).templates.list()
    return render.page(request, "templates.html", who, templates=latest)


@router.get("/templates/{name}", response_class=HTMLResponse)
def template_page(
    name: TemplateName,
    request: Request,
    who: Caller = Depends(signed_in),
    old: int | None = Query(None, ge=1),
    new: int | None = Query(None, ge=1),
) -> HTMLResponse:
    library = yard_of(request).templates
    versions = library.versions(name)
    usage = {u.version: u for u in library.usage(name)}
    newest = versions[-1].version
    old = old or (versions[-2].version if len(versions) > 1 else newest)
    new = new or newest
    return render.page(
        request,
        "template.html",
        who,
        tname=name,
        versions=list(reversed(versions)),
        usage=usage,
        old=old,
        new=new,
        diff=library.diff(name, old, new) if old != new else None,
        operator=can_operate(who),
    )
