"""The new-batch page (``/new``, operators): a JSONL, CSV or Parquet file, the task or the
template version to run it with (an older one shown with what changed since), and a name.
The post goes the way of ``POST /api/v1/batches`` (``uploads.upload`` streams the file,
``submissions.submit`` checks the task and makes the batch, all items or none): a bad line
is shown on the form, naming it, and nothing is created. The form's nonce is the
submission's idempotency key, so a double click makes one batch. Before that, a check
(htmx) answers as ``/api/v1/estimate`` or ``/validate`` would, with the first prompts."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from batchyard.errors import BatchyardError
from batchyard.inputs import Input
from batchyard.llm.params import read_params
from batchyard.templates.library import merged_params
from batchyard.web import spend, submissions, tasks, uploads
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import can_operate, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.problems import Problem, of_error
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: How many rows' prompts a check shows.
PREVIEW = 5
#: Above this estimated cost (in dollars) a batch is made only once the cost is accepted.
CONFIRM_ABOVE = 1.0
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


def _operator(who: Caller) -> None:
    if not can_operate(who):
        raise Problem(403, f"this needs the operator role; token {who.name!r} is a viewer")


def _form(
    request: Request,
    who: Caller,
    code: int = 200,
    error: str | None = None,
    given: dict[str, str] | None = None,
    confirm: dict[str, Any] | None = None,
) -> HTMLResponse:
    settings = request.app.state.settings
    return render.page(
        request,
        "new.html",
        who,
        status_code=code,
        tasks=[entry.name for entry in tasks.allowed(settings)],
        choices=_choices(yard_of(request)),
        nonce=secrets.token_urlsafe(16),
        error=error,
        given=given or {},
        confirm=confirm,
        limit=CONFIRM_ABOVE,
        **_note(yard_of(request), (given or {}).get("template", "")),
    )


def _choices(yard: Yard) -> list[tuple[str, str]]:
    """The template versions a batch may run with, as (value, label): each template's
    latest by its name (what ``NAME`` runs), then its older live versions (``NAME@N``)."""
    found = []
    for latest in yard.templates.list():
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
    template: str = Query("", max_length=120),
) -> HTMLResponse:
    """The note under the template picker (htmx asks for it when the choice changes)."""
    _operator(who)
    return render.fragment("_template_note.html", **_note(yard_of(request), template))


@router.get("/new", response_class=HTMLResponse)
def new_page(
    request: Request,
    who: Caller = Depends(signed_in),
    template: str = Query("", max_length=120),
) -> HTMLResponse:
    """The form (``template``: the template chosen at first)."""
    _operator(who)
    return _form(request, who, given={"template": template})


def _body(fields: dict[str, str]) -> BatchIn:
    try:
        return BatchIn.model_validate(
            {
                "task": fields.get("task") or None,
                "template": fields.get("template") or None,
                "options": {"name": fields.get("name") or None},
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Problem(422, f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


class _Peeking(Input):
    """An input that keeps its first ``n`` items as they go past (for a preview)."""

    def __init__(self, inner: Input, n: int) -> None:
        pairs = ((inner.line_of(inner.count) or inner.count, row) for row in inner)
        super().__init__(inner.source, pairs, lambda: None)
        self.first: list[dict[str, Any]] = []
        self._keep = n

    def __next__(self) -> dict[str, Any]:
        row = super().__next__()
        if len(self.first) < self._keep:
            self.first.append(row)
        return row


def _estimates(yard: Yard, settings: ServerSettings, body: BatchIn, rows: Input) -> bool:
    """Whether the submission's task estimates its cost (the llm task), once what every
    submission checks first has passed: the task (and the template's) allowed here. The
    task is resolved only then: a client's name is never imported."""
    submissions.checked(yard, settings, body, rows, creating=False)
    chosen = None if body.template is None else yard.templates.runnable(body.template)
    task = body.task or (chosen.task if chosen else "")
    return yard.registry.resolve(task).estimate is not None


def _check(yard: Yard, settings: ServerSettings, body: BatchIn, rows: Input) -> dict[str, Any]:
    """What ``POST /api/v1/estimate`` answers for a task that estimates (the llm task),
    with the prompts of its first rows, else what ``POST /api/v1/validate`` answers: one
    pass over the rows, nothing made."""
    if not _estimates(yard, settings, body, rows):
        return {"validation": spend._validate(yard, settings, body, rows)}
    peek = _Peeking(rows, PREVIEW)
    found = spend._estimate(yard, settings, body, peek)
    chosen = None if body.template is None else yard.templates.runnable(body.template)
    params = body.options.params or {}
    prompt = read_params(merged_params(chosen, params) if chosen else params).prompt
    prompts = [prompt.render(item) for item in peek.first]
    return {"estimate": found, "prompts": prompts, "confirm": _over(found)}


def _over(estimate: dict[str, Any]) -> bool:
    """Whether an estimate is over the cost a batch is made at without a confirm."""
    return bool(estimate.get("cost") and estimate["cost"] > CONFIRM_ABOVE)


def _cost_to_accept(
    yard: Yard, settings: ServerSettings, body: BatchIn, rows: Input
) -> dict[str, Any] | None:
    """The estimate of a submission whose cost must be accepted first, or None."""
    if not _estimates(yard, settings, body, rows):
        return None
    found = spend._estimate(yard, settings, body, rows)
    return found if _over(found) else None


@router.post("/new/check", response_class=HTMLResponse)
async def check(request: Request, who: Caller = Depends(signed_in)) -> HTMLResponse:
    """The form's file and choices checked (htmx swaps the answer under the form)."""
    _operator(who)
    await _csrf_first(request, who)
    try:
        async with uploads.upload(request, FIELDS) as (fields, rows):
            body = _body(fields)
            settings = request.app.state.settings
            found = await run_in_threadpool(_check, yard_of(request), settings, body, rows)
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        return render.fragment("_check.html", error=problem.detail, found=None)
    return render.fragment("_check.html", error=None, found=found, limit=CONFIRM_ABOVE)


@router.post("/new")
async def create(request: Request, who: Caller = Depends(signed_in)) -> Response:
    _operator(who)
    await _csrf_first(request, who)
    given: dict[str, str] = {}
    yard, settings = yard_of(request), request.app.state.settings
    try:
        async with uploads.upload(request, FIELDS) as (fields, rows):
            given = {k: v for k, v in fields.items() if k in ("task", "template", "name")}
            body = _body(fields)
            key = fields.get("nonce") or None
            if fields.get("accept") == "yes":
                status, _ = await run_in_threadpool(
                    submissions.submit, yard, settings, who, body, rows, key
                )
            else:
                found = await run_in_threadpool(_cost_to_accept, yard, settings, body, rows)
                if found is not None:
                    return _form(request, who, 200, None, given, confirm=found)
                # The estimate read the file: read it again from the start (it is spooled).
                upload = (await request.form()).get("file")
                assert isinstance(upload, UploadFile)  # uploads.upload found it
                await upload.seek(0)
                with uploads.items_of(upload, fields.get("format")) as again:
                    status, _ = await run_in_threadpool(
                        submissions.submit, yard, settings, who, body, again, key
                    )
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        return _form(request, who, problem.status, problem.detail, given)
    return RedirectResponse(f"/batches/{status.id}", status_code=303)
