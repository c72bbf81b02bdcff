"""Named rows of the store's tables (a column list made from each row's fields, so a query and
the row that reads it cannot disagree), their conversion to models, and the schema scripts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from batchyard import codec
from batchyard.clusters import ErrorCluster
from batchyard.models import BatchStatus, Counts, Item, Reruns, TemplateRef, Usage
from batchyard.states import BatchState, ItemState


def _usage(row: BatchRow | ItemRow) -> Usage:
    return Usage(
        row.tokens_in,
        row.tokens_out,
        row.cost,
        row.tokens_cached,
        row.tokens_reasoning,
        row.calls,
        row.cache_hits,
        row.saved_cost,
        row.unpriced_calls,
    )


class BatchRow(NamedTuple):
    """A row of ``batches`` as ``SELECT {BATCH_COLUMNS}`` reads it."""

    pk: int
    id: str
    name: str | None
    task: str
    state: str
    sealed: int
    concurrency: int | None
    max_attempts: int
    timeout: float | None
    priority: int
    metadata: str
    params: str
    round: int
    n_pending: int
    n_running: int
    n_retry_wait: int
    n_succeeded: int
    n_failed: int
    n_cancelled: int
    # Usage, in USAGE_FIELDS order.
    tokens_in: int
    tokens_out: int
    cost: float
    tokens_cached: int
    tokens_reasoning: int
    calls: int
    cache_hits: int
    saved_cost: float
    unpriced_calls: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    budget: float | None
    pause_reason: str | None
    limits: str | None
    resume_state: str | None
    claim_cursor: int
    # Re-runs by why, in Again order.
    again_worker_lost: int
    again_released: int
    again_error: int
    again_retry: int
    # The template version it runs with, and the batch it re-runs.
    template_name: str | None
    template_version: int | None
    rerun_of: str | None
    owner: str | None
    #: Of ``n_running``: items held ready beyond the batch's cap (see ``Working.claim``).
    n_standby: int

    @property
    def batch_state(self) -> BatchState:
        return BatchState(self.state)

    @property
    def counts(self) -> Counts:
        # An item held ready (standby) has not started: it counts as pending.
        return Counts(
            self.n_pending + self.n_standby,
            self.n_running - self.n_standby,
            self.n_retry_wait,
            self.n_succeeded,
            self.n_failed,
            self.n_cancelled,
        )

    def status(self) -> BatchStatus:
        return BatchStatus(
            id=self.id,
            name=self.name,
            task=self.task,
            state=self.batch_state,
            sealed=bool(self.sealed),
            concurrency=self.concurrency,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            priority=self.priority,
            metadata=codec.loads(self.metadata),
            params=codec.loads(self.params),
            round=self.round,
            counts=self.counts,
            usage=_usage(self),
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            updated_at=self.updated_at,
            budget=self.budget,
            pause_reason=self.pause_reason,
            limits=None if self.limits is None else codec.loads(self.limits),
            reruns=Reruns(
                self.again_worker_lost, self.again_released, self.again_error, self.again_retry
            ),
            template=None
            if self.template_name is None
            else TemplateRef(self.template_name, self.template_version),
            rerun_of=self.rerun_of,
            owner=self.owner,
        )


class ItemRow(NamedTuple):
    """A row of ``items`` as ``SELECT {ITEM_COLUMNS}`` reads it."""

    key: str
    position: int
    state: str
    payload: str | None  # None when not read (see item_columns)
    result: str | None
    error: str | None
    error_type: str | None
    attempts: int
    # Usage, in USAGE_FIELDS order.
    tokens_in: int
    tokens_out: int
    cost: float
    tokens_cached: int
    tokens_reasoning: int
    calls: int
    cache_hits: int
    saved_cost: float
    unpriced_calls: int
    metrics: str | None
    progress: float | None
    message: str | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    seq: int
    #: Leases given back before they ran: not attempts the item made.
    unrun: int
    #: The worker holding it, or that ran its latest attempt (None once given back).
    worker: str | None

    def item(self, batch_id: str) -> Item:
        return Item(
            batch_id=batch_id,
            key=self.key,
            position=self.position,
            state=ItemState(self.state),
            payload=None if self.payload is None else codec.loads(self.payload),
            result=None if self.result is None else codec.loads(self.result),
            error=self.error,
            error_type=self.error_type,
            attempts=self.attempts,
            usage=_usage(self),
            metrics={} if self.metrics is None else codec.loads(self.metrics),
            progress=self.progress,
            message=self.message,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration=self.duration,
            seq=self.seq,
            runs=self.attempts - self.unrun,
            worker=self.worker,
        )


class ClaimableRow(NamedTuple):
    """A batch a claim may take items from (see ``Working._claimable``)."""

    pk: int
    id: str
    task: str
    state: str
    concurrency: int | None
    n_running: int
    n_standby: int
    n_pending: int
    n_retry_wait: int
    timeout: float | None
    params: str
    claim_cursor: int
    limits: str | None
    max_attempts: int
    #: When its earliest retry comes due, if it has no pending item (else None).
    next_due: float | None

    @property
    def room(self) -> int | None:
        """Free slots under the batch's own concurrency cap (None: no cap)."""
        if self.concurrency is None:
            return None
        return self.concurrency - self.n_running + self.n_standby


