"""Webhooks end to end, over both stores, against a real receiver on loopback HTTP: retries
until a 2xx and then never again, the signature a receiver checks, two sending processes
that never send one delivery twice, and a receiver that hangs without slowing a worker.
Backoff is shortened through the Deliverer's configuration; waits are on conditions."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import Yard
from batchyard.deliveries import Backoff, DeliveryState
from batchyard.errors import SignatureError
from batchyard.webhooks import DELIVERY, EVENT, SIGNATURE, DeliveryConfig, signing_secret, verify
from batchyard.webhooks.deliverer import Deliverer
from tests.conftest import FAST
from tests.integration.test_processes import wait_for
from tests.procs.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
QUICK = DeliveryConfig(poll=0.01, backoff=Backoff(base=0.05, cap=0.1))


async def echo(item: dict[str, Any]) -> dict[str, Any]:
    return item


@pytest.fixture
def yard(store_url: str) -> Iterator[Yard]:
    with Yard(store_url) as y:
        y.task(echo)
        yield y


@pytest.fixture
def deliverer(yard: Yard) -> Iterator[Callable[..., Deliverer]]:
    started: list[Deliverer] = []

    def start(config: DeliveryConfig = QUICK) -> Deliverer:
        started.append(Deliverer(yard.store, config))
        started[-1].start()
        return started[-1]

    yield start
    for one in started:
        one.stop()


def test_a_receiver_failing_three_times_gets_one_successful_delivery(
    yard: Yard, deliverer: Callable[..., Deliverer]
) -> None:
    with Receiver([500, 503, 500]) as receiver:
        batch = yard.submit(echo, [{"id": 1}, {"id": 2}], webhooks=[receiver.url])
        yard.run_until_idle(**FAST)
        sender = deliverer()
        requests = receiver.wait_for(4)
        (done,) = wait_for(
            lambda: [d for d in batch.webhooks() if d.state is DeliveryState.DELIVERED],
            10,
            "the delivery recorded as delivered",
            batch.webhooks,
        )
        sender.stop()
        assert [r.answered for r in receiver.received] == [500, 503, 500, 200]
    assert len({r.headers[DELIVERY] for r in requests}) == 1  # one delivery, tried 4 times
    assert done.id == requests[0].headers[DELIVERY] and done.event == "batch.completed"
    assert (done.attempts, done.last_status, done.last_error) == (4, 200, None)
    assert done.delivered_at is not None and done.next_at is None
    assert json.loads(requests[-1].body)["counts"]["succeeded"] == 2


def test_the_signature_verifies_and_a_tampered_body_does_not(
    yard: Yard, deliverer: Callable[..., Deliverer]
) -> None:
    with Receiver() as receiver:
        batch = yard.submit(echo, [{"id": 1}], webhooks=[receiver.url])
        batch.pause()
        deliverer()
        (request,) = receiver.wait_for(1)
    secret, header, body = signing_secret(yard.store), request.headers[SIGNATURE], request.body
    assert secret.startswith("whsec_") and request.headers[EVENT] == "batch.paused"
    verify(secret, header, body)
    status = json.loads(body)
    assert status["id"] == batch.id and status["state"] == "paused"
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(secret, header, body.replace(b'"paused"', b'"completed"'))
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify("whsec_another", header, body)
    with pytest.raises(SignatureError, match="from now"):
        verify(secret, header, body, now=time.time() + 301)


def test_two_processes_sending_at_once_never_send_one_delivery_twice(
    yard: Yard, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        senders = []
        for n in range(2):
            ready = tmp_path / f"ready{n}"
            senders.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.procs.deliver", yard.url, str(ready)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                )
            )
            wait_for(ready.exists, 30, f"sender {n} started")
        try:
            for _ in range(30):  # each batch's cancellation is one delivery per URL
                batch = yard.submit(echo, [{"id": 1}], webhooks=[receiver.url, receiver.url + "2"])
                batch.cancel()
            requests = receiver.wait_for(60)
            wait_for(
                lambda: yard.store.delivery_counts()[DeliveryState.DELIVERED] == 60,
                20,
                "60 deliveries recorded as delivered",
                yard.store.delivery_counts,
            )
        finally:
            for sender in senders:
                sender.communicate(timeout=30)
    sent = Counter(r.headers[DELIVERY] for r in receiver.received)
    assert len(sent) == 60 and set(sent.values()) == {1}, sent.most_common(3)
    assert len(requests) == len(receiver.received) == 60


def test_a_receiver_that_hangs_does_not_slow_a_worker(
    yard: Yard, deliverer: Callable[..., Deliverer]
) -> None:
    hung = DeliveryConfig(poll=0.01, total=30.0)
    with Receiver(hang=True) as receiver:
        for _ in range(5):  # deliveries stuck on the receiver before the worker starts
            yard.submit(echo, [{"id": 1}], webhooks=[receiver.url]).cancel()
        deliverer(hung)
        receiver.wait_for(5)
        batch = yard.submit(echo, [{"id": n} for n in range(500)], webhooks=[receiver.url])
        started = time.monotonic()
        yard.run_until_idle(**FAST)
        took = time.monotonic() - started
        assert batch.status().counts.succeeded == 500
        receiver.wait_for(6)  # the batch's own ending was sent too, and hangs as well
        # Every try still hangs: none has been answered or given up while the worker ran.
        assert all(r.answered is None for r in receiver.received)
        assert yard.store.delivery_counts()[DeliveryState.PENDING] == 6
    assert took < hung.total, f"the worker took {took:.1f}s while the receiver hung"


def test_a_receiver_that_is_down_is_retried_then_given_up(
    yard: Yard, deliverer: Callable[..., Deliverer]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    batch = yard.submit(echo, [{"id": 1}], webhooks=[down])
    batch.cancel()
    # The day is 3 s here, counted from the cancel: the first try may come a second late on
    # a busy machine, and tries follow at most 0.05 s apart.
    deliverer(DeliveryConfig(poll=0.01, backoff=Backoff(base=0.02, cap=0.05, give_up_after=3)))
    (failed,) = wait_for(
        lambda: [d for d in batch.webhooks() if d.state is DeliveryState.FAILED],
        20,
        "the delivery given up",
        batch.webhooks,
    )
    assert failed.attempts >= 3 and failed.last_status is None
    assert failed.last_error is not None and "ConnectError" in failed.last_error
    assert failed.next_at is None and failed.delivered_at is None


def test_a_backlog_goes_out_at_the_receivers_pace_not_one_claim_per_poll(
    yard: Yard, deliverer: Callable[..., Deliverer]
) -> None:
    with Receiver() as receiver:
        for _ in range(60):
            yard.submit(echo, [{"id": 1}], webhooks=[receiver.url]).cancel()
        # 60 deliveries, 5 at a time, and a poll far longer than the test may take: only a
        # look for more as each try ends gets them all out in time.
        deliverer(DeliveryConfig(poll=600.0, in_flight=5))
        receiver.wait_for(60, timeout=30)
        wait_for(
            lambda: yard.store.delivery_counts()[DeliveryState.DELIVERED] == 60,
            30,
            "60 deliveries recorded as delivered",
            yard.store.delivery_counts,
        )
