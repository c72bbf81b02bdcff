"""Stores: where batches live. ``open_store`` picks one by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode

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
    (the default, NORMAL, survives any process crash). ``postgresql://user@host/db``
    (or ``postgres://``) opens the PostgreSQL store; ``?pool_size=N`` bounds its pool.
    Raises ConfigError for anything else, StoreUnavailable when the server is unreachable."""
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
        return _postgres(text)
    raise ConfigError(
        f"store URL {text!r}: unknown scheme {scheme!r}; use sqlite:///path.db or "
        "postgresql://user@host/db"
    )


def _postgres(url: str) -> Store:
    """The PostgreSQL store, imported only now: SQLite users need no psycopg. A URL may
    carry ``pool_size=N`` (batchyard's; removed before the URL reaches libpq)."""
    base, _, query = url.partition("?")
    options = parse_qs(query, keep_blank_values=True)
    pool = options.pop("pool_size", [""])[-1]
    if pool and not (pool.isdigit() and int(pool) > 0):
        raise ConfigError(f"store URL: pool_size must be a positive whole number, not {pool!r}")
    pool_size = int(pool) if pool else None
    rest = urlencode([(name, value) for name, values in options.items() for value in values])
    try:
        from batchyard.store.postgres import PostgresStore  # optional: psycopg
    except ImportError as exc:
        raise ConfigError(
            f"the PostgreSQL store needs psycopg 3 and psycopg-pool ({exc.name} is missing): "
            "pip install 'batchyard[postgres]'"
        ) from exc
    target = f"{base}?{rest}" if rest else base
    if pool_size is None:
        return PostgresStore(target)
    return PostgresStore(target, pool_size=pool_size)
