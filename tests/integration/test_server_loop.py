"""The server's event loop never waits for the store, over real HTTP on PostgreSQL: while
another connection holds a table locked, the pages and routes that read it wait on
threads, and what does not need that table (a static file, ``/version``) still answers at
once. Released, the waiting requests answer as they would have."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from batchyard import Yard
from batchyard.web.auth import COOKIE
from tests.procs.inproc_server import ServerThread, serving

psycopg = pytest.importorskip("psycopg")

TASK = "tests.procs.pages:work"
#: Seconds a request that needs no locked table may take: far more than a free loop needs
#: on a loaded machine; a held loop answers nothing until the lock is released.
PROMPT = 5.0
#: A request of the test: it is made with a signed-in client and returns what to check.
Call = Callable[[httpx.Client, dict[str, str]], str]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx would send loopback requests through a proxy named in the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def _locked(url: str, table: str) -> Iterator[None]:
    """``table`` locked against every read, in a transaction of another connection, until
    the block ends."""
    with psycopg.connect(url) as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def _await_waiting(admin: Any, table: str, count: int) -> None:
    """Return once ``count`` sessions wait for the lock on ``table`` (each look is a round
    trip to the server: no sleep)."""
    deadline = time.monotonic() + 30
    while True:
        (waiting,) = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
            (table,),
        ).fetchone()
        if waiting >= count:
            return
        assert time.monotonic() < deadline, (
            f"{waiting} sessions wait for the lock on {table}, not {count}: a request was "
            "held up before its read (by an event loop that waits for the lock?)"
        )


def _signed_in(server: ServerThread, secret: str) -> tuple[dict[str, str], str]:
    """The session cookie of a dashboard sign-in with ``secret``, and its CSRF token."""
    login = httpx.post(f"{server.api}/session", json={"token": secret}, timeout=30)
    assert login.status_code == 200, login.text
    return {COOKIE: login.cookies[COOKIE]}, login.json()["csrf"]


def _first_event(client: httpx.Client, url: str, kind: str) -> str:
    """The data of the first ``kind`` event of an SSE stream (closed after it)."""
    with client.stream("GET", url) as answer:
        assert answer.status_code == 200, answer.read()
        event: dict[str, list[str]] = {}
        for line in answer.iter_lines():
            if line:
                field, _, value = line.partition(":")
                event.setdefault(field, []).append(value.removeprefix(" "))
            elif event.get("event") == [kind]:
                return "\n".join(event["data"])
            else:
                event = {}
    raise AssertionError(f"{url} ended without a {kind} event")


def _prompt(client: httpx.Client, url: str, what: str) -> httpx.Response:
    try:
        answer = client.get(url, timeout=PROMPT)
    except httpx.TimeoutException:
        pytest.fail(f"{what} did not answer within {PROMPT} s: the event loop waits for the lock")
    assert answer.status_code == 200, answer.text
    return answer


def _while_locked(
    pg_url: str, table: str, calls: list[Call], *, follower_reads: bool
) -> tuple[list[str], str]:
    """Serve a yard with a template and a batch; sign in; lock ``table``; make ``calls``
    one after another, each in the background once the one before waits for the lock;
    check that a static file answers at once, and ``/version`` too (it reads the tokens
    through a pooled connection) unless the feed follower waits for ``table`` as well
    (``follower_reads``: it does within a second, on its thread, and holds a connection
    of the pool meanwhile); release; the calls' answers."""
    with Yard(pg_url) as yard:
        _, secret = yard.tokens.create("ann", "operator")
        yard.templates.create("scorer", TASK, {"out": "one"})
        batch = yard.submit(TASK, [{"n": 1}], name="held", owner="ann")
        with (
            serving(yard, allow_task=[TASK]) as server,
            psycopg.connect(pg_url, autocommit=True) as admin,
            ThreadPoolExecutor(len(calls)) as pool,
        ):
            cookies, csrf = _signed_in(server, secret)
            context = {"batch": batch.id, "csrf": csrf}

            def client() -> httpx.Client:
                return httpx.Client(base_url=server.url, cookies=cookies, timeout=60)

            def run(call: Call) -> str:
                with client() as signed_in:
                    return call(signed_in, context)

            waiting: list[Future[str]] = []
            with _locked(pg_url, table):
                others = int(follower_reads)
                _await_waiting(admin, table, others)
                for n, call in enumerate(calls, 1):
                    waiting.append(pool.submit(run, call))
                    _await_waiting(admin, table, others + n)
                with client() as prompt:
                    css = _prompt(prompt, "/static/dashboard.css", "a static file")
                    assert "text/css" in css.headers["content-type"]
                    if not follower_reads:
                        version = _prompt(prompt, "/api/v1/version", "/api/v1/version")
                        assert version.json()["api"] == "v1"
                assert not any(f.done() for f in waiting), [f.result() for f in waiting]
            return [f.result(timeout=60) for f in waiting], batch.id


def _new_page(client: httpx.Client, _: dict[str, str]) -> str:
    answer = client.get("/new")
    assert answer.status_code == 200, answer.text
    return answer.text


def _new_post_without_file(client: httpx.Client, given: dict[str, str]) -> str:
    """A post of the new-batch form that is refused: the form again, saying why."""
    answer = client.post("/new", data={"csrf": given["csrf"], "task": TASK, "nonce": "n1"})
    assert answer.status_code == 422, answer.text
    return answer.text


def test_the_new_batch_page_reads_its_templates_off_the_event_loop(pg_url: str) -> None:
    """The form refused redraws its template picker: that read waited on the event loop
    (every other request and stream waited with it)."""
    (page, refused), _ = _while_locked(
        pg_url, "templates", [_new_page, _new_post_without_file], follower_reads=False
    )
    for html in (page, refused):
        assert "scorer (latest: v1, tests.procs.pages:work)" in html
    assert "the upload has no file: send it as the form field" in refused


def _batch_stream(client: httpx.Client, given: dict[str, str]) -> str:
    return _first_event(client, f"/api/v1/batches/{given['batch']}/events", "status")


def _page_stream(client: httpx.Client, given: dict[str, str]) -> str:
    return _first_event(client, f"/batches/{given['batch']}/live/events", "live")


def test_live_streams_wait_for_their_batch_off_the_event_loop(pg_url: str) -> None:
    """A stream checks its batch (and reads its replay) on a thread: a locked batches
    table holds those streams, not the server."""
    (api, page), batch_id = _while_locked(
        pg_url, "batches", [_batch_stream, _page_stream], follower_reads=True
    )
    assert f'"id":"{batch_id}"' in api.replace(" ", ""), api
    assert 'class="badge st-queued">queued' in page, page
    assert f"/batches/{batch_id}/actions/pause" in page, page
