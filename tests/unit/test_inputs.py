"""Reading items from JSONL, CSV, Parquet and stdin, and the submission the CLI makes of them:
every bad-input class names its file and line, and a rejected input leaves no batch."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from batchyard import Yard
from batchyard.cli.common import CommandError
from batchyard.cli.submit import add_submit_options, submit_from_args
from batchyard.errors import DuplicateKey, InputError, InvalidItem, NotSerializable
from batchyard.inputs import MAX_LINE_BYTES, detect_format, open_input
from batchyard.items import MAX_ITEM_BYTES

TASK = "json:dumps"


def read(path: Path | str, fmt: str | None = None, stdin: bytes | None = None) -> list[Any]:
    with open_input(str(path), fmt, stdin=None if stdin is None else io.BytesIO(stdin)) as items:
        return list(items)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def rejected(path: Path | str, fmt: str | None = None, stdin: bytes | None = None) -> InputError:
    with pytest.raises(InputError) as caught:
        read(path, fmt, stdin)
    return caught.value


def submit(yard: Yard, *argv: str) -> Any:
    return submitted(yard, *argv)[0]


def submitted(yard: Yard, *argv: str) -> tuple[Any, int]:
    """The batch and how many items this submission put in it."""
    parser = argparse.ArgumentParser()
    add_submit_options(parser)
    return submit_from_args(yard, parser.parse_args([TASK, *argv]))


def batch_count(yard: Yard) -> int:
    return len(yard.batches().rows)


# -- JSONL ---------------------------------------------------------------------------------


def test_jsonl_reads_objects_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a"}\n\n  \r\n{"id": "b", "n": [1]}\r\n{"x": null}')
    assert read(path) == [{"id": "a"}, {"id": "b", "n": [1]}, {"x": None}]


def test_jsonl_line_numbers_account_for_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"n": 1}\n\n\n{"n": 2}\n{"n": 3}\n\n{"n": 4}\n')
    with open_input(str(path)) as items:
        assert [row["n"] for row in items] == [1, 2, 3, 4]
        assert [items.line_of(i) for i in range(6)] == [None, 1, 4, 5, 7, None]


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    assert read(write(tmp_path, "a.jsonl", b'\xef\xbb\xbf{"id": 1}\n')) == [{"id": 1}]
    assert read(write(tmp_path, "a.csv", b"\xef\xbb\xbfid\n1\n")) == [{"id": "1"}]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json}", "not valid JSON"),
        ('{"id": 1', "not valid JSON (column 9: unexpected end of data)"),  # not line 2 col 1
        ('{"id": 1} {"id": 2}', "not valid JSON"),
        ("[1, 2]", "not a JSON object: the line holds an array"),
        ('"text"', "not a JSON object: the line holds a string"),
        ("42", "not a JSON object: the line holds a number"),
        ("null", "not a JSON object: the line holds null"),
        ("true", "not a JSON object: the line holds a boolean"),
    ],
)
def test_a_bad_jsonl_line_is_named_with_its_line(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, "bad.jsonl", f'{{"id": 1}}\n\n{line}\n{{"id": 2}}\n')
    error = rejected(path)
    assert (error.source, error.line) == (str(path), 3)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:3: ")


def test_invalid_utf8_is_named_with_its_line_and_byte(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "bad.jsonl", b'{"id": 1}\n{"id": "caf\xe9"}\n'))
    assert error.line == 2
    assert error.reason == "not valid UTF-8 (byte 0xe9 at column 12)"


def test_a_line_over_the_size_limit_is_rejected_without_reading_it_whole(
    tmp_path: Path,
) -> None:
    big = '{"id": 1, "text": "' + "x" * MAX_LINE_BYTES + '"}\n'
    error = rejected(write(tmp_path, "big.jsonl", '{"id": 0}\n' + big))
    assert error.line == 2
    assert "longer than the limit of 1,048,576 bytes" in error.reason


def test_a_line_just_under_the_limit_is_accepted(tmp_path: Path) -> None:
    head = '{"t": "'
    line = head + "x" * (MAX_LINE_BYTES - len(head) - 3) + '"}\n'
    assert len(line) == MAX_LINE_BYTES
    assert len(read(write(tmp_path, "fits.jsonl", line))[0]["t"]) == MAX_LINE_BYTES - 10


def test_a_line_of_exactly_the_limit_is_one_item_of_exactly_the_limit(
    tmp_path: Path, yard: Yard
) -> None:
    """One limit: a compact JSONL line of 1 MiB (its newline aside) is an item of 1 MiB as
    JSON, and both are accepted; one byte more is refused, as a line."""
    head = '{"t":"'
    line = head + "x" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(line.encode()) == MAX_LINE_BYTES == MAX_ITEM_BYTES
    batch = submit(yard, str(write(tmp_path, "exact.jsonl", line + "\r\n")))
    assert batch.status().counts.total == 1
    over = head + "x" * (MAX_LINE_BYTES - len(head) - 1) + '"}\n'
    error = rejected(write(tmp_path, "over.jsonl", over))
    assert "the line is longer than the limit of 1,048,576 bytes" in error.reason


def test_an_item_over_the_limit_as_json_is_refused_naming_its_line(
    tmp_path: Path, yard: Yard
) -> None:
    """A CSV record under the line limit can still make an item over it: JSON writes each
    tab as two characters."""
    record = "\t" * (MAX_ITEM_BYTES // 2 + 10)
    path = write(tmp_path, "tabs.csv", f'id,t\na,x\nb,"{record}"\n')
    with pytest.raises(InvalidItem) as caught:
        submit(yard, str(path))
    assert caught.value.line == 3
    assert "bytes as JSON; the limit is 1,048,576 (1 MiB)" in str(caught.value)


# -- CSV -----------------------------------------------------------------------------------


def test_csv_reads_a_header_and_string_values(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'id,n,note\r\n1,2,"a, b"\r\n\r\nx,,"say ""hi"""\r\n')
    assert read(path) == [
        {"id": "1", "n": "2", "note": "a, b"},
        {"id": "x", "n": "", "note": 'say "hi"'},
    ]


