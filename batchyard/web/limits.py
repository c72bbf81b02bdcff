"""How long a request target (path and query string) the server reads: past
``MAX_TARGET`` it answers a 414 problem, and its HTTP parser is given room for that
(``HEAD_LIMIT``), so that a long URL meets the API's error shape, not uvicorn's."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from batchyard.web.problems import Problem, answer

#: The longest request target the API takes, in bytes as sent (percent-encoded). Every
#: query a route's schema allows fits (each character of it encoded at its longest).
MAX_TARGET = 64 * 1024
#: The request line and headers uvicorn's parser reads before it refuses a request with a
#: plain-text 400 (h11's own limit is 16 KiB, under MAX_TARGET): room for the longest
#: target the app answers itself, and its headers.
HEAD_LIMIT = 1024 * 1024


class TargetLimit:
    """Answers 414 to a request whose target is over ``MAX_TARGET`` bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _target_length(scope) > MAX_TARGET:
            detail = f"the URL is over this server's limit of {MAX_TARGET:,} bytes"
            await answer(send, Problem(414, detail))
            return
        await self.app(scope, receive, send)


def _target_length(scope: Scope) -> int:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return len(path) + (1 + len(query) if query else 0)
