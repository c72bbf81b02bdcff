"""The re-run control's confirm page (``/batches/{id}/actions/rerun``, operators): which
items (all, or those failed, succeeded or cancelled) and which template version (the one
the batch ran with, or a version of another template of its task), named with the exact
count and version before anything is made. The post makes the new batch as ``POST
/api/v1/batches/{id}/rerun`` does (``Batch.rerun``: the items copied in the store) and
goes to it; a version archived meanwhile is said on the page, nothing made."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from batchyard.controls import Control, controls
from batchyard.errors import BatchyardError
from batchyard.models import BatchStatus
from batchyard.web import submissions
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import operating, signed_in
from batchyard.web.pages.new import operator_only, template_choices
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import BatchId
from batchyard.web.problems import Problem, of_error
from batchyard.web.schemas import TEMPLATE_REF, Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Which = Literal["all", "failed", "succeeded", "cancelled"]
WHICH: tuple[Which, ...] = ("all", "failed", "succeeded", "cancelled")
URL = "/batches/{batch_id}/actions/rerun"


def _count(status: BatchStatus, which: Which) -> int:
    return status.counts.total if which == "all" else int(getattr(status.counts, which))


def _version(request: Request, status: BatchStatus, template: str) -> str:
    """The version a re-run with ``template`` runs, in words (``scorer@3``)."""
    if not template:
        return str(status.template) if status.template else "its own parameters"
    return str(yard_of(request).templates.runnable(template).ref)


def _page(
    request: Request,
    who: Caller,
    status: BatchStatus,
    which: Which,
    template: str,
    error: tuple[int, str] | None = None,
) -> HTMLResponse:
    if Control.RERUN not in controls(status):
        raise Problem(409, f"batch {status.id} is {status.state.value}: no re-run before it ends")
    try:
        version = _version(request, status, template)
    except BatchyardError as exc:  # a version archived since it was picked
        error = error or (of_error(exc).status, str(exc))
        version, template = _version(request, status, ""), ""
    own = str(status.template) if status.template else "its own parameters"
    return render.page(
        request,
        "rerun.html",
        who,
        status_code=error[0] if error else 200,
        error=error[1] if error else None,
        s=status,
        which=which,
        options=[(w, _count(status, w)) for w in WHICH if w == "all" or _count(status, w)],
        count=_count(status, which),
        template=template,
        ran_with=version,
        own=own,
        choices=template_choices(yard_of(request), status.task),
    )


@router.get(URL, response_class=HTMLResponse)
def confirm_rerun(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(signed_in),
    items: Which = Query("all"),
    template: Annotated[Text, Query(max_length=120)] = "",
) -> HTMLResponse:
    """What a re-run of these items with this version makes, before it is made."""
    operator_only(who)
    status = visible(yard_of(request), who, batch_id)
    return _page(request, who, status, items, template)


@router.post(URL)
def rerun(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(operating),
    items: Which = Form("all"),
    template: str = Form("", max_length=120, pattern=f"({TEMPLATE_REF})|^$"),
    name: Annotated[Text, Form(max_length=200)] = "",
) -> Response:
    """The new batch, then its page; the confirm page again, saying why, if none."""
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    try:
        if Control.RERUN not in controls(status):
            raise Problem(409, f"batch {status.id} is {status.state.value}: no re-run now")
        if template:
            submissions.check_template(yard, request.app.state.settings, template)
        made = yard.batch(batch_id).rerun(
            template=template or None, state=items, name=name.strip() or None
        )
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        return _page(request, who, status, items, template, (problem.status, problem.detail))
    return RedirectResponse(f"/batches/{made.id}?done=rerun", status_code=303)
