"""Tasks: the functions batches run, their options, and how a name finds its function.

A task is named ``module:function`` by default, so any worker process that can import the
module can run it; ``@task(name="...")`` gives it a shorter name that only processes which
registered it know. A lambda, a nested function or a function of the script being run
(named after its file, ``a.py:fn``) has no name a worker can import: it is submitted only
once registered on the Yard, to be run in that process, and no worker ever tries to import
it (importing a script runs it again).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from batchyard.errors import ConfigError, TaskNotImportable, TaskNotRegistered
from batchyard.models import JSON, BatchOptions, BatchStatus, TemplateRef
from batchyard.retry import RetryPolicy

if TYPE_CHECKING:
    # NOTE: the llm task is the only one that estimates yet; its Estimate is the shape.
    from batchyard.llm.estimate import Estimate
    from batchyard.store.base import Store
    from batchyard.validation import Validation

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[[BatchStatus], Any]

#: The per-item time limit when a task names none: long enough for any sane call,
#: short enough that a hung item does not hold its batch forever.
DEFAULT_TIMEOUT = 1800.0
DEFAULT_MAX_ATTEMPTS = 3
#: The largest result an item may return by default: 16 MiB of compact JSON.
MAX_RESULT_BYTES = 16 << 20
_ATTR = "__batchyard_task__"
#: Tasks every process knows by a short name.
BUILTINS = {"llm": "batchyard.llm.task:llm"}
#: A task's check of input rows: ``(batch params, (line, item) rows) -> Validation``.
RowCheck = Callable[[dict[str, JSON], Iterable[tuple[int, Any]]], "Validation"]


@dataclass(frozen=True, slots=True)
class Pilot:
    """A few items run before an estimate, to learn from: at most ``size`` of them, passed
    to ``run``, which submits them as a batch of their own, runs it to the end and returns
    its id."""

    size: int
    run: Callable[[list[Any]], str]


class Estimator(Protocol):
    """What a batch of ``items`` under ``params`` would cost and take, without creating it:
    from the store's history, or from a ``pilot`` it runs first. Raises ConfigError for
    ``params`` it cannot read, or a pilot that taught it nothing. ``template`` is the
    template version ``params`` come from, if any (passed only when there is one)."""

    def __call__(
        self,
        store: Store,
        params: dict[str, JSON],
        items: Iterable[Any],
        *,
        concurrency: int,
        pilot: Pilot | None,
        template: TemplateRef | None = None,
    ) -> Estimate: ...


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task function with its options.

    ``concurrency`` caps the items of this task one worker process runs at once; a batch's
    own ``concurrency`` (by default the task's) caps them across all workers.
    """

    name: str
    fn: Callable[..., Any]
    concurrency: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_complete: Callback | None = None
    on_success: Callback | None = None
    on_failure: Callback | None = None
    is_async: bool = False
    takes_context: bool = True
    #: Calls of this task shared by every worker of the store: a request rate ("25/min")
    #: and a token rate ("5500/min" or a number per minute). A batch's own limits win.
    rate_limit: str | None = None
    tokens_per_minute: str | float | None = None
    #: Tokens an item will use, reserved before it runs (corrected after it from what the
    #: task reported with ``ctx.usage``); None reserves nothing.
    estimate_tokens: Callable[[Any], float] | None = None
    #: The task applies rate limits itself (the llm task): the worker does not.
    manages_limits: bool = False
    #: Checks (and may complete) a submission's options before its batch is created:
    #: raises ConfigError for parameters the task cannot run with. Its second argument
    #: is False when nothing will run yet (an estimate): only what is needed to read them.
    prepare: Callable[[BatchOptions, bool], BatchOptions] | None = None
    #: Checks input rows before anything runs (``batchyard validate``); None: a row the
    #: task can read is fine (see ``batchyard.validation.check_rows``).
    validate_rows: RowCheck | None = None
    #: Estimates a batch before it runs (``Yard.estimate``, ``batchyard estimate``); None
    #: for a task that cannot.
    estimate: Estimator | None = None
    #: The largest result an item may return, in bytes of compact JSON; a bigger one
    #: fails its item (a batch's own ``max_result_bytes`` wins).
    max_result_bytes: int = MAX_RESULT_BYTES
    #: The JSON schema of a submission's options (its ``params`` above all) for this task,
    #: for the server's API description; None: any options the submission model takes.
    options_schema: Callable[[], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"task {self.name}: concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError(f"task {self.name}: max_attempts must be at least 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"task {self.name}: timeout must be positive (or None)")
        check_result_limit(self.max_result_bytes, f"task {self.name}")
        check_limits(self.rate_limit, self.tokens_per_minute, f"task {self.name}")


