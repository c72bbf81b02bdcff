"""The dashboard's static files: what the browser loads stays small (all of its JS and CSS,
htmx included, under 50 KB gzipped), the vendored scripts are the versions their README
names, and no template marks a value safe."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import batchyard.web
from batchyard.web.pages.render import ENV, sparkline

WEB = Path(batchyard.web.__file__).parent
STATIC = WEB / "static"
BUDGET = 50 * 1024


def test_the_dashboards_js_and_css_stay_under_50_kb_gzipped() -> None:
    files = sorted([*STATIC.rglob("*.js"), *STATIC.rglob("*.css")])
    assert {f.name for f in files} >= {"htmx.min.js", "htmx-ext-sse.min.js", "dashboard.js"}
    sizes = {f.name: len(gzip.compress(f.read_bytes(), 9)) for f in files}
    assert sum(sizes.values()) < BUDGET, sizes


def test_the_vendored_scripts_are_those_the_readme_names() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    for name in ("htmx.min.js", "htmx-ext-sse.min.js"):
        digest = hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest()
        assert f"`{name}`" in readme and digest in readme, name
    assert "htmx.org@2.0.11" in readme and "htmx-ext-sse@2.2.4" in readme


def test_no_template_marks_anything_safe_or_has_inline_script_or_style() -> None:
    for template in (WEB / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"\|\s*safe|Markup\(|autoescape false", text), template.name
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\shx-on", text), template.name


def test_direction_controls_in_any_value_show_as_codes_and_markup_is_escaped() -> None:
    template = ENV.from_string(
        '{% macro m(v) %}<b title="{{ v }}">{{ v }}</b>{% endmacro %}{{ x }} {{ m(x) }}'
    )
    shown = template.render(x="gnp\u202e.exe <i>")
    assert "\u202e" not in shown
    assert shown == (
        "gnp[U+202E].exe &lt;i&gt; "
        '<b title="gnp[U+202E].exe &lt;i&gt;">gnp[U+202E].exe &lt;i&gt;</b>'
    )


def test_a_sparkline_fills_its_box_with_the_highest_rate_at_the_top() -> None:
    assert sparkline([]) == "" and sparkline([3.0]) == ""
    assert sparkline([0.0, 2.0, 1.0]) == "0.0,20.0 50.0,1.0 100.0,10.5"
    assert sparkline([0.0, 0.0]) == "0.0,20.0 100.0,20.0"  # no pace yet: flat at the bottom
