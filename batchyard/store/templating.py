"""Templating: template versions (written once, archived by a flag), what the batches of
each version did, and re-runs: a new batch whose items are copied from another inside the
database, never through the client."""

from __future__ import annotations

import json
from collections.abc import Collection

from batchyard import codec
from batchyard.errors import (
    BatchNotFound,
    BatchyardError,
    Conflict,
    StoreError,
    TemplateChanged,
    TemplateExists,
    TemplateNotFound,
)
from batchyard.models import BatchOptions, BatchStatus
from batchyard.states import ItemState
from batchyard.store.base import UPLOAD_LEASE
from batchyard.store.rules import COMMIT_ITEMS, MAX_POSITION, B, S, span
from batchyard.store.sqlbase import SqlBase
from batchyard.store.submitting import Submitting, delete_rows
from batchyard.store.tx import Tx
from batchyard.templates.values import NewVersion, Template, VersionUsage

_COLUMNS = "name, version, task, params, description, author, archived, created_at"
_USAGE = (
    "SELECT template_version, COUNT(*), "
    "SUM(n_pending + n_running + n_retry_wait + n_succeeded + n_failed + n_cancelled), "
    "SUM(n_succeeded), SUM(n_failed), SUM(n_cancelled), SUM(tokens_in), SUM(tokens_out), "
    "SUM(cost), SUM(calls), SUM(cache_hits), SUM(unpriced_calls) "
    "FROM batches WHERE template_name = ? GROUP BY template_version ORDER BY template_version"
)
# Copies a window of a batch's items as fresh pending items of another, numbered from
# ``base + 1`` on in their old order: positions stay contiguous, so ids stay one range.
# Parameters: first id - 1, the new batch's pk, base, max_attempt, then the window [low, high).
_COPY = (
    "INSERT INTO items (id, batch_pk, key, position, state, payload, max_attempt, seq) "
    f"SELECT ? + n, ?, key, ? + n, '{S.PENDING}', payload, ?, 0 FROM ("
    "SELECT key, payload, ROW_NUMBER() OVER (ORDER BY id) AS n FROM items "
    "WHERE id >= ? AND id < ?{states}) picked"
)


def _template(row: tuple[object, ...]) -> Template:
    name, version, task, params, description, author, archived, created_at = row
    return Template(
        name=str(name),
        version=int(str(version)),
        task=str(task),
        params=codec.loads(str(params)),
        description=None if description is None else str(description),
        author=None if author is None else str(author),
        archived=bool(archived),
        created_at=float(str(created_at)),
    )


def _usage(row: tuple[object, ...]) -> VersionUsage:
    version, batches, items, ok, failed, cancelled, t_in, t_out, cost, calls, hits, unpriced = (
        0 if value is None else value for value in row
    )
    return VersionUsage(
        version=int(str(version)),
        batches=int(str(batches)),
        items=int(str(items)),
        succeeded=int(str(ok)),
        failed=int(str(failed)),
        cancelled=int(str(cancelled)),
        tokens_in=int(str(t_in)),
        tokens_out=int(str(t_out)),
        cost=float(str(cost)),
        calls=int(str(calls)),
        cache_hits=int(str(hits)),
        unpriced_calls=int(str(unpriced)),
    )


