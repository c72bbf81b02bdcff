"""LISTEN/NOTIFY for the PostgreSQL store: one thread per store on a connection of its own
(outside the pool) that calls every registered ``wake`` when a notification arrives.

A notification is a hint, never the truth: after a reconnect (notifications sent meanwhile
are gone) every ``wake`` is called once, and workers keep polling anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("batchyard.store.postgres")

#: How often the thread looks at its stop flag while no notification comes.
TICK = 0.5
#: Waits between reconnect attempts: doubling from the first to the last.
BACKOFF = (0.1, 5.0)


class Listener:
    """A thread that LISTENs on one channel and calls the registered callbacks."""

    def __init__(self, conninfo: str, channel: str, presence: int | None = None) -> None:
        """``presence``: an advisory lock key the listening connection holds (shared), so
        that writers can tell someone listens (see ``connection.FEED_PRESENCE``)."""
        self._conninfo = conninfo
        self._channel = channel
        self._presence = presence
        self._wakes: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="batchyard-listen", daemon=True)
        self._thread.start()

    def add(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Register ``wake``; returns the function that removes it."""
        with self._lock:
            token = self._next
            self._next += 1
            self._wakes[token] = wake

        def remove() -> None:
            with self._lock:
                self._wakes.pop(token, None)

        return remove

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TICK * 4)

    def _wake_all(self) -> None:
        with self._lock:
            wakes = list(self._wakes.values())
        for wake in wakes:
            try:
                wake()
            except Exception:
                log.exception("a change listener failed")

    def _run(self) -> None:
        delay = BACKOFF[0]
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if self._presence is not None:
                        conn.execute("SELECT pg_advisory_lock_shared(%s)", (self._presence,))
                    delay = BACKOFF[0]
                    if not first:
                        self._wake_all()  # whatever was sent while we were away
                    first = False
                    while not self._stop.is_set():
                        # Wake at the first notification, not at the end of the tick.
                        for _ in conn.notifies(timeout=TICK, stop_after=1):
                            self._wake_all()
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                # Notifications are only hints (workers poll as well), so this is said
                # quietly, in one line; a worker says when the store itself is away.
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.info("change listener lost its connection (%s); reconnecting", reason)
                first = False
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF[1])
