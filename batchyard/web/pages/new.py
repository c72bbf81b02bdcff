"""The new-batch page (``/new``, operators): a JSONL, CSV or Parquet file, the task or the
template version to run it with (an older one shown with what changed since), and a name.
The post goes the way of ``POST /api/v1/batches`` (``uploads.upload`` streams the file,
``submissions.submit`` checks the task and makes the batch, all items or none): a bad line
is shown on the form, naming it, and nothing is created. The form's nonce is the
submission's idempotency key, so a double click makes one batch. Before that, a check
(htmx) answers as ``/api/v1/estimate`` or ``/validate`` would (``web.checks``), with the
first prompts. Rows of a dataset are the page's other source (``picking.py``), which
shares the template picker and the cost rule here."""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from batchyard.errors import BatchyardError
from batchyard.inputs import Input
from batchyard.web import checks, submissions, tasks, uploads
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import can_operate, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.problems import Problem, field_error, of_error
from batchyard.web.schemas import BatchIn, Text
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: The form's fields beside the file (``accept``: "yes" once the cost was accepted).
FIELDS = ("csrf", "nonce", "task", "template", "name", "format", "accept")


async def _csrf_first(request: Request, who: Caller) -> None:
    """Check the form's CSRF token before anything else is read of it (a 403 whatever else
    is wrong with the post). The parsed form stays cached for ``uploads.upload``."""
    assert who.session is not None  # signed_in answers with a session
    form = await request.form(max_files=1, max_fields=len(FIELDS))
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, who.session.csrf):
        await form.close()
        raise Problem(403, "this form is out of date or came from another site")


def operator_only(who: Caller) -> None:
    """A 403 page for a viewer (the new-batch pages are an operator's)."""
    if not can_operate(who):
        raise Problem(403, f"this needs the operator role; token {who.name!r} is a viewer")


def _form(  # reads the store (the template picker): called on a thread
    request: Request,
    who: Caller,
    code: int = 200,
    error: str | None = None,
    given: dict[str, str] | None = None,
    confirm: dict[str, Any] | None = None,
    nonce: str | None = None,
) -> HTMLResponse:
    return render.page(
        request,
        "new.html",
        who,
        status_code=code,
        error=error,
        confirm=confirm,
        **picker(request, given or {}, nonce),
    )


def picker(request: Request, given: dict[str, str], nonce: str | None = None) -> dict[str, Any]:
    """What every new-batch form draws beside its source: the tasks and template versions
    to pick from (``given``: the choices made so far), the note under the template, a
    nonce (the idempotency key of the post: fresh, or ``nonce``, the held post's, whose
    accepted estimate waits under it) and the cost above which it asks."""
    settings: ServerSettings = request.app.state.settings
    return {
        "tasks": [entry.name for entry in tasks.allowed(settings)],
        "choices": template_choices(yard_of(request)),
        "nonce": nonce or secrets.token_urlsafe(16),
        "given": given,
        "limit": settings.confirm_cost,
        **_note(yard_of(request), given.get("template", "")),
    }


def template_choices(yard: Yard, task: str | None = None) -> list[tuple[str, str]]:
    """The template versions a batch may run with (of ``task``'s templates, if given), as
    (value, label): each template's latest by its name (what ``NAME`` runs), then its
    older live versions (``NAME@N``)."""
    found = []
    for latest in yard.templates.list():
        if task is not None and latest.task != task:
            continue
        found.append((latest.name, f"{latest.name} (latest: v{latest.version}, {latest.task})"))
        for old in reversed(yard.templates.versions(latest.name)[:-1]):
            if not old.archived:
                found.append((str(old.ref), f"{old.ref} (older)"))
    return found


def _note(yard: Yard, chosen: str) -> dict[str, Any]:
    """What the page says under the template picked: for an older version, how it differs
    from the latest (the diff of ``template diff``)."""
    if "@" not in chosen:
        return {"older": None}
    try:
        picked = yard.templates.runnable(chosen)
        latest = yard.templates.runnable(picked.name)
    except BatchyardError as exc:
        return {"older": None, "note_error": str(exc)}
    if picked.version == latest.version:
        return {"older": None}
    diff = yard.templates.diff(picked.name, picked.version, latest.version)
    return {"older": picked, "diff": diff, "old": picked.version, "new": latest.version}


@router.get("/new/template", response_class=HTMLResponse)
def template_note(
    request: Request,
    who: Caller = Depends(signed_in),
    template: Annotated[Text, Query(max_length=120)] = "",
) -> HTMLResponse:
    """The note under the template picker (htmx asks for it when the choice changes)."""
    operator_only(who)
    return render.fragment("_template_note.html", **_note(yard_of(request), template))


@router.get("/new", response_class=HTMLResponse)
def new_page(
    request: Request,
    who: Caller = Depends(signed_in),
    template: Annotated[Text, Query(max_length=120)] = "",
) -> HTMLResponse:
    """The form (``template``: the template chosen at first)."""
    operator_only(who)
    return _form(request, who, given={"template": template})


def body_of(fields: dict[str, str], **source: Any) -> BatchIn:
    """The submission a form's ``task``, ``template`` and ``name`` make with ``source``
    (``dataset``, ``where``, ``keys``: none for a file); a 422 naming the field."""
    try:
        return BatchIn.model_validate(
            {
                "task": fields.get("task") or None,
                "template": fields.get("template") or None,
                "options": {"name": fields.get("name") or None},
                **source,
            }
        )
    except ValidationError as exc:
        raise Problem(422, field_error(exc.errors()[0], where=0)) from None


