"""``controls``: the controls a dashboard offers are exactly those the store accepts, for a
batch in each state a user meets (queued, paused, completed, partially completed, failed,
cancelled)."""

from __future__ import annotations

import pytest

from batchyard import Yard
from batchyard.batch import Batch
from batchyard.controls import Control, controls
from batchyard.errors import BatchyardError

TASK = "tests.procs.pages:work"


def _in(yard: Yard, state: str) -> Batch:
    fails = {"failed": 2, "partially_completed": 1}.get(state, 0)
    items = [{"id": f"k{i}", "fail": "boom" if i < fails else None} for i in range(2)]
    batch = yard.submit(TASK, items, max_attempts=1)
    if state == "paused":
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
    else:
        getattr(batch, control.value)()


@pytest.mark.parametrize(
    "state", ["queued", "paused", "completed", "partially_completed", "failed", "cancelled"]
)
def test_the_offered_controls_are_those_the_store_accepts(yard: Yard, state: str) -> None:
    offered = controls(_in(yard, state).status())
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
        changed = batch.status().state != before.state
        assert changed == (control in offered), f"{control} on a {state} batch"
