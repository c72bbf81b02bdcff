"""Signatures: messages normalised so that one failure is one cluster whatever item it hit,
and the task's top frame found in a traceback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard import Yard
from batchyard.clusters import ID_LENGTH, MAX_TEXT, normalise, of_exception, signature, top_frame
from tests.conftest import FAST

MESSAGES = [
    # What varies is blanked.
    ("price 12.5 out of range for 'widget-3'", "price <num> out of range for <str>"),
    ("'sku'", "'sku'"),  # a field name, kept
    ("'sku-12'", "<str>"),
    ('no field "email" in row 17', "no field <str> in row <num>"),
    ("Company 50 has no employees", "Company <num> has no employees"),
    (
        "lead lead-0100 has no email; nothing to score",
        "lead lead-<num> has no email; nothing to score",
    ),
    ("user 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found", "user <uuid> not found"),
    ("object at 0x7f3a2b1c4d5e is gone", "object at <hex> is gone"),
    ("checksum 3f2a9b8c7d6e5f40 differs", "checksum <hex> differs"),
    ("request req_8f3a2b1c failed", "request <id> failed"),
    ("timed out after 30s", "timed out after <num>s"),
    ("range 1-10 and -5", "range <num>-<num> and -<num>"),
    ("[Errno 111] Connection refused", "[Errno <num>] Connection refused"),
    # Words stay, numbers inside them too.
    (
        "invalid utf-8 at byte 17 of base64 (sha256)",
        "invalid utf-8 at byte <num> of base64 (sha256)",
    ),
    ("don't know gpt-4o-mini", "don't know gpt-4o-mini"),
    # httpx: the status line stays, the URL goes.
    (
        "Client error '429 Too Many Requests' for url 'https://api.openai.com/v1/chat/completions'",
        "Client error '429 Too Many Requests' for url <str>",
    ),
    (
        "request failed (ConnectError: [Errno 111] Connection refused) POST "
        "http://127.0.0.1:8099/v1/chat/completions",
        "request failed (ConnectError: [Errno <num>] Connection refused) POST "
        "http://<num>:<num>/v1/chat/completions",
    ),
    # The llm task's provider errors: a 429 and a 500 stay apart.
    (
        "HTTP 429 rate_limit_exceeded: Rate limit reached for gpt-4o-mini in organization "
        "org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. Please try "
        "again in 1.2s.",
        "HTTP 429 rate_limit_exceeded: Rate limit reached for gpt-4o-mini in organization "
        "org-abc on tokens per min (TPM): Limit <num>, Used <num>, Requested <num>. Please try "
        "again in <num>s.",
    ),
    (
        "HTTP 500 server_error: The server had an error while processing your request.",
        "HTTP 500 server_error: The server had an error while processing your request.",
    ),
    (
        "Error code: 429 - {'error': {'message': 'Rate limit', 'code': 'rate_limit_exceeded'}}",
        "Error code: 429 - {<str>: {<str>: <str>, <str>: <str>}}",
    ),
    (
        "HTTP 200 malformed answer: no choices[0].message.content",
        "HTTP 200 malformed answer: no choices[<num>].message.content",
    ),
    ("line one\n   line   two", "line one line two"),
]


@pytest.mark.parametrize(("message", "expected"), MESSAGES)
def test_normalise(message: str, expected: str) -> None:
    assert normalise(message) == expected


def test_a_long_message_is_cut() -> None:
    text = normalise("word " * 100)
    assert len(text) == MAX_TEXT
    assert text.endswith("...")


def test_signature_text_and_id() -> None:
    sig = signature("KeyError", "KeyError: 'a1'", "tasks.py:enrich")
    assert sig.text == "KeyError: <str> @ tasks.py:enrich"
    assert len(sig.id) == ID_LENGTH and int(sig.id, 16) >= 0
    # Another item, another looked-up id: the same cluster.
    assert signature("KeyError", "KeyError: 'b2'", "tasks.py:enrich") == sig
    assert signature("KeyError", "KeyError: 'b2'", "tasks.py:other") != sig
    # A missing field is named: two fields, two bugs.
    price = signature("KeyError", "KeyError: 'price'", "tasks.py:enrich")
    assert price.text == "KeyError: 'price' @ tasks.py:enrich"
    assert signature("KeyError", "KeyError: 'sku'", "tasks.py:enrich") != price
    assert signature("TimeoutError", "TimeoutError").text == "TimeoutError"
    assert signature("Fail", "").text == "Fail"


def _parse(text: str) -> object:
    return json.loads(text)


def _helper(n: int) -> None:
    raise ValueError(f"price {n} out of range")


def test_top_frame_is_the_innermost_of_the_tasks_code() -> None:
    try:
        _parse("{")  # raises inside the standard library
    except ValueError as exc:
        assert top_frame(exc.__traceback__) == "test_clusters.py:_parse"
    try:
        _helper(3)
    except ValueError as exc:
        assert top_frame(exc.__traceback__) == "test_clusters.py:_helper"
        sig = of_exception(exc)
        assert sig.text == "ValueError: price <num> out of range @ test_clusters.py:_helper"
    assert top_frame(None) is None


def test_top_frame_skips_installed_packages_unless_they_hold_the_task() -> None:
    try:
        httpx.URL("http://[::1")  # raises inside httpx
    except httpx.InvalidURL as exc:
        assert top_frame(exc.__traceback__) == (
            "test_clusters.py:test_top_frame_skips_installed_packages_unless_they_hold_the_task"
        )
        inner = exc.__traceback__
        while inner is not None and inner.tb_next is not None:
            inner = inner.tb_next
        assert inner is not None
        task_file = inner.tb_frame.f_code.co_filename  # as if the task lived in httpx
        name = task_file.rsplit("/", 1)[-1]
        assert (top_frame(exc.__traceback__, task_file) or "").startswith(f"{name}:")


async def _fetch(item: dict[str, Any]) -> None:
    await asyncio.sleep(0)
    raise KeyError(item["id"])


def test_the_worker_signs_each_failure_with_the_tasks_frame(tmp_path: Path) -> None:
    with Yard(f"sqlite:///{tmp_path / 'y.db'}") as yard:

        @yard.task(name="signed", max_attempts=2, retry_backoff=0)
        async def signed(item: dict[str, Any]) -> Any:
            if item["how"] == "helper":
                await _fetch(item)
            return {1, 2}  # not JSON: fails without a traceback of its own

        batch = yard.submit("signed", [{"id": "a1", "how": "helper"}, {"id": "b2", "how": "set"}])
        yard.run_until_idle(**FAST)
        found = {c.text: (c.attempts, c.items, c.sample_key) for c in batch.error_clusters()}
    assert found == {
        "KeyError: <str> @ test_clusters.py:_fetch": (2, 1, "a1"),
        "Fail: the task returned a result that is not JSON: Object of type set is not JSON "
        "serializable": (1, 1, "b2"),
    }
