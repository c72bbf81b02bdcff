"""The batch history (``/``): the caller's batches newest first, a keyset page at a time,
with the running and paused ones pinned on top. Every filter is a query parameter, so a
copied URL shows the same rows and Back restores them; the rows come from the same
``Yard.batches`` call (and owner rule) as ``GET /api/v1/batches``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from batchyard.models import BatchStatus
from batchyard.states import BATCH_OPEN_STATES, BatchState
from batchyard.web.auth import Caller, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.problems import Problem
from batchyard.web.schemas import Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZES = (25, 50, 100)
#: How many running or paused batches the pinned list shows at most.
PINNED = 50


@dataclass(frozen=True, slots=True)
class Filters:
    """The history's query parameters, as the form sends them (empty means no filter)."""

    state: str = ""
    task: str = ""
    template: str = ""
    q: str = ""
    since: str = ""
    until: str = ""
    limit: int = 25

    @property
    def is_default(self) -> bool:
        return self == Filters(limit=self.limit)

    def url(self, **changes: str | int) -> str:
        """``/`` with these filters (and ``changes``), leaving out the empty ones."""
        params = {**asdict(self), **changes}
        if params["limit"] == 25:
            del params["limit"]
        return "/?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})


def _day(value: str, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        raise Problem(422, f"{field}: not a date (YYYY-MM-DD): {value!r}") from None


def _state(value: str) -> BatchState | None:
    if not value:
        return None
    try:
        return BatchState(value)
    except ValueError:
        raise Problem(422, f"state: not a batch state: {value!r}") from None


def _pinned(request: Request, who: Caller) -> list[BatchStatus]:
    """The caller's batches still open (running, paused, queued ...), newest first."""
    yard = yard_of(request)
    owner = None if who.is_admin else who.owner
    found: list[BatchStatus] = []
    for state in BATCH_OPEN_STATES:
        found += yard.batches(state=state, owner=owner, limit=PINNED).rows
    return sorted(found, key=lambda s: s.created_at, reverse=True)[:PINNED]


@router.get("/", response_class=HTMLResponse)
def history(
    request: Request,
    who: Caller = Depends(signed_in),
    state: str = Query("", max_length=40),
    task: Annotated[Text, Query(max_length=300)] = "",
    template: Annotated[Text, Query(max_length=300)] = "",
    q: Annotated[Text, Query(max_length=200)] = "",
    since: str = Query("", max_length=10),
    until: str = Query("", max_length=10),
    limit: int = Query(25),
    cursor: str | None = Query(None, max_length=40, pattern=r"^p\d{1,19}$"),
) -> HTMLResponse:
    if limit not in PAGE_SIZES:
        raise Problem(422, f"limit: one of {', '.join(map(str, PAGE_SIZES))}, not {limit}")
    filters = Filters(state, task, template, q, since, until, limit)
    start, end = _day(since, "since"), _day(until, "until")
    page = yard_of(request).batches(
        state=_state(state),
        task=task or None,
        template=template or None,
        text=q or None,
        created_after=None if start is None else start.timestamp(),
        created_before=None if end is None else (end + timedelta(days=1)).timestamp(),
        owner=None if who.is_admin else who.owner,
        limit=limit,
        after=cursor,
    )
    pinned = _pinned(request, who) if filters.is_default and cursor is None else []
    return render.page(
        request,
        "history.html",
        who,
        rows=page.rows,
        pinned=pinned,
        running=sum(1 for s in pinned if s.state is not BatchState.PAUSED),
        filters=filters,
        states=[s.value for s in BatchState],
        sizes=PAGE_SIZES,
        next_url=None if page.next is None else filters.url(cursor=page.next),
        first_url=None if cursor is None else filters.url(),
        now=time.time(),
    )
