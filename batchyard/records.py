"""Datasets as values: what a stored table of records is (``Dataset``, its ``Field`` s) and a
page of its rows (``RecordPage``). Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from batchyard.errors import ConfigError

#: How rows go into a dataset: a new one, added to its rows, or in place of them.
LoadMode = Literal["create", "append", "replace"]
#: The JSON types a field may hold, as ``Field.types`` names them.
JSON_TYPES = ("string", "number", "boolean", "null", "object", "array")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(name: str) -> str:
    """A dataset's name: 1 to 100 letters, digits, ``_``, ``.`` or ``-``, starting with a
    letter or digit; raises ConfigError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a dataset name: use 1 to 100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as ``JSON_TYPES`` names it."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


_TYPES = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True, slots=True)
class Field:
    """A top-level field some rows of a dataset have, and the JSON types it held."""

    name: str
    types: tuple[str, ...]
    #: Some row holds text with a NUL character (U+0000) here; filters and sorts read each
    #: one as U+0001 (``store/datasql.py``, ``without_nul``).
    holds_nul: bool = False


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset as the store last saw it."""

    name: str
    #: The field that gives each row its key (a row without it is keyed by its position).
    key_field: str | None
    rows: int
    fields: tuple[Field, ...]
    created_at: float
    updated_at: float

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def as_dict(self) -> dict[str, Any]:
        """What ``dataset list --json`` prints for it (and the server answers)."""
        return {
            "name": self.name,
            "key_field": self.key_field,
            "rows": self.rows,
            "fields": [{"name": f.name, "types": list(f.types)} for f in self.fields],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Record:
    """One row of a dataset: its key, its place in the dataset (1-based) and its fields."""

    key: str
    position: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordPage:
    """A page of the rows that match a filter, with how many match in all. ``next`` is the
    cursor of the following page (None on the last)."""

    rows: list[Record]
    count: int
    next: str | None


class FieldTally:
    """The fields of rows as they stream past, in first-seen order, with the JSON types
    each held: what a load adds to ``dataset_fields`` without reading the rows again."""

    def __init__(self) -> None:
        self.types: dict[str, set[str]] = {}

    def over(self, rows: Iterable[Any]) -> Iterator[Any]:
        """``rows`` unchanged, noting the fields of each dict on the way."""
        types = self.types
        for row in rows:
            if isinstance(row, dict):
                for name, value in row.items():
                    seen = types.get(name)
                    if seen is None:
                        seen = types[name] = set()
                    seen.add(_TYPES.get(type(value)) or json_type(value))
            yield row
