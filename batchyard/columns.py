"""Typed CSV columns: CSV holds only text, so a column named in ``--csv-types`` (or
``open_input(csv_types=...)``) is converted to the type given for it, strictly.

Nothing is guessed: a column without a type stays a string, so "01234" (a zip code, an
account number) is never turned into 1234. An empty cell in a typed column is null; a
value that does not parse as its column's type is an error naming the column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from batchyard.errors import ConfigError

#: The types a column may be given, and what each accepts.
TYPES = ("str", "int", "float", "bool", "json")
_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class BadValue(ValueError):
    """A cell that does not parse as its column's type; the message says why."""


def _to_str(text: str) -> str:
    return text


def _to_int(text: str) -> int:
    value = text.strip()
    if not _INT.fullmatch(value):
        raise BadValue(f"{text!r} is not a whole number")
    return int(value)


def _to_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None
    if not math.isfinite(value):  # JSON has no NaN or infinity
        raise BadValue(f"{text!r} is not a finite number")
    return value


def _to_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadValue(f"{text!r} is not a boolean (true/false, yes/no, 1/0)")


def _to_json(text: str) -> Any:
    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadValue(f"{text!r} is not valid JSON ({exc})") from None


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": _to_str,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "json": _to_json,
}


class ColumnTypes:
    """Column name → type for a CSV input. ``convert`` turns one record's cells into
    values; raises BadValue for the first cell that does not parse. Raises ConfigError for
    an unknown type."""

    def __init__(self, types: Mapping[str, str]) -> None:
        for column, kind in types.items():
            if kind not in _CONVERTERS:
                raise ConfigError(
                    f"column {column!r}: unknown type {kind!r} (use one of {', '.join(TYPES)})"
                )
        self.types = dict(types)
        self._convert = {column: _CONVERTERS[kind] for column, kind in types.items()}

    @classmethod
    def parse(cls, text: str) -> ColumnTypes:
        """``employees=int,score=float`` (whitespace allowed); raises ConfigError."""
        types: dict[str, str] = {}
        for pair in text.split(","):
            column, sep, kind = (part.strip() for part in pair.partition("="))
            if not sep or not column or not kind:
                raise ConfigError(f"{pair.strip()!r} is not COLUMN=TYPE (e.g. employees=int)")
            if column in types:
                raise ConfigError(f"column {column!r} is given a type twice")
            types[column] = kind
        return cls(types)

    def __bool__(self) -> bool:
        return bool(self.types)

    def missing(self, header: list[str]) -> list[str]:
        """The typed columns the header lacks."""
        return [column for column in self.types if column not in header]

    def convert(self, row: dict[str, str]) -> dict[str, Any]:
        """``row`` with every typed column converted (an empty cell: None). Raises
        BadValue with ``column`` set."""
        out: dict[str, Any] = dict(row)
        for column, convert in self._convert.items():
            text = row[column]
            if text == "" and convert is not _to_str:
                out[column] = None
                continue
            try:
                out[column] = convert(text)
            except BadValue as exc:
                raise BadValue(f"column {column!r} ({self.types[column]}): {exc}") from None
        return out
