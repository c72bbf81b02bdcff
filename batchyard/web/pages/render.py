"""The dashboard's templates: one autoescaping Jinja2 environment over ``web/templates``, the
filters that turn figures into words (times, durations, costs, bar segments), and
``page``/``fragment`` answers. Nothing user-supplied is ever marked safe."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

import batchyard
from batchyard.models import BatchStatus, Counts
from batchyard.web.items import ERROR_CUT
from batchyard.web.pages.guard import PageCaller

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: The segments of a progress bar, in the order they are drawn.
SEGMENTS = ("succeeded", "failed", "cancelled", "running", "waiting", "retry_wait", "pending")


def when(at: float | None) -> dict[str, str] | None:
    """A time as ISO 8601 (for ``<time datetime>``) and as text in UTC."""
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, UTC)
    return {"iso": moment.isoformat(timespec="seconds"), "text": moment.strftime("%Y-%m-%d %H:%M")}


def duration(seconds: float | None) -> str:
    """``3.2 s``, ``4 min 05 s``, ``2 h 03 min``; an empty string for none."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ran_for(status: BatchStatus, now: float | None = None) -> float | None:
    """How long a batch has run: from its first claim to its end (or to now)."""
    if status.started_at is None:
        return None
    end = status.finished_at or (now if now is not None else time.time())
    return max(0.0, end - status.started_at)


def segments(counts: Counts, width: float = 100.0) -> list[dict[str, Any]]:
    """The bar's segments: state, count, and x and width out of ``width`` (zero-width
    segments are left out)."""
    total = counts.total
    out: list[dict[str, Any]] = []
    x = 0.0
    for state in SEGMENTS:
        n = getattr(counts, state)
        if n == 0 or total == 0:
            continue
        share = width * n / total
        out.append({"state": state, "n": n, "x": round(x, 3), "width": round(share, 3)})
        x += share
    return out


def cut(error: str | None) -> str:
    """An error as an item listing shows it: cut to ``ERROR_CUT`` characters (as the API's)."""
    if error is None:
        return ""
    return error if len(error) <= ERROR_CUT else error[: ERROR_CUT - 1] + "…"


def path_part(value: str) -> str:
    """A value quoted for one part of a URL's path (``/`` too)."""
    return quote(value, safe="")


def sparkline(rates: list[float], width: float = 100.0, height: float = 20.0) -> str:
    """An SVG polyline's points for ``rates`` (oldest first), scaled to fill ``width`` by
    ``height`` with the highest at the top; an empty string for fewer than two."""
    if len(rates) < 2:
        return ""
    top = max(rates) or 1.0
    step = width / (len(rates) - 1)
    return " ".join(
        f"{n * step:.1f},{height - rate / top * (height - 1):.1f}" for n, rate in enumerate(rates)
    )


def pretty(value: Any) -> str:
    """JSON for people: indented, non-ASCII kept (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


#: Characters that reorder the text around them (``U+202E`` shows ``gnp.exe`` as
#: ``exe.png``): every value shows them as a visible code instead.
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible_text(value: Any) -> Any:
    """A value as every ``{{ }}`` shows it: a string with its direction controls made
    visible (``[U+202E]``); markup the templates made themselves, as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _BIDI.sub(lambda found: f"[U+{ord(found.group()):04X}]", value)
    return value


def _environment() -> Environment:
    env = Environment(
        finalize=visible_text,
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, duration=duration, pretty=pretty, cut=cut, part=path_part, num="{:,}".format
    )
    env.globals.update(
        segments=segments, ran_for=ran_for, version=batchyard.__version__, label=label
    )
    return env


def label(state: str) -> str:
    """A state's name for people (``retry_wait`` -> ``retry wait``)."""
    return state.replace("_", " ")


ENV = _environment()


def page(
    request: Request, name: str, who: PageCaller | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A whole page: ``name`` rendered with the caller (for the header and the CSRF meta
    tag) and ``context``."""
    html = ENV.get_template(name).render(request=request, who=who, **context)
    return HTMLResponse(html, status_code=status_code)


def fragment(name: str, **context: Any) -> HTMLResponse:
    """A region of a page on its own (what a live update swaps in)."""
    return HTMLResponse(ENV.get_template(name).render(**context))
