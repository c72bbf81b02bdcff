"""Batches side by side (``/compare?ids=A&ids=B``, what the history's Compare button asks
for): the figures of ``batchyard compare --json`` (``report.comparison``, as
``GET /api/v1/compare`` answers), and each batch's error clusters marked new against the
first batch's, or resolved; and for the items each later batch shares with the first (the
same key), how many went from each state there to each state here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from batchyard.report import compare, outcome_grid
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.problems import Problem
from batchyard.web.schemas import Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: As many batches as ``GET /api/v1/compare`` takes.
MOST = 20


def _clusters(reports: list[dict[str, Any]]) -> list[dict[str, list[dict[str, Any]]]]:
    """Per batch: its clusters, each marked ``new`` when the first batch had none like it,
    and the first batch's clusters it no longer has (``resolved``)."""
    first = {c["text"] for c in reports[0]["error_clusters"]}
    out = []
    for n, report in enumerate(reports):
        mine = {c["text"] for c in report["error_clusters"]}
        marked = [{**c, "new": n > 0 and c["text"] not in first} for c in report["error_clusters"]]
        resolved = [] if n == 0 else sorted(first - mine)
        out.append({"clusters": marked, "resolved": [{"text": t} for t in resolved]})
    return out


def _grid(matrix: dict[str, Any]) -> dict[str, Any]:
    columns, rows = outcome_grid(matrix)
    return {**matrix, "columns": columns, "rows": rows}


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    who: Caller = Depends(signed_in),
    ids: list[Text] = Query([], max_length=MOST),
) -> HTMLResponse:
    wanted = list(dict.fromkeys(part.strip() for part in ids if part.strip()))
    if not 2 <= len(wanted) <= MOST:
        raise Problem(400, f"compare needs 2 to {MOST} batches: tick them in the history")
    yard = yard_of(request)
    for batch_id in wanted:
        visible(yard, who, batch_id)
    reports, table = compare([yard.batch(b) for b in wanted])
    return render.page(
        request,
        "compare.html",
        who,
        rows=table["batches"],
        clusters=_clusters([r.as_dict() for r in reports]),
        outcomes=[_grid(matrix) for matrix in table["outcomes"]],
    )
