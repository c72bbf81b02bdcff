"""Commands that run workers and show live progress: run, worker, monitor, demo."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Adds run, worker, monitor and demo."""