def test_a_csv_record_spanning_lines_is_named_by_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'id,text\n1,"two\nlines"\n2,ok\n3,"x",extra\n')
    error = rejected(path)
    assert (error.line, error.reason) == (5, "the record has 3 fields; the header has 2")
    with open_input(str(path)) as items:
        rows = [items.__next__(), items.__next__()]
        assert rows[0]["text"] == "two\nlines"
        assert (items.line_of(1), items.line_of(2)) == (2, 4)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("id,n\n1\n", 2, "the record has 1 fields; the header has 2"),
        ("id,id\n1,2\n", 1, "the header names 'id' twice"),
        ("id,\n1,2\n", 1, "the header has an empty column name"),
        ('id,n\n1,"open\n2,3\n', 2, "not valid CSV"),
    ],
)
def test_a_bad_csv_record_is_named_with_its_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    error = rejected(write(tmp_path, "bad.csv", text))
    assert error.line == line
    assert reason in error.reason


def test_invalid_utf8_in_csv_is_named_with_its_line(tmp_path: Path) -> None:
    error = rejected(write(tmp_path, "bad.csv", b"id,n\n1,a\n2,\xff\n"))
    assert (error.line, error.reason) == (3, "not valid UTF-8 (byte 0xff at column 3)")


def test_a_csv_record_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    half = "x" * (MAX_LINE_BYTES // 2)
    error = rejected(write(tmp_path, "big.csv", f'id,t\n1,ok\n2,"{half}\n{half}"\n'))
    assert error.line == 3
    assert "record is longer than the limit" in error.reason


def test_a_csv_with_only_a_header_has_no_items(tmp_path: Path) -> None:
    assert read(write(tmp_path, "h.csv", "id,n\n")) == []


# -- stdin, formats, files ------------------------------------------------------------------


def typed(path: Path, types: dict[str, str]) -> list[Any]:
    with open_input(str(path), csv_types=types) as items:
        return list(items)


def test_csv_types_convert_only_the_named_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.csv",
        "id,zip,employees,score,active,tags,note\n"
        'a,01234,0042,2.5,yes,"[1, ""x""]",007\n'
        "b,02139,-7,1e3,FALSE,{},\n",
    )
    types = {"employees": "int", "score": "float", "active": "bool", "tags": "json"}

    assert typed(path, types) == [
        {"id": "a", "zip": "01234", "employees": 42, "score": 2.5, "active": True,
         "tags": [1, "x"], "note": "007"},
        {"id": "b", "zip": "02139", "employees": -7, "score": 1000.0, "active": False,
         "tags": {}, "note": ""},
    ]  # fmt: skip
    # Untyped columns, and columns typed str, are never guessed at: "01234" stays text.
    assert typed(path, {"zip": "str"})[0]["zip"] == "01234"


