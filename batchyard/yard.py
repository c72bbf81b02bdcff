"""Yard: the entry object. A store URL plus the tasks this process knows; submit, find and
control batches, and run workers.

Everything a Yard returns is read from the store, so any process holding a Yard on the
same URL sees the same batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from batchyard import items as item_codec
from batchyard.access import Tokens
from batchyard.batch import Batch
from batchyard.clock import Clock
from batchyard.datasets import Datasets
from batchyard.deliveries import check_webhooks
from batchyard.errors import ConfigError, InputError
from batchyard.models import (
    JSON,
    UNSET,
    BatchOptions,
    BatchStatus,
    Page,
    TemplateRef,
    new_batch_id,
)
from batchyard.ratelimit import parse_rate
from batchyard.signals import serve_with_signals
from batchyard.states import BatchState
from batchyard.store import Store, open_store
from batchyard.store.base import IDEMPOTENCY_TTL, Idempotency
from batchyard.store.rules import MAX_POSITION, check_budget
from batchyard.tasks import (
    Pilot,
    TaskRegistry,
    TaskSpec,
    check_limits,
    check_result_limit,
    make_spec,
    refuse_in_worker_import,
)
from batchyard.templates.library import Templates, merged_params
from batchyard.worker import Worker, WorkerConfig, WorkerStats

if TYPE_CHECKING:
    from batchyard.llm.estimate import Estimate

__all__ = ["DEFAULT_URL", "UNSET", "Batch", "Yard", "serve_with_signals"]  # the last three
# moved to batchyard.batch, batchyard.models and batchyard.signals; still importable here

F = TypeVar("F", bound=Callable[..., Any])

#: Where a Yard keeps its batches when given no URL.
DEFAULT_URL = "sqlite:///batchyard.db"


class Yard:
    """A store plus a task registry.

    ``Yard("sqlite:///leads.db")`` opens (and on first use creates) the file ``leads.db``.
    """

    def __init__(
        self,
        url: str | Path = DEFAULT_URL,
        *,
        clock: Clock | None = None,
        webhooks: Iterable[str] = (),
    ) -> None:
        self.url = str(url)
        #: URLs every batch submitted through this Yard calls, before its own (a server's
        #: configured webhooks). Raises InputError for a URL that is not http(s).
        self.webhooks = check_webhooks(webhooks)
        self.store: Store = open_store(url)
        self.registry = TaskRegistry()
        # The store's clock by default: on PostgreSQL the database's, which every worker
        # shares whatever its machine's clock says.
        self.clock: Clock = clock or self.store.clock()
        #: The store's templates: ``create``, ``update``, ``get``, ``list``, ``diff``,
        #: ``archive``, ``usage``.
        self.templates = Templates(self.store, self.registry, self.clock)
        #: The tokens and sessions of ``batchyard serve``: ``create``, ``list``, ``revoke``.
        self.tokens = Tokens(self.store, self.clock)
        self._workers: list[Worker] = []

    def __enter__(self) -> Yard:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- tasks ------------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[F], F]: ...
    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Register a function as a task of this Yard (a decorator, with or without options).

        Options: ``concurrency`` (per worker process), ``max_attempts``, ``timeout`` (seconds
        per attempt, None for no limit), ``retry_backoff``, ``retry_backoff_max``,
        ``on_complete``, ``on_success``, ``on_failure``.
        """

        name = options.pop("name", None)

        def register(f: F) -> F:
            spec = make_spec(f, name, **options)
            self.registry.add(spec)
            setattr(f, "__batchyard_task__", spec)  # noqa: B010 - marks f for other Yards
            return f

        return register(fn) if fn is not None else register

    # -- submitting -------------------------------------------------------------------

    def submit(
        self,
        task: str | Callable[..., Any] | TaskSpec | None = None,
        items: Iterable[Any] | None = None,
        *,
        count: int | None = None,
        template: str | TemplateRef | None = None,
        name: str | None = None,
        concurrency: int | None = UNSET,
        max_attempts: int | None = None,
        timeout: float | None = UNSET,
        priority: int = 0,
        metadata: dict[str, JSON] | None = None,
        params: dict[str, JSON] | None = None,
        open: bool = False,
        key_field: str | None = "id",
        budget: float | None = None,
        rate_limit: str | None = None,
        tokens_per_minute: str | float | None = None,
        max_result_bytes: int | None = None,
        webhooks: Iterable[str] = (),
        idempotency_key: str | None = None,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        owner: str | None = None,
    ) -> Batch:
        """Create a batch of ``items`` for ``task`` and queue it.

        Items stream from any iterable of dicts; each gets a key, its ``key_field`` value or
        else its 1-based position. All items are written or none: a bad item raises an
        InputError naming its position and leaves no batch. With ``open=True`` the batch
        takes more items (``Batch.add``) until ``Batch.seal``.

        ``budget`` caps the batch's cost: it pauses, with the reason in its status, rather
        than pass it. ``rate_limit`` ("25/min") and ``tokens_per_minute`` limit its calls
        across every worker, in place of its task's limits. ``max_result_bytes`` caps an
        item's result (16 MiB of JSON by default, or the task's): a bigger one fails its
        item.

        ``webhooks`` are URLs to POST the batch's status to, signed, when it ends, is
        paused, or needs attention (docs/webhooks.md); an InputError for one that is not an
        http:// or https:// URL.

        ``idempotency_key`` makes a retried submission safe: the first submission with a key
        creates the batch; a later one with the same key (kept ``idempotency_ttl`` seconds,
        a day by default) and the same task, options and items creates nothing and returns
        that batch (``Batch.replayed`` is True), even when the two run at once. The same
        key with other input raises ``IdempotencyConflict``.

        ``owner`` records who owns the batch (``batchyard serve`` passes its caller's).

        ``count`` instead of ``items`` makes a generation batch: ``count`` items
        ``{"n": 0}`` ... ``{"n": count - 1}``, keyed ``"0"`` ... , for a task that makes
        something from its parameters rather than from an input.

        ``template`` (``"lead-report"``: its latest version; ``"lead-report@3"``: that one)
        gives the task and its parameters; ``params`` given here override the template's,
        and the batch records the merged result and the version. A missing or archived
        version raises TemplateNotFound / TemplateArchived (naming the latest version)
        before anything is written.

        A function that no worker could import by its name (a lambda, a nested function, a
        function of the script being run) is refused with TaskNotImportable unless it is
        registered on this Yard (``@yard.task``), to be run in this process.
        """
        refuse_in_worker_import("submits a batch")
        if count is not None:
            items, key_field = _numbered(items, count), "n"
        elif items is None:
            raise ConfigError("submit needs items (an iterable of dicts) or a count")
        idempotency = Idempotency.of(idempotency_key, idempotency_ttl, self.clock.now())
        options = self._submission(
            task,
            template,
            params,
            name=name,
            concurrency=concurrency,
            max_attempts=max_attempts,
            timeout=timeout,
            priority=priority,
            metadata=metadata,
            open=open,
            budget=budget,
            rate_limit=rate_limit,
            tokens_per_minute=tokens_per_minute,
            max_result_bytes=max_result_bytes,
            webhooks=webhooks,
            owner=owner,
        )
        stream = item_codec.stream(items)
        first = next(stream, _END)
        if first is _END and not open:
            raise InputError("no items: a batch needs at least one (or submit it with open=True)")
        if first is not _END:
            stream = chain([first], stream)
        batch_id, now = new_batch_id(self.clock.now()), self.clock.now()
        status = item_codec.write_behind(
            item_codec.chunks(stream, key_field=key_field),
            lambda chunks: self.store.create_batch(batch_id, options, chunks, now, idempotency),
        )
        self._wake_workers()
        return Batch(self, status.id, replayed=status.id != batch_id)

    @property
    def datasets(self) -> Datasets:
        """The store's datasets: tables of records to pick items from (``add``, ``rows``,
        ``submit``, ...; see ``batchyard.datasets``)."""
        return Datasets(self)

    def _submission(
        self,
        task: str | Callable[..., Any] | TaskSpec | None,
        template: str | TemplateRef | None,
        params: dict[str, JSON] | None,
        **options: Any,
    ) -> BatchOptions:
        """A new batch's options, the template's task and parameters merged in (``params``
        on top), the Yard's webhooks before the batch's own: what every way of creating a
        batch checks first."""
        options["webhooks"] = check_webhooks((*self.webhooks, *options.get("webhooks", ())))
        task, params, chosen = self._with_template(task, params, template)
        return self._options(self.registry.resolve(task), template=chosen, params=params, **options)

    def _with_template(
        self,
        task: str | Callable[..., Any] | TaskSpec | None,
        params: dict[str, JSON] | None,
        template: str | TemplateRef | None,
    ) -> tuple[str | Callable[..., Any] | TaskSpec, dict[str, JSON] | None, TemplateRef | None]:
        """The task, the parameters (the template's with ``params`` on top) and the
        template version of a submission or estimate."""
        if template is None:
            if task is None:
                raise ConfigError("a batch needs a task (or a template, which names one)")
            return task, params, None
        chosen = self.templates.runnable(template)
        if task is not None and self.registry.resolve(task).name != chosen.task:
            name = self.registry.resolve(task).name
            raise ConfigError(f"template {chosen.ref} is for task {chosen.task}, not {name}")
        return chosen.task, merged_params(chosen, params), chosen.ref

    def _options(
        self,
        spec: TaskSpec,
        *,
        concurrency: int | None,
        max_attempts: int | None,
        timeout: float | None,
        metadata: dict[str, JSON] | None,
        params: dict[str, JSON] | None,
        open: bool,
        rate_limit: str | None,
        tokens_per_minute: str | float | None,
        max_result_bytes: int | None = None,
        will_call: bool = True,
        **rest: Any,
    ) -> BatchOptions:
        """A submission's options, checked, with the task's defaults filled in and its
        parameters checked by the task (``TaskSpec.prepare``)."""
        check_limits(rate_limit, tokens_per_minute, "the batch's limits")
        limits: dict[str, JSON] = {
            label: str(parse_rate(value))
            for label, value in (
                ("rate_limit", rate_limit),
                ("tokens_per_minute", tokens_per_minute),
            )
            if value is not None
        }
        if max_result_bytes is not None:
            check_result_limit(max_result_bytes, "the batch")
            limits["max_result_bytes"] = max_result_bytes
        options = BatchOptions(
            task=spec.name,
            concurrency=spec.concurrency if concurrency is UNSET else concurrency,
            max_attempts=spec.max_attempts if max_attempts is None else max_attempts,
            timeout=spec.timeout if timeout is UNSET else timeout,
            metadata=dict(metadata or {}),
            params=dict(params or {}),
            sealed=not open,
            limits=limits or None,
            **rest,
        )
        _check_options(options)
        return options if spec.prepare is None else spec.prepare(options, will_call)

    def estimate(
        self,
        task: str | None,
        items: Iterable[Any],
        *,
        params: dict[str, JSON] | None = None,
        template: str | TemplateRef | None = None,
        rate_limit: str | None = None,
        tokens_per_minute: str | float | None = None,
        pilot: int = 0,
        concurrency: int = 16,
    ) -> Estimate:
        """What a batch of ``items`` would cost and take, without creating it, as its task
        says (``TaskSpec.estimate``; the llm task: see ``batchyard.llm.estimate``).
        ``pilot`` runs that many items first (a small batch of its own, spread over the
        input) to learn how long the answers are. ``template`` as for ``submit``: a version
        with no history of its own is estimated from its previous version's. Raises
        ConfigError for a task that cannot estimate, or parameters it cannot run with."""
        resolved, params, chosen = self._with_template(task, params, template)
        spec = self.registry.resolve(resolved)
        if spec.estimate is None:
            raise ConfigError(f"estimates are for the llm task, not {spec.name}")
        options = self._options(
            spec,
            concurrency=None,
            max_attempts=None,
            timeout=None,
            metadata=None,
            params=params,
            open=False,
            rate_limit=rate_limit,
            tokens_per_minute=tokens_per_minute,
            will_call=pilot > 0,
        )
        rows = list(items)
        trial = Pilot(pilot, self._pilot_runner(spec, options.params, concurrency))
        extra = {} if chosen is None else {"template": chosen}
        return spec.estimate(
            self.store,
            options.params,
            rows,
            concurrency=concurrency,
            pilot=trial if pilot > 0 else None,
            **extra,
        )

    def _pilot_runner(
        self, spec: TaskSpec, params: dict[str, JSON], concurrency: int
    ) -> Callable[[list[Any]], str]:
        """Runs picked items as a batch named ``pilot`` to its end here; returns its id."""

        def run(picked: list[Any]) -> str:
            trial = self.submit(spec, picked, params=params, name="pilot", key_field=None)
            self.run_until_idle(concurrency=min(concurrency, len(picked)), batches=(trial.id,))
            return trial.id

        return run

    def batch(self, batch_id: str) -> Batch:
        """The batch with this id; raises BatchNotFound."""
        self.store.get_batch(batch_id)
        return Batch(self, batch_id)

    def batches(
        self,
        *,
        state: BatchState | str | None = None,
        task: str | None = None,
        limit: int = 50,
        after: str | None = None,
        owner: str | None = None,
        template: str | None = None,
        text: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> Page[BatchStatus]:
        """Batches newest first, a page at a time (``after``: the previous page's ``next``);
        the filters are those of ``Store.list_batches``."""
        wanted = None if state is None else BatchState(state)
        return self.store.list_batches(
            state=wanted,
            task=task,
            limit=limit,
            after=after,
            owner=owner,
            template=template,
            text=text,
            created_after=created_after,
            created_before=created_before,
        )

    def prune(self, older_than: float | timedelta) -> int:
        """Delete finished batches that ended more than ``older_than`` (seconds) ago."""
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        now = self.clock.now()
        return self.store.prune(now - age, now)

    def forget_cached(self, older_than: float | timedelta) -> int:
        """Delete the response cache's answers kept more than ``older_than`` ago; returns
        how many (a request they answered is sent to its provider again)."""
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        return self.store.cache_prune(self.clock.now() - age)

    # -- working ----------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker over this Yard's store and tasks; ``options`` are WorkerConfig fields."""
        worker = Worker(self.store, self.registry, WorkerConfig(**options), self.clock)
        self._workers.append(worker)
        return worker

    def run_until_idle(self, **options: Any) -> WorkerStats:
        """Run a worker in this process until no batch has anything left to run."""
        return self._serve(self.worker(**options), until_idle=True)

    def work(self, **options: Any) -> WorkerStats:
        """Run a worker until SIGTERM or Ctrl-C: the first lets running items finish (up
        to ``grace`` seconds) and gives the rest back; a second stops at once."""
        return self._serve(self.worker(**options), until_idle=False)

    def _serve(self, worker: Worker, *, until_idle: bool) -> WorkerStats:
        refuse_in_worker_import("runs a worker")
        try:
            asyncio.get_running_loop()
            in_a_loop = True
        except RuntimeError:
            in_a_loop = False
        if not in_a_loop:  # (outside the except: tracebacks of items would chain to it)
            return asyncio.run(serve_with_signals(worker, until_idle))
        # Called from inside an event loop (a notebook): run on a thread of its own.
        result: list[WorkerStats] = []
        thread = threading.Thread(
            target=lambda: result.append(asyncio.run(worker.run(until_idle=until_idle)))
        )
        thread.start()
        thread.join()
        return result[0]

    def _wake_workers(self) -> None:
        for worker in self._workers:
            worker.wake()


_END: Any = object()


def _numbered(items: Iterable[Any] | None, count: int) -> Iterable[dict[str, int]]:
    """The items of a generation batch: ``{"n": 0}`` to ``{"n": count - 1}``."""
    if items is not None:
        raise ConfigError("give items or a count, not both")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be a whole number of at least 1, not {count!r}")
    if count > MAX_POSITION:
        raise ConfigError(f"a batch holds at most {MAX_POSITION:,} items, not {count:,}")
    return ({"n": n} for n in range(count))


def _check_options(options: BatchOptions) -> None:
    if options.concurrency is not None and options.concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if options.max_attempts < 1:
        raise ConfigError("max_attempts must be at least 1")
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigError("timeout must be positive (or None for no limit)")
    check_budget(options.budget)
