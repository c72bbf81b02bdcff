from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard import Yard


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    """A Yard on a fresh SQLite file."""
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as y:
        yield y


#: Worker settings that make tests quick: short polls, prompt control checks.
FAST = {"poll_interval": 0.02, "control_interval": 0.02, "flush_interval": 0.005}