def test_an_empty_cell_in_a_typed_column_is_null(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,n,ok,name\na,,,\n")
    assert typed(path, {"n": "int", "ok": "bool", "name": "str"}) == [
        {"id": "a", "n": None, "ok": None, "name": ""}
    ]


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("int", "12.5", "'12.5' is not a whole number"),
        ("int", "1_000", "'1_000' is not a whole number"),
        ("float", "abc", "'abc' is not a number"),
        ("float", "nan", "'nan' is not a finite number"),
        ("bool", "maybe", "'maybe' is not a boolean"),
        ("json", "{x", "'{x' is not valid JSON"),
    ],
)
def test_a_value_that_does_not_parse_names_file_line_and_column(
    tmp_path: Path, kind: str, value: str, reason: str
) -> None:
    path = write(tmp_path, "a.csv", f'id,v\na,1\n\nb,"{value}"\n')
    with pytest.raises(InputError) as caught:
        typed(path, {"v": kind})

    assert caught.value.source == str(path) and caught.value.line == 4
    assert f"column 'v' ({kind}): {reason}" in str(caught.value)
    assert str(caught.value).startswith(f"{path}:4: ")


def test_csv_types_name_columns_of_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,n\na,1\n")
    with pytest.raises(InputError, match=r"a\.csv:1: --csv-types names 'm', not a column"):
        typed(path, {"m": "int"})


