"""Token counts: OpenAI's encodings from the shipped files, the chat overhead rule, the estimate
for other models, and the refusal of a damaged encoding file.

Expected counts come from outside this code: token ids published with tiktoken and in OpenAI's
cookbook ("How to count tokens with tiktoken", whose message counts match the API's), and the
encodings' own rules (digits are split into groups of at most three)."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchyard.errors import BatchyardError
from batchyard.llm import tokens
from batchyard.llm.tokens import (
    TokenCount,
    count_message_tokens,
    count_text_tokens,
    encoding_name,
    load_encoding,
)

#: The cookbook's example conversation: the API counts 129 prompt tokens for it on gpt-3.5-turbo
#: and gpt-4 (cl100k_base) and 124 on gpt-4o and gpt-4o-mini (o200k_base).
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-3-5-sonnet", None),
        ("llama3.1:8b", None),
        ("gpt-test", None),
    ],
)
def test_models_map_to_their_encodings(model: str, encoding: str | None) -> None:
    assert encoding_name(model) == encoding


def test_the_shipped_encodings_are_openais() -> None:
    o200k, cl100k = load_encoding("o200k_base"), load_encoding("cl100k_base")
    assert o200k.encode_ordinary("hello world") == [24912, 2375]
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]
    assert o200k.encode_ordinary("tiktoken is great!") == [83, 8251, 2488, 382, 2212, 0]
    assert cl100k.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert (o200k.n_vocab, o200k.eot_token) == (200_019, 199_999)
    assert (cl100k.n_vocab, cl100k.eot_token) == (100_277, 100_257)
    assert o200k.special_tokens_set == {"<|endoftext|>", "<|endofprompt|>"}
    assert load_encoding("o200k_base") is o200k  # loaded once


def test_text_counts_are_exact_for_known_models() -> None:
    assert count_text_tokens("hello world", "gpt-4o-mini") == 2
    assert count_text_tokens("hello world", "gpt-3.5-turbo") == 2
    assert count_text_tokens("1234567", "gpt-4o") == 3  # 123 456 7
    assert count_text_tokens("", "gpt-4o") == 0


def test_special_token_text_counts_as_plain_text() -> None:
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1


def test_text_counts_are_estimated_for_unknown_models() -> None:
    assert count_text_tokens("hello world", "mistral-large") == 3  # ceil(11 / 4)
    assert count_text_tokens("abcd", "mistral-large") == 1
    assert count_text_tokens("", "mistral-large") == 0


def test_a_message_costs_three_plus_role_plus_content_plus_three_for_the_reply() -> None:
    messages = [{"role": "user", "content": "hello world"}]
    # 3 per message + "user" (1) + "hello world" (2) + 3 priming the reply
    assert count_message_tokens(messages, "gpt-4o-mini") == TokenCount(9, True, "o200k_base")
    two = [{"role": "system", "content": "hello world"}, *messages]
    assert count_message_tokens(two, "gpt-4o-mini").tokens == 9 + 3 + 1 + 2


def test_a_name_costs_its_tokens_plus_one() -> None:
    plain = [{"role": "user", "content": "hello world"}]
    named = [{"role": "user", "content": "hello world", "name": "world"}]
    # " world" is one token; "world" alone is one token too in both encodings.
    assert count_message_tokens(named, "gpt-4o").tokens == 9 + 1 + 1
    assert (
        count_message_tokens(named, "gpt-4").tokens
        == count_message_tokens(plain, "gpt-4").tokens + 2
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_the_cookbook_conversation_counts_as_the_api_does(model: str, expected: int) -> None:
    assert count_message_tokens(COOKBOOK, model).tokens == expected


def test_unknown_models_get_the_estimate_with_the_same_overheads() -> None:
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": ""}]
    # (3 + ceil(4/4) + ceil(11/4)) + (3 + ceil(9/4) + 0) + 3
    assert count_message_tokens(messages, "mistral-large") == TokenCount(7 + 6 + 3, False, None)


def test_text_parts_count_and_other_parts_make_the_count_inexact() -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]
    text_only = count_message_tokens([{"role": "user", "content": parts}], "gpt-4o")
    assert text_only == TokenCount(9, True, "o200k_base")
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_image = count_message_tokens([{"role": "user", "content": [*parts, image]}], "gpt-4o")
    assert with_image == TokenCount(9, False, "o200k_base")
    empty = count_message_tokens([{"role": "assistant", "content": None}], "gpt-4o")
    assert empty.tokens == 3 + 1 + 3


def test_no_messages_cost_only_the_reply_priming() -> None:
    assert count_message_tokens([], "gpt-4o").tokens == 3


def test_only_the_shipped_encodings_load() -> None:
    with pytest.raises(KeyError, match="r50k_base"):
        load_encoding("r50k_base")


@pytest.fixture
def encodings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the encodings folder the loader reads instead, with the cache emptied around."""
    shutil.copytree(tokens._ENCODINGS_DIR, tmp_path / "encodings")
    monkeypatch.setattr(tokens, "_ENCODINGS_DIR", tmp_path / "encodings")
    load_encoding.cache_clear()
    yield tmp_path / "encodings"
    load_encoding.cache_clear()


