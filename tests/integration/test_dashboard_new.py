"""The new-batch page's dataset source and its rules in process (FastAPI's TestClient over
a real SQLite yard): rows filtered and paged, picks kept across pages in the URL, "select
all N matching", the check (estimate and first prompts) over the rows picked, an empty
pick refused, a double post making one batch, a template version archived meanwhile
refused; and the cost above which a batch waits for its cost to be accepted, a setting
(``confirm_cost``) of the file path and the dataset path alike."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from batchyard import Yard
from batchyard.cli import build_parser
from batchyard.errors import ConfigError
from batchyard.web.app import create_app
from batchyard.web.settings import ServerSettings
from tests.integration.test_dashboard_pages import TASK, csrf, pick, sign_in

#: An llm template priced per token (no call is made: only estimates).
LLM = {"model": "gpt-4o", "api_key_env": "", "base_url": "http://127.0.0.1:9"}


def _leads(yard: Yard, n: int = 60) -> None:
    yard.datasets.add(
        "leads",
        [
            {"id": f"r{i}", "n": i, "name": f"Lead {i}", "industry": "SaaS" if i % 2 else "Retail"}
            for i in range(n)
        ],
    )


def _form(page: str) -> dict[str, Any]:
    """The fields a browser would post from the page's form (the boxes ticked included)."""
    fields: dict[str, Any] = {
        "csrf": csrf(page),
        "nonce": pick(r'name="nonce" value="([^"]+)"', page),
    }
    fields["shown"] = pick(r'name="shown" value="([^"]*)"', page)
    for name in ("cursor", "next", "all"):
        found = re.search(rf'name="{name}" value="([^"]*)"', page)
        if found:
            fields[name] = html.unescape(found.group(1))
    where = re.search(r'name="where" rows="3">([^<]*)</textarea>', page)
    fields["where"] = html.unescape(where.group(1)) if where else ""
    for name in ("sort", "name"):
        found = re.search(rf'name="{name}" value="([^"]*)"', page)
        fields[name] = html.unescape(found.group(1)) if found else ""
    fields["picked"] = re.findall(r'type="hidden" name="picked" value="([^"]*)"', page)
    fields["picked"] += re.findall(r'name="picked" value="([^"]*)" checked(?! disabled)', page)
    return fields


def _move(
    client: TestClient, page: str, go: str, **changes: Any
) -> tuple[str, dict[str, list[str]]]:
    """Press a button that moves between pages; the page it leads to and that URL's query."""
    fields = {**_form(page), "dataset": "leads", "go": go, **changes}
    fields["picked"] = fields["picked"] + changes.get("tick", [])
    fields.pop("tick", None)
    moved = client.post("/new/dataset/rows", data=fields, follow_redirects=False)
    assert moved.status_code == 303, moved.text
    location = moved.headers["location"]
    assert location.endswith("#rows-f" if go == "filter" else "#rows-h")
    assert "csrf" not in location
    return client.get(location.split("#")[0]).text, parse_qs(urlsplit(location).query)


