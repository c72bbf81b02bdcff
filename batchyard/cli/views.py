"""A batch's status for display: ``status_view`` lives in ``batchyard.progress`` (webhooks
send it too); the CLI's modules import it from here."""

from __future__ import annotations

from batchyard.progress import status_view

__all__ = ["status_view"]
