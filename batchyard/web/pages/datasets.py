"""The dataset pages: every dataset (``/datasets``), and one dataset's rows
(``/datasets/{name}``) filtered by conditions (``employees>=100``, one a line) and sorted,
a keyset page at a time, all in the URL; tick rows, or take all that match, and start a
batch of them with a task or a template (operators). The rows come from
``yard.datasets.rows``; the batch is made by ``submissions.submit``, as
``POST /api/v1/batches`` makes a dataset batch (rows copied in the store, all or none)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from batchyard.errors import BatchyardError
from batchyard.records import Dataset
from batchyard.web import submissions, tasks
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render, rows
from batchyard.web.pages.guard import can_operate, operating, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import DatasetName
from batchyard.web.problems import Problem, field_error, of_error
from batchyard.web.schemas import BatchIn, Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, who: Caller = Depends(signed_in)) -> HTMLResponse:
    found = sorted(yard_of(request).datasets.list(), key=lambda d: d.name)
    return render.page(request, "datasets.html", who, datasets=found)


def _rows_page(
    request: Request,
    who: Caller,
    dataset: Dataset,
    where: str,
    sort: str,
    limit: int,
    cursor: str | None,
    error: tuple[int, str] | None = None,
) -> HTMLResponse:
    r = rows.read(yard_of(request), dataset, where, sort, limit, cursor)
    base = f"/datasets/{render.path_part(dataset.name)}?"
    return render.page(
        request,
        "dataset.html",
        who,
        status_code=error[0] if error else 200,
        error=error[1] if error else None,
        r=r,
        sizes=rows.PAGE_SIZES,
        next_url=None
        if r.page.next is None
        else base + urlencode({**r.query, "cursor": r.page.next}),
        first_url=None if cursor is None else base + urlencode(r.query),
        operator=can_operate(who),
        tasks=[entry.name for entry in tasks.allowed(request.app.state.settings)],
        templates=yard_of(request).templates.list(),
    )


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(
    name: DatasetName,
    request: Request,
    who: Caller = Depends(signed_in),
    where: Annotated[Text, Query(max_length=4000)] = "",
    sort: Annotated[Text, Query(max_length=200)] = "",
    limit: int = Query(25),
    cursor: Text | None = Query(None, max_length=200),
) -> HTMLResponse:
    rows.check_limit(limit)
    dataset = yard_of(request).datasets.get(name)
    return _rows_page(request, who, dataset, where, sort, limit, cursor)


@router.post("/datasets/{name}/batch")
def start_batch(
    name: DatasetName,
    request: Request,
    who: Caller = Depends(operating),
    scope: str = Form("ticked", pattern="^(ticked|all)$"),
    where: Annotated[Text, Form(max_length=4000)] = "",
    task: Annotated[Text, Form(max_length=300)] = "",
    template: Annotated[Text, Form(max_length=300)] = "",
    batch_name: Annotated[Text, Form(max_length=200)] = "",
    ticked: list[Text] = Form([], alias="keys", max_length=1000),
) -> Response:
    """A batch of the ticked rows (``scope=ticked``) or of every row ``where`` picks."""
    keys = ticked if scope == "ticked" else None
    try:
        if keys is not None and not keys:
            raise Problem(422, "no row is ticked: tick rows, or take all that match")
        body = _body(name, where, keys, task, template, batch_name)
        status, _ = submissions.submit(
            yard_of(request), request.app.state.settings, who, body, None, None
        )
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        dataset = yard_of(request).datasets.get(name)
        failed = (problem.status, problem.detail)
        return _rows_page(request, who, dataset, where, "", rows.PAGE_SIZES[0], None, failed)
    return RedirectResponse(f"/batches/{status.id}", status_code=303)


def _body(
    name: str, where: str, keys: list[str] | None, task: str, template: str, batch_name: str
) -> BatchIn:
    try:
        return BatchIn.model_validate(
            {
                "dataset": name,
                "where": rows.conditions(where),
                "keys": keys,
                "task": task or None,
                "template": template or None,
                "options": {"name": batch_name or None},
            }
        )
    except ValidationError as exc:
        raise Problem(422, field_error(exc.errors()[0], where=0)) from None
