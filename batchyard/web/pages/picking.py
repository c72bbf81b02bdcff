"""The new-batch page's dataset source (``/new/dataset``, operators): a dataset's rows
filtered and paged as its own page shows them (``pages.rows``), rows ticked on any number
of pages or every row that matches, then the task or template version, a name, the check
(``web.checks``: the estimate and the first prompts, as ``/api/v1/estimate`` answers) and
the batch, made as ``POST /api/v1/batches`` makes one of a dataset (rows copied in the
store, all or none; the form's nonce as its idempotency key).

What is picked lives in the page's URL (``picked`` once per key, or ``all=1``), so the
pages of rows are links a reader can go back to. Moving between them is a form post
(``/new/dataset/rows``, CSRF-checked) that answers with a redirect to that URL: the boxes
ticked on the page left are kept, and the session's token never enters a URL."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from batchyard.errors import BatchyardError
from batchyard.web import submissions
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render, rows
from batchyard.web.pages.guard import posting, signed_in
from batchyard.web.pages.new import (
    body_of,
    checked,
    estimate_first,
    found_out,
    held,
    operator_only,
    over,
    picker,
    with_estimate,
)
from batchyard.web.pages.route import PageRoute
from batchyard.web.problems import Problem, of_error
from batchyard.web.schemas import BatchIn, Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: The longest page address a move leads to: the picks travel in it, and a server keeps
#: a request's head small (uvicorn's h11 takes 16 KiB with the headers and cookies).
MAX_URL = 8000
#: The most keys a page's address may pick.
MAX_PICKED = 1000
#: What a move between pages does (the ``go`` button pressed).
MOVES = ("filter", "next", "first", "all", "some", "clear")


@dataclass(frozen=True, slots=True)
class Picking:
    """The form as it stands: the dataset and its filter, the page, what is picked, and the
    choices of the batch to make."""

    dataset: str = ""
    where: str = ""
    sort: str = ""
    limit: int = rows.PAGE_SIZES[0]
    cursor: str | None = None
    picked: tuple[str, ...] = ()
    every: bool = False
    template: str = ""
    task: str = ""
    name: str = ""

    @classmethod
    def of(cls, limit: int, cursor: str | None, picked: list[str], **given: Any) -> Picking:
        """The state a page's address or its form gives: a page size offered (422 else),
        no empty cursor, each key picked once."""
        rows.check_limit(limit)
        keys = tuple(dict.fromkeys(k for k in picked if k))
        return cls(limit=limit, cursor=cursor or None, picked=keys, **given)

    @property
    def url(self) -> str:
        """The page that shows this state (the keys picked in it)."""
        given: list[tuple[str, Any]] = [
            (k, v)
            for k, v in (
                ("dataset", self.dataset),
                ("where", self.where),
                ("sort", self.sort),
                ("limit", self.limit if self.limit != rows.PAGE_SIZES[0] else ""),
                ("cursor", self.cursor),
                ("all", "1" if self.every else ""),
                ("template", self.template),
                ("task", self.task),
                ("name", self.name),
            )
            if v
        ]
        given += [("picked", key) for key in self.picked]
        return "/new/dataset" + ("?" + urlencode(given) if given else "")

    @property
    def choices(self) -> dict[str, str]:
        return {"template": self.template, "task": self.task, "name": self.name}

    def body(self) -> BatchIn:
        """The batch this form makes: the rows picked (by key, whatever the filter now),
        or every row the filter matches. A 422 when nothing is picked."""
        if not self.dataset:
            raise Problem(422, "choose a dataset, then the rows to run", field="dataset")
        if self.every:
            return body_of(self.choices, dataset=self.dataset, where=rows.conditions(self.where))
        if not self.picked:
            raise Problem(
                422, "no row is picked: tick rows, or select all that match", field="picked"
            )
        return body_of(self.choices, dataset=self.dataset, keys=list(self.picked))


def _page(  # reads the store: called on a thread
    request: Request,
    who: Caller,
    state: Picking,
    code: int = 200,
    error: str | None = None,
    confirm: dict[str, Any] | None = None,
    nonce: str | None = None,
) -> HTMLResponse:
    yard = yard_of(request)
    dataset, shown, read_error = None, None, None
    if state.dataset:
        try:
            dataset = yard.datasets.get(state.dataset)
            shown = rows.read(yard, dataset, state.where, state.sort, state.limit, state.cursor)
        except BatchyardError as exc:  # said on the form, whose filter can be mended
            code, read_error = max(code, of_error(exc).status), str(exc)
    on_page = {row.key for row in shown.page.rows} if shown else set()
    return render.page(
        request,
        "new_rows.html",
        who,
        status_code=code,
        error=error or read_error,
        confirm=confirm,
        state=state,
        ds=dataset,
        r=shown,
        datasets=sorted(d.name for d in yard.datasets.list()),
        # Boxes drawn ticked and disabled (all picked) are not posted: keep the picks.
        elsewhere=[k for k in state.picked if state.every or k not in on_page],
        sizes=rows.PAGE_SIZES,
        source="dataset",
        **picker(request, state.choices, nonce),
    )


@router.get("/new/dataset", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    who: Caller = Depends(signed_in),
    dataset: Annotated[Text, Query(max_length=200)] = "",
    where: Annotated[Text, Query(max_length=4000)] = "",
    sort: Annotated[Text, Query(max_length=200)] = "",
    limit: int = Query(rows.PAGE_SIZES[0]),
    cursor: Text | None = Query(None, max_length=200),
    picked: list[Text] = Query([], max_length=MAX_PICKED),
    every: bool = Query(False, alias="all"),
    template: Annotated[Text, Query(max_length=120)] = "",
    task: Annotated[Text, Query(max_length=300)] = "",
    name: Annotated[Text, Query(max_length=200)] = "",
) -> HTMLResponse:
    """The form, as its URL says: the dataset's rows filtered, the page, what is picked."""
    operator_only(who)
    state = Picking.of(
        limit,
        cursor,
        picked,
        dataset=dataset,
        where=where,
        sort=sort,
        every=every,
        template=template,
        task=task,
        name=name,
    )
    return _page(request, who, state)


