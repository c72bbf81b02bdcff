"""How the command line words durations and ages."""

from __future__ import annotations

import pytest

from batchyard.cli.common import human_age, parse_duration


@pytest.mark.parametrize(
    ("written", "words"),
    [
        ("7d", "7 days"),
        ("2w", "14 days"),
        ("36h", "36 hours"),
        ("1.5d", "36 hours"),
        ("15m", "15 minutes"),
        ("90s", "90 seconds"),
        ("60", "1 minute"),
        ("1s", "1 second"),
        ("0", "0 seconds"),
        ("0.5s", "0.5 seconds"),
    ],
)
def test_an_age_reads_back_in_words(written: str, words: str) -> None:
    assert human_age(parse_duration(written)) == words
