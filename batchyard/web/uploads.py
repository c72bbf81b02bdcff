"""A submission's body: JSON (a ``BatchIn``), or a multipart upload of a JSONL, CSV or
Parquet file beside the same fields. The file is read as a stream into the store (spooled
to disk, never held in memory); a body past the configured size is a 413."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchyard.columns import ColumnTypes
from batchyard.errors import ConfigError, InputError
from batchyard.inputs import FORMATS, Input, detect_format, open_input
from batchyard.web.problems import Problem, answer, field_error
from batchyard.web.schemas import TEMPLATE_REF, BatchIn

#: The form fields of an upload (beside ``file``); ``options`` is the JSON of ``Options``.
FORM_FIELDS = ("task", "template", "format", "options")
FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "format"],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL, CSV or Parquet"},
        "format": {
            "type": "string",
            "enum": list(FORMATS),
            "description": "the file's format (may be left out when its name ends .jsonl, "
            ".ndjson, .csv or .parquet)",
        },
        "task": {"type": "string"},
        "template": {"type": "string", "pattern": TEMPLATE_REF},
        "options": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Options"},
            "description": "the JSON of BatchIn.options",
        },
    },
}
#: The OpenAPI of a submission's body (``POST /batches``, ``/estimate``, ``/validate``):
#: the route reads it itself, as JSON or a file.
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/BatchUpload"}},
        },
    }
}


class BodyLimit:
    """Answers 413 to a request whose body is over ``limit`` bytes: at once when its
    Content-Length says so, else as soon as the bytes read pass it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await answer(send, self._too_large())
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self._too_large()
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> Problem:
        return Problem(413, f"the body is over this server's limit of {self.limit:,} bytes")


@contextlib.asynccontextmanager
async def submission(
    request: Request,
) -> AsyncIterator[tuple[BatchIn, Input | None]]:
    """The body of a submission, and the items of its file when one was uploaded."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        yield _parsed(await request.body()), None
    elif kind == "multipart/form-data":
        async with upload(request, FORM_FIELDS) as (fields, rows):
            yield _from_form(fields), rows
    else:
        raise Problem(415, "send the batch as application/json, or a file as multipart/form-data")


@contextlib.asynccontextmanager
async def upload(
    request: Request, fields: tuple[str, ...]
) -> AsyncIterator[tuple[dict[str, str], Input]]:
    """A multipart upload: its text form fields (only ``fields`` are taken, ``format``
    among them) and the rows of its ``file``, read as a stream."""
    async with request.form(max_files=1, max_fields=len(fields)) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise Problem(
                422, "the upload has no file: send it as the form field 'file'", field="file"
            )
        unknown = sorted(set(form) - {"file", *fields})
        if unknown:
            raise Problem(422, f"unknown form field {unknown[0]!r}", field=unknown[0])
        texts = {k: v for k, v in form.items() if isinstance(v, str)}
        items = _items(file, texts.get("format"), _column_types(texts.get("csv_types")))
        with contextlib.ExitStack() as stack:
            # Opened on a thread: a Parquet upload is first copied whole to a file.
            rows = await run_in_threadpool(stack.enter_context, items)
            yield texts, rows


def _column_types(text: str | None) -> ColumnTypes | None:
    """The ``csv_types`` form field (``employees=int,score=float``), when given."""
    if text is None:
        return None
    try:
        return ColumnTypes.parse(text)
    except ConfigError as exc:
        raise Problem(422, f"csv_types: {exc}", field="csv_types") from None


def _parsed(raw: bytes | str) -> BatchIn:
    try:
        return BatchIn.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise Problem(422, field_error(first, where=0, whole="body"), field=field) from None


def _from_form(fields: dict[str, str]) -> BatchIn:
    try:
        options = json.loads(fields.get("options") or "{}")
    except ValueError:
        raise Problem(422, "options: not JSON", field="options") from None
    body = {k: fields[k] for k in ("task", "template") if k in fields}
    return _parsed(json.dumps({**body, "options": options}))


def items_of(upload: UploadFile, fmt: str | None) -> contextlib.AbstractContextManager[Input]:
    """The items of an uploaded file, read from where the file stands (the dashboard reads
    one again after an estimate: ``seek(0)`` first)."""
    return _items(upload, fmt, None)


@contextlib.contextmanager
def _items(upload: UploadFile, fmt: str | None, types: ColumnTypes | None) -> Iterator[Input]:
    name = Path(upload.filename or "upload").name
    try:
        chosen = detect_format(name, fmt)
    except InputError as exc:
        raise Problem(
            422, str(exc).replace("--format", "the form field 'format'"), field="format"
        ) from None
    if types is not None and chosen != "csv":
        raise Problem(422, f"csv_types apply to CSV; {name} is read as {chosen}", field="csv_types")
    if chosen != "parquet":
        with open_input("-", chosen, stdin=upload.file, name=name, csv_types=types) as rows:
            yield rows
        return
    # Parquet is read by pyarrow from a file: spool the upload to one.
    with tempfile.NamedTemporaryFile(suffix=".parquet") as spooled:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, spooled)
        spooled.flush()
        with open_input(spooled.name, "parquet", name=name) as rows:
            yield rows