async def _posted(request: Request) -> tuple[Picking, dict[str, str]]:
    """The form posted: its state (the boxes ticked on the page it came from included)
    and its other fields (``go``, ``next``, ``shown``, ``nonce``, ``accept``)."""
    form = await request.form()
    one = {k: v for k, v in form.items() if isinstance(v, str)}
    picked = [v for v in form.getlist("picked") if isinstance(v, str)]
    try:
        limit = int(one.get("limit") or rows.PAGE_SIZES[0])
    except ValueError:
        raise Problem(422, f"limit: a number, not {one.get('limit')!r}") from None
    text = ("dataset", "where", "sort", "template", "task", "name")
    state = Picking.of(
        limit,
        one.get("cursor"),
        picked,
        every=one.get("all") == "1",
        **{k: one.get(k, "") for k in text},
    )
    return state, one


def _moved(state: Picking, go: str, given: dict[str, str]) -> Picking:
    """Where a move between pages leads: another dataset starts afresh; a new filter
    goes back to its first page."""
    if state.dataset != given.get("shown", ""):
        return Picking(
            state.dataset,
            limit=state.limit,
            template=state.template,
            task=state.task,
            name=state.name,
        )
    if go == "next" and given.get("next"):
        return replace(state, cursor=given["next"])
    if go == "all":
        return replace(state, every=True)
    if go == "some":
        return replace(state, every=False)
    if go == "clear":
        return replace(state, picked=(), every=False)
    return replace(state, cursor=None)  # filter, first


@router.post("/new/dataset/rows")
async def move(request: Request, who: Caller = Depends(posting)) -> Response:
    """Another page of rows, another filter or dataset, all or some rows picked: a
    redirect to the page that shows it (with what was ticked here kept)."""
    operator_only(who)
    try:
        state, given = await _posted(request)
    except Problem as exc:
        return await run_in_threadpool(_page, request, who, Picking(), exc.status, exc.detail)
    go = given.get("go", "filter")
    if go not in MOVES:
        raise Problem(422, f"go: one of {', '.join(MOVES)}, not {go!r}")
    moved = _moved(state, go, given)
    if len(moved.url) > MAX_URL:
        picked = len(moved.picked)
        say = f"{picked} rows picked one by one are more than the page's address can keep: "
        say += "make the batch of them now, or filter the rows and select all that match"
        return await run_in_threadpool(_page, request, who, moved, 422, say)
    # Where the keyboard carries on: the filter after a new one, else the rows.
    mark = "#rows-f" if go == "filter" else "#rows-h"
    return RedirectResponse(moved.url + mark, status_code=303)


def _shown_is_chosen(state: Picking, given: dict[str, str]) -> None:
    if state.dataset != given.get("shown", state.dataset):
        raise Problem(
            422,
            f"the dataset chosen, {state.dataset!r}, is not the one shown: press "
            "“Show its rows” first",
            field="dataset",
        )


@router.post("/new/dataset/check", response_class=HTMLResponse)
async def check(request: Request, who: Caller = Depends(posting)) -> HTMLResponse:
    """The rows picked and the choices checked (htmx swaps the answer under the form)."""
    operator_only(who)
    try:
        state, given = await _posted(request)
        _shown_is_chosen(state, given)
        found = await run_in_threadpool(found_out, request, state.body(), None)
    except (Problem, BatchyardError) as exc:
        return checked(request, exc)
    return checked(request, found)


@router.post("/new/dataset")
async def create(request: Request, who: Caller = Depends(posting)) -> Response:
    """The batch of the rows picked (one, whatever the clicks: the nonce is its key); the
    form again, saying why, when nothing is made."""
    operator_only(who)
    state = Picking()
    yard, settings = yard_of(request), request.app.state.settings
    try:
        state, given = await _posted(request)
        _shown_is_chosen(state, given)
        body = state.body()
        key = given.get("nonce") or None
        if given.get("accept") == "yes":
            found = held(request).take(key)
        else:
            found = await run_in_threadpool(estimate_first, yard, settings, body, None)
            if found is not None and over(found, settings):
                held(request).hold(key, found)
                return await run_in_threadpool(_page, request, who, state, confirm=found, nonce=key)
        body = with_estimate(body, found)
        status, _ = await run_in_threadpool(
            submissions.submit, yard, settings, who, body, None, key
        )
    except (Problem, BatchyardError) as exc:
        problem = exc if isinstance(exc, Problem) else of_error(exc)
        return await run_in_threadpool(_page, request, who, state, problem.status, problem.detail)
    return RedirectResponse(f"/batches/{status.id}", status_code=303)
