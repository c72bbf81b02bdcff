"""Webhooks from the installed ``batchyard`` command: ``submit --webhook``, the ``worker``
process sending what its batches' endings made (signed with the store's secret, which
``webhooks secret`` prints), ``webhooks ID`` as a table and as JSON, and a bad URL refused
with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

from batchyard.webhooks import DELIVERY, EVENT, SIGNATURE, verify
from tests.e2e.test_cli_batches import CLI, TASKS, jsonl, rows
from tests.procs.receiver import Receiver


def make_cli(tmp_path: Path) -> CLI:
    (tmp_path / "e2etasks.py").write_text(TASKS)
    return CLI(tmp_path)


def test_a_worker_sends_the_ending_and_webhooks_shows_it(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    with Receiver([500]) as receiver:
        data = jsonl(cli.folder, "in.jsonl", rows(3))
        batch_id = cli.ok("submit", "e2etasks:work", data, "--webhook", receiver.url).strip()
        before = cli.ok("webhooks", batch_id)
        assert "no webhook deliveries yet" in before and receiver.url in before
        cli.ok("worker", "--until-idle")
        # Sent before the worker exited. It got a 500; the retry is due after the worker's
        # drain at exit, so it waits for the next process that sends.
        (first,) = receiver.received
    secret = cli.ok("webhooks", "secret").strip()
    verify(secret, first.headers[SIGNATURE], first.body)
    assert first.headers[EVENT] == "batch.completed"
    assert json.loads(first.body)["id"] == batch_id
    shown = cli.json("webhooks", batch_id)
    assert shown["urls"] == [receiver.url]
    (delivery,) = shown["deliveries"]
    assert delivery["id"] == first.headers[DELIVERY]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "pending",
        1,
        500,
    )
    assert delivery["last_error"] == "HTTP 500: no" and delivery["next_at"] is not None
    table = cli.ok("webhooks", batch_id)
    assert "batch.completed" in table and receiver.url in table and "HTTP 500: no" in table
    assert cli.json("webhooks", "secret") == {"secret": secret, "from": "store"}


def test_run_sends_the_ending_before_it_exits(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    with Receiver() as receiver:
        data = jsonl(cli.folder, "in.jsonl", rows(2))
        final = cli.json("run", "e2etasks:work", data, "--webhook", receiver.url)
        (sent,) = receiver.received  # sent before run exited
    assert sent.headers[EVENT] == "batch.completed"
    assert json.loads(sent.body)["counts"] == final["counts"]
    (delivery,) = cli.json("webhooks", final["id"])["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        1,
        200,
    )


def test_a_bad_webhook_url_is_refused_and_nothing_written(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    data = jsonl(cli.folder, "in.jsonl", rows(2))
    error = cli.fails(2, "submit", "e2etasks:work", data, "--webhook", "ftp://example.com/x")
    assert "webhook 'ftp://example.com/x': not an http:// or https:// URL" in error
    assert cli.batches() == []
    batch_id = cli.ok("submit", "e2etasks:work", data).strip()
    assert "names no webhook" in cli.ok("webhooks", batch_id)