def check_result_limit(limit: Any, where: str) -> None:
    """Raise ConfigError naming ``where`` for a result size limit that is not a positive
    number of bytes."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{where}: max_result_bytes must be a positive number of bytes")


def check_limits(rate_limit: Any, tokens_per_minute: Any, where: str) -> None:
    """Raise ConfigError naming ``where`` for a rate limit that cannot be read."""
    from batchyard.ratelimit import parse_rate

    for label, value in (("rate_limit", rate_limit), ("tokens_per_minute", tokens_per_minute)):
        try:
            parse_rate(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None


def function_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` for a function. A function of a module run with ``python -m`` is
    named after that module; one of a script run as ``python a.py`` after the script's file
    (``a.py:fn``), a name no worker imports (see ``unimportable``)."""
    module = fn.__module__
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        script = getattr(main, "__file__", None)
        if spec is not None and spec.name and not spec.name.endswith("__main__"):
            module = spec.name  # (a package's __main__ is a script: named after its file)
        else:
            module = Path(script).name if script else "__main__"
    return f"{module}:{fn.__qualname__}"


def unimportable(name: str) -> str | None:
    """Why no worker may import the task ``name``, or None when one may try. Decided from
    the name alone, importing nothing: importing a script's module would run the script."""
    module, sep, attr = name.partition(":")
    if not sep:
        return None
    if "<lambda>" in attr:
        return "a lambda has no name a worker can import"
    if "<" in attr:
        return "a function defined inside another function has no name a worker can import"
    if module == "__main__" or module.endswith(".py"):
        return (
            f"it is a function of the script {module}, which a worker could reach only by "
            "running that script again"
        )
    return None


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not positional:
        raise ConfigError(f"task {function_name(fn)} must take the item as its first argument")
    return len(positional) >= 2 or positional[0].kind is inspect.Parameter.VAR_POSITIONAL


def make_spec(fn: Callable[..., Any], name: str | None = None, **options: Any) -> TaskSpec:
    """A TaskSpec for ``fn``; ``options`` are TaskSpec fields (``retry_backoff`` and
    ``retry_backoff_max`` build its RetryPolicy)."""
    if not callable(fn):
        raise ConfigError(f"a task must be a function, not {type(fn).__name__}")
    base = options.pop("retry_backoff", None)
    cap = options.pop("retry_backoff_max", None)
    if base is not None or cap is not None:
        default = RetryPolicy()
        options["retry"] = RetryPolicy(
            base=default.base if base is None else base, cap=default.cap if cap is None else cap
        )
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    )
    return TaskSpec(
        name=name or function_name(fn),
        fn=fn,
        is_async=is_async,
        takes_context=_takes_context(fn),
        **options,
    )


