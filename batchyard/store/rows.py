"""Column lists and row converters shared by the SQL stores, and the schema scripts' loader."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from batchyard import codec
from batchyard.models import BatchStatus, Counts, Item, Usage
from batchyard.states import BatchState, ItemState

BATCH_COLUMNS = (
    "pk, id, name, task, state, sealed, concurrency, max_attempts, timeout, priority, "
    "metadata, params, round, n_pending, n_running, n_retry_wait, n_succeeded, n_failed, "
    "n_cancelled, tokens_in, tokens_out, cost, created_at, started_at, finished_at, updated_at, "
    "budget, pause_reason, tokens_cached, tokens_reasoning, calls, cache_hits, saved_cost, limits"
)

ITEM_COLUMNS = (
    "key, position, state, payload, result, error, error_type, attempts, tokens_in, "
    "tokens_out, cost, metrics, progress, message, started_at, finished_at, duration, seq, "
    "tokens_cached, tokens_reasoning, calls, cache_hits, saved_cost"
)

COUNTER_OF: dict[ItemState, str] = {state: f"n_{state.value}" for state in ItemState}


def batch_from_row(row: Any) -> BatchStatus:
    """A BatchStatus from a row selected with BATCH_COLUMNS."""
    return BatchStatus(
        id=row[1],
        name=row[2],
        task=row[3],
        state=BatchState(row[4]),
        sealed=bool(row[5]),
        concurrency=row[6],
        max_attempts=row[7],
        timeout=row[8],
        priority=row[9],
        metadata=codec.loads(row[10]),
        params=codec.loads(row[11]),
        round=row[12],
        counts=Counts(*row[13:19]),
        usage=Usage(row[19], row[20], row[21], *row[28:33]),
        created_at=row[22],
        started_at=row[23],
        finished_at=row[24],
        updated_at=row[25],
        budget=row[26],
        pause_reason=row[27],
        limits=None if row[33] is None else codec.loads(row[33]),
    )


def item_from_row(batch_id: str, row: Any) -> Item:
    """An Item from a row selected with ITEM_COLUMNS."""
    return Item(
        batch_id=batch_id,
        key=row[0],
        position=row[1],
        state=ItemState(row[2]),
        payload=codec.loads(row[3]),
        result=None if row[4] is None else codec.loads(row[4]),
        error=row[5],
        error_type=row[6],
        attempts=row[7],
        usage=Usage(row[8], row[9], row[10], *row[18:23]),
        metrics={} if row[11] is None else codec.loads(row[11]),
        progress=row[12],
        message=row[13],
        started_at=row[14],
        finished_at=row[15],
        duration=row[16],
        seq=row[17],
    )


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
