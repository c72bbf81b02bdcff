"""The estimate's output tokens: an expectation inside its own range."""

from __future__ import annotations

from batchyard.llm.estimate import _output_range


def test_answers_longer_than_the_cap_count_as_cut_at_it() -> None:
    # History from a version allowing 200 tokens, estimated for one capped at 100.
    expected, low, high = _output_range([180, 190, 200, 170], calls=12, max_tokens=100)
    assert expected == 1200 and low <= expected <= high == 1200


def test_without_history_half_the_cap_is_expected() -> None:
    assert _output_range([], calls=10, max_tokens=50) == (250, 0.0, 500.0)


def test_the_range_holds_the_expectation() -> None:
    expected, low, high = _output_range([10, 30, 20, 40], calls=100, max_tokens=1000)
    assert low < expected == 2500 < high <= 100_000
