"""Generation batches through the Python API: ``Yard.submit(task, count=N)``."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard import Yard
from batchyard.errors import ConfigError


def test_a_count_makes_numbered_items(yard: Yard) -> None:
    batch = yard.submit("json:dumps", count=3, params={"topic": "owls"})
    assert [(i.key, i.position, i.payload) for i in batch.items()] == [
        ("0", 1, {"n": 0}),
        ("1", 2, {"n": 1}),
        ("2", 3, {"n": 2}),
    ]
    assert batch.status().params == {"topic": "owls"}


@pytest.mark.parametrize(
    ("items", "count", "message"),
    [
        ([{"a": 1}], 3, "give items or a count, not both"),
        (None, 0, "count must be a whole number of at least 1, not 0"),
        (None, -2, "at least 1, not -2"),
        (None, True, "at least 1, not True"),
        (None, 2.5, "at least 1, not 2.5"),
        (None, None, "submit needs items"),
    ],
)
def test_bad_counts_are_refused(yard: Yard, items: Any, count: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        yard.submit("json:dumps", items, count=count)
    assert yard.batches().rows == []
