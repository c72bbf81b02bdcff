"""The real server for tests: ``create_app`` under uvicorn on a free loopback port, in a
thread of the test's process, and the tokens a test calls it with."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from batchyard import Yard
from batchyard.web import ServerSettings, create_app


@dataclass(frozen=True)
class Running:
    """A server that answers at ``url`` (``http://127.0.0.1:PORT``)."""

    url: str

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


@contextmanager
def serving(yard: Yard, settings: ServerSettings | None = None) -> Iterator[Running]:
    """The app over ``yard`` answering on loopback until the block ends (no worker lanes
    unless ``settings`` asks: tests drive their batches themselves)."""
    settings = settings or ServerSettings(workers=0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(yard, settings), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped before it started")
            thread.join(0.01)
        yield Running(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
