"""A faithful local OpenAI-compatible chat-completions server, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with deterministic replies and realistic usage and
latency, enforces its own requests- and tokens-per-minute per API key with OpenAI's 429s and
headers, and can inject the faults real providers produce. Run it in-process::

    with FakeOpenAI(rpm=600, tpm=40_000, latency=0) as server:
        httpx.post(f"{server.base_url}/chat/completions", json=..., headers=...)
        server.stats().rate_limited

or from a shell: ``python -m batchyard.testing.openai --port 8099 --rpm 25 --tpm 5500``.

The rate-limit model: a sliding-window log per API key (see ``_window``); a request reserves
``prompt_tokens + max_tokens`` at admission, as OpenAI does, and the reservation is never
corrected afterwards. A refused request reserves nothing. Checks run in OpenAI's order:
401 (key), 400 (body), 429 ``insufficient_quota``, 429 ``requests``, 429 ``tokens``; faults
are injected only into admitted requests, which keep their reservation.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, get_args

from batchyard.errors import ConfigError
from batchyard.llm.tokens import load_encoding
from batchyard.testing._chat import count_prompt_tokens
from batchyard.testing._config import Fault, FaultKind, ServerConfig, Stats

_EXTRA = "the local OpenAI server needs the testing extra: pip install 'batchyard[testing]'"

try:
    import uvicorn
    from starlette.applications import Starlette

    from batchyard.testing._app import Service, create_app
except ModuleNotFoundError as exc:  # a plain install: no server, and a message that says why
    _missing = (exc.name or "a module").partition(".")[0]
    if __name__ == "__main__":
        print(
            f"python -m batchyard.testing.openai: {_missing} is missing; {_EXTRA}", file=sys.stderr
        )
        sys.exit(2)
    raise ModuleNotFoundError(f"{_missing} is missing; {_EXTRA}", name=exc.name) from exc

__all__ = [
    "FakeOpenAI",
    "Fault",
    "ServerConfig",
    "Stats",
    "count_prompt_tokens",
    "create_app",
    "main",
]

_DEFAULTS = ServerConfig()


class FakeOpenAI:
    """The fake server on ``host`` in a background thread, for a ``with`` block.

    Takes a :class:`ServerConfig` or its fields as keywords (``FakeOpenAI(rpm=25, tpm=5500)``).
    ``port=0`` picks a free port; the socket is bound before the thread starts, so
    :attr:`base_url` is valid at once and the server is serving when ``start()`` returns.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        /,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        self.config = replace(config or ServerConfig(), **options)
        self.host = host
        self.port = port
        self.app = create_app(self.config)
        self._service: Service = self.app.state.service
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:43117``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL an OpenAI client takes, ending in ``/v1``."""
        return f"{self.url}/v1"

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self._service.stats()

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a daemon thread; raises ``RuntimeError`` if it is not up within ``timeout``."""
        # NOTE: proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that
        # say they are TCP, and without it every answer stalls ~40 ms on delayed ACKs.
        # The tokenizer loads now, not on the first request: that would block the server's
        # loop for half a second and bunch the requests admitted meanwhile.
        load_encoding("o200k_base")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port))
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the fake OpenAI server did not start on {self.url}")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving; answers still being delayed are cut short."""
        self._service.stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    # Plain asyncio and h11, no websockets and no lifespan: nothing optional gets imported,
    # so no third-party deprecation warning can fire under filterwarnings=error.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


def _parse_fault(text: str) -> Fault:
    kind, _, how = text.partition("=")
    if kind not in get_args(FaultKind) or not how:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE or KIND=every:N, got {text!r}")
    try:
        if how.startswith("every:"):
            return Fault(kind, every=int(how.removeprefix("every:")))  # type: ignore[arg-type]  # checked above
        return Fault(kind, rate=float(how))  # type: ignore[arg-type]  # checked above
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchyard.testing.openai", description="A local OpenAI-compatible server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--rpm", type=int, default=_DEFAULTS.rpm)
    parser.add_argument("--tpm", type=int, default=_DEFAULTS.tpm)
    parser.add_argument("--window", type=float, default=_DEFAULTS.window, help="seconds")
    parser.add_argument("--key", action="append", help="an accepted API key (repeatable)")
    parser.add_argument("--latency", type=float, default=_DEFAULTS.latency)
    parser.add_argument("--latency-per-token", type=float, default=_DEFAULTS.latency_per_token)
    parser.add_argument("--spend-limit-tokens", type=int, default=None)
    parser.add_argument("--slow-seconds", type=float, default=_DEFAULTS.slow_seconds)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        help="KIND=RATE or KIND=every:N, KIND one of " + ", ".join(get_args(FaultKind)),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve in the foreground until interrupted."""
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig(
            rpm=args.rpm,
            tpm=args.tpm,
            window=args.window,
            keys=frozenset(args.key) if args.key else None,
            latency=args.latency,
            latency_per_token=args.latency_per_token,
            spend_limit_tokens=args.spend_limit_tokens,
            slow_seconds=args.slow_seconds,
            faults=tuple(args.fault),
            seed=args.seed,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"fake OpenAI server at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.Server(_uvicorn_config(create_app(config), args.host, args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
