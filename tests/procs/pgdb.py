"""Throwaway PostgreSQL databases for tests: the schema is applied once to a template
database, and each test clones it with ``CREATE DATABASE ... TEMPLATE`` (fast: a file copy)
and drops its clone afterwards.

The server comes from ``BATCHYARD_TEST_PG`` (default: postgres on 127.0.0.1:5432 with trust
auth, as .ci/run sets it up). When it cannot be reached, tests skip loudly, unless ``CI`` is
set: then they fail, so CI never passes without PostgreSQL.
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:  # psycopg is optional: imported where used, so tests can skip without it
    import psycopg

SERVER = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_of(database: str, server: str = SERVER) -> str:
    """The server URL pointed at another database."""
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _admin() -> psycopg.Connection[tuple[Any, ...]]:
    import psycopg

    return psycopg.connect(SERVER, autocommit=True, connect_timeout=3)


def unreachable() -> str | None:
    """Why the test server cannot be used, or None when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'batchyard[postgres]')"
    try:
        _admin().close()
    except Exception as exc:
        return f"PostgreSQL at {SERVER} is unreachable: {exc}"
    return None


def require_server() -> None:
    """Skip (loudly) without a server; fail instead under CI."""
    why = unreachable()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so this fails instead of skipping)")
    pytest.skip(f"SKIPPED POSTGRES: {why}")


class Databases:
    """A template database with the batchyard schema, and clones of it.

    Making a clone and dropping one each take a few tenths of a second of the server's disk
    time, more than most tests take. So the next clone is made while a test runs, and a used
    one is dropped while the next runs (on two background threads): each test still gets a
    clone nobody touched, and ``close`` waits for every drop.
    """

    def __init__(self) -> None:
        self.template: str | None = None
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgdb")
        self._next: Future[str] | None = None
        self._drops: list[tuple[str, Future[None]]] = []

    def _ensure_template(self) -> str:
        with self._lock:
            if self.template is None:
                from batchyard.store.postgres import PostgresStore

                name = f"batchyard_tpl_{uuid.uuid4().hex[:12]}"
                with _admin() as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                PostgresStore(url_of(name)).close()
                self.template = name
            return self.template

    def _clone(self, template: str) -> str:
        name = f"batchyard_t_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        return url_of(name)

    def create(self) -> str:
        """A fresh database with the schema applied; returns its URL."""
        template = self._ensure_template()
        with self._lock:
            ready, self._next = self._next, self._background.submit(self._clone, template)
        if ready is not None:
            try:
                return ready.result()
            except Exception:  # e.g. the server restarted meanwhile: make one now
                pass
        return self._clone(template)

    def drop(self, url: str) -> None:
        """Drop a clone (in the background; ``close`` waits for it)."""
        with self._lock:
            self._drops.append((url, self._background.submit(_drop, url)))

    def close(self) -> None:
        with self._lock:
            ready, self._next = self._next, None
            drops, self._drops = self._drops, []
        if ready is not None and ready.exception() is None:  # else it never was made
            drops.append((ready.result(), self._background.submit(_drop, ready.result())))
        for url, dropped in drops:
            if dropped.exception() is not None:
                _drop(url)  # once more, now; this time a failure shows
        self._background.shutdown()
        if self.template is not None:
            _drop(url_of(self.template))
            self.template = None


def _drop(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
