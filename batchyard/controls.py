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
    RERUN = "rerun"
    SEAL = "seal"
    DELETE = "delete"


def controls(status: BatchStatus) -> frozenset[Control]:
    """The controls that would change ``status``'s batch now: pause while workers may claim
    its items, resume while paused, cancel until it ends, retry a failed or partially
    completed batch that has failed items, seal an open batch until it ends; once it has
    ended, re-run it (a new batch of its items) or delete it."""
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
    if not status.sealed and not state.is_terminal:
        found.add(Control.SEAL)
    if state.is_terminal:
        found.add(Control.DELETE)
        if status.counts.total:
            found.add(Control.RERUN)
    return frozenset(found)


def displayed(status: BatchStatus) -> list[Control]:
    """The controls a batch's page shows, enabled or not (``controls``): all of them but
    seal, which only an open batch ever has."""
    return [c for c in Control if c is not Control.SEAL or not status.sealed]
