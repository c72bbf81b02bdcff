"""The llm task's parameters: read and checked once per batch, from ``--param`` or
``submit(params=...)``.

=================  ========================================================================
``model``          the model name the endpoint knows (required)
``template``       the user prompt, a Jinja2 template over the item's fields (required;
                   ``--param template=@prompt.j2`` reads a file)
``system``         an optional system prompt, a template too
``vars``           names every item's prompts see besides its own fields (which win), as
                   a JSON object: ``--param vars='{"topic": "tides"}'``; with ``--count``,
                   what a generation batch generates from (the item gives ``n``)
``base_url``       an OpenAI-compatible endpoint (default https://api.openai.com/v1)
``api_key_env``    the environment variable holding the API key (default OPENAI_API_KEY;
                   "" for an endpoint without keys). The key itself is never stored.
``max_tokens``     the cap on each answer (default 1024)
``temperature``    sent when given
``json``           true: ask for a JSON object and parse the answer; an object: a JSON
                   schema the answer must follow (``response_format`` json_schema)
``options``        more request fields sent as they are (``top_p``, ``seed``, ...)
``rpm``, ``tpm``   the endpoint's limits for this model and key, shared by every worker
                   (``--rate-limit`` and ``--tokens-per-minute`` set them too)
``concurrency``    calls in flight at once for this model and key, across workers
``tpm_counts``     "max_tokens" (default: like OpenAI, a call counts its prompt plus its
                   max_tokens against tokens per minute) or "usage" (prompt + answer)
``cache``          reuse answers to identical requests (default true)
``prices``         per-model prices for self-hosted or unlisted models:
                   ``{"my-model": {"input": 0.2, "output": 0.6}}`` per million tokens
=================  ========================================================================
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from batchyard import ratelimit
from batchyard.errors import ConfigError
from batchyard.llm.prices import Price, find_price, parse_overrides
from batchyard.llm.prompts import PromptTemplate

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_MAX_TOKENS = 1024
KNOWN = frozenset(
    {
        "model",
        "template",
        "system",
        "base_url",
        "api_key_env",
        "max_tokens",
        "temperature",
        "json",
        "options",
        "rpm",
        "tpm",
        "concurrency",
        "tpm_counts",
        "cache",
        "prices",
        "vars",
    }
)


@dataclass(frozen=True)
class LlmParams:
    """A batch's llm parameters, checked."""

    model: str
    prompt: PromptTemplate
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    json_mode: bool = False
    schema: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    rpm: Any = None
    tpm: Any = None
    concurrency: int | None = None
    tpm_counts: str = "max_tokens"
    cache: bool = True
    prices: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def price(self) -> Price | None:
        """The model's price (overrides first, then the table), looked up once per batch."""
        return find_price(self.model, base_url=self.base_url, overrides=self.prices or None)

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat-completions request for these messages."""
        body: dict[str, Any] = {
            **self.options,
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": self.schema, "strict": True},
            }
        elif self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def cache_key(self, body: Mapping[str, Any]) -> str:
        """The response cache's key: the whole request (model, rendered messages, every
        parameter, the output schema), the endpoint and the template's version."""
        content = {"base_url": self.base_url, "template": self.prompt.version, "body": body}
        try:
            encoded = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer past 64 bits (in json, options or vars): JSON has it
            encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()

    def api_key(self) -> str | None:
        """The key from the environment (None for an endpoint without keys)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"the environment variable {self.api_key_env} (the API key for {self.base_url})"
                " is not set; set it, or pass --param api_key_env= for an endpoint that takes"
                " no key"
            )
        return key

    def limiter_key(self, api_key: str | None) -> str:
        """Provider + model + key: what a provider's limits apply to. The key enters only
        as a short hash, so the store never holds it."""
        digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
        return f"llm:{self.base_url}:{self.model}:{digest}"


def read_params(params: Mapping[str, Any]) -> LlmParams:
    """Check a batch's parameters; raises ConfigError naming the parameter at fault."""
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        close = difflib.get_close_matches(unknown[0], KNOWN, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"the llm task has no parameter {unknown[0]!r}{hint} "
            f"(it takes: {', '.join(sorted(KNOWN))})"
        )
    model = _text(params, "model", required=True)
    template = _text(params, "template", required=True)
    prompt = PromptTemplate(template, _text(params, "system") or None, _mapping(params, "vars"))
    base_url = _text(params, "base_url") or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"--param base_url: {base_url!r} is not an http(s) URL")
    schema = params.get("json")
    if schema is not None and not isinstance(schema, bool | dict):
        raise ConfigError("--param json: write true, false, or a JSON schema object")
    return LlmParams(
        model=model,
        prompt=prompt,
        base_url=base_url.rstrip("/"),
        api_key_env=str(params.get("api_key_env", DEFAULT_KEY_ENV) or ""),
        max_tokens=_int(params, "max_tokens", DEFAULT_MAX_TOKENS),
        temperature=_number(params, "temperature"),
        json_mode=bool(schema),
        schema=schema if isinstance(schema, dict) else None,
        options=_mapping(params, "options"),
        rpm=_rate(params, "rpm"),
        tpm=_rate(params, "tpm"),
        concurrency=_int(params, "concurrency", None),
        tpm_counts=_choice(params, "tpm_counts", ("max_tokens", "usage")),
        cache=_flag(params, "cache", True),
        prices=_prices(params),
    )


def _text(params: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ConfigError(f"the llm task needs --param {name}=...")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"--param {name} must be text, not {type(value).__name__}")
    return value


def _int(params: Mapping[str, Any], name: str, default: int | None) -> Any:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is whole: JSON (and JSON Schema) do not tell it from 3
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--param {name} must be a whole number of at least 1, not {value!r}")
    return value


def _number(params: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"--param {name} must be a number, not {value!r}")
    return float(value)


def _mapping(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"--param {name} must be a JSON object, not {value!r}")
    return value


def _rate(params: Mapping[str, Any], name: str) -> Any:
    """A rate as given, once it reads as one (a validation took a list as tpm)."""
    value = params.get(name)
    try:
        ratelimit.parse_rate(value)
    except ConfigError as exc:
        raise ConfigError(f"--param {name}: {exc}") from None
    return value


def _prices(params: Mapping[str, Any]) -> dict[str, Any]:
    """The price overrides, checked whole now (a template kept ``false`` as a price)."""
    prices = _mapping(params, "prices")
    if prices:
        parse_overrides(prices)
    return prices


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"--param {name} must be true or false, not {value!r}")
    return value


def _choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = params.get(name, choices[0])
    if value not in choices:
        raise ConfigError(f"--param {name} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)
