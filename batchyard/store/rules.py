"""What the SQL stores share that is not SQL: the claimable states, item ids as ranges per
batch, page cursors, upload batching, where an expired lease sends its item, and budget
arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from batchyard.errors import ConfigError
from batchyard.states import BatchState, ItemState

B = BatchState
S = ItemState
CLAIMABLE = "('queued', 'processing', 'retrying')"
ENDABLE = frozenset({B.QUEUED, B.PROCESSING, B.RETRYING})
POSITION_BITS = 32
MAX_POSITION = (1 << POSITION_BITS) - 1


def span(pk: int) -> tuple[int, int]:
    """The ids (rowids) a batch's items may have: [low, high)."""
    return pk << POSITION_BITS, (pk + 1) << POSITION_BITS


#: At most this many items go in one transaction of an upload.
COMMIT_ITEMS = 50_000


def readiness(chunks: Iterable[Any]) -> Callable[[], bool]:
    """Whether the next chunk is at hand, if the iterable can tell (see items._Feed)."""
    ready = getattr(chunks, "ready", None)
    return ready if callable(ready) else lambda: False


def page_key(after: str) -> int:
    if not after.startswith("p") or not after[1:].isdigit():
        raise ConfigError(f"{after!r} is not a page cursor (use the `next` of a previous page)")
    return int(after[1:])


def expiry(
    batch_state: BatchState, attempt: int, max_attempt: int, others: int, suspect: bool
) -> tuple[ItemState, bool, str]:
    """Where an item whose lease expired goes, whether that spends the attempt, and why."""
    if batch_state is B.CANCELLED:
        return S.CANCELLED, True, f"lease expired on attempt {attempt} in a cancelled batch"
    if suspect or others == 0:
        target = S.FAILED if attempt >= max_attempt else S.PENDING
        return (
            target,
            True,
            (
                f"lease expired on attempt {attempt} while it ran alone: its worker died or "
                "stopped answering"
            ),
        )
    return (
        S.PENDING,
        False,
        (
            f"lease expired on attempt {attempt} while its worker held {others} other item(s): "
            "not counted against it; it runs alone next"
        ),
    )


def check_budget(budget: float | None) -> None:
    if budget is not None and (math.isnan(budget) or budget < 0):
        raise ConfigError(f"a budget must be a number of at least 0, not {budget}")


def fits(spent: float, held: float, amount: float, budget: float) -> bool:
    """Whether a hold of ``amount`` keeps recorded plus reserved cost within the budget."""
    return spent + held + amount <= budget + 1e-12