def test_rows_picked_on_two_pages_make_a_batch_of_exactly_those(
    ann: TestClient, yard: Yard
) -> None:
    _leads(yard)
    start = ann.get("/new/dataset")
    assert start.status_code == 200 and '<option value="leads">leads</option>' in start.text
    assert 'aria-current="page">Rows of a dataset' in start.text
    page, _ = _move(ann, start.text, "filter")  # "Show its rows"
    assert "60 matching rows" in page
    page, query = _move(ann, page, "filter", where="industry=SaaS")
    assert "30 matching rows" in page and page.count('name="picked"') == 25
    page, query = _move(ann, page, "next", tick=["r1", "r3"])
    assert query["picked"] == ["r1", "r3"] and "cursor" in query
    assert page.count('type="checkbox" name="picked"') == 5  # the last 5 of 30
    assert "2 rows picked (2 not on this page)" in page
    page, query = _move(ann, page, "first", tick=["r59"])
    assert query["picked"] == ["r1", "r3", "r59"] and "cursor" not in query
    # Ticked boxes show as ticked when their page is drawn again.
    assert 'value="r1" checked' in page and 'value="r3" checked' in page
    form = {**_form(page), "dataset": "leads", "task": TASK, "name": "three leads"}
    made = ann.post("/new/dataset", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    batch = yard.batch(made.headers["location"].rsplit("/", 1)[1])
    assert sorted(i.key for i in batch.items()) == ["r1", "r3", "r59"]
    assert batch.status().name == "three leads" and batch.status().metadata["dataset"] == "leads"
    # The same form posted again (a double click) is the same batch.
    again = ann.post("/new/dataset", data=form, follow_redirects=False)
    assert again.headers["location"] == made.headers["location"]
    assert len(yard.batches(limit=10).rows) == 1


def test_select_all_matching_and_an_empty_pick(ann: TestClient, yard: Yard) -> None:
    _leads(yard)
    # The dataset's own page leads here with its filter.
    own = ann.get("/datasets/leads", params={"where": "n>=50"}).text
    assert 'href="/new/dataset?dataset=leads&amp;where=n%3E%3D50"' in own
    page, _ = _move(
        ann, ann.get("/new/dataset", params={"dataset": "leads"}).text, "filter", where="n>=50"
    )
    assert "10 matching rows" in page
    nothing = ann.post("/new/dataset", data={**_form(page), "dataset": "leads", "task": TASK})
    assert nothing.status_code == 422 and "no row is picked" in nothing.text
    assert 'role="alert"' in nothing.text and yard.batches(limit=5).rows == []
    page, query = _move(ann, page, "all", tick=["r50"])
    assert query["all"] == ["1"] and "All 10 matching rows are picked" in page
    assert page.count("checked disabled") == 10
    made = ann.post(
        "/new/dataset",
        data={**_form(page), "dataset": "leads", "task": TASK},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    batch = yard.batch(made.headers["location"].rsplit("/", 1)[1])
    assert batch.status().counts.total == 10 and batch.status().metadata["where"] == ["n>=50"]
    page, query = _move(ann, page, "some")
    assert "all" not in query and query["picked"] == ["r50"]
    page, query = _move(ann, page, "clear")
    assert "picked" not in query and "0 rows picked" in page
    # A bad condition is said on the form, which stays.
    bad, _ = _move(ann, page, "filter", where="n>>3")
    assert 'role="alert"' in bad and "n&gt;&gt;3" in bad and 'name="where"' in bad


def test_the_check_estimates_the_rows_picked_and_shows_their_first_prompts(
    ann: TestClient, yard: Yard
) -> None:
    _leads(yard, 12)
    yard.templates.create("scorer", "llm", {**LLM, "template": "Score {{ name }}"})
    page = ann.get("/new/dataset", params={"dataset": "leads", "all": "1", "where": "n<8"}).text
    fields = {**_form(page), "dataset": "leads", "template": "scorer"}
    found = ann.post("/new/dataset/check", data=fields)
    assert found.status_code == 200 and found.text.startswith('<div id="check"')
    assert "Estimate for 8 items with gpt-4o" in found.text
    assert "The first 5 prompts" in found.text and ">Score Lead 4</pre>" in found.text
    assert ">Score Lead 5</pre>" not in found.text
    picked = {**fields, "all": "", "picked": ["r9", "r2"]}
    two = ann.post("/new/dataset/check", data=picked)
    assert "Estimate for 2 items" in two.text and ">Score Lead 9</pre>" in two.text
    none = ann.post("/new/dataset/check", data={**picked, "picked": []})
    assert "no row is picked" in none.text
    plain = ann.post("/new/dataset/check", data={**picked, "template": "", "task": TASK})
    assert "All 2 rows read" in plain.text
    assert yard.batches(limit=5).rows == []  # a check makes nothing


def test_a_template_version_archived_meanwhile_is_refused_on_the_form(
    ann: TestClient, yard: Yard
) -> None:
    _leads(yard, 5)
    yard.templates.create("scorer", TASK, {"out": "one"})
    yard.templates.update("scorer", {"out": "two"})
    page = ann.get("/new/dataset", params={"dataset": "leads", "picked": ["r1"]}).text
    assert '<option value="scorer@1">scorer@1 (older)</option>' in page
    yard.templates.archive("scorer@1")
    fields = {**_form(page), "dataset": "leads", "template": "scorer@1"}
    gone = ann.post("/new/dataset", data=fields)
    assert gone.status_code == 409 and "archived" in gone.text and 'role="alert"' in gone.text
    assert yard.batches(limit=5).rows == []
    assert 'value="r1" checked' in gone.text  # the pick survives the refusal


def _priced(yard: Yard) -> None:
    yard.templates.create("pricey", "llm", {**LLM, "template": "Hi {{ name }}", "max_tokens": 4000})


@pytest.mark.parametrize(("limit", "held"), [(1.0, True), (5.0, False)])
def test_a_batch_over_the_confirm_cost_setting_waits_for_its_cost_to_be_accepted(
    yard: Yard, limit: float, held: bool
) -> None:
    """100 rows at gpt-4o with room for 4,000 tokens out: about $2.00. Over a $1.00 limit
    nothing is made until the cost is accepted; under a $5.00 one it is made at once."""
    app = create_app(yard, ServerSettings(workers=0, allow_task=[TASK], confirm_cost=limit))
    _leads(yard, 100)
    _priced(yard)
    many = "".join(f'{{"id": "r{n}", "name": "x"}}\n' for n in range(100)).encode()
    with sign_in(app, yard, "ann") as ann:
        form = ann.get("/new").text
        fields = {"csrf": csrf(form), "nonce": "n1", "template": "pricey"}
        by_file = ann.post(
            "/new", data=fields, files={"file": ("in.jsonl", many)}, follow_redirects=False
        )
        page = ann.get("/new/dataset", params={"dataset": "leads", "all": "1"}).text
        by_rows = ann.post(
            "/new/dataset",
            data={**_form(page), "dataset": "leads", "template": "pricey"},
            follow_redirects=False,
        )
        if held:
            for answer in (by_file, by_rows):
                assert answer.status_code == 200 and "should cost about $2.00" in answer.text
                assert "over $1.00: nothing was made" in answer.text
            assert yard.batches(limit=5).rows == []
            accepted = ann.post(
                "/new/dataset",
                data={
                    **_form(by_rows.text),
                    "dataset": "leads",
                    "template": "pricey",
                    "accept": "yes",
                },
                follow_redirects=False,
            )
            assert accepted.status_code == 303, accepted.text
            assert len(yard.batches(limit=5).rows) == 1
        else:
            assert (by_file.status_code, by_rows.status_code) == (303, 303)
            assert [b.counts.total for b in yard.batches(limit=5).rows] == [100, 100]
    # Each batch keeps the estimate made before it (the accepted one, when held).
    for made in yard.batches(limit=5).rows:
        kept = made.metadata["estimate"]
        assert isinstance(kept, dict) and kept["items"] == 100, kept
        assert kept["model"] == "gpt-4o" and 1.5 < kept["cost"] < 2.5, kept
        low, high = kept["cost_range"]
        assert low <= kept["cost"] <= high
        with sign_in(app, yard, f"reader-{made.id}", owner=made.owner) as reader:
            page = reader.get(f"/batches/{made.id}").text
        shown = f"<dt>Estimated before</dt><dd>${kept['cost']:.4f} "
        assert shown + f'<span class="sub">(${low:.4f} to ${high:.4f})</span>' in page


def test_metadata_that_is_no_estimate_is_not_shown_as_one(ann: TestClient, yard: Yard) -> None:
    for n, odd in enumerate(
        ["$5", {"cost": "5"}, {"cost": True}, {"cost": 1.5, "cost_range": ["a", 2]}]
    ):
        made = yard.submit(TASK, [{"id": "a"}], owner="ann", metadata={"estimate": odd})
        page = ann.get(f"/batches/{made.id}")
        assert page.status_code == 200, (n, page.text)
        assert "Estimated before" not in page.text, n
    made = yard.submit(TASK, [{"id": "a"}], owner="ann", metadata={"estimate": {"cost": 2}})
    assert "<dt>Estimated before</dt><dd>$2.0000</dd>" in ann.get(f"/batches/{made.id}").text


def test_the_confirm_cost_is_a_setting_of_flags_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServerSettings().confirm_cost == 1.0
    toml = tmp_path / "batchyard.toml"
    toml.write_text("confirm_cost = 2.5\n")
    assert ServerSettings.load(toml).confirm_cost == 2.5
    monkeypatch.setenv("BATCHYARD_CONFIRM_COST", "7")
    assert ServerSettings.load(toml).confirm_cost == 7.0
    flag = build_parser().parse_args(["serve", "--confirm-cost", "0.25"]).confirm_cost
    assert ServerSettings.load(toml, confirm_cost=flag).confirm_cost == 0.25
    monkeypatch.setenv("BATCHYARD_CONFIRM_COST", "-1")
    with pytest.raises(ConfigError, match="confirm_cost"):
        ServerSettings.load(toml)


def test_picks_too_many_for_the_address_are_said_and_can_still_be_made(
    ann: TestClient, yard: Yard
) -> None:
    keys = [f"a-rather-long-key-for-lead-number-{n:04d}" for n in range(400)]
    yard.datasets.add("long", [{"id": key, "n": n} for n, key in enumerate(keys)])
    page = ann.get("/new/dataset", params={"dataset": "long"}).text
    fields = {**_form(page), "dataset": "long", "go": "next", "picked": keys}
    refused = ann.post("/new/dataset/rows", data=fields, follow_redirects=False)
    assert refused.status_code == 422 and "400 rows picked one by one" in refused.text
    assert refused.text.count('type="hidden" name="picked"') == 400 - 25  # none is lost
    made = ann.post(
        "/new/dataset",
        data={**_form(refused.text), "dataset": "long", "task": TASK},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text[:2000]
    assert yard.batch(made.headers["location"].rsplit("/", 1)[1]).status().counts.total == 400
