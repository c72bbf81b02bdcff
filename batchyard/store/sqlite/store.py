"""SqliteStore: the embedded store, one file in WAL mode shared by the processes of a
machine. What it does its own way: outcomes go in as one UPDATE per shape over a JSON array
(each sets only the columns its outcomes carry), lease renewals as ``executemany``; workers
poll instead of being notified."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson

from batchyard.models import NO_USAGE, USAGE_FIELDS
from batchyard.store.base import LeaseUpdate, Outcome
from batchyard.store.clustering import failure_sig
from batchyard.store.rows import TakenRow
from batchyard.store.rules import S
from batchyard.store.sqlite.connection import SQLITE, Connections
from batchyard.store.sqlstore import SqlStore
from batchyard.store.tx import Params, Tx
from batchyard.store.working import CLEAR_PROGRESS, LEASE_SETS


def _nothing() -> None:
    return None


class SqliteStore(SqlStore):
    """The embedded store. ``path`` is a file, created with its schema on first use."""

    dialect = SQLITE
    # An object's members have no index in json_each; its rowid counts them from 0, in order
    # (dataset loads in store/loading.py number rows the same way).
    INSERT_CHUNK = (
        "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, seq) "
        f"SELECT ?1 + rowid, ?2, key, ?3 + rowid, '{S.PENDING}', value, ?4, 0 FROM json_each(?5)"
    )

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout: float = 60.0
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._conns = Connections(self.path, synchronous, busy_timeout)
        self._conns.migrate()

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        return self._conns.get()

    def _write(self) -> AbstractContextManager[Tx]:
        return self._conns.write()

    def _read(self, query: str, params: Params = ()) -> list[Any]:
        return self._conns.read(query, params)

    def _feed_horizon(self) -> str:
        # One writer at a time takes cursors in commit order: every cursor written is final.
        return "9223372036854775807"

    def cursor(self) -> int:
        return int(self._read("SELECT seq FROM feed")[0][0])

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """SQLite has no notifications across processes: workers poll. A no-op."""
        return _nothing

    def on_feed(self, wake: Callable[[], None]) -> None:
        """No notifications: a follower polls ``cursor()`` (one row, a few microseconds)."""
        return None

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def close(self) -> None:
        self._conns.close()

    def _after_insert(self, added: int) -> None:
        """SQLite plans the store's queries by its rules, without statistics: nothing to
        renew."""

    def _apply_outcomes(
        self, tx: Tx, outcomes: Sequence[Outcome], seq: int
    ) -> set[tuple[int, int]]:
        changed = sum(
            tx.run(query, (seq, rows, state, attempt))
            for query, rows, state, attempt in _outcome_updates(outcomes)
        )
        if changed == len(outcomes):
            return {(o.item_id, o.attempt) for o in outcomes}
        # Some were fenced off: the ones written are those stamped with this cursor.
        where, ids = self._any("id", [o.item_id for o in outcomes])
        return {
            (item_id, attempts)
            for item_id, attempts in tx.all(
                f"SELECT id, attempts FROM items WHERE {where} AND seq = ?", (ids, seq)
            )
        }

    def _take(
        self,
        tx: Tx,
        where: str,
        pick: tuple[Any, ...],
        lease_args: tuple[Any, ...],
        *,
        requeued: bool,
    ) -> list[TakenRow]:
        # Three statements that each come back as one row, where UPDATE ... RETURNING
        # comes back a row at a time: Python's sqlite3 lets go of the GIL for every row
        # and must take it back from the event loop each time (a claim of 512 items waited
        # for it as often), and converting 512 rows cost more than parsing one JSON text.
        ids = tx.one(_PICK.format(where=where), pick)[0]
        if ids == "[]":
            return []
        clear = CLEAR_PROGRESS if requeued else ""
        tx.run(_LEASE.format(clear=clear), (*lease_args, ids))
        try:
            rows = orjson.loads(tx.one(_TAKEN_JSON, (ids,))[0])
        except sqlite3.DataError:  # over SQLite's longest string (1e9 bytes): row by row
            rows = tx.all(_TAKEN_ROWS, (ids,))
        return [_row(TakenRow, row) for row in rows]

    def _renew_leases(
        self, tx: Tx, leases: Sequence[LeaseUpdate], expires: float, seq: int | None
    ) -> set[int]:
        renewed = tx.many(
            "UPDATE items SET lease_expires = ?, progress = COALESCE(?, progress), "
            "message = COALESCE(?, message), seq = COALESCE(?, seq) "
            f"WHERE id = ? AND attempts = ? AND state = '{S.RUNNING}'",
            [
                (expires, u.progress, u.message, seq if u.changed else None, u.item_id, u.attempt)
                for u in leases
            ],
        )
        if renewed == len(leases):
            return set()
        return self._not_holding(tx, [(u.item_id, u.attempt) for u in leases])


#: A named tuple made without its Python-level __new__ (one per claimed item).
_row = tuple.__new__
_PICK = "SELECT json_group_array(id) FROM (SELECT id FROM items WHERE {where} LIMIT ?)"
_LEASE = f"UPDATE items SET {LEASE_SETS}{{clear}} WHERE id IN (SELECT value FROM json_each(?))"
_TAKEN_ROWS = (
    f"SELECT {', '.join(TakenRow._fields)} FROM items WHERE id IN (SELECT value FROM json_each(?))"
)
_TAKEN_JSON = (
    f"SELECT json_group_array(json_array({', '.join(TakenRow._fields)})) FROM items "
    "WHERE id IN (SELECT value FROM json_each(?))"
)


def _outcome_updates(outcomes: Sequence[Outcome]) -> list[tuple[str, str, str, int]]:
    """UPDATE statements for outcomes, one per group, each with its outcomes as one JSON
    array, and the group's state and attempt number (parameters 3 and 4). A group is the
    outcomes of one state and attempt number that carry the same columns: each statement
    sets only those (every column set costs SQLite time on every row), and what the whole
    group shares is bound once rather than read from each row's JSON (SQLite parses a row's
    array again for every value it extracts). One statement runs in one call into SQLite,
    which lets go of the GIL for all of it (``executemany`` takes it back after every row,
    and waits for it while the event loop runs). The WHERE clause is the fence: the item
    must still be running this attempt. At most one outcome per attempt is given, so no
    item row is matched twice."""
    groups: dict[tuple[Any, ...], list[list[Any]]] = {}
    for o in outcomes:
        state = o.state
        if (  # the usual outcome, a success or failure with nothing more: its group at once
            o.result is None
            and o.error is None
            and o.signature is None
            and o.run_after is None
            and o.usage is NO_USAGE
            and o.metrics is None
            and o.progress is None
            and o.message is None
        ):
            key: tuple[Any, ...] = (state, o.attempt, _NOTHING_MORE)
            if state.is_terminal:
                values = [o.finished_at - o.started_at, o.finished_at, o.item_id]
            else:
                values = [o.finished_at - o.started_at, o.item_id]
        else:
            key, values = _group_of(o)
        rows = groups.get(key)
        if rows is None:
            groups[key] = [values]
        else:
            rows.append(values)
    return [
        (
            # An earlier attempt may have left an error, metrics, a suspect flag.
            _update_sql((state.is_terminal, *carried, attempt > 1)),
            orjson.dumps(rows).decode(),
            state.value,
            attempt,
        )
        for (state, attempt, carried), rows in groups.items()
    ]


#: What an outcome carries besides its state and times, in ``_OPTIONAL_SETS``' order after
#: ``finished_at``: nothing.
_NOTHING_MORE = (False,) * 6


def _group_of(o: Outcome) -> tuple[tuple[Any, ...], list[Any]]:
    """An outcome's group (state, attempt, what it carries) and its values, in the order
    of ``_OPTIONAL_SETS``, its item id last."""
    has_error = o.error is not None or o.signature is not None
    carried = (
        o.result is not None,
        has_error,
        o.run_after is not None,
        not o.usage.is_zero,
        o.metrics is not None,
        o.progress is not None or o.message is not None,
    )
    values: list[Any] = [o.finished_at - o.started_at]
    if o.state.is_terminal:
        values.append(o.finished_at)
    if carried[0]:
        values.append(o.result)
    if has_error:
        values += (o.error, o.error_type, failure_sig(o))
    if carried[2]:
        values += (o.run_after, o.finished_at)
    if carried[3]:
        values += o.usage.values()
    if carried[4]:
        values.append(o.metrics)
    if carried[5]:
        values += (o.progress, o.message)
    values.append(o.item_id)
    return (o.state, o.attempt, carried), values


# Per optional part of an outcome, in _outcome_updates' shape order: what to set when the
# outcome carries it ({} for each of its values, in order), and what to set when it does
# not but an earlier attempt may have.
_OPTIONAL_SETS: tuple[tuple[str, str | None], ...] = (
    ("finished_at = {}", None),
    ("result = {}", None),
    (
        "error = {}, error_type = {}, error_sig = {}",
        "error = NULL, error_type = NULL, error_sig = NULL",
    ),
    ("run_after = {}, waiting_since = {}", None),
    (", ".join(f"{column} = {column} + {{}}" for column in USAGE_FIELDS), None),
    ("metrics = {}", "metrics = NULL"),
    ("progress = COALESCE({}, progress), message = COALESCE({}, message)", None),
)


@functools.cache
def _update_sql(shape: tuple[bool, ...]) -> str:
    """The UPDATE for outcomes of one shape: ``?1`` the cursor, ``?2`` the JSON array of
    their values (see ``_outcome_updates``), ``?3`` their state, ``?4`` their attempt."""
    *carried, later = shape
    sets = ["state = ?3", "seq = ?1", "duration = {}"]
    for has, (present, cleared) in zip(carried, _OPTIONAL_SETS, strict=True):
        if has:
            sets.append(present)
        elif later and cleared:
            sets.append(cleared)
    if later:
        sets.append("suspect = 0")
    template = (
        f"UPDATE items SET {', '.join(sets)} FROM json_each(?2) AS o "
        f"WHERE items.id = {{}} AND items.attempts = ?4 AND items.state = '{S.RUNNING}' "
        # An item held ready beyond its batch's cap that was never started records nothing.
        "AND items.standby = 0"
    )
    places = template.count("{}")
    return template.format(*(f"json_extract(o.value, '$[{i}]')" for i in range(places)))
