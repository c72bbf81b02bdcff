"""A batch's pace on its page and in the API (TestClient over a real SQLite yard): the
throughput over its whole run drawn from the store on the first paint, the ETA shown as a
range only once it means something, and "stalled" on the page, in ``GET /api/v1/batches/{id}``
and in ``batchyard status --json`` alike. The items ran under a ``FakeClock`` set in the
past, so their finish times lie where each test needs them; the pages read the real time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from batchyard import FakeClock, TaskContext, Yard
from batchyard.errors import PauseBatch
from batchyard.states import BatchState
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings
from tests.conftest import FAST

#: The installed command, beside this interpreter.
BATCHYARD = str(Path(sys.executable).with_name("batchyard"))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pace.db'}"


def ran(db: str, started_ago: float, took: float, done: int, left: int) -> str:
    """A running batch whose ``done`` items took ``took`` s each from ``started_ago`` s
    ago, with ``left`` items still to run."""
    clock = FakeClock(time.time() - started_ago)
    with Yard(db, clock=clock) as yard:

        @yard.task(name="paced", concurrency=1, max_attempts=1)
        def paced(item: dict[str, Any], ctx: TaskContext) -> None:
            if item.get("stop"):
                raise PauseBatch("stop here")
            clock.advance(took)

        items: list[dict[str, Any]] = [{"id": f"a{n}"} for n in range(done)]
        items += [{"id": f"b{n}", "stop": n == 0} for n in range(left)]
        batch = yard.submit("paced", items, name="paced", owner="ann")
        yard.run_until_idle(concurrency=1, **FAST)
        assert batch.status().state is BatchState.PAUSED
        batch.resume()
        return batch.id


@pytest.fixture
def yard(db: str) -> Iterator[Yard]:
    with Yard(db) as opened:
        yield opened


@pytest.fixture
def ann(yard: Yard) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, secret = yard.tokens.create("ann", "operator", "ann")
    app = create_app(yard, ServerSettings(workers=0))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/login", params={"token": secret}).status_code == 200
        yield client, {"Authorization": f"Bearer {secret}"}


def points(html: str) -> list[tuple[float, float]]:
    found = re.search(r'<svg class="spark"[^>]*><polyline points="([^"]+)"', html)
    assert found is not None, "no sparkline"
    return [(float(x), float(y)) for x, y in (p.split(",") for p in found.group(1).split())]


def test_the_first_paint_draws_the_whole_run_and_a_range_for_the_time_left(
    db: str, ann: tuple[TestClient, dict[str, str]]
) -> None:
    # 30 items, one every 2 s, from 62 s ago; 10 left: about 20 s to go.
    batch = ran(db, started_ago=62, took=2.0, done=30, left=10)
    client, bearer = ann
    page = client.get(f"/batches/{batch}").text
    drawn = points(page)
    # Buckets of about 6 s over the whole minute, not since the page opened (a stream's
    # own samples would be one point by now).
    assert len(drawn) >= 9 and drawn[0][0] == 0.0 and drawn[-1][0] == 100.0
    assert min(y for _, y in drawn) < 10  # a pace the line rises to
    eta = re.search(r'<dd id="eta">([^<]+)</dd>', page)
    assert eta is not None and " to " in eta.group(1)
    low, high = client.get(f"/api/v1/batches/{batch}", headers=bearer).json()["eta_range"]
    # 10 items at one per 2 s, after 2 s without one: about 20 s, a little more at the
    # slow end.
    assert 18 <= low <= 22 and 20 <= high <= 40
    assert 'id="stalled"' not in page


def test_too_little_run_gives_no_range_yet(db: str, ann: tuple[TestClient, dict[str, str]]) -> None:
    batch = ran(db, started_ago=10, took=1.0, done=5, left=5)
    client, bearer = ann
    page = client.get(f"/batches/{batch}").text
    assert re.search(r'<dd id="eta">not known yet</dd>', page)
    assert client.get(f"/api/v1/batches/{batch}", headers=bearer).json()["eta_range"] is None


def test_a_quiet_batch_is_stalled_on_the_page_in_the_api_and_the_cli(
    db: str, ann: tuple[TestClient, dict[str, str]]
) -> None:
    # Items took 2 s; the last ended about 15 minutes ago, and no worker runs.
    batch = ran(db, started_ago=960, took=2.0, done=30, left=3)
    client, bearer = ann
    page = client.get(f"/batches/{batch}").text
    assert "stalled: no item has started or ended for 15 min" in page
    api = client.get(f"/api/v1/batches/{batch}", headers=bearer).json()
    assert api["stalled"] is True and 895 < api["quiet"] < 910
    cli = subprocess.run(
        [BATCHYARD, "--db", db, "status", batch, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(cli.stdout)
    assert shown["stalled"] is True and shown["eta_range"] == api["eta_range"]
    text = subprocess.run(
        [BATCHYARD, "--db", db, "status", batch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "stalled" in text and "nothing started or ended for 15:" in text
