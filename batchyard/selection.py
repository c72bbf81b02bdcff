"""Picking rows of a dataset: conditions (``industry=SaaS``, ``employees>=100``,
``name~acme``, ``industry=SaaS|Retail``), a sort and page cursors, parsed and then typed
against the dataset's fields. Pure: the store turns a typed selection into SQL.

A value is read as the type its field holds: a field of numbers takes a number, a field
of booleans ``true`` or ``false``, a field of text any text (``zip=01234`` stays the text
"01234"). A field holding several types takes a number when the value reads as one, then a
boolean, else text. A row matches a condition only when its value has the condition's
type, so a row without the field (or with null there) matches none.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from batchyard.errors import ConfigError, InputError
from batchyard.records import Dataset, Field

Op = Literal["=", "!=", "<", "<=", ">", ">=", "~"]
#: What a typed value is compared as.
Kind = Literal["number", "string", "boolean"]
_CONDITION = re.compile(r"\s*([^=<>!~]+?)\s*(>=|<=|!=|=|<|>|~)(.*)", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPLIT = re.compile(r"(?<!\\)\|")
_COMPARABLE: tuple[Kind, ...] = ("number", "boolean", "string")
_ORDERING = frozenset({"<", "<=", ">", ">="})


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition as written: FIELD OP VALUE. ``=`` and ``!=`` take a list of values
    separated by ``|`` (one of them, none of them); ``\\|`` is a literal bar."""

    field: str
    op: Op
    values: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Raises ConfigError for text that is not FIELD OP VALUE."""
        match = _CONDITION.fullmatch(text)
        if not match or not match.group(1).strip():
            raise ConfigError(
                f"{text!r} is not a condition: FIELD=VALUE, FIELD!=VALUE, FIELD<VALUE, "
                "FIELD<=VALUE, FIELD>VALUE, FIELD>=VALUE, FIELD~TEXT (contains), "
                "FIELD=A|B|C (one of)"
            )
        field, op, raw = match.group(1).strip(), match.group(2), match.group(3).strip()
        if "\x00" in raw or "\x01" in raw:
            # PostgreSQL's text holds no U+0000, and a row's is read as U+0001 on either
            # store (store/datasql.py): a value with neither is answered exactly.
            raise ConfigError(f"{text!r}: a value cannot hold U+0000 or U+0001")
        if op in ("=", "!="):
            values = tuple(part.strip().replace("\\|", "|") for part in _SPLIT.split(raw))
        else:
            values = (raw,)
        return cls(field, op, values, text.strip())  # type: ignore[arg-type]  # op: the regex's


@dataclass(frozen=True, slots=True)
class Typed:
    """A condition with its values read as its field's type: (kind, value) pairs."""

    field: str
    op: Op
    values: tuple[tuple[Kind, Any], ...]


@dataclass(frozen=True, slots=True)
class Sort:
    """Order rows by a field, ascending unless ``descending``; rows without it come last,
    and rows with equal values in the order they were added."""

    field: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str) -> Sort:
        """``FIELD``, ``FIELD:asc`` or ``FIELD:desc``; raises ConfigError."""
        field, sep, way = text.strip().rpartition(":")
        if not sep or way not in ("asc", "desc"):
            field, way = text.strip(), "asc"
        if not field:
            raise ConfigError(f"{text!r} is not a sort: FIELD, FIELD:asc or FIELD:desc")
        return cls(field, way == "desc")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows of a dataset: those matching every condition, of ``keys`` if given."""

    where: tuple[Condition, ...] = ()
    keys: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls, where: Sequence[str | Condition] = (), keys: Sequence[str] | None = None
    ) -> Selection:
        conditions = tuple(c if isinstance(c, Condition) else Condition.parse(c) for c in where)
        if keys is not None:
            keys = tuple(dict.fromkeys(str(k) for k in keys))
            if not keys:
                raise ConfigError("keys: name at least one key")
            for key in keys:
                if "\x00" in key:
                    raise ConfigError(f"keys: {key!r}: a key cannot hold U+0000")
        return cls(conditions, keys)

    def describe(self) -> str:
        parts = [c.text for c in self.where]
        if self.keys is not None:
            shown = ",".join(self.keys[:5]) + (",..." if len(self.keys) > 5 else "")
            parts.append(f"keys {shown}")
        return " and ".join(parts) or "(all rows)"


def comparable(field: Field) -> tuple[Kind, ...]:
    return tuple(kind for kind in _COMPARABLE if kind in field.types)


def typed(dataset: Dataset, condition: Condition) -> Typed:
    """The condition with its values read as the field's type. Raises InputError for a
    field no row has (naming the fields there are), a value that does not read as the
    field's type, or ``~`` on a field without text."""
    field = known_field(dataset, condition.field)
    kinds = comparable(field)
    if not kinds and set(field.types) - {"null"}:
        raise InputError(
            f"{condition.text!r}: field {field.name!r} holds {_words(field.types)}; a "
            "condition compares text, numbers and booleans"
        )
    if condition.op == "~":
        if kinds and "string" not in kinds:
            raise InputError(
                f"{condition.text!r}: '~' looks for text, and field {field.name!r} holds "
                f"{_words(kinds)}"
            )
        return Typed(field.name, "~", (("string", condition.values[0]),))
    values = tuple(_read(value, kinds, condition, field) for value in condition.values)
    if condition.op in _ORDERING and values[0][0] == "string" and _number(values[0][1]) is not None:
        raise InputError(
            f"{condition.text!r}: field {field.name!r} holds text, so {condition.op!r} would "
            f'compare text ("20" comes after "100"); keep it as numbers (for a CSV: '
            f"dataset add --csv-types {field.name}=int or =float)"
        )
    return Typed(field.name, condition.op, values)


