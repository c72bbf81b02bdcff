"""The table the benchmarks print: a row per figure with what it is held to and the ratio.

The benchmarks import it as ``bench.table``: the editable install puts the repository root on
the path (as it does for ``tests``), so ``.venv/bin/python bench/core.py`` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = ("figure", "value", "baseline", "ratio")


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def info(self, figure: str, value: str, note: str = "-") -> None:
        """A figure held to nothing."""
        self.rows.append(Row(figure, value, note))

    def print(self) -> None:
        rows = [Row("figure", "measured", "baseline/target", "ratio"), *self.rows]
        widths = [max(len(getattr(r, col)) for r in rows) for col in COLUMNS]
        for n, row in enumerate(rows):
            cells = [getattr(row, col).ljust(w) for col, w in zip(COLUMNS, widths, strict=True)]
            print(" | ".join(cells).rstrip())
            if n == 0:
                print("-|-".join("-" * w for w in widths))


def mark(ok: bool) -> str:
    """The verdict beside a ratio to a target."""
    return "ok" if ok else "MISS"


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"
