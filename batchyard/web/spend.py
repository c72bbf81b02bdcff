"""``POST /estimate`` and ``POST /validate``: a submission's body (JSON or an uploaded
file, as ``POST /batches`` takes it, checked the same way) looked at before it is sent:
what it would cost and take, and whether every row renders. Nothing is created."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from batchyard.errors import InputError
from batchyard.inputs import Input
from batchyard.templates.library import merged_params
from batchyard.validation import check_rows
from batchyard.web import submissions, uploads
from batchyard.web.auth import Caller, caller, yard_of
from batchyard.web.problems import Problem, responses
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard

router = APIRouter(tags=["batches"])
_ANSWERS = responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
#: Calls in flight at once that an estimate's duration assumes (``estimate --concurrency``).
CONCURRENCY = 16
#: Rows of a dataset read per page when an estimate or a validation goes over them.
PAGE = 1000


@router.post("/estimate", openapi_extra=uploads.BODY, responses=_ANSWERS)
async def estimate(request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    """What a batch of this body would cost and take, before any call (``estimate
    --json``): the llm task's tokens counted from the rendered prompts, answer lengths
    from earlier answers of the same model and template, cached answers free, the
    duration under ``options.rate_limit`` / ``tokens_per_minute`` and
    ``options.concurrency`` (default 16). No pilot runs: nothing is created."""
    async with uploads.submission(request) as (body, source):
        return await run_in_threadpool(
            _estimate, yard_of(request), request.app.state.settings, body, source
        )


@router.post("/validate", openapi_extra=uploads.BODY, responses=_ANSWERS)
async def validate(request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    """Whether the task can run on every row of this body, without running it
    (``validate --json``): for the llm task, that the prompt renders over each row. Each
    problem names its ``line`` (of the file; of the item's place in ``items``, the
    dataset or the count otherwise). ``ok`` false is still a 200: the check ran."""
    async with uploads.submission(request) as (body, source):
        return await run_in_threadpool(
            _validate, yard_of(request), request.app.state.settings, body, source
        )


def _estimate(
    yard: Yard, settings: ServerSettings, body: BatchIn, upload: Input | None
) -> dict[str, Any]:
    task = submissions.checked(yard, settings, body, upload, creating=False)
    options = body.options
    try:
        found = yard.estimate(
            task,
            (item for _, item in _rows(yard, body, upload)),
            params=options.params,
            template=body.template,
            rate_limit=options.rate_limit,
            tokens_per_minute=options.tokens_per_minute,
            concurrency=options.concurrency or CONCURRENCY,
        )
    except InputError as exc:
        raise (exc if upload is None else upload.locate(exc)) from None
    return found.as_dict()


def _validate(
    yard: Yard, settings: ServerSettings, body: BatchIn, upload: Input | None
) -> dict[str, Any]:
    task = submissions.checked(yard, settings, body, upload, creating=False)
    params = body.options.params or {}
    if body.template is not None:
        chosen = yard.templates.runnable(body.template)
        if task is not None and yard.registry.resolve(task).name != chosen.task:
            raise Problem(
                422, f"template {chosen.ref} is for task {chosen.task}, not {task}", field="task"
            )
        task, params = chosen.task, merged_params(chosen, params)
    assert task is not None  # checked: a body names a task or a template
    spec = yard.registry.resolve(task)
    found = check_rows(spec, params, _rows(yard, body, upload))
    return {"task": spec.name, **found.as_dict()}


def _rows(yard: Yard, body: BatchIn, upload: Input | None) -> Iterator[tuple[int, Any]]:
    """The body's items, each with its line: in the uploaded file, else its place."""
    if upload is not None:
        for item in upload:
            yield upload.line_of(upload.count) or upload.count, item
    elif body.dataset is not None:
        yield from _dataset_rows(yard, body)
    elif body.count is not None:
        yield from ((n + 1, {"n": n}) for n in range(body.count))
    else:
        yield from enumerate(body.items or [], 1)


def _dataset_rows(yard: Yard, body: BatchIn) -> Iterator[tuple[int, Any]]:
    """The rows of the body's dataset that its ``where`` and ``keys`` pick, a page at a
    time (the rows a batch of it would copy, in the same order)."""
    assert body.dataset is not None
    cursor: str | None = None
    while True:
        page = yard.datasets.rows(
            body.dataset, body.where, keys=body.keys, limit=PAGE, cursor=cursor
        )
        yield from ((row.position, row.data) for row in page.rows)
        if page.next is None:
            return
        cursor = page.next
