"""Conditions, sorts and cursors as written, and their values read as their field's type."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.errors import ConfigError, InputError
from batchyard.records import Dataset, Field, FieldTally, check_name
from batchyard.selection import (
    Condition,
    Selection,
    Sort,
    decode_cursor,
    encode_cursor,
    sort_kind,
    typed,
)

LEADS = Dataset(
    name="leads",
    key_field="id",
    rows=3,
    fields=(
        Field("id", ("string",)),
        Field("employees", ("number", "null")),
        Field("zip", ("string",)),
        Field("paid", ("boolean",)),
        Field("v", ("string", "number")),
        Field("tags", ("array",)),
    ),
    created_at=0.0,
    updated_at=0.0,
)


@pytest.mark.parametrize(
    ("text", "field", "op", "values"),
    [
        ("industry=SaaS", "industry", "=", ("SaaS",)),
        (" employees >= 100 ", "employees", ">=", ("100",)),
        ("name~acme corp", "name", "~", ("acme corp",)),
        ("industry=SaaS|Retail", "industry", "=", ("SaaS", "Retail")),
        ("industry = SaaS | Retail ", "industry", "=", ("SaaS", "Retail")),
        ("industry!=a|b", "industry", "!=", ("a", "b")),
        ("note=a\\|b|c", "note", "=", ("a|b", "c")),
        ("x<=y=z", "x", "<=", ("y=z",)),
        ("name~a|b", "name", "~", ("a|b",)),
        ("empty=", "empty", "=", ("",)),
    ],
)
def test_conditions_parse(text: str, field: str, op: str, values: tuple[str, ...]) -> None:
    condition = Condition.parse(text)
    assert (condition.field, condition.op, condition.values) == (field, op, values)
    assert condition.text == text.strip()


@pytest.mark.parametrize("text", ["industry", "=SaaS", "", ">=3"])
def test_what_is_not_a_condition(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a condition"):
        Condition.parse(text)


@pytest.mark.parametrize("text", ["v=a\x00", "v~\x00", "v!=a|b\x01", "v>\x01"])
def test_a_value_cannot_hold_u0000_or_u0001(text: str) -> None:
    # PostgreSQL holds no U+0000 and reads a row's as U+0001 (store/datasql.py): a value
    # with neither is answered alike on both stores.
    with pytest.raises(ConfigError, match=r"cannot hold U\+0000 or U\+0001"):
        Condition.parse(text)


def test_a_key_asked_for_cannot_hold_u0000() -> None:
    with pytest.raises(ConfigError, match="'b\\\\x00': a key cannot hold U\\+0000"):
        Selection.of(keys=["a", "b\x00"])


def read(text: str) -> tuple[tuple[str, Any], ...]:
    return typed(LEADS, Condition.parse(text)).values


def test_values_are_read_as_their_field_type() -> None:
    assert read("employees>=100") == (("number", 100),)
    assert read("employees=1.5|2e3") == (("number", 1.5), ("number", 2000.0))
    assert read("zip=01234") == (("string", "01234"),)
    assert read("paid=TRUE") == (("boolean", True),)
    assert read("v=5|high") == (("number", 5), ("string", "high"))
    with pytest.raises(InputError, match="'employees' holds numbers, and 'x1' is not a number"):
        read("employees=x1")
    with pytest.raises(InputError, match="holds booleans, and 'yes' is not true or false"):
        read("paid=yes")
    with pytest.raises(InputError, match="holds arrays"):
        read("tags=a")
    # A number against a field of text would compare text: "20" after "100".
    with pytest.raises(InputError, match="holds text, so '>=' would compare text"):
        read("zip>=100")
    assert read("zip>=a") == (("string", "a"),)
    with pytest.raises(InputError, match="'~' looks for text"):
        read("employees~1")
    with pytest.raises(InputError, match="its fields: id, employees, zip, paid, v, tags"):
        read("nope=1")


def test_sorts() -> None:
    assert Sort.parse("employees") == Sort("employees")
    assert Sort.parse("employees:desc") == Sort("employees", True)
    assert Sort.parse("a:b") == Sort("a:b")  # only :asc and :desc are directions
    assert sort_kind(LEADS, Sort("employees")) == "number"
    assert sort_kind(LEADS, Sort("zip")) == "string"
    with pytest.raises(InputError, match="cannot sort by 'v'"):
        sort_kind(LEADS, Sort("v"))


def test_cursors_round_trip_and_belong_to_their_sort() -> None:
    sort = Sort("employees", True)
    for value in (12, 1.5, "text", None, True):
        assert decode_cursor(encode_cursor(sort, value, 42), sort) == (value, 42)
    assert decode_cursor(encode_cursor(None, None, 7), None) == (None, 7)
    with pytest.raises(ConfigError, match="another sort"):
        decode_cursor(encode_cursor(sort, 1, 1), Sort("employees"))
    for bad in ("", "!!", encode_cursor(None, None, 1)[:-2] + "xx"):
        with pytest.raises(ConfigError):
            decode_cursor(bad, None)


def test_selections_describe_themselves() -> None:
    selection = Selection.of(["industry=SaaS", "employees>=100"])
    assert selection.describe() == "industry=SaaS and employees>=100"
    keyed = Selection.of(keys=["a", "b", "a"])
    assert keyed.keys == ("a", "b")
    assert Selection.of(keys=list("abcdefg")).describe() == "keys a,b,c,d,e,..."
    with pytest.raises(ConfigError, match="at least one key"):
        Selection.of(keys=[])


def test_a_tally_keeps_fields_in_first_seen_order_with_their_types() -> None:
    tally = FieldTally()
    rows = [{"b": 1, "a": "x"}, {"a": None, "c": [1], "b": 2.5}, {"d": {"e": True}, "f": False}]
    assert list(tally.over(rows)) == rows
    assert tally.types == {
        "b": {"number"},
        "a": {"string", "null"},
        "c": {"array"},
        "d": {"object"},
        "f": {"boolean"},
    }


@pytest.mark.parametrize("name", ["leads", "q3-leads.v2", "A_1"])
def test_dataset_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 101])
def test_bad_dataset_names(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a dataset name"):
        check_name(name)
