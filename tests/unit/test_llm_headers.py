"""Reading providers' rate-limit headers, and the pauses they imply."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchyard.llm.headers import (
    RateInfo,
    exhausted_for,
    parse_duration,
    parse_rate_headers,
    pause_for,
)

#: 2024-01-01T00:00:00Z as a Unix time.
NOW = datetime(2024, 1, 1, tzinfo=UTC).timestamp()

OPENAI = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "1999862",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "2m59.56s",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("250us", 0.00025),
        ("7.66s", 7.66),
        (" 12 ", 12.0),  # a bare number of seconds, as some compatible servers send
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "m", "-1s", "1s2", "s1", "1.2.3s", "nan", "-3"])
def test_bad_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    info = parse_rate_headers(OPENAI, NOW)
    assert info == RateInfo(
        limit_requests=10000,
        remaining_requests=9999,
        reset_requests=pytest.approx(0.006),  # type: ignore[arg-type]  # compares as a float
        limit_tokens=2_000_000,
        remaining_tokens=1_999_862,
        reset_tokens=pytest.approx(179.56),  # type: ignore[arg-type]  # compares as a float
    )
    assert exhausted_for(info) is None and pause_for(info) is None


def test_header_names_are_case_insensitive() -> None:
    shouting = {name.upper(): value for name, value in OPENAI.items()}
    mixed = {"X-RateLimit-Remaining-Requests": "7", "Retry-After-Ms": "1500"}
    assert parse_rate_headers(shouting, NOW) == parse_rate_headers(OPENAI, NOW)
    info = parse_rate_headers(mixed, NOW)
    assert (info.remaining_requests, info.retry_after) == (7, 1.5)


def test_no_headers_give_an_empty_info() -> None:
    assert parse_rate_headers({}, NOW) == RateInfo()
    assert pause_for(RateInfo()) is None and exhausted_for(RateInfo()) is None


def test_garbage_values_become_none_without_raising() -> None:
    garbage = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-5",
        "x-ratelimit-reset-requests": "whenever",
        "x-ratelimit-limit-tokens": "1.5",
        "x-ratelimit-remaining-tokens": "",
        "x-ratelimit-reset-tokens": "2024-13-45T99:00:00Z",
        "retry-after-ms": "inf",
        "retry-after": "Someday, Never",
    }
    assert parse_rate_headers(garbage, NOW) == RateInfo()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1234"}, 1.234),
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # the finer one wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # a bad one falls through
        ({"retry-after": "Mon, 01 Jan 2024 00:00:30 GMT"}, 30.0),
        ({"retry-after": "Mon, 01 Jan 2024 00:00:30 -0000"}, 30.0),
        ({"retry-after": "Sun, 31 Dec 2023 23:59:00 GMT"}, 0.0),  # already past
    ],
)
def test_retry_after_in_every_form(headers: dict[str, str], seconds: float) -> None:
    info = parse_rate_headers(headers, NOW)
    assert info.retry_after == pytest.approx(seconds)
    assert pause_for(info) == pytest.approx(seconds)


def test_anthropic_headers_fold_the_tightest_token_limit() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2024-01-01T00:00:01Z",
        "anthropic-ratelimit-tokens-limit": "100000",
        "anthropic-ratelimit-tokens-remaining": "90000",
        "anthropic-ratelimit-tokens-reset": "2024-01-01T00:00:06Z",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "75000",
        "anthropic-ratelimit-input-tokens-reset": "2024-01-01T00:00:05Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "400",
        "anthropic-ratelimit-output-tokens-reset": "2024-01-01T00:00:30+00:00",
    }
    info = parse_rate_headers(headers, NOW)
    assert (info.limit_requests, info.remaining_requests, info.reset_requests) == (50, 49, 1.0)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens) == (16000, 400, 30.0)
    assert (info.limit_input_tokens, info.remaining_input_tokens) == (80000, 75000)
    assert info.reset_input_tokens == 5.0
    assert (info.limit_output_tokens, info.remaining_output_tokens) == (16000, 400)
    assert info.reset_output_tokens == 30.0
    assert exhausted_for(info) is None


def test_an_exhausted_anthropic_limit_decides_the_pause() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2024-01-01T00:00:12Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2024-01-01T00:00:40Z",
        "Anthropic-RateLimit-Requests-Reset": "not a time",
    }
    info = parse_rate_headers(headers, NOW)
    assert (info.remaining_tokens, info.reset_tokens) == (0, 40.0)  # the later of two zeros
    assert info.reset_requests is None
    assert exhausted_for(info) == pause_for(info) == 40.0


def test_anthropic_tokens_without_counts_take_the_first_limit_given() -> None:
    headers = {"anthropic-ratelimit-output-tokens-limit": "8000"}
    info = parse_rate_headers(headers, NOW)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens) == (8000, None, None)


def test_a_reset_in_the_past_or_without_a_zone() -> None:
    past = {"anthropic-ratelimit-requests-reset": "2023-12-31T23:00:00Z"}
    naive = {"anthropic-ratelimit-requests-reset": "2024-01-01T00:00:30"}
    assert parse_rate_headers(past, NOW).reset_requests == 0.0
    assert parse_rate_headers(naive, NOW).reset_requests is None


def test_pause_after_a_429() -> None:
    requests_out = RateInfo(remaining_requests=0, reset_requests=7.0, remaining_tokens=10)
    tokens_out = RateInfo(remaining_requests=3, remaining_tokens=0, reset_tokens=12.5)
    both_out = RateInfo(
        remaining_requests=0, reset_requests=2.0, remaining_tokens=0, reset_tokens=9.0
    )
    assert pause_for(requests_out) == 7.0
    assert pause_for(tokens_out) == 12.5
    assert pause_for(both_out) == 9.0  # the key is blocked until both have reset
    assert pause_for(RateInfo(retry_after=3.0, remaining_requests=0, reset_requests=7.0)) == 3.0
    assert pause_for(RateInfo(remaining_requests=0)) is None  # exhausted, reset unknown
    assert pause_for(RateInfo(remaining_requests=5, reset_requests=7.0)) is None


def test_exhausted_ignores_retry_after() -> None:
    assert exhausted_for(RateInfo(retry_after=3.0)) is None
    assert exhausted_for(RateInfo(remaining_tokens=0, reset_tokens=0.5)) == 0.5


def test_next_free_in_waits_for_one_request_not_the_whole_window() -> None:
    from batchyard.llm.headers import RateInfo, next_free_in

    used_up = RateInfo(limit_requests=600, remaining_requests=0, reset_requests=60.0)
    assert next_free_in(used_up) == pytest.approx(0.1)
    tokens = RateInfo(limit_tokens=40_000, remaining_tokens=0, reset_tokens=30.0)
    assert next_free_in(tokens) == pytest.approx(30.0 / 40_000)
    assert (
        next_free_in(RateInfo(limit_requests=600, remaining_requests=3, reset_requests=9)) is None
    )
    assert next_free_in(RateInfo(remaining_requests=0, reset_requests=9.0)) is None
