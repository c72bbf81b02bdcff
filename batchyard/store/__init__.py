"""Stores: where batches live. ``open_store`` picks one by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from batchyard.errors import ConfigError
from batchyard.store.base import Store
from batchyard.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "open_store", "sqlite_path"]


_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:///path`` URL (or a bare path) names; None for other URLs."""
    url = url.split("?", 1)[0]
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if "://" in url:
        return None
    return url


def _synchronous(url: str) -> str:
    query = parse_qs(url.partition("?")[2], keep_blank_values=True)
    synchronous = "NORMAL"
    for name, values in query.items():
        if name != "synchronous":
            raise ConfigError(f"store URL {url!r}: unknown option {name!r} (known: synchronous)")
        value = values[-1].upper()
        if value not in _SYNCHRONOUS:
            raise ConfigError(
                f"store URL {url!r}: synchronous must be one of {', '.join(_SYNCHRONOUS)}"
            )
        synchronous = value
    return synchronous


def open_store(url: str | Path) -> Store:
    """Open the store a URL names: ``sqlite:///file.db`` (relative), ``sqlite:////abs.db``,
    or a bare file path. ``?synchronous=FULL`` makes every commit survive a power cut
    (the default, NORMAL, survives any process crash). Raises ConfigError otherwise."""
    text = str(url)
    path = sqlite_path(text)
    if path is not None:
        if not path or path == ":memory:":
            raise ConfigError(
                f"store URL {text!r}: give SQLite a file path (workers in other threads and "
                "processes must share it), e.g. sqlite:///batchyard.db"
            )
        return SqliteStore(path, synchronous=_synchronous(text))
    scheme = text.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        raise ConfigError("the PostgreSQL store is not part of this version yet")
    raise ConfigError(f"store URL {text!r}: unknown scheme {scheme!r}; use sqlite:///path.db")
