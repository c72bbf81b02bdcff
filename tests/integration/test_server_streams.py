"""The server's live streams over real HTTP and WebSockets (uvicorn on a loopback port in a
thread), fed by a worker in another process, on both stores: SSE resume after a dropped
connection, WebSocket subscribe / resume / ping, the Origin check, who sees what."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from batchyard import Yard
from batchyard.web.stream_events import Mark
from tests.integration.test_processes import Workers, wait_for
from tests.procs.inproc_server import ServerThread

TASK = "tests.procs.tasks:square"


class Env:
    """A yard, its server, worker processes, and tokens for alice, bob and an admin."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.yard = Yard(url)
        self.workers = Workers(url, tmp_path)
        self.tokens = {
            name: self.yard.tokens.create(name, role)[1]
            for name, role in (("alice", "operator"), ("bob", "operator"), ("root", "admin"))
        }
        self.server = ServerThread(self.yard, heartbeat=0.3, cors_origin=["https://ok.example"])

    def submit(self, n: int, owner: str = "alice", sleep: float = 0.01) -> str:
        items = [{"n": i, "sleep": sleep} for i in range(n)]
        return self.yard.submit(TASK, items, owner=owner).id

    def work(self) -> None:
        """One worker process, in the background, until the store is idle."""
        self.workers.start("--concurrency", "2")

    def client(self, who: str = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.server.url + "/api/v1", headers=headers, timeout=30)

    def close(self) -> None:
        self.server.stop()
        self.workers.close()
        self.yard.close()


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> Iterator[Env]:
    opened = Env(store_url, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an SSE response, as dicts of their fields (comments left out)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value


def read_until(events: Iterator[dict[str, Any]], stop: Any) -> list[dict[str, Any]]:
    got = []
    for event in events:
        got.append(event)
        if stop(got):
            break
    return got


def test_sse_resumes_after_a_dropped_connection_with_no_gap_and_no_duplicate(env: Env) -> None:
    batch = env.submit(60)
    with env.client() as client:
        path = f"/batches/{batch}/events"
        with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            env.work()
            items = lambda got: sum(e["event"] == "item" for e in got) >= 10  # noqa: E731
            first = read_until(sse(response), items)
        # Dropped: the worker goes on while nobody listens.
        last = Mark.parse(first[-1]["id"])
        store = env.yard.store
        wait_for(
            lambda: [
                i for i in store.item_changes(batch, last.seq) if i.state.value == "succeeded"
            ],
            30,
            "items recorded while the client was away",
        )
        with client.stream("GET", path, headers={"Last-Event-ID": first[-1]["id"]}) as response:
            second = list(sse(response))  # until the server closes it, after `end`
        assert (
            second[-1]["event"] == "end" and json.loads(second[-1]["data"])["state"] == "completed"
        )
        assert any(e["event"] == "item" for e in second), "nothing was replayed or sent live"
        received = first + second
        marks = [Mark.parse(e["id"]).key() for e in received if e["event"] == "item"]
        assert marks == sorted(set(marks)), "an item event came twice or out of order"
        # Each item's last event is its latest change in the store's feed.
        latest: dict[str, tuple[str, str]] = {}
        for e in received:
            if e["event"] == "item":
                data = json.loads(e["data"])
                latest[data["key"]] = (e["id"], data["state"])
        feed = env.yard.store.item_changes(batch, 0, 10_000, payloads=False, results=False)
        assert latest == {i.key: (str(Mark.of_item(i)), "succeeded") for i in feed}
        # An ended batch: its status and end, and the stream closes.
        with client.stream("GET", path) as response:
            assert [e["event"] for e in sse(response)] == ["status", "end"]


def test_a_stream_of_another_owners_batch_is_a_404_and_events_shows_own_batches(env: Env) -> None:
    mine, theirs = env.submit(3, owner="alice"), env.submit(3, owner="bob")
    with env.client("bob") as bob:
        assert bob.get(f"/batches/{mine}/events").status_code == 404
        bad = bob.get(f"/batches/{theirs}/events", headers={"Last-Event-ID": "nope"})
        assert bad.status_code == 400 and bad.json()["field"] == "Last-Event-ID"
    with env.client("alice") as alice, alice.stream("GET", "/events") as response:
        env.work()
        ended = lambda got: any(e["event"] == "end" for e in got)  # noqa: E731
        got = read_until(sse(response), ended)
    # A status is `status --json`'s shape (the batch is its "id"); items and end say batch_id.
    batches = {json.loads(e["data"]).get("batch_id") or json.loads(e["data"])["id"] for e in got}
    assert batches == {mine}


def _ws(env: Env, **kwargs: Any) -> ClientConnection:
    ws: ClientConnection = connect(env.server.ws_url, open_timeout=10, **kwargs)
    return ws


def _auth(ws: ClientConnection, env: Env, who: str = "alice") -> None:
    ws.send(json.dumps({"type": "auth", "token": env.tokens[who]}))
    assert json.loads(ws.recv(10))["type"] == "welcome"


def _until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    got = []
    while True:
        message = json.loads(ws.recv(10))
        got.append(message)
        if message["type"] == kind:
            return got


def test_websocket_subscribes_resumes_and_pings(env: Env) -> None:
    batch = env.submit(20)
    with _ws(env) as ws:
        _auth(ws, env)
        ws.send(json.dumps({"type": "subscribe", "batch": batch}))
        assert json.loads(ws.recv(10))["type"] == "subscribed"
        env.work()
        live = _until(ws, "end")
        assert live[-2]["type"] == "status" and live[-2]["state"] == "completed"
        assert _until(ws, "ping")[-1]["type"] == "ping"  # heartbeat=0.3 s
    items = [m for m in live if m["type"] == "item"]
    middle = items[len(items) // 2]["id"]
    with _ws(env) as ws:
        _auth(ws, env)
        ws.send(json.dumps({"type": "subscribe", "batch": batch, "cursor": middle}))
        subscribed = json.loads(ws.recv(10))
        assert (subscribed["type"], subscribed["batch"]) == ("subscribed", batch)
        replayed = _until(ws, "end")
        since = Mark.parse(middle)
        feed = env.yard.store.item_changes(batch, 0, 10_000, payloads=False, results=False)
        expected = sorted(
            (Mark.of_item(i) for i in feed if Mark.of_item(i).is_after(since)), key=Mark.key
        )
        assert [m["id"] for m in replayed if m["type"] == "item"] == [str(m) for m in expected]
        ws.send(json.dumps({"type": "subscribe", "batch": "batch_0_nothere"}))
        assert json.loads(ws.recv(10))["type"] == "error"


def test_websocket_needs_auth_and_a_known_origin(env: Env) -> None:
    with pytest.raises(InvalidStatus) as refused:
        _ws(env, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with _ws(env, origin="https://ok.example") as ws:  # the configured CORS origin
        _auth(ws, env)
    host = env.server.url  # the server's own origin
    token = next(t for t in env.yard.tokens.list() if t.name == "bob")
    cookie, _ = env.yard.tokens.open_session(token)
    session = {"Cookie": f"batchyard_session={cookie}"}
    with _ws(env, origin=host, additional_headers=session) as ws:  # no auth message
        assert json.loads(ws.recv(10)) == {"type": "welcome", "name": "bob", "role": "operator"}
    with _ws(env, origin=host) as ws:
        ws.send(json.dumps({"type": "auth", "token": "by_admin_garbage"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_sse_keeps_alive_and_debug_streams_logs_every_message(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    settings = env.server.app.state.settings
    env.server.app.state.settings = settings.model_copy(update={"debug_streams": True})
    batch = env.submit(3)
    caplog.set_level(logging.INFO, logger="batchyard.web.streams")
    with env.client() as client, client.stream("GET", f"/batches/{batch}/events") as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith(":")) == ": ping"  # 0.3 s
        env.work()
        assert any(line == "event: end" for line in lines)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stream: ")]
    assert any(m.startswith("stream: item ") for m in logged)
    assert logged[-1].startswith("stream: end ")


def test_stopping_the_server_ends_open_streams(env: Env) -> None:
    with env.client("root") as client, client.stream("GET", "/events") as response:
        stopper = threading.Thread(target=env.server.stop)
        stopper.start()
        closing = [line for line in response.iter_lines() if line.startswith(("event:", "data:"))]
    stopper.join(30)
    assert not stopper.is_alive()
    assert closing[-2:] == ["event: closed", 'data: {"reason": "the server is stopping"}']
