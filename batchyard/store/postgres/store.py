"""PostgresStore: the scale-out store. Any number of worker processes on any number of
machines share one database; claims skip rows others hold (``FOR UPDATE SKIP LOCKED``) and
idle workers wake on ``LISTEN/NOTIFY``. What it does its own way: a group commit's outcomes
and a heartbeat's leases go in as column arrays, one statement each (``unnest``), which
also says which rows the fence let through (``RETURNING``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from batchyard.clock import DatabaseClock
from batchyard.errors import StoreError
from batchyard.models import USAGE_FIELDS
from batchyard.store.base import LeaseUpdate, Outcome
from batchyard.store.clustering import failure_sig
from batchyard.store.postgres.connection import (
    CHANNEL,
    FEED_CHANNEL,
    FEED_PRESENCE,
    POOL_SIZE,
    POSTGRES,
    Pool,
)
from batchyard.store.postgres.listening import Listener
from batchyard.store.rules import S
from batchyard.store.sqlstore import SqlStore
from batchyard.store.tx import Params, Tx

# A later attempt clears what an earlier one may have left (error, metrics, the suspect
# mark) unless it carries its own: the same rules as SqliteStore's shaped updates.
_RECORD = f"""
UPDATE items i SET
    state = u.state,
    seq = ?,
    duration = u.duration,
    finished_at = CASE WHEN u.terminal THEN u.finished_at ELSE i.finished_at END,
    result = COALESCE(u.result, i.result),
    error = CASE WHEN u.error IS NOT NULL THEN u.error WHEN u.later THEN NULL ELSE i.error END,
    error_type = CASE WHEN u.error IS NOT NULL THEN u.error_type
        WHEN u.later THEN NULL ELSE i.error_type END,
    error_sig = CASE WHEN u.error IS NOT NULL OR u.error_sig IS NOT NULL THEN u.error_sig
        WHEN u.later THEN NULL ELSE i.error_sig END,
    run_after = COALESCE(u.run_after, i.run_after),
    waiting_since = CASE WHEN u.run_after IS NOT NULL THEN u.finished_at
        ELSE i.waiting_since END,
    {", ".join(f"{c} = i.{c} + u.{c}" for c in USAGE_FIELDS)},
    metrics = CASE WHEN u.metrics IS NOT NULL THEN u.metrics
        WHEN u.later THEN NULL ELSE i.metrics END,
    progress = COALESCE(u.progress, i.progress),
    message = COALESCE(u.message, i.message),
    suspect = CASE WHEN u.later THEN 0 ELSE i.suspect END
FROM unnest(
    ?::bigint[], ?::int[], ?::text[], ?::float8[], ?::bool[], ?::float8[], ?::text[],
    ?::text[], ?::text[], ?::float8[], ?::text[], ?::float8[], ?::text[], ?::bool[],
    ?::bigint[], ?::bigint[], ?::float8[], ?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[],
    ?::float8[], ?::bigint[], ?::text[]
) AS u(id, attempt, state, duration, terminal, finished_at, result, error, error_type,
    run_after, metrics, progress, message, later, {", ".join(USAGE_FIELDS)},
    error_sig)
