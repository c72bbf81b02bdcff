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

if TYPE_CHECKING:
    from rich.table import Table

    from batchyard.report import Report

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
        "--format", choices=("text", "json", "csv"), default="text", help="default: text"
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
        "--format", choices=("jsonl", "csv", "parquet"), default="jsonl", help="default: jsonl"
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
        help="two or more batches side by side",
        description="Compare batches side by side: counts, success rate, durations, "
        "throughput, tokens, cost and task metrics.",
    )
    compare.add_argument("first", metavar="ID", help="a batch id")
    compare.add_argument("others", metavar="ID", nargs="+", help="more batch ids")
    add_json(compare)
    compare.set_defaults(run=run_compare)


# -- report -------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    from batchyard.report import build_report, report_path, write_csv

    fmt = "json" if args.json else args.format
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
        _emit(args.output, lambda out: _print_rich(render_report(report), out))
    return 0


def _json_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n"


def render_report(report: Report) -> Table:
    """The text report: one labelled line per figure, then metrics and failed items."""
    from rich.table import Table

    data = report.as_dict()
    counts, usage = data["counts"], data["usage"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    status = report.status
    table.add_row("batch", status.id + (f"  {status.name!r}" if status.name else ""))
    table.add_row("task", status.task)
    table.add_row(
        "items",
        f"{counts['total']:,}: {counts['succeeded']:,} succeeded, {counts['failed']:,} "
        f"failed, {counts['cancelled']:,} cancelled"
        + (
            f", {counts['total'] - counts['finished']:,} unfinished"
            if status.counts.remaining
            else ""
        )
        + f"  ({status.state.value})",
    )
    table.add_row("success", _percent(data["success_rate"]))
    table.add_row(
        "elapsed",
        f"{format_duration(data['elapsed'])}  ({data['throughput']:,.2f} items/s)",
    )
    table.add_row("duration", _durations(data["durations"]))
    table.add_row("attempts", _attempts(data["attempts"]))
    if report.attempts.again.total:
        table.add_row("ran again", report.attempts.again.describe())
    table.add_row("errors", _errors(data["errors"], report.attempts.again.error))
    table.add_row("usage", _usage(usage))
    if usage["calls"] or usage["cache_hits"]:
        table.add_row("calls", _calls(usage))
    for name, stats in data["metrics"].items():
        table.add_row(f"metric {name}", _metric(stats))
    _add_failed(table, data["failed"])
    return table


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _durations(d: dict[str, Any]) -> str:
    if not d["count"]:
        return "-"
    return (
        "  ".join(f"{label} {format_duration(d[label])}" for label in ("mean", "p50", "p95", "max"))
        + f"  (last attempt of {d['count']:,} items)"
    )


def _attempts(a: dict[str, Any]) -> str:
    mean = "-" if a["mean"] is None else f"{a['mean']:.2f}"
    return f"{a['total']:,} in all, {mean} per item, {a['retried']:,} items ran again"


def _errors(errors: dict[str, int], retried_after_error: int) -> str:
    """The error classes that ended items; when none did, whether errors were retried."""
    if errors:
        return "  ".join(f"{k} {v:,}" for k, v in errors.items())
    if retried_after_error:
        return f"none at the end ({retried_after_error:,} retried after an error)"
    return "none"


def _usage(u: dict[str, Any]) -> str:
    text = f"{u['tokens_in']:,} tokens in  {u['tokens_out']:,} out  ${u['cost']:,.4f}"
    per = u["per_item"]
    if per:
        text += (
            f"   per item {per['tokens_in']:,.1f} in  {per['tokens_out']:,.1f} out  "
            f"${per['cost']:,.6f}"
        )
    return text


def _calls(u: dict[str, Any]) -> str:
    text = f"{u['calls']:,} calls to the provider"
    for key, label in (
        ("tokens_cached", "prompt tokens cached"),
        ("tokens_reasoning", "reasoning"),
    ):
        if u[key]:
            text += f", {u[key]:,} {label}"
    if u["cache_hits"]:
        text += f"; {u['cache_hits']:,} answers reused from the cache saved ${u['saved_cost']:,.4f}"
    if u["budget"] is not None:
        text += f"; budget ${u['budget']:,.2f}"
    return text


def _metric(s: dict[str, Any]) -> str:
    return (
        f"mean {s['mean']:.4g}  min {s['min']:.4g}  max {s['max']:.4g}  "
        f"sum {s['sum']:.6g}  ({s['count']:,} items)"
    )


def _add_failed(table: Table, failed: dict[str, Any]) -> None:
    count = failed["count"]
    table.add_row("failed", f"{count:,} item{'' if count == 1 else 's'}" + (":" if count else ""))
    for item in failed["items"]:
        table.add_row("", f"{item['key']}: {item['error'] or item['error_type'] or '?'}")
    if failed["more"]:
        table.add_row("", f"... and {failed['more']:,} more (batchyard results ID --state failed)")


# -- results ------------------------------------------------------------------------------


def run_results(args: argparse.Namespace) -> int:
    from batchyard.errors import ConfigError
    from batchyard.exports import check_format, write_results

    try:
        fmt = check_format(args.format)
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
    from batchyard.report import build_report, comparison

    with open_yard(args, create=False) as yard:
        reports = [
            build_report(yard.batch(batch_id), max_failed=0)
            for batch_id in [args.first, *args.others]
        ]
    view = comparison(reports)
    if args.json:
        print_json(view)
    else:
        console().print(render_comparison(view))
    return 0


def render_comparison(view: dict[str, Any]) -> Table:
    """A table with a column per batch and a row per figure."""
    from rich.table import Table

    batches = view["batches"]
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("")
    for batch in batches:
        table.add_column(batch["id"], justify="right")
    for label, cell in _comparison_rows(view["metrics"]):
        table.add_row(label, *(cell(batch) for batch in batches))
    return table


def _comparison_rows(metrics: list[str]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    def count(state: str) -> Callable[[dict[str, Any]], str]:
        return lambda b: f"{b['counts'][state]:,}"

    def seconds(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda b: format_duration(b["durations"][key])

    def metric(name: str) -> Callable[[dict[str, Any]], str]:
        def cell(b: dict[str, Any]) -> str:
            stats = b["metrics"].get(name)
            return "-" if stats is None else f"{stats['mean']:.4g} ({stats['count']:,})"

        return cell

    return [
        ("name", lambda b: b["name"] or "-"),
        ("task", lambda b: b["task"]),
        ("state", lambda b: b["state"]),
        ("items", count("total")),
        *((state, count(state)) for state in ("succeeded", "failed", "cancelled")),
        ("success rate", lambda b: _percent(b["success_rate"])),
        ("elapsed", lambda b: format_duration(b["elapsed"])),
        ("throughput", lambda b: f"{b['throughput']:,.2f}/s"),
        *((f"duration {key}", seconds(key)) for key in ("mean", "p50", "p95", "max")),
        ("retried", lambda b: f"{b['attempts']['retried']:,}"),
        ("tokens in", lambda b: f"{b['usage']['tokens_in']:,}"),
        ("tokens out", lambda b: f"{b['usage']['tokens_out']:,}"),
        ("cost", lambda b: f"${b['usage']['cost']:,.4f}"),
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


def _print_rich(renderable: Any, out: IO[bytes]) -> None:
    from rich.console import Console

    if out is sys.stdout.buffer:
        console().print(renderable)
        return
    # A file gets plain text without the padding Rich adds to the ends of table rows.
    plain = Console(width=120, no_color=True, highlight=False, soft_wrap=False)
    with plain.capture() as captured:
        plain.print(renderable)
    lines = (line.rstrip() for line in captured.get().splitlines())
    out.write(("\n".join(lines) + "\n").encode())