def test_csv_types_are_checked_and_only_for_csv(tmp_path: Path) -> None:
    from batchyard.columns import ColumnTypes
    from batchyard.errors import ConfigError

    assert ColumnTypes.parse(" employees = int ,score=float").types == {
        "employees": "int",
        "score": "float",
    }
    for bad, message in [
        ("employees", "'employees' is not COLUMN=TYPE"),
        ("n=int,n=float", "column 'n' is given a type twice"),
        ("n=integer", "column 'n': unknown type 'integer' (use one of str, int, float"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            ColumnTypes.parse(bad)
    path = write(tmp_path, "a.jsonl", '{"n": "1"}\n')
    with pytest.raises(ConfigError, match=r"apply to CSV input; .*a\.jsonl is read as jsonl"):
        typed(path, {"n": "int"})


def test_a_typed_csv_submits_all_or_nothing(tmp_path: Path, yard: Yard) -> None:
    good = write(tmp_path, "good.csv", "id,n\na,1\nb,2\n")
    bad = write(tmp_path, "bad.csv", "id,n\na,1\nb,two\n")

    with pytest.raises(InputError, match=r"bad\.csv:3: column 'n' \(int\): 'two'"):
        submit(yard, str(bad), "--csv-types", "n=int")
    assert batch_count(yard) == 0

    batch = submit(yard, str(good), "--csv-types", "n=int")
    assert [item.payload for item in batch.items()] == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]


def test_stdin_is_jsonl_by_default_and_csv_when_told() -> None:
    assert read("-", stdin=b'{"a": 1}\n{"a": 2}\n') == [{"a": 1}, {"a": 2}]
    assert read("-", "csv", stdin=b"a,b\n1,2\n") == [{"a": "1", "b": "2"}]
    error = rejected("-", stdin=b'{"a": 1}\n[]\n')
    assert str(error) == "<stdin>:2: not a JSON object: the line holds an array"


def test_the_format_comes_from_the_extension_unless_named() -> None:
    assert [detect_format(p) for p in ("a.jsonl", "a.NDJSON", "a.json", "a.csv", "a.pq")] == [
        "jsonl",
        "jsonl",
        "jsonl",
        "csv",
        "parquet",
    ]
    assert detect_format("-") == "jsonl"
    assert detect_format("data.txt", "csv") == "csv"
    with pytest.raises(InputError, match=r"data\.txt: cannot tell the format.*--format"):
        detect_format("data.txt")
    with pytest.raises(InputError, match="unknown input format 'xml'"):
        detect_format("a.jsonl", "xml")


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    error = rejected(tmp_path / "nope.jsonl")
    assert "cannot open: No such file or directory" in str(error)


def test_a_misspelt_or_missing_file_is_missing_before_its_extension_is_judged(
    tmp_path: Path,
) -> None:
    # "leads.jsnol" is a typo of a file name, not a format to name with --format.
    for name in ("leads.jsnol", "nope.parquet", "notes"):
        error = rejected(tmp_path / name)
        assert str(error) == f"{tmp_path / name}: cannot open: No such file or directory"
    error = rejected(tmp_path)
    assert str(error) == f"{tmp_path}: cannot open: it is a folder, not a file"
    # A file that is there with an unknown extension still asks for --format.
    assert "cannot tell the format" in str(rejected(write(tmp_path, "data.txt", "{}\n")))


# -- Parquet -------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no hints
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(pa.table(columns), path, row_group_size=3)
    return path


def test_parquet_round_trip_in_row_batches(tmp_path: Path, yard: Yard) -> None:
    import datetime as dt

    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    path = write_parquet(
        tmp_path / "a.parquet",
        {"id": [f"k{i}" for i in range(10)], "n": list(range(10)), "at": [when] * 10},
    )
    rows = read(path)
    assert len(rows) == 10
    assert rows[7] == {"id": "k7", "n": 7, "at": "2024-05-01T12:30:00+00:00"}
    batch = submit(yard, str(path))
    assert [item.payload for item in batch.items()] == rows


def test_a_duplicate_key_in_parquet_names_its_row(tmp_path: Path, yard: Yard) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"id": ["a", "b", "c", "d", "b"]})
    with pytest.raises(DuplicateKey) as caught:
        submit(yard, str(path))
    assert str(caught.value) == f"{path}:5, key 'b': duplicate key (first used on line 2)"
    assert batch_count(yard) == 0


def test_a_parquet_value_that_is_not_json_names_its_row(tmp_path: Path, yard: Yard) -> None:
    path = write_parquet(tmp_path / "b.parquet", {"id": ["a", "b"], "blob": [None, b"\x00"]})
    with pytest.raises(NotSerializable) as caught:
        submit(yard, str(path))
    assert (caught.value.line, caught.value.key) == (2, "b")
    assert batch_count(yard) == 0


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    error = rejected(write(tmp_path, "a.parquet", b"PAR1"))
    assert "pip install 'batchyard[parquet]'" in str(error)


def test_parquet_cannot_come_from_stdin_and_garbage_is_not_parquet(tmp_path: Path) -> None:
    assert "cannot be read from stdin" in str(rejected("-", "parquet", stdin=b""))
    error = rejected(write(tmp_path, "x.parquet", b"not parquet at all"))
    assert "not a readable Parquet file" in str(error)


# -- submitting from a file ----------------------------------------------------------------


def test_submit_from_args_creates_the_batch_with_its_options(tmp_path: Path, yard: Yard) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a"}\n{"id": "b"}\n')
    prompt = write(tmp_path, "prompt.txt", "Say hi\n")
    batch = submit(
        yard,
        str(path),
        "--name=first",
        "--priority=5",
        "--max-attempts=2",
        "--concurrency=4",
        "--timeout=2m",
        "--param",
        "n=3",
        "--param",
        "tags=[1, 2]",
        "--param",
        "word=hello",
        "--param",
        f"prompt=@{prompt}",
    )
    status = batch.status()
    assert (status.name, status.priority, status.max_attempts) == ("first", 5, 2)
    assert (status.concurrency, status.timeout, status.sealed) == (4, 120.0, True)
    assert status.params == {"n": 3, "tags": [1, 2], "word": "hello", "prompt": "Say hi\n"}
    assert status.metadata == {"input": str(path)}
    assert [item.key for item in batch.items()] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "line", "error"),
    [
        ('{"id": "a"}\n\n{"id": "b"}\n\n{"id": "a"}\n', 5, DuplicateKey),
        ('{"id": "a"}\n\n{"id": [1]}\n', 3, InvalidItem),
        ('{"id": "a"}\n\n{"id": ""}\n', 3, InvalidItem),
    ],
)
def test_an_item_the_store_or_codec_rejects_is_named_by_its_line(
    tmp_path: Path, yard: Yard, text: str, line: int, error: type[InputError]
) -> None:
    path = write(tmp_path, "a.jsonl", text)
    with pytest.raises(error) as caught:
        submit(yard, str(path))
    assert (caught.value.source, caught.value.line) == (str(path), line)
    assert batch_count(yard) == 0


