"""The chat-completions protocol of the fake server: checking a request, counting its tokens,
and composing a deterministic answer from it.

Tokens are counted as OpenAI counts them wherever that is known: for a model with an exact
tokenizer (``gpt-4o-mini``, ``gpt-4.1``, ``gpt-3.5-turbo``, ...; see ``batchyard.llm.tokens``)
prompts and answers are encoded with it, and a prompt adds up by the cookbook's chat rule. For
any other model (``gpt-test``) one documented approximation serves prompts and answers alike:
``ceil(characters / 4)`` per text, plus 4 tokens per message (role and separators) and 3 for
priming the reply. :func:`count_prompt_tokens` is public so tests and estimates can count
exactly what the server will report.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import tiktoken

from batchyard.llm import tokens

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3

_WORDS = (
    "the batch of prompts was answered in order and every item kept its result while the "
    "workers shared one limit across processes so no request was lost or repeated twice "
    "because a durable queue remembers what remains to do after a crash or a restart"
).split()


class BadRequest(Exception):
    """A request the endpoint refuses with 400, described as OpenAI describes it."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The fields of a chat-completions request the server uses."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    response_format: dict[str, Any] | None

    @property
    def prompt_tokens(self) -> int:
        return count_prompt_tokens(self.messages, self.model)


@dataclass(frozen=True, slots=True)
class Answer:
    """The assistant's reply and the tokens it took."""

    content: str
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


def count_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of one text: exact for a model with a known tokenizer, else
    ``ceil(len(text) / 4)``."""
    encoding = None if model is None else tokens.encoding_for_model(model)
    if encoding is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(encoding.encode_ordinary(text))


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]], model: str | None = None) -> int:
    """Prompt tokens of ``messages`` sent to ``model``, exactly as the server reports them in
    ``usage``; without a model, the approximation for unknown models."""
    if model is not None and tokens.encoding_name(model) is not None:
        return tokens.count_message_tokens(messages, model).tokens
    per_message = (MESSAGE_OVERHEAD + count_text_tokens(_text(m.get("content"))) for m in messages)
    return REPLY_PRIMING + sum(per_message)


def parse_request(body: Any, default_max_tokens: int) -> ChatRequest:
    """Check a decoded JSON body; raises :class:`BadRequest` as OpenAI would answer it."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(
            "you must provide a model parameter", "model", "missing_required_parameter"
        )
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "Invalid 'messages': expected a non-empty array.", "messages", "invalid_type"
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest(
            "Each message must be an object with a 'role'.", "messages", "invalid_type"
        )
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max_tokens))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest(
            "Invalid 'max_tokens': expected an integer >= 1.", "max_tokens", "invalid_value"
        )
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise BadRequest(
            "Invalid 'response_format': expected an object.", "response_format", "invalid_type"
        )
    return ChatRequest(model, messages, max_tokens, response_format)


def compose_answer(request: ChatRequest, answer_tokens: tuple[int, int]) -> Answer:
    """A reply derived only from the model, the messages and the response format.

    Its natural length is drawn from ``answer_tokens`` (low, high); a reply longer than
    ``max_tokens`` is cut there with ``finish_reason="length"``, which breaks a JSON reply just
    as a real truncation does. ``temperature`` is ignored: equal requests get equal replies.
    """
    seed = json.dumps([request.model, request.messages, request.response_format], sort_keys=True)
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    encoding = tokens.encoding_for_model(request.model)
    prose = _prose(rng, rng.randint(*answer_tokens), encoding)
    content = (
        json.dumps(_json_reply(rng, prose, request.response_format))
        if _wants_json(request)
        else prose
    )
    if encoding is not None:
        return _encoded_answer(content, request.max_tokens, encoding)
    if count_text_tokens(content) > request.max_tokens:
        content = content[: request.max_tokens * CHARS_PER_TOKEN]
        return Answer(content, "length", count_text_tokens(content))
    return Answer(content, "stop", count_text_tokens(content))


def _encoded_answer(content: str, max_tokens: int, encoding: tiktoken.Encoding) -> Answer:
    """An answer counted with a real tokenizer, cut after ``max_tokens`` tokens as a model
    stops generating there."""
    encoded = encoding.encode_ordinary(content)
    if len(encoded) > max_tokens:
        # NOTE: the content is ASCII (json.dumps escapes the rest), so a cut never splits a
        # character.
        return Answer(encoding.decode(encoded[:max_tokens]), "length", max_tokens)
    return Answer(content, "stop", len(encoded))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text ones count
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


def _wants_json(request: ChatRequest) -> bool:
    kind = (request.response_format or {}).get("type")
    if kind in ("json_object", "json_schema"):
        return True
    return any("json" in _text(m.get("content")).lower() for m in request.messages)


def _prose(rng: random.Random, length: int, encoding: tiktoken.Encoding | None) -> str:
    """Random words until the text is ``length`` tokens long, counted in linear time."""
    words: list[str] = []
    chars = counted = 0
    while (counted if encoding is not None else math.ceil(chars / CHARS_PER_TOKEN)) < length:
        word = rng.choice(_WORDS)
        piece = f" {word}" if words else word
        chars += len(piece)
        if encoding is not None:
            # NOTE: OpenAI's encodings split text before every " word", so the tokens of the
            # pieces add up to the tokens of the whole.
            counted += len(encoding.encode_ordinary(piece))
        words.append(word)
    return " ".join(words).capitalize() + "."


def _json_reply(rng: random.Random, prose: str, response_format: dict[str, Any] | None) -> Any:
    schema = ((response_format or {}).get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return {"answer": prose, "confidence": round(rng.random(), 2)}
    return {name: _value(rng, spec, prose) for name, spec in properties.items()}


def _value(rng: random.Random, spec: Any, prose: str) -> Any:
    spec = spec if isinstance(spec, dict) else {}
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return rng.choice(spec["enum"])
    kind = spec.get("type")
    if kind == "integer":
        return rng.randint(0, 100)
    if kind == "number":
        return round(rng.uniform(0, 1), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return prose.rstrip(".").split()[:3]
    return prose
