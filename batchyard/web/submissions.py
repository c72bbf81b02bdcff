"""Turning a request into a batch: the task checked against what the server allows (never
imported from a client's name), the owner's limit on active batches, then the Yard's
``submit`` (items, a count, or an upload) or ``datasets.submit``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from batchyard.models import BatchStatus
from batchyard.states import BatchState
from batchyard.web import tasks
from batchyard.web.auth import Caller
from batchyard.web.problems import Problem
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard

#: The states in which a batch counts against its owner's ``max_active_batches``.
ACTIVE = (BatchState.UPLOADING, BatchState.QUEUED, BatchState.PROCESSING, BatchState.RETRYING)


def check_template(yard: Yard, settings: ServerSettings, template: str) -> str:
    """The task of a runnable template version, which the server must allow."""
    chosen = yard.templates.runnable(template)
    return tasks.check(chosen.task, settings, field="template")


def submit(
    yard: Yard,
    settings: ServerSettings,
    who: Caller,
    body: BatchIn,
    upload: Iterable[dict[str, Any]] | None,
    idempotency_key: str | None,
) -> tuple[BatchStatus, bool]:
    """The batch ``body`` asks for (items from ``upload`` when a file was sent), owned by
    the caller's owner, and whether it is an earlier one replayed by its idempotency key."""
    task = checked(yard, settings, body, upload)
    _check_active(yard, settings, who)
    options: dict[str, Any] = body.options.model_dump(exclude={"key_field", "open"})
    options["owner"] = who.owner
    if body.dataset is not None:
        batch = yard.datasets.submit(
            task,
            body.dataset,
            template=body.template,
            where=body.where,
            keys=body.keys,
            idempotency_key=idempotency_key,
            **options,
        )
        return batch.status(), batch.replayed
    batch = yard.submit(
        task,
        _items(body, upload),
        count=body.count,
        template=body.template,
        open=body.options.open,
        key_field=body.options.key_field,
        idempotency_key=idempotency_key,
        **options,
    )
    return batch.status(), batch.replayed


def checked(
    yard: Yard,
    settings: ServerSettings,
    body: BatchIn,
    upload: object,
    *,
    creating: bool = True,
) -> str | None:
    """The task ``body`` names (None when only its template does), once the server allows
    it and the template's, and ``body``'s one source of items (none for an open batch,
    when ``creating``): what a submission, and an estimate or a validation of one (not
    ``creating``), check first. Raises a 422 Problem, or the template's errors."""
    task = _task(yard, settings, body)
    _check_sources(body, upload, open_ok=creating)
    if body.count is not None and body.count > settings.max_count:
        raise Problem(
            422, f"count: this server makes at most {settings.max_count:,} items", field="count"
        )
    return task


def _task(yard: Yard, settings: ServerSettings, body: BatchIn) -> str | None:
    if body.task is None and body.template is None:
        raise Problem(422, "a batch needs a task (or a template, which names one)", field="task")
    if body.task is not None:
        tasks.check(body.task, settings)
    if body.template is not None:
        check_template(yard, settings, body.template)
    return body.task


def _check_sources(body: BatchIn, upload: object, *, open_ok: bool) -> None:
    given = [
        name
        for name, value in (
            ("items", body.items),
            ("dataset", body.dataset),
            ("count", body.count),
            ("file", upload),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise Problem(422, f"give one source of items, not {' and '.join(given)}", field=given[1])
    if not given and not (open_ok and body.options.open):
        also = " (or options.open)" if open_ok else ""
        raise Problem(
            422, f"no items: give items, a dataset, a count or a file{also}", field="items"
        )


def _check_active(yard: Yard, settings: ServerSettings, who: Caller) -> None:
    limit = settings.max_active_batches
    if limit is None:
        return
    active: list[BatchStatus] = []
    for state in ACTIVE:
        active += yard.batches(owner=who.owner, state=state, limit=limit).rows
        if len(active) >= limit:
            running = active[0]
            raise Problem(
                409,
                f"owner {who.owner!r} has {limit} active batch(es), the limit: "
                f"{running.id} ({running.name or running.task}) is {running.state.value}; "
                "wait for it to end or cancel it",
                batch_id=running.id,
            )


def _items(body: BatchIn, upload: Iterable[dict[str, Any]] | None) -> Iterable[Any] | None:
    """The items to submit: the file's, the body's, or none yet for an open batch (the core
    takes ``[]`` there, and refuses items beside a count)."""
    if upload is not None:
        return upload
    if body.items is None and body.count is None and body.options.open:
        return []
    return body.items