def test_a_duplicate_far_apart_in_a_large_file_is_named_by_its_line(
    tmp_path: Path, yard: Yard
) -> None:
    lines = [f'{{"id": "k{i}"}}' for i in range(12_000)] + ['{"id": "k3"}']
    path = write(tmp_path, "big.jsonl", "\n\n".join(lines) + "\n")
    with pytest.raises(DuplicateKey) as caught:
        submit(yard, str(path))
    assert caught.value.line == 2 * 12_000 + 1
    assert "first used on line 7" in str(caught.value)
    assert batch_count(yard) == 0


def test_a_bad_line_after_many_good_ones_leaves_no_batch(tmp_path: Path, yard: Yard) -> None:
    lines = [f'{{"id": {i}}}' for i in range(20_000)] + ["oops"]
    path = write(tmp_path, "late.jsonl", "\n".join(lines))
    with pytest.raises(InputError) as caught:
        submit(yard, str(path))
    assert caught.value.line == 20_001
    assert batch_count(yard) == 0


def test_empty_input_is_an_error_unless_the_batch_is_open(tmp_path: Path, yard: Yard) -> None:
    path = write(tmp_path, "empty.jsonl", "\n\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: no items: the input is empty"):
        submit(yard, str(path))
    assert batch_count(yard) == 0
    batch = submit(yard, str(path), "--open")
    assert batch.status().counts.total == 0
    assert not batch.status().sealed


def test_appending_to_an_open_batch_names_lines_of_the_new_input(
    tmp_path: Path, yard: Yard
) -> None:
    first = submit(yard, str(write(tmp_path, "a.jsonl", '{"id": "a"}\n{"id": "b"}\n')), "--open")
    more = write(tmp_path, "b.jsonl", '{"id": "c"}\n\n{"id": "d"}\n')
    batch, added = submitted(yard, str(more), "--batch", first.id)
    assert (batch.id, added) == (first.id, 2)
    assert first.status().counts.total == 4

    clash = write(tmp_path, "c.jsonl", '{"id": "e"}\n\n{"id": "b"}\n')
    with pytest.raises(DuplicateKey) as caught:
        submit(yard, str(clash), "--batch", first.id)
    assert (caught.value.source, caught.value.line) == (str(clash), 3)
    assert "first used by item 2" in caught.value.reason  # that one came from another file
    assert first.status().counts.total == 4


def test_appending_checks_the_task_and_refuses_new_batch_options(
    tmp_path: Path, yard: Yard
) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a"}\n')
    batch = submit(yard, str(path), "--open")
    with pytest.raises(CommandError, match="--name, --priority cannot be used with --batch"):
        submit(yard, str(path), "--batch", batch.id, "--name", "x", "--priority", "1")
    parser = argparse.ArgumentParser()
    add_submit_options(parser)
    args = parser.parse_args(["json:loads", str(path), "--batch", batch.id])
    with pytest.raises(CommandError, match="runs task 'json:dumps', not 'json:loads'"):
        submit_from_args(yard, args)
    with pytest.raises(InputError, match="no items"):
        submit(yard, str(write(tmp_path, "e.jsonl", "")), "--batch", batch.id)


def test_a_param_given_twice_is_refused(tmp_path: Path, yard: Yard) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a"}\n')
    with pytest.raises(CommandError, match="--param n is given twice"):
        submit(yard, str(path), "--param", "n=1", "--param", "n=2")
