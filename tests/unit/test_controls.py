"""``controls``: the controls a dashboard offers are exactly those the store accepts, for a
batch in each state a user meets (queued, paused, completed, partially completed, failed,
cancelled, and an open batch); a re-run, which leaves its batch as it is, is offered once
the batch has ended and is then accepted."""

from __future__ import annotations

import pytest

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.controls import Control, controls, displayed
from batchyard.errors import BatchyardError

TASK = "tests.procs.pages:work"


def _in(yard: Yard, state: str) -> Batch:
    fails = {"failed": 2, "partially_completed": 1}.get(state, 0)
    items = [{"id": f"k{i}", "fail": "boom" if i < fails else None} for i in range(2)]
    batch = yard.submit(TASK, items, max_attempts=1, open=state == "open")
    if state == "open":
        state = "queued"
    elif state == "paused":
        batch.pause()
    elif state == "cancelled":
        batch.cancel()
    elif state != "queued":
        yard.run_until_idle(poll_interval=0.01)
    assert batch.status().state.value == state
    return batch


def _apply(batch: Batch, control: Control) -> None:
    if control is Control.RETRY:
        batch.retry_failed()
    elif control is Control.RERUN:
        assert batch.rerun().status().rerun_of == batch.id
    else:
        getattr(batch, control.value)()


@pytest.mark.parametrize(
    "state", ["queued", "paused", "completed", "partially_completed", "failed", "cancelled", "open"]
)
def test_the_offered_controls_are_those_the_store_accepts(yard: Yard, state: str) -> None:
    status = _in(yard, state).status()
    offered = controls(status)
    assert (Control.SEAL in displayed(status)) == (state == "open")  # else never applies
    for control in Control:
        batch = _in(yard, state)
        before = batch.status()
        try:
            _apply(batch, control)
        except BatchyardError:
            assert control not in offered, f"{control} offered for a {state} batch but refused"
            continue
        if control is Control.DELETE:
            assert control in offered
            continue
        if control is Control.RERUN:  # a new batch: this one does not change
            assert (control in offered) == before.state.is_terminal
            continue
        after = batch.status()
        changed = (after.state, after.sealed) != (before.state, before.sealed)
        assert changed == (control in offered), f"{control} on a {state} batch"
