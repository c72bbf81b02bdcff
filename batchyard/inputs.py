"""Reading a batch's items from a file or stdin: JSONL, CSV and Parquet, streamed.

A reader yields one dict per item and holds one line (or one Parquet row group slice) at a
time, so a file of any length submits with flat memory. Any bad line raises an InputError
naming the file and line; a store error about an item (a duplicate key) names only the
item's position, and :meth:`Input.locate` turns that back into a file and line.

Limits: a JSONL line (its end of line aside), or a CSV record, may be at most
:data:`MAX_LINE_BYTES` (1 MiB, 1,048,576 bytes): the same number as an item's limit as JSON
(``items.MAX_ITEM_BYTES``).
"""

from __future__ import annotations

import os
import stat
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, get_args

from batchyard.columns import BadValue, ColumnTypes
from batchyard.errors import ConfigError, DuplicateKey, InputError

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)

#: The longest JSONL line (or CSV record) accepted, in bytes, line break included.
MAX_LINE_BYTES = 1 << 20
#: Parquet rows are read this many at a time.
PARQUET_BATCH_ROWS = 4096
#: What INPUT names for standard input, and how errors name it.
STDIN = "-"
STDIN_NAME = "<stdin>"

_EXTENSIONS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: str, explicit: str | None = None) -> Format:
    """The format to read ``path`` as: ``explicit`` when given, JSONL for stdin, else by
    extension (.jsonl, .ndjson, .json, .csv, .parquet, .pq); raises InputError otherwise."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise InputError(f"unknown input format {explicit!r} (use one of {FORMATS})")
        return explicit  # type: ignore[return-value]  # checked against FORMATS just above
    if path == STDIN:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise InputError(
        f"cannot tell the format from the extension {suffix or '(none)'!r}: "
        f"name it with --format {'|'.join(FORMATS)}",
        source=path,
    )


class Input(Iterator[dict[str, Any]]):
    """The items of one input, in order, one dict at a time; a context manager that closes
    the file. ``count`` is how many items were read so far."""

    def __init__(self, source: str, rows: Iterator[tuple[int, dict[str, Any]]], close: Any):
        self.source = source
        self.count = 0
        self._rows = rows
        self._close = close
        # Item n is on line n + delta; a new (item, delta) pair is kept only where the
        # delta changes (blank lines, multi-line CSV records), so this stays small.
        self._from_item = array("q")
        self._delta = array("q")

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._close()

    def __next__(self) -> dict[str, Any]:
        line, row = next(self._rows)
        self.count += 1
        delta = line - self.count
        if (self._delta[-1] if self._delta else 0) != delta:
            self._from_item.append(self.count)
            self._delta.append(delta)
        return row

    def line_of(self, index: int) -> int | None:
        """The line of the ``index``-th item read (1-based); None if not read yet."""
        if not 1 <= index <= self.count:
            return None
        at = bisect_right(self._from_item, index) - 1
        return index + (self._delta[at] if at >= 0 else 0)

    def locate(self, error: InputError, first_position: int = 1) -> InputError:
        """``error`` naming this input's file and line instead of a bare item position.

        ``first_position`` is the batch position the first item of this input took (more
        than 1 when appending to a batch). An error that already names a source, or whose
        position is not one of this input's items, comes back unchanged.
        """
        if error.source is not None or error.position is None:
            return error
        line = self.line_of(error.position - first_position + 1)
        if line is None:
            return error
        where: dict[str, Any] = {
            "position": error.position,
            "key": error.key,
            "source": self.source,
            "line": line,
        }
        located: InputError
        if isinstance(error, DuplicateKey):
            # The store names the earlier holder of the key by its position: name its line
            # instead when that item came from this input.
            earlier = error.first_position
            first = None if earlier is None else self.line_of(earlier - first_position + 1)
            reason = f"duplicate key (first used on line {first})" if first else error.reason
            located = DuplicateKey(reason, first_position=earlier, **where)
        else:
            located = type(error)(error.reason, **where)
        located.__cause__ = error.__cause__
        return located


def open_input(
    path: str,
    format: str | None = None,
    *,
    stdin: IO[bytes] | None = None,
    csv_types: ColumnTypes | Mapping[str, str] | None = None,
    name: str | None = None,
    key_field: str | None = None,
) -> Input:
    """A reader over ``path`` (``-`` for stdin) in ``format`` (see :func:`detect_format`),
    called ``name`` in errors (default: the path; an upload spooled to a file gives its own).

    Raises InputError when the file cannot be opened or the format is unknown or not
    installed; reading raises InputError (with ``source`` and ``line``) at the first bad
    line. JSONL: one object per line, blank lines skipped. CSV: a header row, then one item
    per record with every value a string, except the columns ``csv_types`` names (``{"employees":
    "int"}``; types: str, int, float, bool, json; see :mod:`batchyard.columns`): an empty
    cell there is None, and a value that does not parse is an InputError naming the line
    and column. Parquet: one item per row (not from stdin). ``csv_types`` for an input that
    is not CSV, or with an unknown type, raises ConfigError. ``key_field`` is a key field
    chosen on purpose (``--key-field``): a CSV header that lacks it is an InputError, since
    no row could have it and every item would be keyed by its position.
    """
    name = name or (STDIN_NAME if path == STDIN else path)
    if path != STDIN:
        _check_file(path, name)
    fmt = detect_format(path, format)
    types = csv_types if isinstance(csv_types, ColumnTypes) else ColumnTypes(csv_types or {})
    if types and fmt != "csv":
        raise ConfigError(f"column types (--csv-types) apply to CSV input; {name} is read as {fmt}")
    if fmt == "parquet":
        return _open_parquet(path, name)
    stream = _open_binary(path, name, stdin)
    if fmt == "jsonl":
        rows = _jsonl_rows(stream, name)
    else:
        rows = _csv_rows(stream, name, types, key_field)
    return Input(name, rows, stream.close if path != STDIN else lambda: None)


def _check_file(path: str, name: str) -> None:
    # Before the format is read off the extension: a misspelt name ("leads.jsnol") is a
    # file that is not there, not a format to name.
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from exc
    if is_dir:
        raise InputError("cannot open: it is a folder, not a file", source=name)


def _open_binary(path: str, name: str, stdin: IO[bytes] | None) -> IO[bytes]:
    if path == STDIN:
        return stdin if stdin is not None else sys.stdin.buffer
    try:
        return open(path, "rb")  # closed by the Input
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from exc


def _lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) with the size limit enforced before a long line is held."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 2)  # room for the line's own \r\n
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise InputError(
                f"the line is longer than the limit of {MAX_LINE_BYTES:,} bytes",
                source=name,
                line=number,
            )
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            raw = raw[3:]
        yield number, raw


def _jsonl_rows(stream: IO[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import orjson

    loads = orjson.loads
    for number, raw in _lines(stream, name):
        try:
            value = loads(raw)
        except orjson.JSONDecodeError as exc:
            if not raw.strip():
                continue
            raise InputError(_why_not_json(raw, exc), source=name, line=number) from None
        if type(value) is not dict:
            raise InputError(
                f"not a JSON object: the line holds {_json_kind(value)}",
                source=name,
                line=number,
            )
        yield number, value


def _why_not_json(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1})"
    # The decoder counts lines and columns within this one line: give the column only. A
    # line cut short ends in its newline, which the decoder counts as a line of its own
    # ("line 2 column 1"): read it again without, for the column where it stopped.
    import orjson

    stripped = raw.rstrip(b"\r\n")
    if stripped != raw:
        try:
            orjson.loads(stripped)
        except orjson.JSONDecodeError as again:
            exc = again
    column = getattr(exc, "colno", None)
    reason = getattr(exc, "msg", None) or str(exc)
    return f"not valid JSON (column {column}: {reason})" if column else f"not valid JSON: {exc}"


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _csv_rows(
    stream: IO[bytes], name: str, types: ColumnTypes, key_field: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    import csv

    # NOTE: the csv module's field limit is process-wide; it is raised (never lowered) to
    # match the record limit, which _text_lines enforces.
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)
    lines = _RecordLines(stream, name)
    records = csv.reader(lines, strict=True)
    header: list[str] | None = None
    while True:
        lines.start_record()
        try:
            record = next(records, None)
        except csv.Error as exc:
            raise InputError(f"not valid CSV: {exc}", source=name, line=lines.first) from None
        if record is None:
            return
        if not record:  # a blank line
            continue
        if header is None:
            header = _check_header(record, name, lines.first, types, key_field)
            continue
        if len(record) != len(header):
            raise InputError(
                f"the record has {len(record)} fields; the header has {len(header)}",
                source=name,
                line=lines.first,
            )
        row = dict(zip(header, record, strict=True))
        if types:
            try:
                row = types.convert(row)
            except BadValue as exc:
                raise InputError(str(exc), source=name, line=lines.first) from None
        yield lines.first, row


def _check_header(
    record: list[str], name: str, line: int, types: ColumnTypes, key_field: str | None
) -> list[str]:
    seen: set[str] = set()
    for column in record:
        if not column:
            raise InputError("the header has an empty column name", source=name, line=line)
        if column in seen:
            raise InputError(f"the header names {column!r} twice", source=name, line=line)
        seen.add(column)
    missing = types.missing(record)
    if missing:
        raise InputError(
            f"--csv-types names {', '.join(map(repr, missing))}, not a column of the header",
            source=name,
            line=line,
        )
    if key_field is not None and key_field not in seen:
        raise InputError(
            f"--key-field {key_field!r} is not a column of the header "
            f"(its columns: {', '.join(record)})",
            source=name,
            line=line,
        )
    return record


class _RecordLines(Iterator[str]):
    """Decoded lines for ``csv.reader``, noting where each record starts and keeping a
    record (which may span lines inside quotes) within the size limit."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._lines = _lines(stream, name)
        self._name = name
        self.number = 0
        self.first = 1
        self._size = 0

    def start_record(self) -> None:
        self.first = self.number + 1
        self._size = 0

    def __next__(self) -> str:
        self.number, raw = next(self._lines)
        self._size += len(raw)
        if self._size > MAX_LINE_BYTES:
            raise InputError(
                f"the record is longer than the limit of {MAX_LINE_BYTES:,} bytes",
                source=self._name,
                line=self.first,
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InputError(
                f"not valid UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1})",
                source=self._name,
                line=self.number,
            ) from None


def _open_parquet(path: str, name: str) -> Input:
    if path == STDIN:
        raise InputError("Parquet cannot be read from stdin; name the file", source=name)
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow has no hints
    except ImportError:
        raise InputError(
            "reading Parquet needs pyarrow: pip install 'batchyard[parquet]'", source=name
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from exc
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise InputError(f"not a readable Parquet file: {exc}", source=name) from exc
    return Input(name, _parquet_rows(parquet, name), parquet.close)


def _parquet_rows(parquet: Any, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    try:
        for chunk in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for values in chunk.to_pylist():
                row += 1
                yield row, {key: _plain(value) for key, value in values.items()}
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"not a readable Parquet file: {exc}", source=name, line=row + 1) from exc


def _plain(value: Any) -> Any:
    """A Parquet value as JSON: dates and times as ISO 8601 text, decimals as text."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_plain(inner) for inner in value]
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        return iso()
    if type(value).__name__ == "Decimal":
        return str(value)
    return value