@overload
def task(fn: F, /) -> F: ...
@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[F], F]: ...
def task(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Mark a function as a batchyard task with its options, without registering it.

    Any Yard can then run it by reference or by its ``module:function`` name. Options:
    ``concurrency``, ``max_attempts``, ``timeout``, ``retry_backoff``, ``retry_backoff_max``,
    ``on_complete``, ``on_success``, ``on_failure``, ``rate_limit``, ``tokens_per_minute``,
    ``estimate_tokens``, ``max_result_bytes`` (16 MiB by default).
    """

    def mark(f: F) -> F:
        setattr(f, _ATTR, make_spec(f, name, **options))
        return f

    return mark(fn) if fn is not None else mark


def spec_of(fn: Callable[..., Any]) -> TaskSpec:
    """The spec a function was marked with, or one with default options."""
    spec = getattr(fn, _ATTR, None)
    return spec if isinstance(spec, TaskSpec) else make_spec(fn)


class TaskRegistry:
    """The tasks one process knows by name; ``module:function`` names are imported on demand."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def add(self, spec: TaskSpec) -> TaskSpec:
        known = self._specs.get(spec.name)
        if known is not None and known.fn is not spec.fn:
            raise ConfigError(f"two different functions are registered as task {spec.name!r}")
        self._specs[spec.name] = spec
        return spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> TaskSpec | None:
        """The spec registered as ``name``, importing nothing."""
        return self._specs.get(name)

    def resolve(self, ref: str | Callable[..., Any] | TaskSpec) -> TaskSpec:
        """The spec for a name, a function or a spec. Raises TaskNotRegistered for a name
        nothing resolves, and TaskNotImportable for a function (or spec) not registered here
        that no worker could import by its name (``unimportable``)."""
        if isinstance(ref, TaskSpec) or callable(ref):
            spec = ref if isinstance(ref, TaskSpec) else spec_of(ref)
            known = self._specs.get(spec.name)
            reason = unimportable(spec.name)
            if reason is not None and (known is None or known.fn is not spec.fn):
                raise TaskNotImportable(spec.name, reason)
            return self.add(spec)
        if not isinstance(ref, str):
            raise TaskNotRegistered(repr(ref), "a task is a function or a name")
        found = self._specs.get(ref)
        if found is not None:
            return found
        return self.add(import_task(ref))

    def find(self, name: str) -> TaskSpec | None:
        """Like resolve, but None for a name this process cannot run."""
        try:
            return self.resolve(name)
        except TaskNotRegistered:
            return None


#: Set on a thread while it imports a task for a worker (``import_task(for_worker=True)``).
_worker_import = threading.local()


def import_task(name: str, *, for_worker: bool = False) -> TaskSpec:
    """The spec of the task ``name`` (a built-in's short name or ``module:function``),
    importing its module. Raises TaskNotRegistered, also for a name no worker may import
    (``unimportable``), before importing anything. ``for_worker``: while the module loads,
    ``Yard.submit`` and worker runs refuse (``refuse_in_worker_import``), so a module that
    runs a script when imported fails rather than submitting or running batches."""
    reason = unimportable(name)
    if reason is not None:
        raise TaskNotRegistered(name, reason)
    outer = getattr(_worker_import, "name", None)
    _worker_import.name = name if for_worker else outer
    try:
        return replace(_import(BUILTINS.get(name, name)), name=name)
    finally:
        _worker_import.name = outer


def refuse_in_worker_import(action: str) -> None:
    """Raise ConfigError when this thread is importing a task's module for a worker: its
    code that ``action`` (submits a batch, runs a worker) runs at import, as in a script."""
    name = getattr(_worker_import, "name", None)
    if name is not None:
        raise ConfigError(
            f"module {name.partition(':')[0]!r}, imported by a worker to find task {name}, "
            f"{action} as it loads: put that code under 'if __name__ == \"__main__\":' or "
            "keep the task in a module of its own"
        )


def _import(ref: str) -> TaskSpec:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise TaskNotRegistered(ref, "not registered in this process")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotRegistered(ref, f"cannot import module {module_name!r} ({exc})") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TaskNotRegistered(ref, f"module {module_name!r} has no {attr!r}")
    if not callable(target):
        raise TaskNotRegistered(ref, f"{attr!r} is not a function")
    return spec_of(target)
