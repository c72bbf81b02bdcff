"""``batchyard item ID KEY``: one item, whole: its input, result, error, usage, metrics and
every attempt with its log."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    add_json,
    format_duration,
    open_yard,
    print_json,
    when,
    wrap,
)

if TYPE_CHECKING:
    from batchyard.models import Item

ITEM_JSON = """\
--json prints the item: {"batch_id", "key", "position", "state", "payload" (its input),
  "result", "error" (the last error, in full), "error_type", "attempts" (that ran),
  "usage": {"tokens_in", "tokens_out", "cost", "tokens_cached", "tokens_reasoning",
  "calls", "cache_hits", "saved_cost"}, "metrics", "progress", "message",
  "started_at", "finished_at" (of the latest attempt; unix seconds or null), "duration"
  (s or null), "seq" (its last change in the feed), "worker" (that holds it or ran its
  latest attempt, or null), "runs": [one per attempt, oldest first: {"attempt", "worker",
  "started_at", "finished_at", "duration" (null where not recorded), "error", "logs":
  [{"at", "kind", "message"}]}]}"""


def register(commands: Any) -> None:
    item = commands.add_parser(
        "item",
        help="one item, whole: input, result, error, attempts, usage, metrics, logs",
        description=wrap(
            "Show one item whole: its input payload and result (as indented JSON, however "
            "large), its state and last error in full, usage and metrics, and every attempt "
            "with its log lines, progress messages and error. The latest attempt has its "
            "start, end, duration and worker; an earlier one that failed (or whose worker "
            "was lost) has its start, end and worker too. An unknown KEY is an error (exit "
            "status 1)."
        ),
        epilog=ITEM_JSON,
        formatter_class=RAW,
    )
    item.add_argument("batch", metavar="ID", help="the batch id")
    item.add_argument("key", metavar="KEY", help="the item's key")
    add_json(item)
    item.set_defaults(run=run_item)


def run_item(args: argparse.Namespace) -> int:
    from batchyard.views import attempt_runs, item_view

    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch)
        item = batch.item(args.key)
        lines = batch.logs(args.key)
    if args.json:
        print_json(item_view(item, lines))
    else:
        sys.stdout.write(render_item(item, attempt_runs(item, lines)))
    return 0


def render_item(item: Item, runs: list[dict[str, Any]]) -> str:
    """The text view: a labelled header, then the payload, the result and the attempts."""
    attempts = f"{item.runs} attempt{'s' * (item.runs != 1)}"
    out = [
        f"item      {item.key}  (position {item.position} of {item.batch_id})",
        f"state     {item.state.value}  after {attempts}"
        + (f"  progress {item.progress:.0%}" if item.progress is not None else "")
        + (f"  {item.message}" if item.message else ""),
        f"times     started {when(item.started_at)}  finished {when(item.finished_at)}  "
        f"(duration {format_duration(item.duration)})",
    ]
    from batchyard.models import usage_cost_text

    usage = item.usage
    if not usage.is_zero:
        out.append(
            f"usage     {usage.tokens_in:,} tokens in  {usage.tokens_out:,} out  "
            f"{usage_cost_text(usage)}"
            + (f"  {usage.calls:,} calls" if usage.calls else "")
            + (f"  {usage.cache_hits:,} cache hits" if usage.cache_hits else "")
        )
    if item.metrics:
        out.append(
            "metrics   " + "  ".join(f"{name} {value:g}" for name, value in item.metrics.items())
        )
    if item.error is not None:
        out += ["", "error", _indent(item.error)]
    out += ["", "payload", _indent(_pretty(item.payload))]
    out += ["", "result", _indent("-" if item.result is None else _pretty(item.result))]
    out += ["", "attempts"]
    out += [line for run in runs for line in _run_lines(run)] or ["  none yet"]
    return "\n".join(out) + "\n"


def _run_lines(run: dict[str, Any]) -> list[str]:
    span = f"started {when(run['started_at'])}  " if run["started_at"] is not None else ""
    if run["finished_at"] is not None:
        span += f"ended {when(run['finished_at'])}"
    if run["duration"] is not None:
        span += f"  ({format_duration(run['duration'])})"
    worker = f"  on {run['worker']}" if run.get("worker") else ""
    lines = [f"  #{run['attempt']}  {span}{worker}".rstrip()]
    shown = ""
    for log in run["logs"]:
        if log["kind"] == "error" and _last_line(shown) == _last_line(log["message"]):
            continue  # the traceback just printed ends with this very error
        shown = log["message"]
        head = f"      {when(log['at'])}  {log['kind']:<9} "
        text = log["message"].splitlines() or [""]
        lines.append(head + text[0])
        lines += [" " * len(head) + rest for rest in text[1:]]
    return lines


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _pretty(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
