"""The server app on a real uvicorn, in a thread of this process, on a free loopback port:
for tests (and benchmarks) that need real HTTP and WebSockets but want the Yard at hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from batchyard.web.app import create_app
from batchyard.web.limits import HEAD_LIMIT
from batchyard.web.settings import ServerSettings
from batchyard.yard import Yard


class ServerThread:
    """``create_app(yard, settings)`` served on 127.0.0.1 (``url``, ``ws_url``) until
    ``stop``."""

    def __init__(self, yard: Yard, **settings: Any) -> None:
        self.app = create_app(yard, ServerSettings(workers=0, **settings))
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws="websockets-sansio",
            h11_max_incomplete_event_size=HEAD_LIMIT,  # as `batchyard serve` has it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.api = f"{self.url}/api/v1"
        self.ws_url = f"ws://127.0.0.1:{port}/api/v1/ws"

    def stop(self) -> None:
        self.app.state.feed.end_streams()  # as `batchyard serve` does on a signal
        self.server.should_exit = True
        self.thread.join(30)
        if self.thread.is_alive():
            raise AssertionError("uvicorn did not stop")


@contextmanager
def serving(yard: Yard, **settings: Any) -> Iterator[ServerThread]:
    """A ``ServerThread`` for the length of a ``with`` block."""
    server = ServerThread(yard, **settings)
    try:
        yield server
    finally:
        server.stop()
