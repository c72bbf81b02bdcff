"""The API's OpenAPI document (``/api/v1/openapi.json``): FastAPI's, made exact where its
defaults are not: the problem body of every error, the 400 of a body that does not parse,
and the rules of a submission that pydantic checks in code (a task this server allows, one
source of items), so that a request the schema calls valid is one the server takes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from batchyard.catalog import TaskEntry
from batchyard.web import limits, problems, tasks, uploads
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings
from batchyard.web.stream_events import Kind

_NULL = {"type": "null"}
#: A submission's sources of items: it takes one (or none, when open).
_SOURCES = ("items", "dataset", "count")
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "line": {"type": "integer"},
        "field": {"type": "string"},
    },
}


def document(app: FastAPI, settings: ServerSettings) -> dict[str, Any]:
    """The app's schema, made once."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        # POST /batches, /estimate and /validate read their body themselves (JSON or a
        # file): describe both here, each with the tasks it takes.
        allowed = tasks.allowed(settings)
        estimable = [task for task in allowed if task.spec.estimate is not None]
        for name, chosen, creating in (
            ("BatchIn", allowed, True),
            ("CheckIn", allowed, False),
            ("EstimateIn", estimable, False),
        ):
            body = batch_in(settings, chosen, creating=creating)
            schemas.update(body.pop("$defs", {}))
            schemas[name] = body
            schemas[name.replace("In", "Upload")] = upload_form(chosen, creating=creating)
        _refer(schema, "/api/v1/validate", "Check")
        _refer(schema, "/api/v1/estimate", "Estimate")
        if "TemplateIn" in schemas:
            _template_tasks(schemas["TemplateIn"], settings)
        schemas["Problem"] = _PROBLEM
        _malformed_requests(schema)
        _parameters_never_null(schema)
        _event_streams(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def batch_in(
    settings: ServerSettings, allowed: list[TaskEntry], *, creating: bool = True
) -> dict[str, Any]:
    """``BatchIn`` with the rules ``submissions`` and the task's ``prepare`` check: a task
    of ``allowed``, with the options it takes (or a template, which names one, when
    ``creating``), and exactly one source of items unless the batch is open (``creating``:
    an estimate or a validation needs items)."""
    body = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
    names = {"type": "string", "enum": [task.name for task in allowed]}
    body["properties"]["task"] = {"anyOf": [names, _NULL], "default": None}
    body["properties"]["count"]["anyOf"][0]["maximum"] = settings.max_count
    named = [_task(task.name, task.spec.options_schema) for task in allowed]
    if creating:
        named.append({"required": ["template"], "properties": {"template": {"type": "string"}}})
    sources = [_only(source, body["properties"][source]["anyOf"][0]) for source in _SOURCES]
    if creating:
        sources.append(
            {
                "required": ["options"],
                "properties": {
                    **{source: _NULL for source in _SOURCES},
                    "options": {"required": ["open"], "properties": {"open": {"const": True}}},
                },
            }
        )
    body["allOf"] = [{"anyOf": named}, {"anyOf": sources}]
    return body


def upload_form(allowed: list[TaskEntry], *, creating: bool = True) -> dict[str, Any]:
    """The multipart form of an upload: a task of ``allowed`` (or, ``creating``, a
    template, which names one)."""
    form = copy.deepcopy(uploads.FORM_SCHEMA)
    form["properties"]["task"]["enum"] = [task.name for task in allowed]
    form["anyOf"] = [{"required": ["task"]}]
    if creating:
        form["anyOf"].append({"required": ["template"]})
    return form


def _refer(schema: dict[str, Any], path: str, name: str) -> None:
    """Point the body of ``POST path`` at the ``name``In and ``name``Upload schemas."""
    operation = schema.get("paths", {}).get(path, {}).get("post")
    if operation is None:
        return
    content = operation["requestBody"]["content"]
    content["application/json"]["schema"] = {"$ref": f"#/components/schemas/{name}In"}
    content["multipart/form-data"]["schema"] = {"$ref": f"#/components/schemas/{name}Upload"}


def _template_tasks(template: dict[str, Any], settings: ServerSettings) -> None:
    """A new template names a task this server allows, with the parameters it takes."""
    template["properties"]["task"] = {"type": "string", "enum": tasks.allowed_names(settings)}
    variants = []
    for task in tasks.allowed(settings):
        options = task.spec.options_schema() if task.spec.options_schema else {}
        params = options.get("properties", {}).get("params", {"type": "object"})
        variant: dict[str, Any] = {"properties": {"task": {"const": task.name}, "params": params}}
        if params.get("required"):
            variant["required"] = ["params"]
        variants.append(variant)
    template["anyOf"] = variants


def _task(name: str, options: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """A body naming the task ``name``, with the options it takes."""
    if options is None:
        return {"required": ["task"], "properties": {"task": {"const": name}}}
    return {
        "required": ["task", "options"],
        "properties": {"task": {"const": name}, "options": options()},
    }


def _only(source: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A body whose one source of items is ``source``."""
    return {
        "required": [source],
        "properties": {name: (schema if name == source else _NULL) for name in _SOURCES},
    }


def _malformed_requests(schema: dict[str, Any]) -> None:
    """Every operation may answer 400: uvicorn's answer to a request that is not HTTP, and
    FastAPI's to a body that does not parse (schemathesis found both undocumented); and
    414, to a URL over ``limits.MAX_TARGET`` (schemathesis met uvicorn's plain-text 400 for
    one, before the app had a limit of its own)."""
    bad_request = problems.responses(400)[400]
    too_long = problems.responses(414)[414]
    too_long["description"] = f"the URL is over {limits.MAX_TARGET:,} bytes"
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation["responses"].setdefault("400", bad_request)
            operation["responses"].setdefault("414", too_long)


def _parameters_never_null(schema: dict[str, Any]) -> None:
    """A header or query parameter left out is how a client says "none": its schema has
    no null (schemathesis sent the text 'null' for FastAPI's ``str | None``)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                options = parameter.get("schema", {}).get("anyOf")
                if options is None or _NULL not in options:
                    continue
                rest = [option for option in options if option != _NULL]
                parameter["schema"].pop("anyOf")
                if len(rest) == 1:
                    parameter["schema"].update(rest[0])
                else:
                    parameter["schema"]["anyOf"] = rest


def _event_streams(schema: dict[str, Any]) -> None:
    """An event stream's schema describes each event (OpenAPI 3.1): its name, id and JSON
    data as text; FastAPI wrote "a string" (schemathesis: every event violated it)."""
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            # "closed": the server ended the stream (it is stopping, or the follower is).
            "event": {"type": "string", "enum": [*get_args(Kind), "closed"]},
            "id": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json"},
        },
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                stream = response.get("content", {}).get("text/event-stream")
                if stream is not None:
                    stream["schema"] = event