class TakenRow(NamedTuple):
    """An item a claim just leased."""

    id: int
    key: str
    payload: str
    attempts: int
    max_attempt: int
    priority: int
    #: Why this run is a re-run (an ``Again`` value), None for a first run.
    again: str | None


class ExpiredRow(NamedTuple):
    """A running item whose lease ran out (see ``Working._reclaim_leases``)."""

    id: int
    batch_pk: int
    attempts: int
    max_attempt: int
    worker: str
    suspect: int
    started_at: float | None
    lease_expires: float
    lease_for: float | None


BATCH_COLUMNS = ", ".join(BatchRow._fields)


def held_ready(table: str = "") -> str:
    """The condition of an item held ready beyond its batch's cap: leased as running, not
    started (a cancelled one keeps its ``standby`` flag). ``table``: the alias of ``items``
    in the query, if any."""
    of = f"{table}." if table else ""
    return f"{of}state = '{ItemState.RUNNING}' AND {of}standby = 1"


def shown_state(table: str = "") -> str:
    """An item's state as readers see it: one held ready (``held_ready``) has not started,
    so it reads as pending, as the counters count it."""
    of = f"{table}." if table else ""
    return f"CASE WHEN {held_ready(table)} THEN '{ItemState.PENDING}' ELSE {of}state END"


#: What ItemRow's fields read that is not the column of the same name: an item held ready
#: reads as pending and not started (see ``shown_state``).
_SHOWN = {
    "state": f"{shown_state()} AS state",
    "started_at": f"CASE WHEN {held_ready()} THEN NULL ELSE started_at END AS started_at",
}


@functools.cache
def item_columns(payloads: bool = True, results: bool = True) -> str:
    """The columns of ItemRow, with payload and/or result read as NULL when not wanted:
    the two columns that may be megabytes."""
    left = {"payload"} if not payloads else set()
    left |= {"result"} if not results else set()
    return ", ".join("NULL" if name in left else _SHOWN.get(name, name) for name in ItemRow._fields)


ITEM_COLUMNS = item_columns()


COUNTER_OF: dict[ItemState, str] = {state: f"n_{state.value}" for state in ItemState}


_CLUSTERS = (
    "SELECT b.n_failed, c.sig, c.text, c.attempts, c.items, c.first_seen, c.last_seen, "
    "c.sample, c.sample_key FROM batches b LEFT JOIN error_clusters c ON c.batch_pk = b.pk "
    "WHERE b.id = ? ORDER BY c.items DESC, c.attempts DESC, c.sig"
)


def clusters_query(limit: int | None = None) -> str:
    """A batch's error clusters, most failed items first (parameter: the batch id): one row
    per cluster, or one row of NULLs for a batch without any, none for no batch."""
    return _CLUSTERS if limit is None else f"{_CLUSTERS} LIMIT {int(limit)}"


def clusters_of(rows: list[Any]) -> list[ErrorCluster]:
    """The clusters of the rows ``clusters_query`` read."""
    failed = int(rows[0][0]) if rows else 0
    return [
        ErrorCluster(
            id=sig,
            text=text,
            attempts=int(attempts),
            items=int(items),
            share=int(items) / failed if failed else 0.0,
            first_seen=float(first),
            last_seen=float(last),
            sample=sample,
            sample_key=key,
        )
        for _, sig, text, attempts, items, first, last, sample, key in rows
        if sig is not None
    ]


def batch_from_row(row: tuple[object, ...]) -> BatchStatus:
    """A BatchStatus from a row selected with BATCH_COLUMNS."""
    return BatchRow._make(row).status()


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: str

    def statements(self) -> list[str]:
        """The script cut into statements at semicolons that end a line."""
        out: list[str] = []
        current: list[str] = []
        for line in self.script.splitlines():
            if line.lstrip().startswith("--"):
                continue
            current.append(line)
            if line.rstrip().endswith(";"):
                out.append("\n".join(current).strip())
                current = []
        if "".join(current).strip():
            out.append("\n".join(current).strip())
        return out


def migrations(dialect: str) -> list[Migration]:
    """The schema scripts of a dialect (``sql/<dialect>/NNNN_name.sql``), in order."""
    folder = resources.files("batchyard.store") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema scripts of {dialect} are not numbered 1..n")
    return found
