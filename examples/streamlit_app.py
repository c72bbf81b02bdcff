"""The batch tab a Streamlit app would embed, through batchyard's Python API alone.

    pip install 'batchyard[streamlit]'
    BATCHYARD_DB=sqlite:///batchyard.db streamlit run examples/streamlit_app.py
    batchyard --db sqlite:///batchyard.db worker      # in another terminal: runs the items

The store is the truth: this script only submits, reads and cancels; workers elsewhere run
the items. No worker thread ever touches Streamlit's state, and every rerun reads what it
shows from the store again. The active batches, with the progress each running item last
reported, refresh every 1.5 s in a fragment of their own, so the rest of the page is not
rerun (nor blocked) meanwhile.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from typing import Any

import streamlit as st

from batchyard import Yard
from batchyard.states import BATCH_OPEN_STATES, BatchState

#: The task a custom list runs with unless another is named.
DEFAULT_TASK = "batchyard.demo:score_lead"
#: How many running items an active batch shows with their progress.
RUNNING_SHOWN = 10


@st.cache_resource
def _open(url: str) -> Yard:
    """One Yard per store for the Streamlit server (every rerun and session reuses it)."""
    return Yard(url)


def yard() -> Yard:
    return _open(os.environ.get("BATCHYARD_DB", "sqlite:///batchyard.db"))


def parse_items(text: str) -> list[Any]:
    """One item per line: a JSON object, or any other text as ``{"text": line}``."""
    items = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = {"text": line}
        items.append(item if isinstance(item, dict) else {"text": line})
    return items


def new_batch() -> None:
    st.subheader("New batch")
    templates = [t.name for t in yard().templates.list()]
    with st.form("new_batch", clear_on_submit=True):
        name = st.text_input("Name")
        template = st.selectbox("Template", ["(none: a task)", *templates])
        task = st.text_input("Task", DEFAULT_TASK)
        text = st.text_area("Items, one per line (JSON objects or plain text)")
        if st.form_submit_button("Submit"):
            submit(name, None if template.startswith("(none") else template, task, text)


def submit(name: str, template: str | None, task: str, text: str) -> None:
    items = parse_items(text)
    if not items:
        st.error("No items: write one per line.")
        return
    try:
        batch = yard().submit(
            None if template else task, items, template=template, name=name or None
        )
    except Exception as exc:  # shown, not raised: the page stays usable
        st.error(f"Not submitted: {exc}")
        return
    st.success(f"Submitted {batch.id} with {len(items)} items.")


@st.fragment(run_every=1.5)
def active() -> None:
    """The batches still open, refreshed on their own every 1.5 s."""
    st.subheader("Active batches")
    open_batches = []
    for state in BATCH_OPEN_STATES:
        open_batches += yard().batches(state=state, limit=50).rows
    if not open_batches:
        st.caption("None running.")
    for status in sorted(open_batches, key=lambda s: s.created_at, reverse=True):
        counts = status.counts
        label = f"{status.name or status.id}: {status.state.value}, "
        label += f"{counts.finished}/{counts.total} ({counts.failed} failed)"
        st.progress(status.progress, text=label)
        running_items(status.id, counts.running)
        if st.button("Cancel", key=f"cancel-{status.id}"):
            yard().batch(status.id).cancel()
            st.rerun()  # at once, not at the next refresh


def running_items(batch_id: str, running: int) -> None:
    """The batch's running items, each with the progress its task last reported (the first
    ``RUNNING_SHOWN``; payloads and results are not read)."""
    if not running:
        return
    items = (
        yard().batch(batch_id).items("running", page=RUNNING_SHOWN, payloads=False, results=False)
    )
    with st.container(border=True):
        for item in islice(items, RUNNING_SHOWN):
            text = f"{item.key}: attempt {item.runs or item.attempts}"
            if item.message:
                text += f", {item.message}"
            st.progress(item.progress or 0.0, text=text)
        if running > RUNNING_SHOWN:
            st.caption(f"and {running - RUNNING_SHOWN} more running")


def history() -> None:
    st.subheader("History")
    states = ["any", *(s.value for s in BatchState)]
    state = st.selectbox("State", states, key="history_state")
    rows = yard().batches(state=None if state == "any" else state, limit=50).rows
    st.dataframe(
        [
            {
                "id": s.id,
                "name": s.name,
                "state": s.state.value,
                "items": s.counts.total,
                "failed": s.counts.failed,
                "cost": s.cost_text(),
            }
            for s in rows
        ],
        hide_index=True,
    )


def main() -> None:
    st.title("Batches")
    submit_tab, active_tab, history_tab = st.tabs(["New batch", "Active", "History"])
    with submit_tab:
        new_batch()
    with active_tab:
        active()
    with history_tab:
        history()


main()
