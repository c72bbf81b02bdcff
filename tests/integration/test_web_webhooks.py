"""``GET /api/v1/batches/{id}/webhooks`` through FastAPI's TestClient over a real store: the
batch's deliveries for its owner (and an admin), a 404 for another owner's batch or none,
a 401 without a token; and the ``batchyard_webhook_deliveries`` metric."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from batchyard import Yard
from batchyard.deliveries import Attempt
from batchyard.web.app import API, create_app
from batchyard.web.settings import ServerSettings
from batchyard.web.webhooks import delivery_metrics

#: Nothing listens there: the app's own sender fails at once, and the delivery stays pending.
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as y:
        yield y


@pytest.fixture
def client(yard: Yard) -> Iterator[TestClient]:
    with TestClient(create_app(yard, ServerSettings(workers=0))) as client:
        yield client


def bearer(yard: Yard, name: str, role: str) -> dict[str, str]:
    _, secret = yard.tokens.create(name, role)
    return {"Authorization": f"Bearer {secret}"}


def test_an_owner_reads_its_batch_deliveries_and_no_one_else_does(
    yard: Yard, client: TestClient
) -> None:
    alice, bob = bearer(yard, "alice", "operator"), bearer(yard, "bob", "operator")
    admin = bearer(yard, "root", "admin")
    batch = yard.submit("batchyard.demo:score_lead", [{"id": 1}], webhooks=[HOOK], owner="alice")
    batch.cancel()
    url = f"{API}/batches/{batch.id}/webhooks"

    answer = client.get(url, headers=alice)
    assert answer.status_code == 200, answer.text
    (delivery,) = answer.json()["deliveries"]
    assert answer.json()["batch"] == batch.id
    assert (delivery["event"], delivery["url"], delivery["state"]) == (
        "batch.cancelled",
        HOOK,
        "pending",
    )
    assert delivery["id"] == batch.webhooks()[0].id
    (seen,) = client.get(url, headers=admin).json()["deliveries"]
    assert seen["id"] == delivery["id"]

    assert client.get(url, headers=bob).status_code == 404
    assert client.get(url).status_code == 401
    missing = client.get(f"{API}/batches/batch_0_nope/webhooks", headers=alice)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_the_metric_counts_deliveries_by_state(yard: Yard) -> None:
    for n in range(3):
        yard.submit("batchyard.demo:score_lead", [{"id": n}], webhooks=[HOOK]).cancel()
    (first, *_) = yard.store.claim_deliveries(yard.clock.now(), 60.0, limit=1)
    yard.store.finish_delivery(first, Attempt(200, None, 0.1), yard.clock.now(), None)
    registry = CollectorRegistry()

    class Deliveries(Collector):
        def collect(self) -> Iterator[Metric]:
            return delivery_metrics(yard)

    registry.register(Deliveries())
    counts = {
        state: registry.get_sample_value("batchyard_webhook_deliveries", {"state": state})
        for state in ("pending", "delivered", "failed")
    }
    assert counts == {"pending": 2.0, "delivered": 1.0, "failed": 0.0}
