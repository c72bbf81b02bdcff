"""Commands that summarise finished work: report, results, compare."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from batchyard.cli.common import (
    add_json,
    console,
    db_url,
    format_duration,
    open_yard,
    positive_int,
    print_json,
)
from batchyard.errors import CommandError
from batchyard.models import cost_text
from batchyard.report_text import percent

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

_ITEM_STATES = ("pending", "running", "retry_wait", "succeeded", "failed", "cancelled")


def register(commands: Any) -> None:
    """Adds report, results and compare."""
    _register_report(commands)
    _register_results(commands)
    _register_compare(commands)


def _register_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="success rate, durations, throughput, attempts, errors, usage, task metrics",
        description="Summarise a batch: success rate, durations of the last attempt (mean, "
        "p50, p95, max), throughput, attempts, error classes, usage and cost, every task "
        "metric (count, mean, min, max, sum) and the failed items. The JSON report is also "
        "saved in a reports/ folder beside the SQLite file (in the current folder for "
        "other stores) as ID.json, unless --no-save.",
    )
    report.add_argument("batch", metavar="ID", help="the batch id (batch_...)")
    report.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        help="default: by -o FILE's extension (.json, .csv), else text",
    )
    add_json(report)
    report.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    report.add_argument(
        "--no-save", action="store_true", help="do not save the JSON report in reports/"
    )
    report.add_argument(
        "--max-failed",
        type=positive_int,
        default=100,
        metavar="N",
        help="list at most N failed items (default: 100)",
    )
    report.set_defaults(run=run_report)


def _register_results(commands: Any) -> None:
    results = commands.add_parser(
        "results",
        help="stream results (key, state, result, error, usage) as JSONL, CSV or Parquet",
        description="Stream a batch's finished items (key, state, result, error, "
        "error_type, attempts, duration, usage, metrics) without loading them all in "
        "memory. CSV and Parquet hold the result as JSON text. Parquet needs pyarrow "
        "(pip install 'batchyard[parquet]') and an output file.",
    )
    results.add_argument("batch", metavar="ID", help="the batch id (batch_...)")
    results.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        help="default: by -o FILE's extension (.csv, .parquet, .pq), else jsonl",
    )
    results.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    results.add_argument(
        "--state",
        choices=_ITEM_STATES,
        help="only items in this state (default: every finished item)",
    )
    results.set_defaults(run=run_results)


def _register_compare(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="two or more batches side by side (or a re-run beside the batch it re-ran)",
        description="Compare batches side by side: counts, success rate, durations, "
        "throughput, tokens, cost and task metrics. With one ID that is a re-run: it and "
        "the batch it re-ran.",
    )
    compare.add_argument("first", metavar="ID", help="a batch id")
    compare.add_argument(
        "others",
        metavar="ID",
        nargs="*",
        help="more batch ids (none: the batch the first one re-ran, if it is a re-run)",
    )
    add_json(compare)
    compare.set_defaults(run=run_compare)


# -- report -------------------------------------------------------------------------------

#: The format an output file's extension names, when --format does not say.
_REPORT_SUFFIXES = {".json": "json", ".csv": "csv"}
_RESULT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _format_for(args: argparse.Namespace, suffixes: dict[str, str], default: str) -> str:
    """--format, else the one -o FILE's extension names (results.csv: csv), else ``default``:
    a file named .csv holds CSV, as INPUT files are read by their extension."""
    if args.format is not None:
        return str(args.format)
    if args.output is None:
        return default
    return suffixes.get(Path(args.output).suffix.lower(), default)


def run_report(args: argparse.Namespace) -> int:
    from batchyard.report import build_report, report_path, write_csv

    fmt = "json" if args.json else _format_for(args, _REPORT_SUFFIXES, "text")
    with open_yard(args, create=False) as yard:
        report = build_report(yard.batch(args.batch), max_failed=args.max_failed)
    document = report.as_dict()
    if not args.no_save:
        saved = report_path(db_url(args), report.status.id)
        with _output(str(saved)) as out:
            out.write(_json_bytes(document))
        print(f"report saved to {saved}", file=sys.stderr)
    if fmt == "json":
        _emit(args.output, lambda out: out.write(_json_bytes(document)))
    elif fmt == "csv":
        _emit(args.output, lambda out: write_csv(document, out))
    else:
        _emit(args.output, lambda out: out.write(f"{report}\n".encode()))
    return 0


def _json_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n"


# -- results ------------------------------------------------------------------------------


def run_results(args: argparse.Namespace) -> int:
    from batchyard.errors import ConfigError
    from batchyard.exports import check_format, write_results

    try:
        fmt = check_format(_format_for(args, _RESULT_SUFFIXES, "jsonl"))
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if fmt == "parquet" and args.output is None and sys.stdout.isatty():
        raise CommandError("Parquet is binary: write it to a file with -o FILE (or a pipe)")
    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        items = batch.items(args.state) if args.state else batch.results()
        written: list[int] = []
        _emit(args.output, lambda out: written.append(write_results(items, fmt, out)))
    if args.output:
        print(f"wrote {written[0]:,} items to {args.output}", file=sys.stderr)
    return 0


# -- compare ------------------------------------------------------------------------------


def run_compare(args: argparse.Namespace) -> int:
    from batchyard.report import compare

    with open_yard(args, create=False) as yard:
        ids = [args.first, *args.others]
        if not args.others:  # a re-run beside the batch it re-ran, that one first
            rerun_of = yard.batch(args.first).status().rerun_of
            if rerun_of is None:
                raise CommandError(
                    f"{args.first} is not a re-run: name the batches to compare it with"
                )
            ids = [rerun_of, args.first]
        _, view = compare([yard.batch(batch_id) for batch_id in ids])
    if args.json:
        print_json(view)
    else:
        console().print(render_comparison(view))
        for matrix in view["outcomes"]:
            console().print(render_outcomes(matrix))
    return 0


def render_comparison(view: dict[str, Any]) -> Table:
    """A table with a column per batch and a row per figure."""
    from rich.table import Table

    batches = view["batches"]
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("")
    for batch in batches:
        table.add_column(batch["id"], justify="right")
    for label, cell in _comparison_rows(view["metrics"], batches):
        table.add_row(label, *(cell(batch) for batch in batches))
    return table


def render_outcomes(matrix: dict[str, Any]) -> Group:
    """The items two batches share, counted by their state in each: a row per state in the
    first, a column per state in the second."""
    from rich.console import Group
    from rich.table import Table

    from batchyard.report import outcome_grid

    first, second = matrix["first"], matrix["second"]
    if not matrix["shared"]:
        return Group("", f"items in both {first} and {second}: none (no key in common)")
    columns, rows = outcome_grid(matrix)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("")
    for state in columns:
        table.add_column(state, justify="right")
    for state, counts in rows:
        table.add_row(state, *(f"{n:,}" for n in counts))
    return Group(
        "",
        f"items in both {first} and {second} ({matrix['shared']:,}):",
        f"a row per state in {first}, a column per state in {second}",
        table,
    )


def _comparison_rows(
    metrics: list[str], batches: list[dict[str, Any]]
) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    def count(state: str) -> Callable[[dict[str, Any]], str]:
        return lambda b: f"{b['counts'][state]:,}"

    def seconds(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda b: format_duration(b["durations"][key])

    def metric(name: str) -> Callable[[dict[str, Any]], str]:
        def cell(b: dict[str, Any]) -> str:
            stats = b["metrics"].get(name)
            return "-" if stats is None else f"{stats['mean']:.4g} ({stats['count']:,})"

        return cell

    links = [
        (label, lambda b, key=key: b[key] or "-")
        for label, key in (("template", "template"), ("re-run of", "rerun_of"))
        if any(b[key] for b in batches)
    ]
    return [
        ("name", lambda b: b["name"] or "-"),
        ("task", lambda b: b["task"]),
        *links,
        ("state", lambda b: b["state"]),
        ("items", count("total")),
        *((state, count(state)) for state in ("succeeded", "failed", "cancelled")),
        ("success rate", lambda b: percent(b["success_rate"])),
        ("elapsed", lambda b: format_duration(b["elapsed"])),
        ("throughput", lambda b: f"{b['throughput']:,.2f}/s"),
        *((f"duration {key}", seconds(key)) for key in ("mean", "p50", "p95", "max")),
        ("retried", lambda b: f"{b['attempts']['retried']:,}"),
        ("tokens in", lambda b: f"{b['usage']['tokens_in']:,}"),
        ("tokens out", lambda b: f"{b['usage']['tokens_out']:,}"),
        ("cost", lambda b: cost_text(b["usage"]["cost"], b["usage"]["cost_note"])),
        *((f"{name} (mean)", metric(name)) for name in metrics),
    ]


# -- output -------------------------------------------------------------------------------


def _emit(path: str | None, write: Callable[[IO[bytes]], object]) -> None:
    if path is None:
        sys.stdout.flush()
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    with _output(path) as out:
        write(out)


@contextmanager
def _output(path: str) -> Iterator[IO[bytes]]:
    """A file written whole or not at all: into a temporary name, renamed when done."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "wb") as out:
            yield out
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
