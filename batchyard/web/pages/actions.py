"""The controls of a batch's page: each is a confirm page (``GET
/batches/{id}/actions/{control}``) that names exactly what it will do, and a form post that
does it with the same call the API's route makes. Cancel and delete ask for the batch's
name to be typed. Viewers get 403; a post without the session's CSRF token, 403."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from batchyard.clusters import ErrorCluster
from batchyard.controls import Control, controls
from batchyard.errors import ClusterNotFound
from batchyard.models import BatchStatus
from batchyard.web.auth import Caller, visible, yard_of
from batchyard.web.pages import render
from batchyard.web.pages.guard import can_operate, operating, signed_in
from batchyard.web.pages.route import PageRoute
from batchyard.web.paths import BatchId
from batchyard.web.problems import Problem
from batchyard.web.schemas import Text

router = APIRouter(route_class=PageRoute, include_in_schema=False)
#: The controls that ask for the batch's name to be typed.
TYPED = frozenset({Control.CANCEL, Control.DELETE})


@dataclass(frozen=True, slots=True)
class Consequence:
    """What a control will do to a batch, in words, and how many items it touches."""

    title: str
    text: str
    count: int


def _plural(n: int, word: str = "item") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def consequence(
    status: BatchStatus, control: Control, cluster: ErrorCluster | None = None
) -> Consequence:
    counts = status.counts
    if control is Control.PAUSE:
        n = counts.pending + counts.retry_wait + counts.waiting
        text = f"No more items are started: {_plural(n)} wait until it is resumed; "
        return Consequence("Pause", text + f"{_plural(counts.running)} running finish.", n)
    if control is Control.RESUME:
        n = counts.remaining
        return Consequence("Resume", f"Workers carry on with the {_plural(n)} left to do.", n)
    if control is Control.CANCEL:
        n = counts.pending + counts.retry_wait
        text = f"{_plural(n)} not started yet will be cancelled"
        text += f" and {_plural(counts.running + counts.waiting)} running told to stop."
        return Consequence("Cancel", text + " This cannot be undone.", n)
    if control is Control.RETRY:
        n = counts.failed if cluster is None else cluster.items
        what = "" if cluster is None else f" of the error cluster “{cluster.text}”"
        verb = "goes" if n == 1 else "go"
        text = f"{_plural(n, 'failed item')}{what} {verb} back to the queue with fresh attempts."
        cost = status.cost_of(n)
        if cost:  # nothing to say for a batch that cost nothing or whose cost is unknown
            text += f" At this batch's average so far, that costs about ${cost:.4f}."
        return Consequence("Retry", text, n)
    if control is Control.SEAL:
        n = counts.remaining
        text = f"The batch takes no more items: the {_plural(n)} left to do run, then it ends."
        return Consequence("Seal", text, n)
    n = counts.total
    text = f"The batch, its {_plural(n)}, their results, attempts and logs are deleted for good."
    return Consequence("Delete", text, n)


def _is_name(typed: str, name: str) -> bool:
    """Whether ``typed`` is ``name``, or ``name`` as the page shows it (direction controls
    as ``[U+202E]``: what a reader can type)."""
    return typed.strip() in (name, render.visible_text(name))


def _cluster(request: Request, batch_id: str, wanted: str | None) -> ErrorCluster | None:
    if not wanted:
        return None
    for found in yard_of(request).store.error_clusters(batch_id, None):
        if found.id == wanted:
            return found
    raise ClusterNotFound(batch_id, wanted)


def _confirm(
    request: Request,
    who: Caller,
    status: BatchStatus,
    control: Control,
    cluster: ErrorCluster | None,
    error: str | None = None,
) -> HTMLResponse:
    if control not in controls(status):
        raise Problem(409, f"batch {status.id} is {status.state.value}: no {control.value} now")
    return render.page(
        request,
        "confirm.html",
        who,
        status_code=422 if error else 200,
        s=status,
        control=control,
        cluster=cluster,
        what=consequence(status, control, cluster),
        typed=control in TYPED,
        error=error,
    )


@router.get("/batches/{batch_id}/actions/{control}", response_class=HTMLResponse)
def confirm_page(
    batch_id: BatchId,
    control: Control,
    request: Request,
    who: Caller = Depends(signed_in),
    cluster: Text | None = Query(None, max_length=64),
) -> HTMLResponse:
    if not can_operate(who):
        raise Problem(403, f"this needs the operator role; token {who.name!r} is a viewer")
    status = visible(yard_of(request), who, batch_id)
    return _confirm(request, who, status, control, _cluster(request, batch_id, cluster))


@router.post("/batches/{batch_id}/actions/{control}")
def act(
    batch_id: BatchId,
    control: Control,
    request: Request,
    who: Caller = Depends(operating),
    confirm_name: str = Form("", max_length=300),
    cluster: Text | None = Form(None, max_length=64),
) -> Response:
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    found = _cluster(request, batch_id, cluster)
    if control in TYPED and not _is_name(confirm_name, status.name or status.id):
        typo = "the name typed is not the batch's name: nothing was done"
        return _confirm(request, who, status, control, found, typo)
    batch = yard.batch(batch_id)
    if control is Control.RETRY:
        batch.retry_failed(cluster=None if found is None else found.id)
    elif control is Control.DELETE:
        batch.delete()
        return RedirectResponse("/", status_code=303)
    else:
        getattr(batch, control.value)()
    return RedirectResponse(f"/batches/{batch_id}?done={control.value}", status_code=303)
