"""schemathesis against the running server: every operation of /api/v1/openapi.json, all
checks, at least 100 examples each, a fixed seed. No failure but the open findings named
in OPEN means the description is exact: each status a route answers is documented, every
answer matches its schema, a request the schema calls valid is taken and one it calls
invalid is refused, and nothing answers 500. (tests/procs/schemathesis_hooks.py gives it
batches to act on and files to upload.) It costs about 75 s of CPU (schemathesis and the
server together): 90-180 s on a busy two-core machine."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.web import ServerSettings, create_app
from tests.procs.inproc_server import serving

TASK = "tests.procs.tasks:square"
#: The core's two answers to an item whose key field holds no key (``items.item_key``).
KEY_REFUSED = (
    "must be a string or an integer to serve as the item's key|must be 1 to 512 characters long"
)
#: Findings still open (see the proof branch's report): a value that must match what is
#: stored or sent beside it, which no schema can say. Each is a 422 for a schema-valid
#: request; whether such a request should be a 409 instead is the lead's call. Any other
#: failure fails this test.
OPEN = (
    r"\[422\].*is not a page cursor",  # an opaque cursor of dataset rows
    r"\[422\].*names '[^']*', not a column of the header",  # csv_types vs the file
    r"\[422\].*has no parameter '[^']*' to unset",  # a template's stored parameters
    r"\[422\].*template \S+ is for task \S+, not \S+",  # a stored template's task
    # A condition naming a field the stored dataset has not (met once the schema's
    # maxLength on path parameters changed what the fixed seed draws).
    r"\[422\].*no row of '[^']*' has a field '[^']*'",
    # An item's field that key_field names, holding no key: the document says so in words,
    # on key_field and on the 422 of the routes that add items.
    rf"\[422\].*field '[^']*' ({KEY_REFUSED})",
)
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 100
SEED = 13


def _seed(yard: Yard) -> list[str]:
    """Batches for the cases to act on: finished with a failed item, paused, open."""
    done = yard.submit(TASK, [{"id": "1", "n": 1}, {"id": "2"}], max_attempts=1)
    yard.run_until_idle(poll_interval=0.01)
    paused = yard.submit(TASK, [{"id": "1", "n": 1}, {"id": "2", "n": 2}])
    paused.pause()
    opened = yard.submit(TASK, [{"id": "1", "n": 1}], open=True)
    opened.pause()
    assert done.status().counts.failed == 1
    return [done.id, paused.id, opened.id]


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # the llm task's key, read at submission
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as yard:
        _, secret = yard.tokens.create("root", "admin")
        seeded = _seed(yard)
        # max_count: a fuzzed count of millions would make millions of items.
        # heartbeat: an event stream's keep-alives come often, so schemathesis's read of a
        # stream (cut after its first event, or its request timeout) never waits long.
        settings = {"allow_task": [TASK], "max_count": 1000, "heartbeat": 0.5}
        with serving(yard, **settings) as server:
            env = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.procs.schemathesis_hooks",
                "BATCHYARD_ST_API": server.api,
                "BATCHYARD_ST_TOKEN": secret,
                "BATCHYARD_ST_TASK": TASK,
                "BATCHYARD_ST_BATCHES": ",".join(seeded),
                "PYTHONPATH": str(Path(__file__).parents[2]),
            }
            # An event stream may never end: schemathesis reads its first event and stops.
            (tmp_path / "schemathesis.toml").write_text("max-stream-events = 1\n")
            run = subprocess.run(
                [
                    str(SCHEMATHESIS),
                    "run",
                    f"{server.api}/openapi.json",
                    "-H",
                    f"Authorization: Bearer {secret}",
                    "--checks",
                    "all",
                    "--max-examples",
                    str(EXAMPLES),
                    "--seed",
                    str(SEED),
                    "--phases",
                    "coverage,fuzzing",
                    "--request-timeout",
                    "10",
                    "--no-color",
                    "--report-dir",
                    str(tmp_path / "report"),
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=580,
            )
    out = run.stdout + run.stderr
    assert run.returncode in (0, 1), out[-20000:]  # 1: failures, read below
    unknown = [f for f in _failures(out) if not any(re.search(k, f) for k in OPEN)]
    assert unknown == [], "\n\n".join(unknown)
    # The server (in this process) logged no error: a 500 hidden in a stream would show here.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert selected is not None, out[-5000:]
    assert len(set(selected.groups())) == 1, selected.group(0)  # every operation, tested
    assert int(selected[1]) >= 20


def _failures(out: str) -> list[str]:
    """Each failure schemathesis reports: its operation's heading and the case's text."""
    if "FAILURES" not in out:
        return []
    body = out.split("FAILURES", 1)[1].split("WARNINGS", 1)[0].split("SUMMARY", 1)[0]
    found = []
    for section in re.split(r"\n_{3,} ", body)[1:]:
        heading, *cases = re.split(r"\n\d+\. Test Case ID: ", section)
        found += [" ".join(f"{heading} {case}".split()) for case in cases]
    return found


def test_an_item_whose_key_field_holds_no_key_is_the_declared_422(tmp_path: Path) -> None:
    """The open finding of key_field: its answer is the 422 the document declares, in
    words, for the routes that add items, and OPEN matches its text (and nothing else)."""
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as yard:
        _, secret = yard.tokens.create("root", "admin")
        auth = {"Authorization": f"Bearer {secret}"}
        batch = yard.submit(TASK, [], open=True)
        with TestClient(create_app(yard, ServerSettings(workers=0, allow_task=[TASK]))) as client:
            paths = client.get("/api/v1/openapi.json", headers=auth).json()["paths"]
            answers = [
                client.post(f"/api/v1/batches/{batch.id}/items", json=body, headers=auth)
                for body in (
                    {"items": [{"id": {"a": 1}}]},
                    {"items": [{"n": 1, "sku": ""}], "key_field": "sku"},
                )
            ]
            answers.append(
                client.post(
                    "/api/v1/batches", json={"task": TASK, "items": [{"id": [1]}]}, headers=auth
                )
            )
    for answer in answers:
        assert answer.status_code == 422, answer.text
        case = f"[422] Unprocessable content: {answer.json()['detail']}"
        assert [k for k in OPEN if re.search(k, case)] == [OPEN[-1]], case
    for path in ("/api/v1/batches", "/api/v1/batches/{batch_id}/items"):
        assert "key_field holds no key" in paths[path]["post"]["responses"]["422"]["description"]
    assert not re.search(OPEN[-1], "[422] item 1: field 'n' must be a number")
