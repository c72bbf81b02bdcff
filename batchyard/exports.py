"""Exports: a batch's results streamed to JSON Lines, CSV or Parquet, a page at a time.

Memory stays flat whatever the batch's size: JSONL and CSV write each item as it is read,
Parquet writes a row group per ``ROW_GROUP`` items. Every format carries the same fields:

==============  ===============================================================
``key``         the item's key
``state``       succeeded, failed or cancelled (or any state asked for)
``result``      the task's return value: JSON in JSONL, JSON text in CSV and Parquet
``error``       the last attempt's error (a traceback for unexpected exceptions)
``error_type``  the error's exception class
``attempts``    attempts that ran
``duration``    seconds the last attempt took
``usage``       tokens_in, tokens_out, cost: an object in JSONL, three columns elsewhere
``metrics``     the task's metrics: an object in JSONL, JSON text elsewhere
==============  ===============================================================
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any, Literal

import orjson

from batchyard.errors import ConfigError
from batchyard.models import JSON, Item

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv", "parquet")

#: The columns of CSV and Parquet exports, in order.
COLUMNS = (
    "key",
    "state",
    "result",
    "error",
    "error_type",
    "attempts",
    "duration",
    "tokens_in",
    "tokens_out",
    "cost",
    "metrics",
)
#: Items per Parquet row group: big enough to compress well, small enough to stay flat.
ROW_GROUP = 10_000
PARQUET_MISSING = "Parquet needs pyarrow: pip install 'batchyard[parquet]'"


def record(item: Item) -> dict[str, JSON]:
    """One JSONL line's object."""
    return {
        "key": item.key,
        "state": item.state.value,
        "result": item.result,
        "error": item.error,
        "error_type": item.error_type,
        "attempts": item.runs,
        "duration": item.duration,
        "usage": {
            "tokens_in": item.usage.tokens_in,
            "tokens_out": item.usage.tokens_out,
            "cost": _cost(item),
        },
        "metrics": item.metrics,
    }


def row(item: Item) -> tuple[Any, ...]:
    """One CSV or Parquet row, in ``COLUMNS`` order."""
    return (
        item.key,
        item.state.value,
        None if item.result is None else _json_text(item.result),
        item.error,
        item.error_type,
        item.runs,
        item.duration,
        item.usage.tokens_in,
        item.usage.tokens_out,
        _cost(item),
        _json_text(item.metrics) if item.metrics else None,
    )


def _cost(item: Item) -> float | None:
    """The item's cost; None (empty in CSV) when none of its calls had a price."""
    return None if item.usage.cost_is_unknown else item.usage.cost


def _json_text(value: JSON) -> str:
    return orjson.dumps(value).decode()


def check_format(fmt: str) -> Format:
    """The format if batchyard can write it here; ConfigError naming the extra to install
    when Parquet's library is missing, ValueError for an unknown format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # type: ignore[import-untyped]  # noqa: F401 - ships no types
        except ImportError as exc:
            raise ConfigError(PARQUET_MISSING) from exc
    return fmt


def write_results(items: Iterable[Item], fmt: Format, out: IO[bytes]) -> int:
    """Write ``items`` to the binary stream ``out`` in ``fmt``; returns how many.

    ``out`` is written in order and never sought, so it may be a pipe."""
    if fmt == "jsonl":
        return _write_jsonl(items, out)
    if fmt == "csv":
        return _write_csv(items, out)
    return _write_parquet(items, out)


def _write_jsonl(items: Iterable[Item], out: IO[bytes]) -> int:
    count = 0
    for item in items:
        out.write(orjson.dumps(record(item)) + b"\n")
        count += 1
    return count


def _write_csv(items: Iterable[Item], out: IO[bytes]) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        count = 0
        for item in items:
            writer.writerow(row(item))
            count += 1
        text.flush()
    finally:
        text.detach()  # leave ``out`` open: it belongs to the caller
    return count


def _write_parquet(items: Iterable[Item], out: IO[bytes]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("key", pa.string()),
            ("state", pa.string()),
            ("result", pa.string()),
            ("error", pa.string()),
            ("error_type", pa.string()),
            ("attempts", pa.int64()),
            ("duration", pa.float64()),
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),
            ("cost", pa.float64()),
            ("metrics", pa.string()),
        ]
    )
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        for rows in _pages(items, ROW_GROUP):
            columns = [
                pa.array(values, type=column.type)
                for values, column in zip(zip(*rows, strict=True), schema, strict=True)
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            count += len(rows)
    return count


def _pages(items: Iterable[Item], size: int) -> Iterator[list[tuple[Any, ...]]]:
    stream = iter(items)
    while rows := [row(item) for item in islice(stream, size)]:
        yield rows
