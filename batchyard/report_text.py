"""A report as text: what ``batchyard report`` prints, ``str(batch.report())`` is, and the
ending of ``batchyard run`` and the demo (the report, then the commands to look further).

Plain lines, no colour or cursor codes, so the same text reads well on a terminal, in a
pipe, in a file and in a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchyard.models import cost_text

if TYPE_CHECKING:
    from batchyard.report import Report


def format_duration(seconds: float | None) -> str:
    """``85 ms``, ``4.8 s``, ``2:05`` or ``1:02:05``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def render(report: Report) -> str:
    """The text report: one labelled line per figure, then metrics and failed items."""
    rows = _rows(report)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


def ending(report: Report, cli: str = "batchyard") -> str:
    """How ``batchyard run`` and the demo end: the report, then the commands (``cli``, e.g.
    ``batchyard --db URL``) that look further into the batch."""
    status = report.status
    lines = [render(report), ""]
    if not status.is_finished:
        lines.append("stopped early: the unfinished items wait in the store for a worker")
    lines.append(f"look further: {cli} report {status.id}")
    pad = " " * len("look further: ")
    if status.counts.failed:
        lines.append(f"{pad}{cli} items {status.id} --state failed")
        lines.append(f"{pad}{cli} errors {status.id}")
    if not status.is_finished:
        lines.append(f"{pad}{cli} worker --batch {status.id}")
    lines.append(f"{pad}{cli} results {status.id} -o results.jsonl")
    return "\n".join(lines)


def _rows(report: Report) -> list[tuple[str, str]]:
    data = report.as_dict()
    counts, usage, status = data["counts"], data["usage"], report.status
    unfinished = counts["total"] - counts["finished"]
    rows = [
        ("batch", status.id + (f"  {status.name!r}" if status.name else "")),
        ("task", status.task),
        *([("template", str(status.template))] if status.template else []),
        *([("re-run of", status.rerun_of)] if status.rerun_of else []),
        (
            "items",
            f"{counts['total']:,}: {counts['succeeded']:,} succeeded, {counts['failed']:,} "
            f"failed, {counts['cancelled']:,} cancelled"
            + (f", {unfinished:,} unfinished" if status.counts.remaining else "")
            + f"  ({status.state.value})",
        ),
        ("success", percent(data["success_rate"])),
        ("elapsed", f"{format_duration(data['elapsed'])}  ({data['throughput']:,.2f} items/s)"),
        ("duration", _durations(data["durations"])),
        ("attempts", _attempts(data["attempts"])),
    ]
    again = report.attempts.again
    if again.total:
        rows.append(("ran again", again.describe()))
    rows.append(("errors", _errors(data["errors"], again.error)))
    rows.extend(_clusters(data["error_clusters"]))
    rows.append(("usage", _usage(usage)))
    if usage["calls"] or usage["cache_hits"]:
        rows.append(("calls", _calls(usage)))
    rows.extend((f"metric {name}", _metric(stats)) for name, stats in data["metrics"].items())
    rows.extend(_failed(data["failed"]))
    return rows


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


def _clusters(clusters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A line per top error cluster: its id, counts and signature."""
    rows = []
    for n, c in enumerate(clusters):
        items, attempts = c["items"], c["attempts"]
        counts = f"{items:,} item{'s' * (items != 1)} ({c['share']:.0%}), {attempts:,} "
        counts += f"attempt{'s' * (attempts != 1)}"
        rows.append(("clusters" if n == 0 else "", f"{c['id']}  {counts}  {c['text']}"))
    return rows


def _usage(u: dict[str, Any]) -> str:
    cost = cost_text(u["cost"], u["cost_note"])
    text = f"{u['tokens_in']:,} tokens in  {u['tokens_out']:,} out  {cost}"
    per = u["per_item"]
    if per:
        text += f"   per item {per['tokens_in']:,.1f} in  {per['tokens_out']:,.1f} out"
        if per["cost"] is not None:
            text += f"  ${per['cost']:,.6f}"
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


def _failed(failed: dict[str, Any]) -> list[tuple[str, str]]:
    count = failed["count"]
    if not count:  # the items line and "errors none" say so already
        return []
    rows = [("failed", f"{count:,} item{'' if count == 1 else 's'}:")]
    for item in failed["items"]:
        rows.append(("", f"{item['key']}: {item['error'] or item['error_type'] or '?'}"))
    if failed["more"]:
        rows.append(("", f"... and {failed['more']:,} more (batchyard results ID --state failed)"))
    return rows
