"""The two lifecycles, batch and item, as data: the states and the moves between them.

Every state change in batchyard goes through :func:`check_batch` or :func:`check_item`;
nothing else compares states by hand. Stores apply a change with compare-and-set on the
state they read, so a race shows up as "no row changed", never as a corrupt row.
"""

from __future__ import annotations

from enum import StrEnum

from batchyard.errors import InvalidTransition


class BatchState(StrEnum):
    CREATED = "created"  #: made, no items yet
    UPLOADING = "uploading"  #: items are being written; invisible to workers
    QUEUED = "queued"  #: waiting for its first item to be claimed
    PROCESSING = "processing"  #: items are being worked on
    PAUSED = "paused"  #: no new claims; running items finish
    RETRYING = "retrying"  #: a finished batch whose failed items were sent back
    COMPLETED = "completed"  #: every item succeeded
    PARTIALLY_COMPLETED = "partially_completed"  #: some items succeeded, some did not
    FAILED = "failed"  #: no item succeeded
    CANCELLED = "cancelled"  #: stopped by a user; unfinished items cancelled

    @property
    def is_terminal(self) -> bool:
        return self in _BATCH_ENDS

    @property
    def is_active(self) -> bool:
        """Whether workers may claim items of a batch in this state."""
        return self in _BATCH_CLAIMABLE


class ItemState(StrEnum):
    PENDING = "pending"  #: waiting to be claimed
    RUNNING = "running"  #: leased to a worker
    RETRY_WAIT = "retry_wait"  #: failed an attempt; waits for its next one
    SUCCEEDED = "succeeded"  #: finished with a result
    FAILED = "failed"  #: finished without one, attempts spent or not retryable
    CANCELLED = "cancelled"  #: stopped before it finished

    @property
    def is_terminal(self) -> bool:
        return self in _ITEM_ENDS


B = BatchState
I = ItemState  # noqa: E741 - a one-letter alias keeps the tables readable

BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    B.CREATED: frozenset({B.UPLOADING, B.CANCELLED}),
    B.UPLOADING: frozenset({B.QUEUED, B.CANCELLED}),
    B.QUEUED: frozenset({B.PROCESSING, B.PAUSED, B.CANCELLED}),
    B.PROCESSING: frozenset({B.COMPLETED, B.PARTIALLY_COMPLETED, B.FAILED, B.PAUSED, B.CANCELLED}),
    # A retry round can be paused too; resume returns a batch to the state it left.
    B.PAUSED: frozenset({B.QUEUED, B.PROCESSING, B.RETRYING, B.CANCELLED}),
    B.RETRYING: frozenset({B.COMPLETED, B.PARTIALLY_COMPLETED, B.FAILED, B.PAUSED, B.CANCELLED}),
    B.COMPLETED: frozenset(),
    B.PARTIALLY_COMPLETED: frozenset({B.RETRYING}),
    B.FAILED: frozenset({B.RETRYING}),
    B.CANCELLED: frozenset(),
}

ITEM_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    I.PENDING: frozenset({I.RUNNING, I.CANCELLED}),
    I.RUNNING: frozenset({I.SUCCEEDED, I.FAILED, I.RETRY_WAIT, I.PENDING, I.CANCELLED}),
    I.RETRY_WAIT: frozenset({I.PENDING, I.CANCELLED}),
    I.SUCCEEDED: frozenset(),
    I.FAILED: frozenset({I.PENDING}),
    I.CANCELLED: frozenset({I.PENDING}),  # a retry of a finished batch may send it back
}

_BATCH_ENDS = frozenset({B.COMPLETED, B.PARTIALLY_COMPLETED, B.FAILED, B.CANCELLED})
_BATCH_CLAIMABLE = frozenset({B.QUEUED, B.PROCESSING, B.RETRYING})
_ITEM_ENDS = frozenset({I.SUCCEEDED, I.FAILED, I.CANCELLED})

#: The batch states in which items are still worked on or wait to be.
BATCH_OPEN_STATES = frozenset(set(BatchState) - _BATCH_ENDS)


def check_batch(current: BatchState, new: BatchState) -> BatchState:
    """Return ``new`` if a batch may move there from ``current``; raise InvalidTransition."""
    if new not in BATCH_TRANSITIONS[current]:
        raise InvalidTransition("batch", current.value, new.value)
    return new


def check_item(current: ItemState, new: ItemState) -> ItemState:
    """Return ``new`` if an item may move there from ``current``; raise InvalidTransition."""
    if new not in ITEM_TRANSITIONS[current]:
        raise InvalidTransition("item", current.value, new.value)
    return new


def ending_state(succeeded: int, failed: int, cancelled: int) -> BatchState:
    """The state a sealed batch ends in once none of its items is left to run.

    All succeeded (or there were none): completed. None succeeded: failed. Otherwise
    partially completed. A batch cancelled by a user is moved by ``cancel``, not here.
    """
    if failed == 0 and cancelled == 0:
        return B.COMPLETED
    if succeeded == 0:
        return B.FAILED
    return B.PARTIALLY_COMPLETED
