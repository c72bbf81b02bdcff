"""Re-running a batch (``Batch.rerun``, ``batchyard rerun``): a new batch with the same
items, or only those in some states, run with the same template version or another one.
The items are copied inside the store, so a re-run of any size keeps the client flat."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from batchyard.errors import ConfigError
from batchyard.models import JSON, BatchOptions, BatchStatus, TemplateRef, new_batch_id
from batchyard.states import ItemState
from batchyard.templates.library import merged_params

if TYPE_CHECKING:
    from batchyard.templates.values import Template
    from batchyard.yard import Yard


def rerun(
    yard: Yard,
    batch_id: str,
    *,
    template: str | TemplateRef | None = None,
    state: str | ItemState | Iterable[str | ItemState] = "all",
    name: str | None = None,
) -> str:
    """The id of a new batch of ``batch_id``'s items (``state``: "all", or the states to take, such
    as "failed"), with its options (its webhooks too), linked to it (``rerun_of``).
    ``template`` runs it with that version (``NAME``: the latest): the version's parameters
    with those the old batch set on top of its own template (its command line's) kept.
    Raises ConfigError for a template of another task, TemplateNotFound / TemplateArchived,
    Conflict when no item is in ``state``, BatchNotFound."""
    old = yard.store.get_batch(batch_id)
    params, ref = old.params, old.template
    if template is not None:
        chosen = yard.templates.runnable(template)
        if chosen.task != old.task:
            raise ConfigError(
                f"template {chosen.ref} is for task {chosen.task}; batch {old.id} runs {old.task}"
            )
        params, ref = merged_params(chosen, _overrides(yard, old, chosen)), chosen.ref
    options = BatchOptions(
        task=old.task,
        name=old.name if name is None else name,
        concurrency=old.concurrency,
        max_attempts=old.max_attempts,
        timeout=old.timeout,
        priority=old.priority,
        metadata=old.metadata,
        params=params,
        budget=old.budget,
        limits=old.limits,
        template=ref,
        rerun_of=old.id,
        owner=old.owner,
        webhooks=tuple(yard.store.webhook_urls(old.id)),
    )
    spec = yard.registry.find(old.task)
    if spec is not None and spec.prepare is not None:
        options = spec.prepare(options, True)
    now = yard.clock.now()
    status = yard.store.rerun_batch(old.id, new_batch_id(now), options, _states(state), now)
    yard._wake_workers()
    return status.id


def _states(state: str | ItemState | Iterable[str | ItemState]) -> list[ItemState] | None:
    if state == "all":
        return None
    given = [state] if isinstance(state, str) else list(state)
    try:
        return [ItemState(s) for s in given]
    except ValueError:
        known = ", ".join(["all", *(s.value for s in ItemState)])
        raise ConfigError(f"re-run which items: {state!r} is not one of {known}") from None


def _overrides(yard: Yard, old: BatchStatus, chosen: Template) -> dict[str, JSON]:
    """The parameters the old batch set itself: those that differ from its template's
    (all of them when it had none, except those the new template sets)."""
    if old.template is None:
        return {k: v for k, v in old.params.items() if k not in chosen.params}
    before = yard.templates.get(old.template).params
    return {k: v for k, v in old.params.items() if k not in before or before[k] != v}
