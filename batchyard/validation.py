"""Checking input rows before a batch is submitted, without running anything: what a check
found (``Validation``), and ``check_rows``, which asks the task (``TaskSpec.validate_rows``)
or else only reads every row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchyard.models import JSON

if TYPE_CHECKING:
    from batchyard.tasks import TaskSpec


@dataclass(frozen=True, slots=True)
class Problem:
    """An input line the task cannot run on; ``message`` starts with the line."""

    line: int
    message: str


@dataclass(frozen=True, slots=True)
class Validation:
    """What a check found in the ``checked`` rows it read.

    ``complete`` is false when it stopped at its limit of problems with rows left unread.
    """

    problems: tuple[Problem, ...]
    checked: int
    complete: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """What ``batchyard validate --json`` prints after its ``task``."""
        return {
            "checked": self.checked,
            "complete": self.complete,
            "ok": self.ok,
            "problems": [{"line": p.line, "message": p.message} for p in self.problems],
        }


def check_rows(
    spec: TaskSpec, params: dict[str, JSON], rows: Iterable[tuple[int, Any]]
) -> Validation:
    """Check ``(line_number, item)`` rows for ``spec``'s task under batch ``params``.

    A task with a ``validate_rows`` hook checks them itself (and raises ConfigError for
    ``params`` it cannot read); any other task finds no problem in a row it can read: the
    rows are only read to the end, so a bad line raises (InputError) as it would when
    submitted."""
    if spec.validate_rows is not None:
        return spec.validate_rows(params, rows)
    checked = sum(1 for _ in rows)
    return Validation((), checked, True)
