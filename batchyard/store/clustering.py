"""Clustering: each batch's error clusters, counted in the transaction that records the
failures (one statement per transaction, none at all when nothing failed), read with their
counts, and taken off when a retry sends failed items back.

A cluster's ``attempts`` only grows: every failed attempt with its signature, whether the
item failed for good, waits for a retry or later succeeded. Its ``items`` is the number of
the batch's items that are failed now with it as their last failure: a final failure adds
one, a retry that sends the item back takes it off again, so a recount of the failed item
rows (``recount_clusters``) always agrees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchyard.clusters import ID_LENGTH, ErrorCluster, Signature, signature
from batchyard.errors import BatchNotFound, ClusterNotFound, ConfigError
from batchyard.store.base import Outcome
from batchyard.store.rows import clusters_of, clusters_query
from batchyard.store.rules import S
from batchyard.store.sqlbase import SqlBase
from batchyard.store.tx import Params, Tx

_FAILURES = frozenset({S.FAILED, S.RETRY_WAIT})
_COLUMNS = "batch_pk, sig, text, attempts, items, first_seen, last_seen, sample, sample_key"
_PLACES = "(" + ", ".join("?" * len(_COLUMNS.split(", "))) + ")"
# The first sample stays; counts add up; the times widen.
_MERGE = (
    " ON CONFLICT (batch_pk, sig) DO UPDATE SET "
    "attempts = error_clusters.attempts + excluded.attempts, "
    "items = error_clusters.items + excluded.items, "
    "first_seen = CASE WHEN excluded.first_seen < error_clusters.first_seen "
    "THEN excluded.first_seen ELSE error_clusters.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > error_clusters.last_seen "
    "THEN excluded.last_seen ELSE error_clusters.last_seen END"
)
#: Clusters merged by one statement (9 parameters each: well within both databases' limits).
ROWS_PER_STATEMENT = 500
_ID_PREFIX = re.compile(rf"[0-9a-f]{{1,{ID_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class Hit:
    """One failed attempt to count: its batch, signature, whether the item failed for good
    (else it waits for a retry), when, its message and its item's key."""

    batch_pk: int
    signature: Signature
    final: bool
    at: float
    message: str | None
    key: str | None


def with_signatures(outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
    """The outcomes, each failure given a signature if its worker sent none (made from its
    error class and message alone). A worker's outcomes all have one: nothing is copied."""
    # NOTE: a set, not ``is S.FAILED``: reading a member off its enum class costs more.
    if not [o for o in outcomes if o.state in _FAILURES and o.signature is None]:
        return outcomes
    return [
        replace(o, signature=signature(o.error_type or "Error", o.error or ""))
        if o.signature is None and o.state in _FAILURES
        else o
        for o in outcomes
    ]


def failure_sig(o: Outcome) -> str | None:
    """The signature id an outcome leaves on its item: a failure's, else none."""
    return o.signature.id if o.signature is not None and o.state in _FAILURES else None


def hits_of(outcomes: Iterable[Outcome]) -> list[Hit]:
    """The failed attempts among outcomes that were applied."""
    return [
        Hit(o.batch_pk, o.signature, o.state is S.FAILED, o.finished_at, o.error, o.key)
        for o in outcomes
        if o.state in _FAILURES and o.signature is not None
    ]


def count_failures(tx: Tx, hits: Sequence[Hit]) -> None:
    """Add failed attempts to their clusters: one statement per ``ROWS_PER_STATEMENT``
    clusters, in (batch, signature) order."""
    if not hits:
        return
    merged: dict[tuple[int, str], list[Any]] = {}
    for h in hits:
        row = merged.get((h.batch_pk, h.signature.id))
        if row is None:
            merged[(h.batch_pk, h.signature.id)] = [
                h.batch_pk, h.signature.id, h.signature.text, 1, int(h.final),
                h.at, h.at, h.message, h.key,
            ]  # fmt: skip
            continue
        row[3] += 1
        row[4] += int(h.final)
        row[5], row[6] = min(row[5], h.at), max(row[6], h.at)
    rows = [merged[key] for key in sorted(merged)]
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        values = ", ".join([_PLACES] * len(chunk))
        tx.run(
            f"INSERT INTO error_clusters ({_COLUMNS}) VALUES {values}{_MERGE}",
            [value for row in chunk for value in row],
        )


def uncount_failed(tx: Tx, pk: int, where: str, params: Params) -> None:
    """Take the failed items ``where`` picks (before they leave ``failed``) off their
    clusters' ``items``, in one statement. ``where`` is on items and includes the state."""
    tx.run(
        "UPDATE error_clusters SET items = items - (SELECT COUNT(*) FROM items "
        f"WHERE {where} AND items.error_sig = error_clusters.sig) WHERE batch_pk = ?",
        (*params, pk),
    )


def resolve(rows: Callable[[str, Params], list[Any]], pk: int, batch_id: str, prefix: str) -> str:
    """The id of the batch's one cluster that starts with ``prefix``. Raises ConfigError
    for what cannot be an id, ClusterNotFound for none or several."""
    wanted = prefix.strip().lower()
    if not _ID_PREFIX.fullmatch(wanted):
        raise ConfigError(
            f"{prefix!r} is not an error cluster id: those are up to {ID_LENGTH} hex "
            f"digits (batchyard errors {batch_id} lists them)"
        )
    found = [
        sig
        for (sig,) in rows(
            "SELECT sig FROM error_clusters WHERE batch_pk = ? AND sig LIKE ? ORDER BY sig",
            (pk, wanted + "%"),
        )
    ]
    if len(found) != 1:
        raise ClusterNotFound(batch_id, prefix, tuple(found))
    return str(found[0])


class Clustering(SqlBase):
    """Reading error clusters (they are written by recording, the sweep and retries)."""

    def error_clusters(self, batch_id: str, limit: int | None = None) -> list[ErrorCluster]:
        if limit is not None and limit < 1:
            raise ConfigError(f"a limit of error clusters must be at least 1, not {limit}")
        rows = self._read(clusters_query(limit), (batch_id,))
        if not rows:
            raise BatchNotFound(batch_id)
        return clusters_of(rows)

    def recount_clusters(self, batch_id: str) -> dict[str, int]:
        pk = self._pk(batch_id)
        rows = self._read(
            f"SELECT error_sig, COUNT(*) FROM items WHERE batch_pk = ? AND state = '{S.FAILED}' "
            "AND error_sig IS NOT NULL GROUP BY error_sig",
            (pk,),
        )
        return {str(sig): int(n) for sig, n in rows}
