"""Which tasks a server lets its clients submit: the built-in ones and those its
configuration names. A name a client sends is compared with that list and never imported."""

from __future__ import annotations

from batchyard.catalog import TaskEntry, builtin_tasks, named_task
from batchyard.tasks import BUILTINS
from batchyard.web.problems import Problem
from batchyard.web.settings import ServerSettings


def allowed_names(settings: ServerSettings) -> list[str]:
    return [*BUILTINS, *settings.allow_task]


def allowed(settings: ServerSettings) -> list[TaskEntry]:
    """The allowed tasks with their options (the configured ones are imported: the
    operator named them)."""
    return [*builtin_tasks(), *(named_task(ref) for ref in settings.allow_task)]


def check(name: str, settings: ServerSettings, field: str = "task") -> str:
    """``name`` if a client may submit it; a 422 listing the allowed ones otherwise."""
    names = allowed_names(settings)
    if name not in names:
        raise Problem(
            422,
            f"task {name!r} is not allowed on this server; allowed: {', '.join(names)} "
            "(the server's --allow-task adds more)",
            field=field,
            allowed=names,
        )
    return name
