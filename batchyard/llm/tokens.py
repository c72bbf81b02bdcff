"""Token counts for chat messages: exact for OpenAI's models, a stated estimate for the rest.

The rule:

- **Exact** for models whose tokenizer is known: ``o200k_base`` for ``gpt-4o*``, ``gpt-4.1*``,
  ``gpt-4.5*``, ``gpt-5*``, ``o1*``, ``o3*``, ``o4*``, ``chatgpt-4o*`` and ``gpt-oss*``;
  ``cl100k_base`` for ``gpt-4*`` (the others), ``gpt-3.5*`` and ``text-embedding-3*``. A
  provider prefix (``openai/gpt-4o``) and a fine-tune wrapper (``ft:gpt-4o-mini:org::id``) are
  looked through. The encodings are OpenAI's own rank files, shipped in ``encodings/`` because
  tiktoken would download them, and checked against their sha256 once per process.
- **Estimated** for every other model: ``ceil(characters / 4)`` per text, OpenAI's rule of
  thumb for English. Such counts carry ``exact=False``.

A chat adds up as OpenAI's cookbook counts it, for exact and estimated counts alike: 3 tokens
per message, plus the tokens of its role, its content (the text parts of a list content) and
its name, plus 1 when it has a name, plus 3 that prime the reply. Text is encoded as ordinary
text: ``<|endoftext|>`` in a prompt counts as the characters it is, as the API treats it.
"""

from __future__ import annotations

import binascii
import functools
import gzip
import hashlib
import math
import types
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken_ext import openai_public  # type: ignore[import-untyped]  # ships no py.typed

from batchyard.errors import BatchyardError

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

#: sha256 of each decompressed rank file: the hashes tiktoken itself expects of them.
_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_ENCODINGS_DIR = Path(__file__).parent / "encodings"

#: Model name prefixes per encoding; o200k_base is tried first, so ``gpt-4o`` is not ``gpt-4``.
_O200K_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "chatgpt-4o",
    "gpt-oss",
)
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3")  # gpt-35: Azure's spelling


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A number of tokens; ``exact`` says whether a real tokenizer (``encoding``) counted them."""

    tokens: int
    exact: bool
    encoding: str | None


def encoding_name(model: str) -> str | None:
    """The name of ``model``'s tokenizer, or ``None`` when it has no known exact one."""
    base = model.lower().rsplit("/", 1)[-1]
    if base.startswith("ft:"):
        base = base[3:].split(":", 1)[0]
    if base.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if base.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


def encoding_for_model(model: str) -> tiktoken.Encoding | None:
    """``model``'s tokenizer, loaded on first use, or ``None`` (see :func:`encoding_name`)."""
    name = encoding_name(model)
    return None if name is None else load_encoding(name)


@functools.cache
def load_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (``o200k_base`` or ``cl100k_base``) from the shipped files.

    Loads once per process (about half a second). Raises :class:`KeyError` for another name and
    :class:`~batchyard.errors.BatchyardError` when a shipped file is damaged.
    """
    if name not in _SHA256:
        raise KeyError(f"no shipped encoding {name!r}; there are {', '.join(_SHA256)}")
    # NOTE: tiktoken_ext.openai_public defines each encoding (its split pattern and special
    # tokens) inside a function that downloads the ranks through the module-global name
    # load_tiktoken_bpe. Running that function's code with only that global swapped for our
    # reader keeps tiktoken as the one source of those definitions, without a download.
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    offline = types.FunctionType(
        constructor.__code__, {**vars(openai_public), "load_tiktoken_bpe": _read_ranks}
    )
    definition: dict[str, Any] = offline()
    return tiktoken.Encoding(**definition)


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` alone for ``model``: exact when its tokenizer is known, else estimated."""
    encoding = encoding_for_model(model)
    return _counter(encoding)(text)


def count_message_tokens(messages: Sequence[Mapping[str, Any]], model: str) -> TokenCount:
    """Prompt tokens of chat ``messages`` for ``model``, by the rule in the module docstring.

    Image and audio parts of a list content are not counted, so a count that skipped one is
    ``exact=False``.
    """
    encoding = encoding_for_model(model)
    count = _counter(encoding)
    tokens = REPLY_PRIMING
    exact = encoding is not None
    for message in messages:
        texts, complete = _message_texts(message)
        tokens += TOKENS_PER_MESSAGE + sum(count(text) for text in texts)
        tokens += TOKENS_PER_NAME if message.get("name") else 0
        exact = exact and complete
    return TokenCount(tokens, exact, encoding.name if encoding is not None else None)


def most_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The most prompt tokens any byte-level tokenizer can make of ``messages``: one per
    UTF-8 byte of their texts, plus the chat overhead. A safe bound where no exact count can
    be had (a budget must hold whatever the provider counts)."""
    tokens = REPLY_PRIMING
    for message in messages:
        texts, _ = _message_texts(message)
        tokens += TOKENS_PER_MESSAGE + TOKENS_PER_NAME + sum(len(t.encode()) for t in texts)
    return tokens


def _counter(encoding: tiktoken.Encoding | None) -> Callable[[str], int]:
    if encoding is None:
        return _estimate
    return lambda text: len(encoding.encode_ordinary(text))


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _message_texts(message: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The texts of a message that count (role, content, name) and whether that is all of it."""
    texts = [str(message.get("role") or "")]
    content = message.get("content")
    parts = list(_content_texts(content))
    texts.extend(text for text in parts if text is not None)
    if message.get("name"):
        texts.append(str(message["name"]))
    return texts, None not in parts


def _content_texts(content: Any) -> Iterator[str | None]:
    """The text of a content: itself, or each text part of a list (``None`` for other parts)."""
    if content is None:
        return
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        yield str(content)
        return
    for part in content:
        is_text = isinstance(part, Mapping) and part.get("type", "text") == "text"
        yield str(part.get("text", "")) if is_text else None


def _read_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stands in for ``tiktoken.load.load_tiktoken_bpe``: the ranks of the shipped copy of ``url``.

    Refuses a file whose sha256 is not the pinned one (nor the one tiktoken asks for).
    """
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    path = _ENCODINGS_DIR / f"{name}.tiktoken.gz"
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise BatchyardError(f"cannot read the token encoding file {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256.get(name) or expected_hash not in (None, digest):
        raise BatchyardError(
            f"the token encoding file {path} is damaged (sha256 {digest}, expected "
            f"{_SHA256.get(name)}); reinstall batchyard"
        )
    # (binascii's decoder is what base64.b64decode calls, without its per-call checks: the
    # 200,000 lines parse in two thirds of the time)
    decode = binascii.a2b_base64
    return {decode(token): int(rank) for token, rank in _pairs(data)}


def _pairs(data: bytes) -> Iterator[list[bytes]]:
    return (line.split() for line in data.splitlines() if line)
