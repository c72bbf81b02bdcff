"""What tasks there are to submit: the built-in ones, and what a module offers as tasks.

A module offers its functions marked with ``@task`` (wherever they were defined) and the
plain public functions it defines itself that take an item: any of them can be submitted
as ``module:function``. A module with ``__all__`` offers only the names listed there.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchyard.errors import ConfigError
from batchyard.tasks import _ATTR as TASK_MARK  # the attribute @task sets
from batchyard.tasks import BUILTINS, TaskRegistry, TaskSpec, spec_of


@dataclass(frozen=True, slots=True)
class TaskEntry:
    """A task to submit: the name to give ``submit``, a one-line description, whether it
    was marked with ``@task`` (else a plain function, run with default options), and
    its spec."""

    name: str
    description: str
    decorated: bool
    spec: TaskSpec

    def as_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": self.name,
            "description": self.description,
            "decorated": self.decorated,
            "is_async": spec.is_async,
            "concurrency": spec.concurrency,
            "max_attempts": spec.max_attempts,
            "timeout": spec.timeout,
            "rate_limit": spec.rate_limit,
        }


def builtin_tasks() -> list[TaskEntry]:
    """The tasks every process knows by a short name."""
    return [named_task(ref, name=name) for name, ref in BUILTINS.items()]


def named_task(ref: str, *, name: str | None = None) -> TaskEntry:
    """The task ``module:function`` (listed as ``name``, default ``ref``); raises
    TaskNotRegistered when it cannot be imported."""
    spec = TaskRegistry().resolve(ref)
    return _entry(name or ref, spec.fn)


def module_tasks(module_name: str) -> list[TaskEntry]:
    """The tasks ``module_name`` offers, in the order the module defines them.

    Imports the module, so its top-level code runs. ``tasks.py`` or ``pkg/jobs.py`` are
    taken as the modules ``tasks`` and ``pkg.jobs``. Raises ConfigError when it cannot be
    imported (with the reason).
    """
    module_name = module_of(module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} ({exc})") from exc
    except Exception as exc:  # its top-level code failed
        raise ConfigError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    public = getattr(module, "__all__", None)
    names = list(public) if public is not None else [n for n in vars(module) if n[:1] != "_"]
    entries = []
    for name in names:
        fn = getattr(module, name, None)
        if not callable(fn) or inspect.isclass(fn):
            continue
        decorated = _is_decorated(fn)
        if decorated or (getattr(fn, "__module__", None) == module.__name__ and _takes_item(fn)):
            entries.append(_entry(f"{module.__name__}:{name}", fn))
    return entries


def module_of(text: str) -> str:
    """A module name from a module name or the path of a .py file under this folder."""
    if not text.endswith(".py"):
        return text
    path = Path(text)
    return ".".join(path.with_suffix("").parts)


def _entry(name: str, fn: Any) -> TaskEntry:
    doc = inspect.getdoc(fn) or ""
    first = doc.strip().split("\n\n", 1)[0]
    # Docstrings are reST: ``llm`` reads as llm on a terminal.
    description = " ".join(first.split()).replace("``", "")
    return TaskEntry(name, description, _is_decorated(fn), spec_of(fn))


def _is_decorated(fn: Any) -> bool:
    return isinstance(getattr(fn, TASK_MARK, None), TaskSpec)


def _takes_item(fn: Any) -> bool:
    if not inspect.isfunction(fn):
        return False
    try:
        spec_of(fn)
    except ConfigError:  # takes no item
        return False
    return True