def sort_kind(dataset: Dataset, sort: Sort) -> Kind:
    """What a sort compares its field's values as; raises InputError for an unknown field
    or one holding values of several types (or none it can order)."""
    field = known_field(dataset, sort.field)
    kinds = comparable(field)
    if len(kinds) != 1 or set(field.types) - {"null", kinds[0]}:
        raise InputError(
            f"cannot sort by {field.name!r}: it holds {_words(field.types)}; a sort needs a "
            "field of numbers, of text or of booleans (empty cells aside)"
        )
    return kinds[0]


def known_field(dataset: Dataset, name: str) -> Field:
    field = dataset.field(name)
    if field is None:
        raise InputError(
            f"no row of {dataset.name!r} has a field {name!r}; its fields: "
            f"{', '.join(dataset.field_names) or '(none)'}"
        )
    return field


def _read(text: str, kinds: tuple[Kind, ...], condition: Condition, field: Field) -> Any:
    if not kinds or "number" in kinds:
        number = _number(text)
        if number is not None:
            return ("number", number)
    if not kinds or "boolean" in kinds:
        if text.lower() in ("true", "false"):
            return ("boolean", text.lower() == "true")
    if not kinds or "string" in kinds:
        return ("string", text)
    expected = " or ".join({"number": "a number", "boolean": "true or false"}[k] for k in kinds)
    raise InputError(
        f"{condition.text!r}: field {field.name!r} holds {_words(kinds)}, and {text!r} is "
        f"not {expected}"
    )


def _number(text: str) -> int | float | None:
    if not _NUMBER.fullmatch(text):
        return None
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    value = float(text)
    return value if math.isfinite(value) else None


def _words(types: Sequence[str]) -> str:
    names = {"string": "text", "number": "numbers", "boolean": "booleans", "null": "nulls"}
    plural = [names.get(t, t + "s") for t in types]
    return " and ".join(plural) if plural else "nothing but nulls"


# -- page cursors ----------------------------------------------------------------------


def encode_cursor(sort: Sort | None, value: Any, position: int) -> str:
    """The cursor of the page after the row with this sort value and position."""
    state = [sort.field if sort else None, bool(sort and sort.descending), value, position]
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort | None) -> tuple[Any, int]:
    """(sort value, position) of a cursor made by ``encode_cursor`` for the same sort;
    raises ConfigError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        field, descending, value, position = orjson.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError(f"{cursor!r} is not a page cursor (use the `next` of a page)") from None
    if not isinstance(position, int) or isinstance(value, (dict, list)):
        raise ConfigError(f"{cursor!r} is not a page cursor (use the `next` of a page)")
    if (field, descending) != ((sort.field, sort.descending) if sort else (None, False)):
        raise ConfigError(f"cursor {cursor!r} belongs to a listing with another sort")
    return value, position
