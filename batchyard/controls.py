"""Which controls apply to a batch as it stands: what a dashboard offers (and enables) is
what the store would accept, read from the batch state machine (``BATCH_TRANSITIONS``)."""

from __future__ import annotations

from enum import StrEnum

from batchyard.models import BatchStatus
from batchyard.states import BATCH_TRANSITIONS, BatchState


class Control(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


def controls(status: BatchStatus) -> frozenset[Control]:
    """The controls that would change ``status``'s batch now: pause while workers may claim
    its items, resume while paused, cancel until it ends, retry a failed or partially
    completed batch that has failed items, delete once it has ended."""
    state = status.state
    moves = BATCH_TRANSITIONS[state]
    found = set()
    if BatchState.PAUSED in moves:
        found.add(Control.PAUSE)
    if state is BatchState.PAUSED:
        found.add(Control.RESUME)
    if BatchState.CANCELLED in moves:
        found.add(Control.CANCEL)
    if BatchState.RETRYING in moves and status.counts.failed > 0:
        found.add(Control.RETRY)
    if state.is_terminal:
        found.add(Control.DELETE)
    return frozenset(found)
