"""A webhook receiver for tests: a real HTTP server on loopback (the standard library's, in a
thread) that records every request and answers from a plan: a status code per request in
turn (then 200), or "hang" (no answer until the receiver closes)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None  # None: hung


class Receiver:
    """``with Receiver([500, 500, 500]) as r:`` fails three requests, then answers 200."""

    def __init__(self, plan: list[int | str] | None = None, *, hang: bool = False) -> None:
        self.plan = list(plan or [])
        self.hang = hang
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = receiver._next()
                status = None if answer == "hang" else int(answer)
                receiver._record(Received(self.path, dict(self.headers.items()), body, status))
                if answer == "hang":
                    receiver._closing.wait(60)
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if int(answer) >= 300 else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next(self) -> int | str:
        with self._changed:
            if self.hang:
                return "hang"
            return self.plan.pop(0) if self.plan else 200

    def _record(self, request: Received) -> None:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The requests once there are ``count`` of them; AssertionError after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} request(s), not {count}, in {timeout}s")
            return list(self.received)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
