"""The API's OpenAPI document (``/api/v1/openapi.json``): FastAPI's, made exact where its
defaults are not: the problem body of every error, the 400 of a body that does not parse,
and the rules of a submission that pydantic checks in code (a task this server allows, one
source of items), so that a request the schema calls valid is one the server takes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from batchyard.web import problems, tasks, uploads
from batchyard.web.schemas import BatchIn
from batchyard.web.settings import ServerSettings

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
        # POST /batches reads its body itself (JSON or a file): describe the JSON here.
        body = batch_in(settings)
        schemas.update(body.pop("$defs", {}))
        schemas["BatchIn"] = body
        schemas["BatchUpload"] = upload_form(settings)
        if "TemplateIn" in schemas:
            _template_tasks(schemas["TemplateIn"], settings)
        schemas["Problem"] = _PROBLEM
        _malformed_bodies(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def batch_in(settings: ServerSettings) -> dict[str, Any]:
    """``BatchIn`` with the rules ``submissions`` and the task's ``prepare`` check: a task
    this server allows, with the options it takes (or a template, which names one), and
    exactly one source of items unless the batch is open."""
    body = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
    allowed = {"type": "string", "enum": tasks.allowed_names(settings)}
    body["properties"]["task"] = {"anyOf": [allowed, _NULL], "default": None}
    body["properties"]["count"]["anyOf"][0]["maximum"] = settings.max_count
    body["allOf"] = [
        {
            "anyOf": [
                *(_task(task.name, task.spec.options_schema) for task in tasks.allowed(settings)),
                {"required": ["template"], "properties": {"template": {"type": "string"}}},
            ]
        },
        {
            "anyOf": [
                *(_only(source, body["properties"][source]["anyOf"][0]) for source in _SOURCES),
                {
                    "required": ["options"],
                    "properties": {
                        **{source: _NULL for source in _SOURCES},
                        "options": {"required": ["open"], "properties": {"open": {"const": True}}},
                    },
                },
            ]
        },
    ]
    return body


def upload_form(settings: ServerSettings) -> dict[str, Any]:
    """The multipart form of an upload, its task one this server allows."""
    form = copy.deepcopy(uploads.FORM_SCHEMA)
    form["properties"]["task"]["enum"] = tasks.allowed_names(settings)
    return form


def _template_tasks(template: dict[str, Any], settings: ServerSettings) -> None:
    """A new template names a task this server allows, with the parameters it takes."""
    template["properties"]["task"] = {"type": "string", "enum": tasks.allowed_names(settings)}
    variants = []
    for task in tasks.allowed(settings):
        options = task.spec.options_schema() if task.spec.options_schema else {}
        params = options.get("properties", {}).get("params", {"type": "object"})
        variants.append({"properties": {"task": {"const": task.name}, "params": params}})
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


def _malformed_bodies(schema: dict[str, Any]) -> None:
    """Every operation that takes a body may answer 400: FastAPI's answer to a body that
    does not parse (schemathesis found it undocumented)."""
    bad_request = problems.responses(400)[400]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation["responses"].setdefault("400", bad_request)