def test_a_damaged_encoding_file_is_refused(encodings_dir: Path) -> None:
    path = encodings_dir / "cl100k_base.tiktoken.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[100] ^= 1  # one flipped bit in an otherwise valid file
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(BatchyardError, match=r"cl100k_base\.tiktoken\.gz is damaged"):
        load_encoding("cl100k_base")
    with pytest.raises(BatchyardError, match="damaged"):
        count_text_tokens("hello", "gpt-4")


def test_an_unreadable_encoding_file_is_refused(encodings_dir: Path) -> None:
    (encodings_dir / "o200k_base.tiktoken.gz").write_bytes(b"not gzip")
    with pytest.raises(BatchyardError, match="cannot read the token encoding file"):
        load_encoding("o200k_base")
    (encodings_dir / "o200k_base.tiktoken.gz").unlink()
    with pytest.raises(BatchyardError, match="cannot read"):
        load_encoding("o200k_base")


# -- the fake OpenAI server counts as the real one does ---------------------------------------


def fake_request(model: str, messages: list[dict[str, Any]], max_tokens: int = 1000) -> Any:
    from batchyard.testing._chat import parse_request

    return parse_request({"model": model, "messages": messages, "max_tokens": max_tokens}, 100)


def test_the_fake_server_counts_prompts_exactly_for_known_models() -> None:
    from batchyard.testing._chat import count_prompt_tokens

    assert fake_request("gpt-4o-mini", COOKBOOK).prompt_tokens == 124
    assert fake_request("gpt-3.5-turbo", COOKBOOK).prompt_tokens == 129
    assert count_prompt_tokens(COOKBOOK, "gpt-4o") == 124


def test_the_fake_server_keeps_its_estimate_for_other_models() -> None:
    from batchyard.testing._chat import count_prompt_tokens

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    # ceil(chars / 4) per content + 4 per message + 3: (3 + 4) + (2 + 4) + 3
    assert fake_request("gpt-test", messages).prompt_tokens == 16
    assert count_prompt_tokens(messages) == count_prompt_tokens(messages, "gpt-test") == 16


def test_the_fake_server_counts_answers_with_the_models_tokenizer() -> None:
    from batchyard.testing._chat import compose_answer

    request = fake_request("gpt-4o-mini", [{"role": "user", "content": "Name three rivers."}])
    answer = compose_answer(request, (16, 96))
    assert answer == compose_answer(request, (16, 96))  # deterministic
    assert answer.finish_reason == "stop"
    assert answer.completion_tokens == len(load_encoding("o200k_base").encode(answer.content))
    assert 16 <= answer.completion_tokens <= 96 + 2  # the capital and the full stop may add one
    long = compose_answer(replace(request, max_tokens=10_000), (3000, 3000))
    assert 3000 <= long.completion_tokens <= 3002


def test_the_fake_server_cuts_answers_at_max_tokens_in_real_tokens() -> None:
    from batchyard.testing._chat import compose_answer

    request = fake_request("gpt-4o", [{"role": "user", "content": "Reply in JSON."}], max_tokens=7)
    answer = compose_answer(request, (50, 50))
    assert (answer.finish_reason, answer.completion_tokens) == ("length", 7)
    assert len(load_encoding("o200k_base").encode(answer.content)) == 7
    assert answer.content.startswith('{"answer": "')
