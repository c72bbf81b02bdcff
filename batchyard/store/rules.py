"""The store's rules that are not SQL: the claimable states, item ids as ranges per batch,
page cursors, upload batching, which outcome of an attempt counts, where an expired lease
sends its item, which lapsed leases a sweep may take back, and budget arithmetic."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from batchyard.errors import ConfigError
from batchyard.states import BatchState, ItemState

B = BatchState
S = ItemState
#: Batch states workers claim from, as an SQL list.
CLAIMABLE = "(" + ", ".join(f"'{state}'" for state in B if state.is_active) + ")"
#: Batch states in which a batch ends by itself once nothing is left to run.
ENDABLE = frozenset({B.QUEUED, B.PROCESSING, B.RETRYING})
#: Batch states a finished batch may be in, as an SQL list.
FINISHED = "(" + ", ".join(f"'{state}'" for state in B if state.is_terminal) + ")"
POSITION_BITS = 32
MAX_POSITION = (1 << POSITION_BITS) - 1


def span(pk: int) -> tuple[int, int]:
    """The ids (rowids) a batch's items may have: [low, high)."""
    return pk << POSITION_BITS, (pk + 1) << POSITION_BITS


def spread(first: int, last: int, most: int) -> list[int]:
    """At most ``most`` ids evenly spaced from ``first`` to ``last`` (all of them when
    there are no more): a sample of a batch's items read by primary key."""
    every = last - first + 1
    if every <= most:
        return list(range(first, last + 1))
    return [first + n * every // most for n in range(most)]


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


class _Attempt(Protocol):
    @property
    def item_id(self) -> int: ...
    @property
    def attempt(self) -> int: ...


A = TypeVar("A", bound=_Attempt)


def first_per_attempt(outcomes: Sequence[A]) -> tuple[list[A], list[A]]:
    """Of several outcomes for one attempt, the first is the one that may apply: it is the
    one the worker reported first. Returns (firsts, the others) in the given order."""
    firsts: list[A] = []
    others: list[A] = []
    seen: set[tuple[int, int]] = set()
    for o in outcomes:
        attempt = (o.item_id, o.attempt)
        (others if attempt in seen else firsts).append(o)
        seen.add(attempt)
    return firsts, others


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


#: How much later than a sweep's time a retry must have begun to wait before the sweep
#: takes it for a clock that went back (and counts its delay again from now). A smaller
#: step back delays retries by at most that much; the margin keeps a retry recorded while
#: the sweep was on its way to the store from being taken for one.
CLOCK_STEP = 10.0


class LeaseWatch:
    """Which leases a sweep may take back, when it has a steady (monotonic) clock of its own.

    A lease looks lapsed when its end has passed on the store's clock, or lies further
    ahead than its length (``lease_for``): a renewal never sets it so far, so the clock
    went back, or the worker that set it was ahead. Either way it is taken back only once
    this watcher has seen it look lapsed, unrenewed (same attempt, same end), for its whole
    length on the steady clock. A worker that is alive renews within that time, whatever
    any clock says; a dead one's items come back a lease after the sweep first saw them.
    A lease of unknown length (set before schema 11 / 13) is taken back at once, as before.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[int, int, float], float] = {}
        self._lock = threading.Lock()

    def due(
        self, lapsed: Iterable[tuple[int, int, float, float | None]], steady: float
    ) -> set[int]:
        """The item ids to take back of ``lapsed`` (item id, attempt, lease end, lease
        length) as seen at ``steady``; a lease not in ``lapsed`` is forgotten."""
        since: dict[tuple[int, int, float], float] = {}
        due: set[int] = set()
        with self._lock:
            for item_id, attempt, end, length in lapsed:
                key = (item_id, attempt, end)
                first = since[key] = self._since.get(key, steady)
                if steady - first >= (length or 0.0):
                    due.add(item_id)
            self._since = since
        return due


def check_budget(budget: float | None) -> None:
    if budget is not None and (math.isnan(budget) or budget < 0):
        raise ConfigError(f"a budget must be a number of at least 0, not {budget}")


def fits(spent: float, held: float, amount: float, budget: float) -> bool:
    """Whether a hold of ``amount`` keeps recorded plus reserved cost within the budget."""
    return spent + held + amount <= budget + 1e-12
