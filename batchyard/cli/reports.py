"""Commands that summarise finished work: report, results, compare."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Adds report, results and compare."""
