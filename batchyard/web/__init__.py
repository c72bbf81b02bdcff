"""``batchyard serve``: the HTTP API over a Yard (REST under ``/api/v1``, live streams,
tokens and owners, metrics). Thin: it parses, authorises, calls the core and streams."""

from __future__ import annotations

from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
