"""The llm task's options as a JSON schema: what the server's API description says a
submission of it must carry (``TaskSpec.options_schema``). Every body it calls valid is one
``prepare`` takes; the few it takes beyond (a budget with a price given in ``prices``, an API
key under another variable's name) are left out, because no schema can say them."""

from __future__ import annotations

from typing import Any

from batchyard.llm.params import DEFAULT_KEY_ENV, DEFAULT_MAX_TOKENS
from batchyard.llm.prices import find_price

#: A Jinja template without tags: text the prompt sends as it is. (A template with tags is
#: taken too, when it parses and each item has its names; a schema cannot say that.)
_PLAIN_TEXT = {"type": "string", "minLength": 1, "pattern": r"^(?:[^{]|\{(?![{%#]))*$"}
_RATE = {
    "anyOf": [
        {"type": "string", "pattern": r"^[1-9][0-9]{0,8}/(s|min|h|day)$"},
        {"type": "number", "exclusiveMinimum": 0},
    ]
}
_PRICE = {
    "type": "object",
    "required": ["input", "output"],
    "additionalProperties": False,
    "properties": {
        field: {"type": "number", "minimum": 0} for field in ("input", "output", "cached_input")
    },
}
#: Models the price table knows, so a budget can be kept (checked when the schema is made).
_PRICED = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1")


def params_schema() -> dict[str, Any]:
    """The parameters ``read_params`` takes."""
    return {
        "type": "object",
        "required": ["model", "template"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "template": _PLAIN_TEXT,
            "system": _PLAIN_TEXT,
            "base_url": {"type": "string", "pattern": r"^(https?://[\s\S]*)?$"},
            "api_key_env": {
                "const": "",
                "description": f"'' for an endpoint without a key; left out, the key is read "
                f"from {DEFAULT_KEY_ENV} on the server (a variable of another name is taken "
                "when the server has it set)",
            },
            "max_tokens": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_TOKENS},
            "temperature": {"type": "number"},
            "json": {"anyOf": [{"type": "boolean"}, {"type": "object"}]},
            "options": {"type": "object"},
            "vars": {"type": "object"},
            "rpm": _RATE,
            "tpm": _RATE,
            "concurrency": {"type": "integer", "minimum": 1},
            "tpm_counts": {"enum": ["max_tokens", "usage"]},
            "cache": {"type": "boolean"},
            "prices": {"type": "object", "additionalProperties": _PRICE},
        },
    }


def options_schema() -> dict[str, Any]:
    """A submission's options for the llm task: its parameters, and a budget only for a
    model whose price the table has (at the default endpoint)."""
    priced = [model for model in _PRICED if find_price(model) is not None]
    return {
        "type": "object",
        "required": ["params"],
        "properties": {"params": params_schema()},
        "anyOf": [
            {"properties": {"budget": {"type": "null"}}},
            {
                "properties": {
                    "params": {"properties": {"model": {"enum": priced}, "base_url": {"const": ""}}}
                }
            },
        ],
    }
