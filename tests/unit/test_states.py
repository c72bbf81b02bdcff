"""The lifecycle tables against DESIGN.md's lifecycle, and the checks built on them."""

from __future__ import annotations

import pytest

from batchyard.errors import InvalidTransition
from batchyard.states import (
    BATCH_OPEN_STATES,
    BATCH_TRANSITIONS,
    ITEM_TRANSITIONS,
    BatchState,
    ItemState,
    check_batch,
    check_item,
    ending_state,
)

B = BatchState
S = ItemState

ENDS = {B.COMPLETED, B.PARTIALLY_COMPLETED, B.FAILED}

# DESIGN.md, "Lifecycle", read edge by edge:
#   created -> uploading -> queued -> processing -> completed | partially_completed | failed;
#   paused from queued/processing, back by resume; cancelled from any non-terminal state;
#   retrying: a finished batch whose failed items were sent back, ending like processing.
DESIGN_BATCH: dict[BatchState, set[BatchState]] = {
    B.CREATED: {B.UPLOADING, B.CANCELLED},
    B.UPLOADING: {B.QUEUED, B.CANCELLED},
    B.QUEUED: {B.PROCESSING, B.PAUSED, B.CANCELLED},
    B.PROCESSING: {*ENDS, B.PAUSED, B.CANCELLED},
    # DESIGN.md: "paused (from queued/processing, back by resume)". batchyard also lets a
    # retry round pause and resume (docs/architecture.md, "Lifecycle"): the two edges below.
    B.PAUSED: {B.QUEUED, B.PROCESSING, B.RETRYING, B.CANCELLED},
    B.RETRYING: {*ENDS, B.PAUSED, B.CANCELLED},
    B.COMPLETED: set(),  # nothing failed, nothing to send back
    B.PARTIALLY_COMPLETED: {B.RETRYING},
    B.FAILED: {B.RETRYING},
    B.CANCELLED: set(),
}

# Item: pending -> running -> succeeded | failed, retry_wait between attempts, cancelled;
# a lease that expires (or is given back) returns the item to the queue; retrying a batch
# sends its failed (or, when asked, its cancelled) items back.
DESIGN_ITEM: dict[ItemState, set[ItemState]] = {
    S.PENDING: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.RETRY_WAIT, S.PENDING, S.CANCELLED},
    S.RETRY_WAIT: {S.PENDING, S.CANCELLED},
    S.SUCCEEDED: set(),
    S.FAILED: {S.PENDING},
    S.CANCELLED: {S.PENDING},
}


def edges(
    table: dict[BatchState, set[BatchState]] | dict[ItemState, set[ItemState]],
) -> set[tuple[str, str]]:
    return {(a.value, b.value) for a, targets in table.items() for b in targets}


def test_every_state_has_a_row() -> None:
    assert set(BATCH_TRANSITIONS) == set(BatchState)
    assert set(ITEM_TRANSITIONS) == set(ItemState)
    assert {s.value for s in BatchState} == {
        "created",
        "uploading",
        "queued",
        "processing",
        "paused",
        "retrying",
        "completed",
        "partially_completed",
        "failed",
        "cancelled",
    }
    assert {s.value for s in ItemState} == {
        "pending",
        "running",
        "retry_wait",
        "succeeded",
        "failed",
        "cancelled",
    }


def test_batch_table_is_the_design_lifecycle() -> None:
    table = {state: set(targets) for state, targets in BATCH_TRANSITIONS.items()}
    assert {
        "in the table, not in DESIGN.md": sorted(edges(table) - edges(DESIGN_BATCH)),
        "in DESIGN.md, not in the table": sorted(edges(DESIGN_BATCH) - edges(table)),
    } == {"in the table, not in DESIGN.md": [], "in DESIGN.md, not in the table": []}


def test_item_table_is_the_design_lifecycle() -> None:
    table = {state: set(targets) for state, targets in ITEM_TRANSITIONS.items()}
    assert edges(table) == edges(DESIGN_ITEM)


def test_cancel_reaches_every_open_batch_state_and_nothing_leaves_an_end() -> None:
    for state in BatchState:
        if state.is_terminal:
            assert B.CANCELLED not in BATCH_TRANSITIONS[state] or state is B.CANCELLED
            assert BATCH_TRANSITIONS[state] <= {B.RETRYING}
        else:
            assert B.CANCELLED in BATCH_TRANSITIONS[state], state
    for item_state in ItemState:
        if item_state.is_terminal:  # only a retry (back to pending) leaves an item's end
            assert ITEM_TRANSITIONS[item_state] <= {S.PENDING}
    assert ITEM_TRANSITIONS[S.SUCCEEDED] == frozenset()


def test_terminal_and_active_states() -> None:
    assert {s for s in BatchState if s.is_terminal} == {*ENDS, B.CANCELLED}
    assert {s for s in BatchState if s.is_active} == {B.QUEUED, B.PROCESSING, B.RETRYING}
    assert BATCH_OPEN_STATES == frozenset(set(BatchState) - {*ENDS, B.CANCELLED})
    assert {s for s in ItemState if s.is_terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELLED}


@pytest.mark.parametrize(("current", "new"), sorted(edges(DESIGN_BATCH)))
def test_check_batch_allows_design_moves(current: str, new: str) -> None:
    assert check_batch(B(current), B(new)) is B(new)


def test_check_batch_refuses_the_rest() -> None:
    refused = 0
    for current in BatchState:
        for new in BatchState:
            if new in BATCH_TRANSITIONS[current]:
                continue
            with pytest.raises(InvalidTransition) as caught:
                check_batch(current, new)
            error = caught.value
            assert (error.kind, error.current, error.new) == ("batch", current.value, new.value)
            assert repr(current.value) in str(error)
            refused += 1
    assert refused > 0


def test_check_item() -> None:
    for current in ItemState:
        for new in ItemState:
            if new in ITEM_TRANSITIONS[current]:
                assert check_item(current, new) is new
            else:
                with pytest.raises(InvalidTransition) as caught:
                    check_item(current, new)
                assert (caught.value.kind, caught.value.current, caught.value.new) == (
                    "item",
                    current.value,
                    new.value,
                )


@pytest.mark.parametrize(
    ("succeeded", "failed", "cancelled", "ending"),
    [
        (0, 0, 0, B.COMPLETED),  # an empty batch has nothing that went wrong
        (5, 0, 0, B.COMPLETED),
        (4, 1, 0, B.PARTIALLY_COMPLETED),
        (4, 0, 1, B.PARTIALLY_COMPLETED),
        (1, 2, 3, B.PARTIALLY_COMPLETED),
        (0, 5, 0, B.FAILED),
        (0, 0, 5, B.FAILED),
        (0, 2, 3, B.FAILED),
    ],
)
def test_ending_state(succeeded: int, failed: int, cancelled: int, ending: BatchState) -> None:
    assert ending_state(succeeded, failed, cancelled) is ending
    assert ending in ENDS
