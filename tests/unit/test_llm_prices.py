"""Prices per model: genai-prices' table, the user's overrides, and what a call costs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchyard.errors import ConfigError
from batchyard.llm.prices import Price, find_price, parse_overrides


def test_gpt_4o_mini_costs_what_openai_charges() -> None:
    price = find_price("gpt-4o-mini")
    assert price is not None
    assert (price.input, price.output, price.cached_input) == (0.15, 0.60, 0.075)
    assert price.source.startswith("genai-prices ")


def test_a_provider_prefix_or_url_finds_the_same_model() -> None:
    plain = find_price("gpt-4o-mini")
    assert find_price("openai/gpt-4o-mini") == plain
    assert find_price("gpt-4o-mini", base_url="https://api.openai.com/v1") == plain
    assert find_price("openai/gpt-4o-mini", base_url="https://openrouter.ai/api/v1") == plain


def test_an_unknown_base_url_falls_back_to_the_model_name() -> None:
    local = find_price("gpt-4o-mini", base_url="http://127.0.0.1:8099/v1")
    assert local == find_price("gpt-4o-mini")


def test_rates_are_those_below_long_context_tiers() -> None:
    price = find_price("gemini-2.5-pro")  # 1.25 up to 200k prompt tokens, 2.50 above
    assert price is not None and (price.input, price.output) == (1.25, 10.0)


def test_an_unknown_model_has_no_price() -> None:
    assert find_price("no-such-model-anywhere") is None
    assert find_price("acme/no-such-model", base_url="http://127.0.0.1:1/v1") is None


def test_an_override_wins_for_its_exact_model_name() -> None:
    overrides: dict[str, dict[str, float]] = {
        "gpt-4o-mini": {"input": 1, "output": 2.5},
        "mine": {"input": 0, "output": 0},
    }
    assert find_price("gpt-4o-mini", overrides=overrides) == Price(1.0, 2.5, 1.0, "override")
    assert find_price("mine", overrides=overrides) == Price(0.0, 0.0, 0.0, "override")
    assert find_price("openai/gpt-4o-mini", overrides=overrides) == find_price("gpt-4o-mini")


def test_an_override_may_price_cached_input() -> None:
    overrides = {"m": {"input": 2, "output": 8, "cached_input": 0.5}}
    price = find_price("m", overrides=overrides)
    assert price == Price(2.0, 8.0, 0.5, "override")


def test_cached_input_defaults_to_input() -> None:
    assert Price(3.0, 15.0).cached_input == 3.0
    assert Price(3.0, 15.0, 0.3).cached_input == 0.3


def test_cost_prices_fresh_cached_and_completion_tokens() -> None:
    price = Price(input=0.15, output=0.60, cached_input=0.075)
    # 800 fresh * 0.15 + 200 cached * 0.075 + 500 out * 0.60 = 120 + 15 + 300 per 1M
    assert price.cost(1000, 500, cached_tokens=200) == pytest.approx(435e-6)
    assert price.cost(1_000_000, 0) == pytest.approx(0.15)
    assert price.cost(0, 0) == 0


def test_overrides_parse_from_json_text() -> None:
    text = json.dumps(
        {"a": {"input": 1, "output": 2}, "b": {"input": 0.5, "output": 1, "cached_input": 0}}
    )
    assert parse_overrides(text) == {
        "a": {"input": 1.0, "output": 2.0},
        "b": {"input": 0.5, "output": 1.0, "cached_input": 0.0},
    }


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("{not json", "not valid JSON"),
        ([1], "must be a JSON object"),
        ("[]", "must be a JSON object"),
        ({"m": 1}, r"overrides\['m'\] must be an object"),
        ({"m": {"input": 1}}, r"overrides\['m'\]: missing field 'output'"),
        ({"m": {"input": 1, "output": 1, "cache": 1}}, r"overrides\['m'\]: unknown field 'cache'"),
        ({"m": {"input": -1, "output": 1}}, r"overrides\['m'\]\['input'\] must be a number >= 0"),
        ({"m": {"input": "1", "output": 1}}, r"\['input'\] must be a number"),
        ({"m": {"input": True, "output": 1}}, r"\['input'\] must be a number"),
        ({"m": {"input": 1, "output": float("nan")}}, r"\['output'\] must be a number"),
    ],
)
def test_bad_overrides_name_the_model_and_field(value: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_overrides(value)


def test_find_price_checks_every_override() -> None:
    overrides: Any = {"good": {"input": 1, "output": 1}, "bad": {"input": 1, "outptu": 1}}
    with pytest.raises(ConfigError, match=r"\['bad'\]: unknown field 'outptu'"):
        find_price("good", overrides=overrides)
