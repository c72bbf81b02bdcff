"""The batch page's re-run and seal controls in process (FastAPI's TestClient over a real
SQLite yard): each offered only when it applies, behind a confirm page that names the exact
count (a re-run also the template version it runs with) before anything is done."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from batchyard import Yard
from tests.integration.test_dashboard_pages import TASK, csrf, make, sign_in


def test_a_rerun_names_its_count_and_version_then_makes_the_batch(
    app: FastAPI, ann: TestClient, yard: Yard
) -> None:
    yard.templates.create("scorer", TASK, {"out": "one"})
    yard.templates.update("scorer", {"out": "two"})
    batch = yard.submit(
        TASK,
        [{"id": f"k{i}", "fail": "boom" if i < 2 else None} for i in range(5)],
        template="scorer@1",
        name="scored",
        owner="ann",
        max_attempts=1,
    )
    running = ann.get(f"/batches/{batch.id}")
    assert '<button type="button" class="secondary" id="do-rerun" disabled>' in running.text
    assert 'id="do-seal"' not in running.text  # a sealed batch never offers it
    assert ann.get(f"/batches/{batch.id}/actions/rerun").status_code == 409
    yard.run_until_idle(poll_interval=0.01)
    page = ann.get(f"/batches/{batch.id}")
    assert f'id="do-rerun" href="/batches/{batch.id}/actions/rerun"' in page.text
    confirm = ann.get(f"/batches/{batch.id}/actions/rerun")
    assert "A new batch of 5 items, run with scorer@1." in confirm.text
    assert "Rerun: 5 items with scorer@1</button>" in confirm.text
    assert '<option value="failed">the failed (2)</option>' in confirm.text
    assert '<option value="cancelled">' not in confirm.text  # none is cancelled
    assert '<option value="scorer">scorer (latest: v2,' in confirm.text
    failed = ann.get(
        f"/batches/{batch.id}/actions/rerun", params={"items": "failed", "template": "scorer"}
    )
    assert "A new batch of 2 items (failed in this batch), run with scorer@2 instead of" in (
        failed.text
    )
    assert "Rerun: 2 items with scorer@2</button>" in failed.text
    assert len(yard.batches(limit=10).rows) == 1  # nothing made by looking
    made = ann.post(
        f"/batches/{batch.id}/actions/rerun",
        data={"csrf": csrf(failed.text), "items": "failed", "template": "scorer", "name": "again"},
        follow_redirects=False,
    )
    assert made.status_code == 303 and made.headers["location"].endswith("?done=rerun")
    new = yard.batch(made.headers["location"].split("?")[0].rsplit("/", 1)[1]).status()
    assert (new.rerun_of, str(new.template), new.name) == (batch.id, "scorer@2", "again")
    assert new.counts.total == 2
    # A version archived between the page and the post: said on the page, nothing made.
    yard.templates.archive("scorer@1")
    gone = ann.post(
        f"/batches/{batch.id}/actions/rerun",
        data={"csrf": csrf(failed.text), "items": "all", "template": "scorer@1"},
    )
    assert gone.status_code == 409 and "archived" in gone.text and 'role="alert"' in gone.text
    assert len(yard.batches(limit=10).rows) == 2
    with sign_in(app, yard, "vic", "viewer", "ann") as viewer:
        assert viewer.get(f"/batches/{batch.id}/actions/rerun").status_code == 403


def test_an_open_batch_is_sealed_behind_a_confirm_naming_what_is_left(
    ann: TestClient, yard: Yard
) -> None:
    batch = yard.submit(TASK, [{"id": "a"}, {"id": "b"}], open=True, name="open", owner="ann")
    page = ann.get(f"/batches/{batch.id}")
    assert f'id="do-seal" href="/batches/{batch.id}/actions/seal"' in page.text
    confirm = ann.get(f"/batches/{batch.id}/actions/seal")
    assert "takes no more items: the 2 items left to do run, then it ends" in confirm.text
    assert "Seal: 2 items</button>" in confirm.text
    assert not batch.status().sealed
    done = ann.post(
        f"/batches/{batch.id}/actions/seal",
        data={"csrf": csrf(confirm.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303 and batch.status().sealed
    assert 'id="do-seal"' not in ann.get(f"/batches/{batch.id}").text
    assert ann.get(f"/batches/{batch.id}/actions/seal").status_code == 409
    other = make(yard, "closed")
    assert ann.get(f"/batches/{other.id}/actions/seal").status_code == 409