WHERE i.id = u.id AND i.attempts = u.attempt AND i.state = '{S.RUNNING}' AND i.standby = 0
RETURNING i.id, i.attempts
"""
_HEARTBEAT = (
    "UPDATE items i SET lease_expires = ?, progress = COALESCE(u.progress, i.progress), "
    "message = COALESCE(u.message, i.message), seq = COALESCE(u.seq, i.seq) "
    "FROM unnest(?::bigint[], ?::int[], ?::float8[], ?::text[], ?::bigint[]) "
    "AS u(id, attempt, progress, message, seq) "
    f"WHERE i.id = u.id AND i.attempts = u.attempt AND i.state = '{S.RUNNING}' RETURNING i.id"
)
_MONEY = frozenset({"cost", "saved_cost"})
# When a submission has changed this many rows of items since its last ANALYZE (autovacuum's
# own rule: 10% of the table plus a floor), the store analyzes it itself. Checked only
# after submissions of at least ANALYZE_CHECK items: smaller ones cannot tip a table that
# was analyzed when it was empty into a bad plan on their own.
ANALYZE_FLOOR = 10_000
ANALYZE_SHARE = 0.1
ANALYZE_CHECK = 1_000
_STALENESS = (
    "SELECT c.reltuples, COALESCE(s.n_mod_since_analyze, 0) FROM pg_class c "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'items'::regclass"
)
# Every feed cursor below this is final: the oldest transaction id in progress that is not
# one of {others} (ids in progress in other databases, as 32-bit xids), else the next id
# to be given; plus the offset of migration 5.
FEED_HORIZON = (
    "(SELECT COALESCE((SELECT MIN(x::text::bigint) "
    "FROM pg_snapshot_xip(pg_current_snapshot()) AS x "
    "WHERE (x::text::bigint & 4294967295) <> ALL(ARRAY[{others}]::bigint[])), "
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint) + (SELECT seq FROM feed))"
)


class PostgresStore(SqlStore):
    """The scale-out store. ``url`` is a libpq URL; the schema is created or upgraded on
    first use. It holds at most ``pool_size`` pooled connections, plus one for LISTEN once
    ``on_change`` is used and one more once ``on_feed`` is."""

    dialect = POSTGRES
    INSERT_CHUNK = (
        "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, seq) "
        f"SELECT ? + o - 1, ?, k, ? + o - 1, '{S.PENDING}', v, ?, 0 "
        "FROM json_each_text(?::json) WITH ORDINALITY AS t(k, v, o)"
    )

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._pool = Pool(url, pool_size)
        self._listeners: dict[str, Listener] = {}
        self._lock = threading.Lock()
        self._clock = DatabaseClock(self._server_time)

    def _server_time(self) -> float:
        # clock_timestamp(), not now(): the time of the reading, not of a transaction.
        return float(self._read("SELECT EXTRACT(EPOCH FROM clock_timestamp())")[0][0])

    def _write(self) -> AbstractContextManager[Tx]:
        return self._pool.write()

    def _read(self, query: str, params: Params = ()) -> list[Any]:
        return self._pool.read(query, params)

    def _feed_horizon(self) -> str:
        # Transaction ids are given out server-wide: those in progress in other databases
        # must not hold this feed back. pg_stat_activity says where each runs, but not in
        # step with a snapshot, so it is read first, in a statement of its own: an id
        # given out after it is read counts as ours (later than everything read before).
        others = self._read(
            "SELECT COALESCE(array_agg(backend_xid::text::bigint), '{}') FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL AND datid <> "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )[0][0]
        return FEED_HORIZON.format(others=",".join(str(int(x)) for x in others))

    def cursor(self) -> int:
        # The highest cursor written below the horizon: in events, and in items (per
        # batch, so that each batch's partial index on seq answers).
        horizon = self._feed_horizon()
        rows = self._read(
            f"SELECT GREATEST((SELECT MAX(seq) FROM events WHERE seq < {horizon}), "
            "(SELECT MAX((SELECT MAX(seq) FROM items i WHERE i.batch_pk = b.pk AND i.seq > 0 "
            f"AND i.seq < {horizon})) FROM batches b), 0)"
        )
        return int(rows[0][0])

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on every NOTIFY of the store's channel, from a listener thread on a
        connection of its own (outside the pool), reconnecting after an outage."""
        return self._listen(CHANNEL, wake)

    def on_feed(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` after every commit that changed the feed (any process), from a
        listener thread of its own, as ``on_change`` does. Writers send these only while a
        listener holds the presence lock, and notice a new one within a second."""
        return self._listen(FEED_CHANNEL, wake, FEED_PRESENCE)

    def _listen(
        self, channel: str, wake: Callable[[], None], presence: int | None = None
    ) -> Callable[[], None]:
        with self._lock:
            if self._pool.closed:
                raise StoreError("the store is closed")
            listener = self._listeners.get(channel)
            if listener is None:
                listener = self._listeners[channel] = Listener(self.url, channel, presence)
        return listener.add(wake)

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def _after_insert(self, added: int) -> None:
        """ANALYZE items when a submission leaves its statistics stale. Without them (a
        server with autovacuum off, or one that has not caught up with a bulk insert) the
        planner guesses a handful of rows and a claim sorts every pending item of a batch
        instead of walking the primary key: 0.5 s a claim on a 200,000-item batch."""
        if added < ANALYZE_CHECK:
            return
        reltuples, modified = self._read(_STALENESS)[0]
        # The counter lags (statistics are flushed about once a second): count this one.
        stale = max(int(modified), added)
        if stale >= ANALYZE_FLOOR + ANALYZE_SHARE * max(float(reltuples), 0.0):
            # Takes a lock that only other ANALYZEs and schema changes wait for.
            with self._write() as tx:
                tx.run("ANALYZE items")

    def close(self) -> None:
        with self._lock:
            if self._pool.closed:
                return
            self._pool.closed = True
            listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            listener.close()
        self._pool.close()

    def _apply_outcomes(
        self, tx: Tx, outcomes: Sequence[Outcome], seq: int
    ) -> set[tuple[int, int]]:
        written = tx.all(_RECORD, _columns(outcomes, seq))
        return {(item_id, attempts) for item_id, attempts in written}

    def _renew_leases(
        self, tx: Tx, leases: Sequence[LeaseUpdate], expires: float, seq: int | None
    ) -> set[int]:
        held = tx.all(
            _HEARTBEAT,
            (
                expires,
                [u.item_id for u in leases],
                [u.attempt for u in leases],
                [None if u.progress is None else float(u.progress) for u in leases],
                [u.message for u in leases],
                [seq if u.changed else None for u in leases],
            ),
        )
        return {u.item_id for u in leases} - {item_id for (item_id,) in held}


def _columns(outcomes: Sequence[Outcome], seq: int) -> list[Any]:
    """The parameters of _RECORD: the cursor, then the outcomes as column arrays."""
    names = (
        "id attempt state duration terminal finished_at result error error_type run_after "
        "metrics progress message later"
    ).split()
    cols: dict[str, list[Any]] = {name: [] for name in (*names, *USAGE_FIELDS, "error_sig")}
    for o in outcomes:
        cols["id"].append(o.item_id)
        cols["attempt"].append(o.attempt)
        cols["state"].append(o.state.value)
        cols["duration"].append(float(o.finished_at - o.started_at))
        cols["terminal"].append(o.state.is_terminal)
        cols["finished_at"].append(float(o.finished_at))
        cols["result"].append(o.result)
        cols["error"].append(o.error)
        cols["error_type"].append(o.error_type)
        cols["run_after"].append(None if o.run_after is None else float(o.run_after))
        cols["metrics"].append(o.metrics)
        cols["progress"].append(None if o.progress is None else float(o.progress))
        cols["message"].append(o.message)
        cols["later"].append(o.attempt > 1)
        for column, value in zip(USAGE_FIELDS, o.usage.values(), strict=True):
            cols[column].append(float(value) if column in _MONEY else int(value))
        cols["error_sig"].append(failure_sig(o))
    return [seq, *cols.values()]
