"""examples/streamlit_app.py under Streamlit's AppTest, over a real SQLite yard: it submits
a custom list, shows the open batches with their progress, cancels one, lists the history,
and never runs an item itself (a worker does, elsewhere)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from batchyard import Yard
from tests.integration.test_processes import wait_for

testing = pytest.importorskip("streamlit.testing.v1")

APP = Path(__file__).resolve().parents[2] / "examples" / "streamlit_app.py"
TASK = "tests.procs.pages:work"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("BATCHYARD_DB", url)
    return url


def run_app() -> Any:
    app = testing.AppTest.from_file(str(APP), default_timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def test_a_custom_list_is_submitted_and_shown_waiting_for_a_worker(db: str) -> None:
    app = run_app()
    app.text_input[0].input("from streamlit")
    app.text_input[1].input(TASK)
    app.text_area[0].input('{"id": "a", "n": 1}\nplain words\n')
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert any("with 2 items" in s.value for s in app.success)
    with Yard(db) as yard:
        (status,) = yard.batches(limit=5).rows
        assert status.name == "from streamlit" and status.counts.total == 2
        assert status.state is not None and status.counts.pending == 2  # nothing ran here
        items = [item.payload for item in yard.batch(status.id).items()]
    assert items == [{"id": "a", "n": 1}, {"text": "plain words"}]


def test_open_batches_show_progress_and_can_be_cancelled_and_history_lists_them(
    db: str,
) -> None:
    with Yard(db) as yard:
        done = yard.submit(TASK, [{"id": "d"}], name="done one")
        yard.run_until_idle(poll_interval=0.01)
        waiting = yard.submit(TASK, [{"id": "w1"}, {"id": "w2"}], name="waiting one")
    app = run_app()
    labels = [p.proto.text for p in app.get("progress")]
    assert any(label.startswith("waiting one: queued, 0/2") for label in labels), labels
    assert not any("done one" in label for label in labels)
    cancel = [b for b in app.button if b.key == f"cancel-{waiting.id}"]
    cancel[0].click().run()
    assert not app.exception, app.exception
    with Yard(db) as yard:
        assert yard.batch(waiting.id).status().state.value == "cancelled"
    history = app.dataframe[0].value
    assert set(history["id"]) == {done.id, waiting.id}
    assert not any("waiting one" in p.proto.text for p in app.get("progress"))


def test_running_items_show_the_progress_their_task_reported(db: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Yard(db) as yard:
        batch = yard.submit(
            TASK,
            [
                {"id": "half", "progress": 0.5, "message": "page 2 of 4", "gate": str(gate)},
                {"id": "quarter", "progress": 0.25, "gate": str(gate)},
            ],
            name="slow one",
        )
        worker = threading.Thread(
            target=lambda: yard.run_until_idle(lease=0.6, poll_interval=0.01), daemon=True
        )
        worker.start()
        try:
            wait_for(
                lambda: sorted(i.progress or 0 for i in batch.items("running")) == [0.25, 0.5],
                30,
                "both items to run and report their progress",
            )
            app = run_app()
            bars = {p.proto.text: p.proto.value for p in app.get("progress")}
        finally:
            gate.touch()
            worker.join(30)
    assert bars["half: attempt 1, page 2 of 4"] == 50, bars
    assert bars["quarter: attempt 1"] == 25, bars
    assert any(label.startswith("slow one: processing, 0/2") for label in bars), bars


def test_an_empty_list_is_refused_with_a_message(db: str) -> None:
    app = run_app()
    app.button[0].click().run()
    assert any("No items" in e.value for e in app.error)
    with Yard(db) as yard:
        assert yard.batches(limit=5).rows == []


def test_a_batch_is_made_from_a_template(db: str) -> None:
    with Yard(db) as yard:
        yard.templates.create("echo", TASK, {"note": "from a template"})
    app = run_app()
    app.selectbox[0].select("echo")
    app.text_area[0].input("one\ntwo\nthree")
    app.button[0].click().run()
    assert not app.exception, app.exception
    with Yard(db) as yard:
        (status,) = yard.batches(limit=5).rows
    assert str(status.template) == "echo@1" and status.counts.total == 3
    assert status.params["note"] == "from a template"