class Templating(SqlBase):
    """Template versions and re-runs of batches."""

    def add_template_version(self, new: NewVersion, now: float) -> Template:
        with self._write() as tx:
            newest = tx.one("SELECT MAX(version) FROM templates WHERE name = ?", (new.name,))[0]
            if (newest or 0) != new.base:
                raise _moved(new, newest)
            values = (
                new.name,
                new.base + 1,
                new.task,
                json.dumps(new.params),
                new.description,
                new.author,
                0,
                now,
            )
            try:
                with tx.savepoint():
                    tx.run(
                        f"INSERT INTO templates ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
            except tx.UniqueViolation:  # another writer took this version first
                raise _moved(new, new.base + 1) from None
        return _template(values)

    def template_versions(self, name: str) -> list[Template]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM templates WHERE name = ? ORDER BY version", (name,)
        )
        return [_template(row) for row in rows]

    def list_templates(self) -> list[Template]:
        rows = self._read(f"SELECT {_COLUMNS} FROM templates ORDER BY name, version")
        return [_template(row) for row in rows]

    def archive_template(self, name: str, version: int, now: float) -> Template:
        with self._write() as tx:
            row = tx.one(
                f"UPDATE templates SET archived = 1 WHERE name = ? AND version = ? "
                f"RETURNING {_COLUMNS}",
                (name, version),
            )
        if row is None:
            raise TemplateNotFound(name, version, f"template {name!r} has no version {version}")
        return _template(row)

    def template_usage(self, name: str) -> list[VersionUsage]:
        return [_usage(row) for row in self._read(_USAGE, (name,))]

    def template_batches(self, name: str, version: int, limit: int = 100) -> list[str]:
        rows = self._read(
            "SELECT id FROM batches WHERE template_name = ? AND template_version = ? "
            "ORDER BY pk DESC LIMIT ?",
            (name, version, limit),
        )
        return [str(batch_id) for (batch_id,) in rows]

    def rerun_batch(
        self,
        source_id: str,
        batch_id: str,
        options: BatchOptions,
        states: Collection[ItemState] | None,
        now: float,
    ) -> BatchStatus:
        source = self._batch(source_id)
        if source.batch_state is B.UPLOADING:
            raise Conflict(source_id, "is still uploading; re-run it once its items are in")
        low, high = span(source.pk)
        last = self._read("SELECT MAX(id) FROM items WHERE id >= ? AND id < ?", (low, high))[0][0]
        windows = [] if last is None else list(range(low, int(last) + 1, COMMIT_ITEMS))
        with self._write() as tx:
            pk = Submitting._insert_batch(tx, batch_id, options, B.UPLOADING, now)
            if len(windows) <= 1:  # small: one transaction, never seen half-made
                copied = self._copy(tx, pk, windows, states, options.max_attempts, 0, now)
                self._rerun_queued(tx, pk, batch_id, source_id, copied, now)
        if len(windows) <= 1:
            self._after_insert(copied)
            return self.get_batch(batch_id)
        try:
            copied = 0
            for start in windows:
                with self._write() as tx:
                    copied += self._copy(tx, pk, [start], states, options.max_attempts, copied, now)
            with self._write() as tx:
                self._rerun_queued(tx, pk, batch_id, source_id, copied, now)
        except BaseException:
            with self._write() as tx:
                delete_rows(tx, pk)
            raise
        self._after_insert(copied)
        return self.get_batch(batch_id)

    def _copy(
        self,
        tx: Tx,
        pk: int,
        windows: list[int],
        states: Collection[ItemState] | None,
        max_attempts: int,
        base: int,
        now: float,
    ) -> int:
        """Copy the items of each window of COMMIT_ITEMS source ids (each starts at one
        of ``windows``) after the ``base`` items copied before; returns how many."""
        where, extra = "", []
        if states is not None:
            sql, values = self._any("state", [state.value for state in states])
            where, extra = f" AND {sql}", [values]
        copied = 0
        for start in windows:
            at = base + copied
            if at + COMMIT_ITEMS > MAX_POSITION:
                raise StoreError(f"a batch holds at most {MAX_POSITION:,} items")
            copied += tx.run(
                _COPY.format(states=where),
                ((pk << 32) + at, pk, at, max_attempts, start, start + COMMIT_ITEMS, *extra),
            )
        if copied:
            tx.move_counts(pk, {"n_pending": copied}, now)
            tx.run("UPDATE batches SET upload_expires = ? WHERE pk = ?", (now + UPLOAD_LEASE, pk))
        return copied

    @staticmethod
    def _rerun_queued(
        tx: Tx, pk: int, batch_id: str, source_id: str, copied: int, now: float
    ) -> None:
        if not copied:
            raise Conflict(source_id, "has no items in the states asked for; nothing to re-run")
        if tx.one("SELECT 1 FROM batches WHERE id = ?", (source_id,)) is None:
            raise BatchNotFound(source_id)  # deleted while its items were copied
        tx.set_state(pk, batch_id, B.UPLOADING, B.QUEUED, now, upload_expires=None)
        tx.event(batch_id, "batch.rerun", {"rerun_of": source_id, "items": copied}, now)
        tx.notify = True


def _moved(new: NewVersion, newest: object) -> BatchyardError:
    if not new.base:
        return TemplateExists(new.name)
    return TemplateChanged(
        f"template {new.name!r} is at version {newest}, not {new.base}: it changed meanwhile; "
        "read it again and retry"
    )