def found_out(request: Request, body: BatchIn, rows: Input | None) -> dict[str, Any]:
    """The check's answer (``checks.preview``), with whether its cost needs accepting."""
    settings: ServerSettings = request.app.state.settings
    found = checks.preview(yard_of(request), settings, body, rows)
    if "estimate" in found:
        found["confirm"] = over(found["estimate"], settings)
    return found


def over(estimate: dict[str, Any], settings: ServerSettings) -> bool:
    """Whether an estimate is over the cost a batch is made at without a confirm."""
    return bool(estimate.get("cost") and estimate["cost"] > settings.confirm_cost)


def estimate_first(
    yard: Yard, settings: ServerSettings, body: BatchIn, rows: Input | None
) -> dict[str, Any] | None:
    """The estimate of a submission the page makes before it (None for a task that cannot
    estimate cost)."""
    if not checks.estimates_cost(yard, settings, body, rows):
        return None
    return checks.estimate(yard, settings, body, rows)


#: The estimate kept with a batch (its metadata's ``estimate``): what the batch page shows
#: beside what the batch costs.
KEPT = ("model", "items", "cost", "cost_range", "input_tokens", "output_tokens")


def with_estimate(body: BatchIn, found: dict[str, Any] | None) -> BatchIn:
    """``body`` with the estimate made before it kept in its metadata (``estimate``)."""
    if not found or found.get("cost") is None:
        return body
    given = body.options.metadata
    metadata = {
        **(given if isinstance(given, dict) else {}),
        "estimate": {k: found[k] for k in KEPT},
    }
    options = body.options.model_copy(update={"metadata": metadata})
    return body.model_copy(update={"options": options})


class Held:
    """Estimates of batches held over the cost limit, by the form's nonce, until their cost
    is accepted: the batch is then made with the estimate its maker accepted. At most
    ``MOST`` are kept, the oldest forgotten first (as is everything when the server
    restarts, or when another server takes the post: that batch then keeps no estimate)."""

    MOST = 1000

    def __init__(self) -> None:
        self._held: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def hold(self, nonce: str | None, found: dict[str, Any]) -> None:
        if nonce:
            self._held[nonce] = found
            while len(self._held) > self.MOST:
                self._held.popitem(last=False)

    def take(self, nonce: str | None) -> dict[str, Any] | None:
        return self._held.pop(nonce, None) if nonce else None


def held(request: Request) -> Held:
    """The server's held estimates (made on first use)."""
    state = request.app.state
    if not hasattr(state, "held_estimates"):
        state.held_estimates = Held()
    found: Held = state.held_estimates
    return found


@router.post("/new/check", response_class=HTMLResponse)
async def check(request: Request, who: Caller = Depends(signed_in)) -> HTMLResponse:
    """The form's file and choices checked (htmx swaps the answer under the form)."""
    operator_only(who)
    await _csrf_first(request, who)
    try:
        async with uploads.upload(request, FIELDS) as (fields, rows):
            found = await run_in_threadpool(found_out, request, body_of(fields), rows)
    except (Problem, BatchyardError) as exc:
        return checked(request, exc)
    return checked(request, found)


def checked(request: Request, found: dict[str, Any] | Problem | BatchyardError) -> HTMLResponse:
    """The check's answer (``_check.html``): what ``found_out`` found, or why it could not."""
    if isinstance(found, Problem | BatchyardError):
        problem = found if isinstance(found, Problem) else of_error(found)
        return render.fragment("_check.html", error=problem.detail, found=None)
    limit = request.app.state.settings.confirm_cost
    return render.fragment("_check.html", error=None, found=found, limit=limit)


@router.post("/new")
async def create(request: Request, who: Caller = Depends(signed_in)) -> Response:
    operator_only(who)
    await _csrf_first(request, who)
    given: dict[str, str] = {}
    yard, settings = yard_of(request), request.app.state.settings
    try:
        async with uploads.upload(request, FIELDS) as (fields, rows), AsyncExitStack() as stack:
            given = {k: v for k, v in fields.items() if k in ("task", "template", "name")}
            body = body_of(fields)
            key = fields.get("nonce") or None
            if fields.get("accept") == "yes":
                body = with_estimate(body, held(request).take(key))
                status, _ = await run_in_threadpool(
                    submissions.submit, yard, settings, who, body, rows, key
                )
            else:
                found = await run_in_threadpool(estimate_first, yard, settings, body, rows)
                if found is not None and over(found, settings):
                    held(request).hold(key, found)
                    return await run_in_threadpool(
                        _form, request, who, 200, None, given, confirm=found, nonce=key
                    )
                body = with_estimate(body, found)
                if found is not None:
                    # The estimate read the file: read it again from the start (spooled).
                    upload = (await request.form()).get("file")
                    assert isinstance(upload, UploadFile)  # uploads.upload found it
                    await upload.seek(0)
                    again = uploads.items_of(upload, fields.get("format"))
                    rows = await run_in_threadpool(stack.enter_context, again)
                status, _ = await run_in_threadpool(
                    submissions.submit, yard, settings, who, body, rows, key
                )
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        return await run_in_threadpool(_form, request, who, problem.status, problem.detail, given)
    return RedirectResponse(f"/batches/{status.id}", status_code=303)
