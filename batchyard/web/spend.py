"""``POST /estimate`` and ``POST /validate``: a submission's body (JSON or an uploaded
file, as ``POST /batches`` takes it, checked the same way) looked at before it is sent:
what it would cost and take, and whether every row renders (``checks``, which the
new-batch page calls too). Nothing is created."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from batchyard.web import checks, uploads
from batchyard.web.auth import Caller, caller, yard_of
from batchyard.web.problems import responses

router = APIRouter(tags=["batches"])
_ANSWERS = responses(400, 401, 403, 404, 409, 413, 415, 422, 503)


@router.post("/estimate", openapi_extra=uploads.BODY, responses=_ANSWERS)
async def estimate(request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    """What a batch of this body would cost and take, before any call (``estimate
    --json``): the llm task's tokens counted from the rendered prompts, answer lengths
    from earlier answers of the same model and template, cached answers free, the
    duration under ``options.rate_limit`` / ``tokens_per_minute`` and
    ``options.concurrency`` (default 16). No pilot runs: nothing is created."""
    async with uploads.submission(request) as (body, source):
        return await run_in_threadpool(
            checks.estimate, yard_of(request), request.app.state.settings, body, source
        )


@router.post("/validate", openapi_extra=uploads.BODY, responses=_ANSWERS)
async def validate(request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    """Whether the task can run on every row of this body, without running it
    (``validate --json``): for the llm task, that the prompt renders over each row. Each
    problem names its ``line`` (of the file; of the item's place in ``items``, the
    dataset or the count otherwise). ``ok`` false is still a 200: the check ran."""
    async with uploads.submission(request) as (body, source):
        return await run_in_threadpool(
            checks.validate, yard_of(request), request.app.state.settings, body, source
        )
