"""What changed between two template versions: a unified diff of each text parameter (the
prompt, the system prompt) and a table of the other parameters that changed."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import orjson

from batchyard.models import JSON
from batchyard.templates.values import Template

#: Parameters shown as text diffs whatever their length: the prompts.
TEXT_PARAMS = ("template", "system")
#: Shown in the table for a parameter one of the versions does not set.
UNSET_TEXT = "(not set)"


@dataclass(frozen=True, slots=True)
class Change:
    """One parameter (or ``task``, ``description``) whose value differs."""

    name: str
    old: JSON
    new: JSON
    old_set: bool = True
    new_set: bool = True

    def cells(self) -> tuple[str, str, str]:
        """The table's row: the name, then each value as compact JSON (or "(not set)")."""
        return (
            self.name,
            show(self.old) if self.old_set else UNSET_TEXT,
            show(self.new) if self.new_set else UNSET_TEXT,
        )


@dataclass(frozen=True)
class TemplateDiff:
    """``old`` against ``new``: ``texts`` (parameter, its unified diff lines) and
    ``changes`` (everything else that differs), both empty when the two are the same."""

    old: Template
    new: Template

    @property
    def texts(self) -> list[tuple[str, list[str]]]:
        found = []
        for name in self._names():
            old, new = self.old.params.get(name), self.new.params.get(name)
            if old == new or not _is_text(name, old, new):
                continue
            lines = difflib.unified_diff(
                _lines(old),
                _lines(new),
                fromfile=f"{self.old.ref} {name}",
                tofile=f"{self.new.ref} {name}",
                lineterm="",
            )
            found.append((name, list(lines)))
        return found

    @property
    def changes(self) -> list[Change]:
        rows = []
        for label in ("task", "description"):
            old, new = getattr(self.old, label), getattr(self.new, label)
            if old != new:  # a description may be left out: "(not set)", not null
                rows.append(Change(label, old, new, old is not None, new is not None))
        texts = {name for name, _ in self.texts}
        for name in self._names():
            if name in texts:
                continue
            old_set, new_set = name in self.old.params, name in self.new.params
            old, new = self.old.params.get(name), self.new.params.get(name)
            if old != new or old_set != new_set:
                rows.append(Change(name, old, new, old_set, new_set))
        return rows

    def _names(self) -> list[str]:
        return sorted(set(self.old.params) | set(self.new.params))

    def as_dict(self) -> dict[str, JSON]:
        return {
            "old": str(self.old.ref),
            "new": str(self.new.ref),
            "texts": {name: "\n".join(lines) for name, lines in self.texts},
            "changes": [
                {
                    "name": c.name,
                    "old": c.old,
                    "new": c.new,
                    "old_set": c.old_set,
                    "new_set": c.new_set,
                }
                for c in self.changes
            ],
        }


def show(value: JSON) -> str:
    """A value for the table: text as it is, anything else as compact JSON."""
    return value if isinstance(value, str) and value else orjson.dumps(value).decode()


def _is_text(name: str, old: JSON, new: JSON) -> bool:
    texts = [v for v in (old, new) if v is not None]
    if not texts or not all(isinstance(v, str) for v in texts):
        return False
    return name in TEXT_PARAMS or any("\n" in v for v in texts)


def _lines(value: JSON) -> list[str]:
    return [] if value is None else str(value).splitlines()
