"""``yard.datasets``: stored tables of records (sales leads, topics) to pick a batch's items
from. Add rows from any iterable of dicts (a file's rows: ``batchyard.inputs.open_input``),
page through the rows a filter picks, and submit a batch of them, copied inside the store.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from batchyard import items as item_codec
from batchyard.batch import Batch
from batchyard.errors import ConfigError, InputError
from batchyard.inputs import Input
from batchyard.models import JSON, UNSET, TemplateRef, new_batch_id
from batchyard.records import Dataset, FieldTally, LoadMode, RecordPage, check_name
from batchyard.selection import Condition, Selection, Sort
from batchyard.store.base import IDEMPOTENCY_TTL, Idempotency
from batchyard.tasks import TaskSpec, refuse_in_worker_import

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchyard.yard import Yard


class Datasets:
    """The datasets of a Yard's store (``yard.datasets``)."""

    def __init__(self, yard: Yard) -> None:
        self._yard = yard

    def add(
        self,
        name: str,
        rows: Iterable[Any],
        *,
        key_field: str | None = UNSET,
        append: bool = False,
        replace: bool = False,
    ) -> Dataset:
        """Store ``rows`` (dicts) as dataset ``name``, all or nothing; returns the dataset.

        A row's key is its ``key_field`` value (default ``id``), else its position in the
        dataset; keys are unique within a dataset. The rules of a submission apply to each
        row (a JSON object, at most 1 MiB as JSON, a usable key). ``append`` adds to an
        existing dataset (keyed by its own key field), ``replace`` swaps its rows for these
        (creating it if need be). Raises ConfigError when the name is taken (without either)
        or not a name, DatasetNotFound to append to none, InputError for a bad row (naming
        its file and line when ``rows`` is an ``Input``) or no rows.
        """
        check_name(name)
        if append and replace:
            raise ConfigError("append or replace, not both")
        mode: LoadMode = "append" if append else "replace" if replace else "create"
        given = key_field is not UNSET
        tally = FieldTally()
        stream = tally.over(item_codec.stream(rows))
        started: list[int] = []

        def chunks(start: int, kept: str | None) -> Iterable[Any]:
            if append and given and key_field != kept:
                raise ConfigError(
                    f"dataset {name!r} is keyed by {kept!r}; rows appended to it are too "
                    "(leave out the key field)"
                )
            started.append(start)
            return item_codec.chunks(stream, key_field=kept, start=start)

        chosen = key_field if given else "id"
        try:
            return self._yard.store.load_dataset(
                name, mode, chosen, chunks, tally, self._yard.clock.now()
            )
        except InputError as exc:
            if not isinstance(rows, Input):
                raise
            if exc.position is None and exc.source is None:
                raise InputError(exc.reason, source=rows.source) from exc
            raise rows.locate(exc, started[0] if started else 1) from exc.__cause__

    def get(self, name: str) -> Dataset:
        """The dataset with its fields and number of rows; raises DatasetNotFound."""
        return self._yard.store.get_dataset(name)

    def list(self) -> builtins.list[Dataset]:
        """Every dataset, by name."""
        return self._yard.store.list_datasets()

    def rows(
        self,
        name: str,
        where: Sequence[str | Condition] = (),
        *,
        keys: Sequence[str] | None = None,
        sort: str | Sort | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RecordPage:
        """A page of the rows matching every condition of ``where`` (``"industry=SaaS"``,
        ``"employees>=100"``, ``"name~acme"``, ``"industry=SaaS|Retail"``; see
        ``batchyard.selection``) and, if given, among ``keys``; with the count of all the
        rows that match and the cursor of the next page. ``sort`` is a field, or
        ``"field:desc"``. Runs in the store: only the page's rows are read."""
        order = Sort.parse(sort) if isinstance(sort, str) else sort
        return self._yard.store.dataset_rows(
            name, Selection.of(where, keys), sort=order, limit=limit, cursor=cursor
        )

    def delete(self, name: str) -> int:
        """Delete a dataset; returns how many rows it had. Batches made from it keep their
        items. Raises DatasetNotFound."""
        return self._yard.store.delete_dataset(name)

    def submit(
        self,
        task: str | Callable[..., Any] | TaskSpec | None,
        dataset: str,
        *,
        template: str | TemplateRef | None = None,
        where: Sequence[str | Condition] = (),
        keys: Sequence[str] | None = None,
        name: str | None = None,
        concurrency: int | None = UNSET,
        max_attempts: int | None = None,
        timeout: float | None = UNSET,
        priority: int = 0,
        metadata: dict[str, JSON] | None = None,
        params: dict[str, JSON] | None = None,
        budget: float | None = None,
        rate_limit: str | None = None,
        tokens_per_minute: str | float | None = None,
        max_result_bytes: int | None = None,
        webhooks: Iterable[str] = (),
        owner: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
    ) -> Batch:
        """A batch of ``task`` over the rows of ``dataset`` that ``where`` and ``keys``
        pick (as ``rows`` does), one item per row in dataset order, keyed by the row's key.
        The rows are copied inside the store in one transaction; the batch's metadata
        records ``dataset``, ``where``, ``keys`` and ``rows`` (how many it took). The other
        options are those of ``Yard.submit``, ``template`` and ``webhooks`` too. Raises
        InputError, writing nothing, when no row matches ("no rows of 'leads' match
        industry=SaaS"), a key names no row, or a condition names a field no row has or a
        value that does not read as its type. ``idempotency_key`` as ``Yard.submit``'s:
        the same key with the same options and selection gives the first batch
        (``Batch.replayed``), another selection raises IdempotencyConflict."""
        refuse_in_worker_import("submits a batch")
        selection = Selection.of(where, keys)
        yard = self._yard
        idempotency = Idempotency.of(idempotency_key, idempotency_ttl, yard.clock.now())
        options = yard._submission(
            task,
            template,
            params,
            name=name,
            concurrency=concurrency,
            max_attempts=max_attempts,
            timeout=timeout,
            priority=priority,
            metadata=metadata,
            open=False,
            budget=budget,
            rate_limit=rate_limit,
            tokens_per_minute=tokens_per_minute,
            max_result_bytes=max_result_bytes,
            webhooks=webhooks,
            owner=owner,
        )
        now = yard.clock.now()
        batch_id = new_batch_id(now)
        status = yard.store.create_batch_from_dataset(
            batch_id, options, dataset, selection, now, idempotency
        )
        yard._wake_workers()
        return Batch(yard, status.id, replayed=status.id != batch_id)
