"""schemathesis hooks for tests/integration/test_server_schemathesis.py (loaded through
SCHEMATHESIS_HOOKS). They teach schemathesis two things no schema can say, and loosen no
check:

- Batches to act on. Half the cases of a route with ``{batch_id}`` keep their generated id
  (a 404), the other half name a real batch: a seeded one for the routes that read it or
  leave it usable, a fresh one (made over HTTP) for those that end it (cancel, seal,
  delete), so every case has something to act on whatever ran before it. A case whose id
  or item key is over its limit keeps them: its schema refuses it for that.
- What an upload holds. For a file (``format: binary``) schemathesis sends image samples or
  random bytes; a positive case gets a small file in the ``format`` it names, and
  ``options`` that are the JSON of the options its task takes (the JSON body's cases fuzz
  those options fully)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import httpx
import schemathesis
from schemathesis import GenerationMode

from batchyard.items import MAX_KEY_LENGTH
from batchyard.models import MAX_BATCH_ID

API = os.environ.get("BATCHYARD_ST_API", "")
TOKEN = os.environ.get("BATCHYARD_ST_TOKEN", "")
TASK = os.environ.get("BATCHYARD_ST_TASK", "")
#: Seeded batches, comma-separated: the routes that leave a batch usable act on these.
SEEDED = [b for b in os.environ.get("BATCHYARD_ST_BATCHES", "").split(",") if b]
#: The routes after which a batch is no longer what the next case expects.
ENDING = {("POST", "cancel"), ("POST", "seal"), ("DELETE", "{batch_id}")}
#: The routes that take a file of items (a submission, its estimate or validation) or rows.
UPLOADS = ("/batches", "/estimate", "/validate", "/datasets")
LLM_OPTIONS = {"params": {"model": "gpt-4o-mini", "template": "Say hello", "api_key_env": ""}}


def _pick(value: Any, choices: int) -> int:
    return int(hashlib.sha256(repr(value).encode()).hexdigest(), 16) % choices


#: One client for every fresh batch: httpx.post makes a client per call, and each new client
#: builds an SSL context (certificates loaded) and a connection, about 5% of the run's CPU.
_client = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def _fresh_batch() -> str:
    body = {"task": TASK, "items": [{"id": "1", "n": 1}], "options": {"open": True}}
    answer = _client.post(f"{API}/batches", json=body)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _with_batch(case: Any) -> None:
    params = case.path_parameters
    if _pick(params["batch_id"], 2):
        return  # keep the generated id: an unknown batch
    too_long = len(str(params["batch_id"])) > MAX_BATCH_ID
    if too_long or len(str(params.get("key", ""))) > MAX_KEY_LENGTH:
        return  # a negative case, made so by its id or key: it must stay so
    method, last = case.method.upper(), case.path.rsplit("/", 1)[-1]
    ends = (method, last) in ENDING
    params["batch_id"] = _fresh_batch() if ends else SEEDED[_pick(params, len(SEEDED))]
    if "key" in params:
        params["key"] = "1"


def _file(fmt: str, rows: int) -> bytes:
    items = [{"id": str(n), "n": n} for n in range(1, rows + 1)]
    if fmt == "jsonl":
        return "".join(json.dumps(item) + "\n" for item in items).encode()
    if fmt == "csv":
        return ("id,n\n" + "".join(f"{i['id']},{i['n']}\n" for i in items)).encode()
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no hints
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(items), out)
    return out.getvalue()


def _with_file(case: Any) -> None:
    """Only in a positive case: a negative one must stay invalid where it was made so."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    body = case.body
    fmt = body.get("format")
    if fmt in ("jsonl", "csv", "parquet"):
        body["file"] = _file(fmt, 1 + _pick(body.get("file"), 5))
    if not case.path.endswith("/datasets"):
        body["options"] = json.dumps(LLM_OPTIONS if body.get("task") == "llm" else {})


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    if "batch_id" in (case.path_parameters or {}) and SEEDED:
        _with_batch(case)
    if (
        case.path.endswith(UPLOADS)
        and case.method.upper() == "POST"
        and case.media_type == "multipart/form-data"
        and isinstance(case.body, dict)
    ):
        _with_file(case)
    return case
