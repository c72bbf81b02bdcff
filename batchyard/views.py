"""A batch's status as the CLI's `--json` and the server show it: with elapsed time, throughput
and ETA (``batchyard.progress``).

``status_view`` adds to ``BatchStatus.as_dict()`` the keys of ``batchyard status --json``;
``item_view`` is ``batchyard item --json``: an item with each of its attempts;
``template_view`` is ``batchyard template show --json``.
"""

from __future__ import annotations

from typing import Any

from batchyard.models import BatchStatus, Finishes, Item, LogLine
from batchyard.progress import eta_range, history, is_running, pace, stall
from batchyard.templates import Template, VersionUsage


def status_view(
    status: BatchStatus, now: float, finishes: Finishes | None = None
) -> dict[str, Any]:
    """``status.as_dict()`` plus ``elapsed`` (s), ``throughput`` (items/s since the first
    claim) and ``eta`` (s to finish at that pace, or at the rate limit the batch waits on;
    None when unknown or finished); ``waiting_on`` gains ``seconds`` (until the last
    waiting item should be admitted). With ``finishes`` (``Store.finishes``), also
    ``eta_range`` ([low, high] s, once one means something: ``progress.eta_range``),
    ``stalled`` and ``quiet`` (s since an item last started or ended; ``progress.stall``);
    without, they are None, but ``stalled`` is False for a batch not running (it cannot
    stall: so a webhook's body about an end or a pause says what ``status --json`` says)."""
    view = status.as_dict()
    going = pace(status, now)
    eta = going.eta or None  # status --json has said null, not 0, once nothing is left
    view.update(elapsed=round(going.elapsed, 3), throughput=round(going.throughput, 3), eta=eta)
    if status.waiting_on is not None:
        seconds = round(status.waiting_on.seconds(now), 3)
        view["waiting_on"] = {**status.waiting_on.as_dict(), "seconds": seconds}
    # Unread, a running batch's are not known (None); any other batch has no range and
    # cannot stall, whatever its items say.
    view.update(eta_range=None, stalled=None if is_running(status) else False, quiet=None)
    if finishes is not None:
        span = eta_range(status, history(status, finishes, now), now)
        quiet = stall(status, finishes, now)
        view.update(
            eta_range=None if span is None else [round(span[0], 1), round(span[1], 1)],
            stalled=quiet is not None and quiet.is_stalled,
            quiet=None if quiet is None else round(quiet.quiet, 1),
        )
    return view


def attempt_runs(item: Item, lines: list[LogLine]) -> list[dict[str, Any]]:
    """One entry per attempt, oldest first, with its log lines and error. Only the latest
    attempt's start and end are kept on the item; an earlier attempt ends at its error."""
    by_attempt: dict[int, list[LogLine]] = {}
    for line in lines:
        by_attempt.setdefault(line.attempt, []).append(line)
    runs = []
    for attempt in _ran(item, set(by_attempt)):
        logged = by_attempt.get(attempt, [])
        errors = [line for line in logged if line.kind == "error"]
        started = [line for line in logged if line.kind == "started"]
        latest = attempt == item.attempts
        start = item.started_at if latest else (started[0].at if started else None)
        end = item.finished_at if latest else (errors[-1].at if errors else None)
        worker = started[0].message.removeprefix("on worker ") if started else None
        runs.append(
            {
                "attempt": attempt,
                "worker": item.worker if latest and item.worker else worker,
                "started_at": start,
                "finished_at": end,
                "duration": item.duration if latest else _span(start, end),
                "error": errors[-1].message if errors else None,
                "logs": [
                    {"at": line.at, "kind": line.kind, "message": line.message}
                    for line in logged
                    if line.kind != "started"
                ],
            }
        )
    return runs


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def _ran(item: Item, logged: set[int]) -> list[int]:
    """The lease numbers of the attempts that ran, as far as the log tells: those that
    logged, the latest, and as many earlier ones as ``item.runs`` says there were (a
    lease given back before its task was called left no line and is no attempt)."""
    numbers = set(logged) | ({item.attempts} if item.runs else set())
    for attempt in range(1, item.attempts + 1):
        if len(numbers) >= item.runs:
            break
        numbers.add(attempt)
    return sorted(numbers)


def item_view(item: Item, lines: list[LogLine]) -> dict[str, Any]:
    """``batchyard item --json``: the item, with ``attempts`` (how many ran) and ``runs``."""
    return {**item.as_dict(), "attempts": item.runs, "runs": attempt_runs(item, lines)}


def template_view(
    shown: Template, versions: list[Template], usage: list[VersionUsage]
) -> dict[str, Any]:
    """``shown.as_dict()`` plus ``versions``: every version, each with the ``usage`` of
    the batches that ran with it (None when none did)."""
    used = {u.version: u.as_dict() for u in usage}
    return {
        **shown.as_dict(),
        "versions": [{**v.as_dict(), "usage": used.get(v.version)} for v in versions],
    }
