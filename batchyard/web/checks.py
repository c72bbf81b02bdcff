"""A submission looked at before it is made, for the API (``POST /estimate``,
``/validate``: ``spend.py``) and the new-batch page alike: what it would cost and take,
whether every row renders, and the prompts of its first rows. Each is one pass over the
items (an uploaded file, a dataset's selection read a page at a time, a count or the
body's items) after what every submission checks first; nothing is created."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from batchyard.errors import InputError
from batchyard.inputs import Input
from batchyard.llm.params import read_params
from batchyard.templates.library import merged_params
from batchyard.validation import check_rows
from batchyard.web import submissions
from batchyard.web.problems import Problem
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard

#: Calls in flight at once that an estimate's duration assumes (``estimate --concurrency``).
CONCURRENCY = 16
#: Rows of a dataset read per page when an estimate or a validation goes over them.
PAGE = 1000
#: How many rows' prompts a preview shows.
PREVIEW = 5


def estimate(
    yard: Yard,
    settings: ServerSettings,
    body: BatchIn,
    upload: Input | None,
    first: list[Any] | None = None,
) -> dict[str, Any]:
    """What ``POST /estimate`` answers (``estimate --json``) for ``body`` (its items from
    ``upload`` when a file was sent); ``first`` gets the first ``PREVIEW`` items as they
    go past. Raises a 422 Problem or the core's errors (InputError naming the line)."""
    task = submissions.checked(yard, settings, body, upload, creating=False)
    options = body.options
    items: Iterable[Any] = (item for _, item in rows(yard, body, upload))
    if first is not None:
        items = _keeping(items, first)
    try:
        found = yard.estimate(
            task,
            items,
            params=options.params,
            template=body.template,
            rate_limit=options.rate_limit,
            tokens_per_minute=options.tokens_per_minute,
            concurrency=options.concurrency or CONCURRENCY,
        )
    except InputError as exc:
        raise (exc if upload is None else upload.locate(exc)) from None
    return found.as_dict()


def validate(
    yard: Yard, settings: ServerSettings, body: BatchIn, upload: Input | None
) -> dict[str, Any]:
    """What ``POST /validate`` answers (``validate --json``): whether the task can run on
    every row, each problem naming its line."""
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
    found = check_rows(spec, params, rows(yard, body, upload))
    return {"task": spec.name, **found.as_dict()}


def estimates_cost(
    yard: Yard, settings: ServerSettings, body: BatchIn, upload: Input | None
) -> bool:
    """Whether the submission's task estimates its cost (the llm task), once what every
    submission checks first has passed: the task (and the template's) allowed here. The
    task is resolved only then: a client's name is never imported."""
    submissions.checked(yard, settings, body, upload, creating=False)
    chosen = None if body.template is None else yard.templates.runnable(body.template)
    task = body.task or (chosen.task if chosen else "")
    return yard.registry.resolve(task).estimate is not None


def preview(
    yard: Yard, settings: ServerSettings, body: BatchIn, upload: Input | None
) -> dict[str, Any]:
    """For a task that estimates its cost, ``{"estimate": ..., "prompts": [...]}``: the
    estimate and the messages the prompt renders for the first ``PREVIEW`` rows; for
    another task, ``{"validation": ...}``. One pass over the rows."""
    if not estimates_cost(yard, settings, body, upload):
        return {"validation": validate(yard, settings, body, upload)}
    first: list[Any] = []
    found = estimate(yard, settings, body, upload, first)
    chosen = None if body.template is None else yard.templates.runnable(body.template)
    params = body.options.params or {}
    prompt = read_params(merged_params(chosen, params) if chosen else params).prompt
    return {"estimate": found, "prompts": [prompt.render(item) for item in first]}


def rows(yard: Yard, body: BatchIn, upload: Input | None) -> Iterator[tuple[int, Any]]:
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


def _keeping(items: Iterable[Any], first: list[Any]) -> Iterator[Any]:
    for item in items:
        if len(first) < PREVIEW:
            first.append(item)
        yield item
