"""A typed selection of dataset rows as SQL, for either database: conditions, the sort, the
keyset of a page. Values are always bound, never written into the SQL; a field name is
bound too (SQLite: as a JSON path, or as a key matched by ``json_each`` when it has a
character a path cannot quote; PostgreSQL: as the key of ``->``).

Each database reads a field as a number, text or a boolean only when the row's JSON value
has that type (else NULL), so a comparison never mixes types and both order alike: numbers
by value, text by code point (``COLLATE "C"``), false before true.

Text holding a NUL character (U+0000) is read with U+0001 in its place on both (see
``without_nul``): PostgreSQL's jsonb and text hold none, and SQLite's JSON functions end the
text there. A condition's value holds neither character (``selection.Condition``), so
conditions answer as over the text itself; only a sort may put a NUL after a U+0001.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from batchyard.selection import Kind, Sort, Typed

#: ASCII letters folded for ``~`` (contains, ignoring case), the same way on both databases
#: (SQLite's ``lower`` folds only these).
_UPPER, _LOWER = string.ascii_uppercase, string.ascii_lowercase
_FOLD = str.maketrans(_UPPER, _LOWER)


@dataclass
class Sql:
    """A fragment of SQL and its parameters, built up in order."""

    text: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, text: str, *params: Any) -> Sql:
        self.text.append(text)
        self.params.extend(params)
        return self

    def extend(self, other: Sql) -> Sql:
        self.text.extend(other.text)
        self.params.extend(other.params)
        return self

    def sql(self) -> str:
        return "".join(self.text)


def without_nul(text: str, sqlite: bool) -> str:
    """SQL for the JSON text ``text`` with each ``\\u0000`` escape (a NUL character) made
    ``\\u0001``: every escaped backslash is set aside first (as U+0001, which JSON text
    never holds raw), so ``\\\\u0000``, a backslash and then "u0000", stays as it is."""
    soh = "char(1)" if sqlite else "chr(1)"
    aside = f"replace({text}, '\\\\', {soh})"
    return f"replace(replace({aside}, '\\u0000', '\\u0001'), {soh}, '\\\\')"


class JsonSql:
    """How a database reads a field of a row (``r``) as a typed value. ``holding_nul``
    names the fields whose text holds a NUL character in some row: SQLite reads those from
    the row's JSON ``without_nul`` (PostgreSQL's ``doc`` is kept so)."""

    def __init__(self, dialect: str, holding_nul: frozenset[str] = frozenset()) -> None:
        self.sqlite = dialect == "sqlite"
        self.holding_nul = holding_nul

    def _parts(self, name: str) -> tuple[Sql, Sql]:
        """(the field's JSON type, its value as SQL) of row ``r``."""
        if not self.sqlite:
            return Sql().add("jsonb_typeof(r.doc -> ?)", name), Sql().add("(r.doc ->> ?)", name)
        doc = without_nul("r.payload", True) if name in self.holding_nul else "r.payload"
        if '"' in name or "\\" in name or not name.isprintable():
            # A JSON path cannot name this key; json_each compares keys as decoded text.
            each = f"(SELECT {{}} FROM json_each({doc}) WHERE key = ?)"
            return Sql().add(each.format("type"), name), Sql().add(each.format("atom"), name)
        path = f'$."{name}"'
        return (
            Sql().add(f"json_type({doc}, ?)", path),
            Sql().add(f"json_extract({doc}, ?)", path),
        )

    def value(self, name: str, kind: Kind) -> Sql:
        """The field as ``kind``, NULL where the row's value is of another type or missing."""
        kind_of, value = self._parts(name)
        out = Sql()
        if kind == "number":
            number = "IN ('integer', 'real')" if self.sqlite else "= 'number'"
            cast = "" if self.sqlite else "::numeric"
            out.add("(CASE WHEN ").extend(kind_of).add(f" {number} THEN (")
            return out.extend(value).add(f"){cast} END)")
        if kind == "string":
            text = "'text'" if self.sqlite else "'string'"
            out.add("(CASE WHEN ").extend(kind_of).add(f" = {text} THEN ").extend(value)
            return out.add(" END)" if self.sqlite else ' END) COLLATE "C"')
        if self.sqlite:
            out.add("(CASE ").extend(kind_of)
            return out.add(" WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)")
        out.add("(CASE WHEN ").extend(kind_of).add(" = 'boolean' THEN (CASE WHEN ")
        return out.extend(value).add(" = 'true' THEN 1 ELSE 0 END) END)")

    def condition(self, typed: Typed) -> Sql:
        """A condition as a boolean SQL expression over row ``r``."""
        if typed.op == "~":
            needle = str(typed.values[0][1]).translate(_FOLD)
            folded = self._fold(self.value(typed.field, "string"))
            return folded.add(" > 0", needle)
        if typed.op in ("=", "!="):
            return self._membership(typed)
        ((kind, value),) = typed.values
        return self.value(typed.field, kind).add(f" {typed.op} ?", _bind(kind, value))

    def _membership(self, typed: Typed) -> Sql:
        # Grouped by kind: each kind's values compare with the field read as that kind.
        groups: dict[Kind, list[Any]] = {}
        for kind, value in typed.values:
            groups.setdefault(kind, []).append(_bind(kind, value))
        out = Sql().add("(")
        for index, (kind, values) in enumerate(groups.items()):
            join = " OR " if typed.op == "=" else " AND "
            out.add(join if index else "")
            marks = ", ".join("?" * len(values))
            out.extend(self.value(typed.field, kind))
            if typed.op == "=":
                out.add(f" IN ({marks})", *values)
            else:
                out.add(f" NOT IN ({marks})", *values)
        return out.add(")")

    def _fold(self, text: Sql) -> Sql:
        if self.sqlite:
            return Sql().add("instr(lower(").extend(text).add("), ?)")
        out = Sql().add("strpos(translate(").extend(text)
        return out.add(f", '{_UPPER}', '{_LOWER}'), ?)")

    def after(self, sort: Sort | None, value: Any, row_id: int, kind: Kind | None) -> Sql:
        """The keyset of the page after the row (``value``, ``row_id``) over the columns
        ``s`` (the sort's value) and ``rid``: rows by ``s``, rows without one last, ties by
        ``rid``."""
        if sort is None or kind is None:
            return Sql().add("rid > ?", row_id)
        key = self._column("s", kind)
        if value is None:
            return Sql().add(f"({key} IS NULL AND rid > ?)", row_id)
        beyond = "<" if sort.descending else ">"
        bound = _bind(kind, value)
        return Sql().add(
            f"({key} {beyond} ? OR ({key} = ? AND rid > ?) OR {key} IS NULL)",
            bound,
            bound,
            row_id,
        )

    def order(self, sort: Sort | None, kind: Kind | None, table: str = "") -> str:
        """ORDER BY's terms over the columns ``s`` and ``rid`` (of ``table``, if given)."""
        rid = f"{table}rid"
        if sort is None or kind is None:
            return rid
        key = self._column(f"{table}s", kind)
        return f"{key} IS NULL, {key}{' DESC' if sort.descending else ''}, {rid}"

    def _column(self, name: str, kind: Kind) -> str:
        # Text orders by code point on both: PostgreSQL is told so (SQLite's BINARY is).
        return f'{name} COLLATE "C"' if kind == "string" and not self.sqlite else name


def _bind(kind: Kind, value: Any) -> Any:
    if kind == "boolean":
        return int(bool(value))
    return value


def plain(value: Any) -> Any:
    """A sort value as read from the database, as JSON can carry it in a cursor
    (PostgreSQL's numeric comes back as Decimal)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number
