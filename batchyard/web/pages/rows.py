"""A dataset's rows as the pages show them: those the conditions pick (one a line:
``employees>=100``), sorted, a keyset page at a time, each cell cut short. The dataset page
and the new-batch page's dataset source both draw them with ``templates/_rows.html``."""

from __future__ import annotations

from dataclasses import dataclass

from batchyard.records import Dataset, RecordPage
from batchyard.web.pages import render
from batchyard.web.problems import Problem
from batchyard.yard import Yard

#: The page sizes offered (the first is the default).
PAGE_SIZES = (25, 50, 100)
#: The longest value a cell shows (the row whole is in the dataset).
CELL = 80


def conditions(text: str) -> list[str]:
    """The conditions of a text box, one a line (blank lines left out)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def cell(value: object) -> str:
    text = value if isinstance(value, str) else render.pretty(value).replace("\n", " ")
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def check_limit(limit: int) -> None:
    """A 422 for a page size the pages do not offer."""
    if limit not in PAGE_SIZES:
        raise Problem(422, f"limit: one of {', '.join(map(str, PAGE_SIZES))}, not {limit}")


@dataclass(frozen=True, slots=True)
class Rows:
    """One page of a dataset's rows with the filter that picked them (as typed)."""

    ds: Dataset
    page: RecordPage
    cells: list[list[str]]
    where: str
    sort: str
    limit: int
    cursor: str | None

    @property
    def query(self) -> dict[str, str | int]:
        """The filter as URL parameters (the page's own cursor left out)."""
        given = (("where", self.where), ("sort", self.sort), ("limit", self.limit))
        return {k: v for k, v in given if v}


def read(
    yard: Yard, dataset: Dataset, where: str, sort: str, limit: int, cursor: str | None
) -> Rows:
    """The page of ``dataset``'s rows the filter picks after ``cursor``. Raises InputError
    for a condition or a sort the dataset cannot answer, a bad cursor."""
    page = yard.datasets.rows(
        dataset.name, conditions(where), sort=sort or None, limit=limit, cursor=cursor
    )
    cells = [[cell(row.data.get(f)) for f in dataset.field_names] for row in page.rows]
    return Rows(dataset, page, cells, where, sort, limit, cursor)
