"""Webhooks' pure parts and edges: the signature scheme and its check, which URLs a batch may
name (refused whole, nothing written), which changes are announced as what, the backoff and
its day-long limit, and where the signing secret comes from."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from batchyard import InputError, Yard
from batchyard.deliveries import (
    GIVE_UP_AFTER,
    MAX_WEBHOOKS,
    Backoff,
    check_webhooks,
    event_for,
)
from batchyard.states import BatchState
from batchyard.webhooks import SECRET_ENV, SignatureError, sign, signing_secret, verify

SECRET = "whsec_test"
BODY = b'{"id":"batch_1","state":"completed"}'
T = 1_800_000_000


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body() -> None:
    mac = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={mac}"
    verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + 299)
    verify(SECRET, sign(SECRET, BODY, T), BODY.decode(), now=T - 299)  # a str body is UTF-8


@pytest.mark.parametrize(
    ("header", "body", "now", "words"),
    [
        (None, BODY, T, "no Batchyard-Signature header"),
        ("v1=abc", BODY, T, "expected t=<unix seconds>,v1=<hex>"),
        (f"t={T}", BODY, T, "expected t=<unix seconds>,v1=<hex>"),
        (sign(SECRET, BODY, T), BODY + b" ", T, "no v1 signature matches"),
        (sign("whsec_other", BODY, T), BODY, T, "no v1 signature matches"),
        (sign(SECRET, BODY, T), BODY, T + 301, "301s from now"),
        (sign(SECRET, BODY, T), BODY, T - 400, "400s from now"),
    ],
)
def test_a_bad_signature_says_which_check_failed(
    header: str | None, body: bytes, now: float, words: str
) -> None:
    with pytest.raises(SignatureError, match=words):
        verify(SECRET, header, body, now=now)


def test_any_v1_signature_may_match_while_a_secret_is_rotated() -> None:
    old, new = sign("whsec_old", BODY, T), sign(SECRET, BODY, T)
    both = f"{new},{old.split(',')[1]}"
    verify("whsec_old", both, BODY, now=T)
    verify(SECRET, both, BODY, now=T)


def test_webhook_urls_are_checked_and_repeats_dropped() -> None:
    urls = ["https://a.example/x", "http://127.0.0.1:8080/y", "https://a.example/x"]
    assert check_webhooks(urls) == ("https://a.example/x", "http://127.0.0.1:8080/y")
    for bad, words in [
        ("ftp://a.example/x", "not an http:// or https:// URL"),
        ("https:///nohost", "not an http:// or https:// URL"),
        ("a.example/x", "not an http:// or https:// URL"),
        ("https://a.example/with space", "has spaces"),
    ]:
        with pytest.raises(InputError, match=words):
            check_webhooks([bad])
    with pytest.raises(InputError, match="not one string"):
        check_webhooks("https://a.example/x")
    with pytest.raises(InputError, match=f"at most {MAX_WEBHOOKS}"):
        check_webhooks([f"https://a.example/{n}" for n in range(MAX_WEBHOOKS + 1)])


def test_a_submission_with_a_bad_webhook_writes_nothing(tmp_path: Path) -> None:
    with Yard(f"sqlite:///{tmp_path / 'y.db'}", webhooks=["https://conf.example/all"]) as yard:
        with pytest.raises(InputError, match="'mailto:x@y\\.z': not an http"):
            yard.submit("batchyard.demo:score_lead", [{"id": 1}], webhooks=["mailto:x@y.z"])
        assert yard.batches().rows == []
        batch = yard.submit("batchyard.demo:score_lead", [{"id": 1}], webhooks=["https://b.x/1"])
        batch.cancel()
        urls = [d.url for d in batch.webhooks()]
        assert batch.webhook_urls() == urls
        again = batch.rerun()
        assert again.webhook_urls() == urls  # a re-run calls the same URLs
    assert urls == ["https://conf.example/all", "https://b.x/1"]  # the Yard's first
    with pytest.raises(InputError, match="ftp://x"):
        Yard(f"sqlite:///{tmp_path / 'z.db'}", webhooks=["ftp://x"])


def test_a_batch_of_a_dataset_names_webhooks_too(tmp_path: Path) -> None:
    with Yard(f"sqlite:///{tmp_path / 'y.db'}") as yard:
        yard.datasets.add("leads", [{"id": n, "name": f"n{n}"} for n in range(3)])
        batch = yard.datasets.submit(
            "batchyard.demo:score_lead", "leads", webhooks=["https://d.example/h"]
        )
        batch.pause()
        (delivery,) = batch.webhooks()
    assert (delivery.url, delivery.event) == ("https://d.example/h", "batch.paused")


def test_which_changes_are_announced_as_what() -> None:
    B = BatchState
    assert event_for(B.COMPLETED, None) == "batch.completed"
    assert event_for(B.PARTIALLY_COMPLETED, None) == "batch.partially_completed"
    assert event_for(B.FAILED, None) == "batch.failed"
    assert event_for(B.CANCELLED, None) == "batch.cancelled"
    assert event_for(B.PAUSED, None) == "batch.paused"
    assert event_for(B.PAUSED, "the budget of 5.00 is spent") == "batch.needs_attention"
    assert [event_for(s, None) for s in (B.QUEUED, B.PROCESSING, B.RETRYING)] == [None] * 3


def test_the_backoff_grows_is_capped_has_jitter_and_gives_up_after_a_day() -> None:
    backoff = Backoff(base=10, cap=3600)
    waits = [backoff.next_try(n, 0.0, 0.0, draw=1.0) for n in range(1, 11)]
    assert waits[:4] == [10.0, 20.0, 40.0, 80.0] and waits[-1] == 3600.0
    assert backoff.next_try(3, 0.0, 0.0, draw=0.0) == 20.0  # never under half the delay
    assert backoff.next_try(20, 0.0, GIVE_UP_AFTER - 3600, draw=1.0) == GIVE_UP_AFTER
    assert backoff.next_try(20, 0.0, GIVE_UP_AFTER - 3599, draw=1.0) is None


def test_the_secret_is_made_once_per_store_unless_the_environment_gives_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with Yard(f"sqlite:///{tmp_path / 'y.db'}") as yard:
        made = signing_secret(yard.store)
    with Yard(f"sqlite:///{tmp_path / 'y.db'}") as again:
        assert signing_secret(again.store) == made
        assert made.startswith("whsec_") and len(made) == 6 + 64
        monkeypatch.setenv(SECRET_ENV, "whsec_from_env")
        assert signing_secret(again.store) == "whsec_from_env"
