"""``yard.templates`` and ``Batch.rerun`` through the Python API, on a SQLite store in
``tmp_path``: what a version may hold, how one is picked to run, what a re-run keeps."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard import Yard
from batchyard.errors import ConfigError, TemplateArchived, TemplateExists, TemplateNotFound
from batchyard.models import TemplateRef

LLM: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "template": "About {{ topic }}.",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": "",
}
ITEMS = [{"id": "a", "topic": "x"}, {"id": "b", "topic": "y"}]


def test_update_sets_unsets_and_keeps_the_rest(yard: Yard) -> None:
    one = yard.templates.create("t", "llm", {**LLM, "max_tokens": 50}, description="d", author="a")
    two = yard.templates.update("t", {"temperature": 0.2}, unset=["max_tokens"], author="b")
    assert (one.version, two.version) == (1, 2)
    assert two.params == {**LLM, "temperature": 0.2}
    assert (two.description, two.author, two.task) == ("d", "b", "llm")
    assert yard.templates.get("t@1").params["max_tokens"] == 50  # never changed
    with pytest.raises(ConfigError, match="nothing to update"):
        yard.templates.update("t", {"temperature": 0.2})
    with pytest.raises(ConfigError, match="no parameter 'seed' to unset"):
        yard.templates.update("t", unset=["seed"])
    with pytest.raises(TemplateExists):
        yard.templates.create("t", "llm", LLM)
    assert yard.templates.create("u", "llm", LLM).author  # the OS user when not given


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({**LLM, "temprature": 1}, "did you mean 'temperature'"),
        ({**LLM, "template": "{% for x in xs %}"}, "prompt template, line 1, column 1"),
        ({**LLM, "max_tokens": "many"}, "max_tokens must be a whole number"),
        ({"template": "x"}, "needs --param model"),
    ],
)
def test_a_version_the_task_refuses_is_not_written(
    yard: Yard, params: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        yard.templates.create("t", "llm", params)
    assert yard.templates.list(archived=True) == []


@pytest.mark.parametrize("name", ["", "a b", "x@1", "-x", "é"])
def test_a_name_must_be_plain(yard: Yard, name: str) -> None:
    with pytest.raises(ConfigError, match="not a template name"):
        yard.templates.create(name, "llm", LLM)


def test_the_latest_version_not_archived_runs(yard: Yard) -> None:
    yard.templates.create("t", "llm", LLM)
    yard.templates.update("t", {"max_tokens": 20})
    yard.templates.update("t", {"max_tokens": 30})
    yard.templates.archive("t@3")
    assert yard.templates.runnable("t").version == 2
    assert [str(t.ref) for t in yard.templates.list()] == ["t@2"]
    assert yard.templates.get("t@3").archived
    with pytest.raises(TemplateArchived, match=r"the latest is 2: use t@2 or t$"):
        yard.templates.runnable("t@3")
    with pytest.raises(TemplateNotFound, match="no version 4; the latest is 2"):
        yard.templates.runnable(TemplateRef("t", 4))
    yard.templates.archive("t@1")
    yard.templates.archive("t@2")
    with pytest.raises(TemplateArchived, match="every version of template 't' is archived"):
        yard.templates.runnable("t")
    with pytest.raises(ConfigError, match="archive one version"):
        yard.templates.archive("t")


def test_submit_merges_overrides_and_records_the_version(yard: Yard) -> None:
    yard.templates.create("t", "llm", {**LLM, "max_tokens": 50})
    batch = yard.submit(items=ITEMS, template="t", params={"max_tokens": 7})
    status = batch.status()
    assert status.template == TemplateRef("t", 1)
    assert status.params == {**LLM, "max_tokens": 7}
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        yard.submit(items=ITEMS, template="t", params={"modle": "x"})
    with pytest.raises(ConfigError, match="needs a task"):
        yard.submit(items=ITEMS)
    assert len(yard.batches().rows) == 1


def test_a_rerun_keeps_the_old_command_lines_parameters(yard: Yard) -> None:
    yard.templates.create("t", "llm", {**LLM, "max_tokens": 50})
    old = yard.submit(items=ITEMS, template="t", params={"temperature": 0.9}, name="leads")
    yard.templates.update("t", {"template": "On {{ topic }}.", "max_tokens": 60})
    new = old.rerun(template="t")
    status = new.status()
    assert (status.template, status.rerun_of, status.name) == (TemplateRef("t", 2), old.id, "leads")
    assert status.params == {
        **LLM,
        "template": "On {{ topic }}.",
        "max_tokens": 60,
        "temperature": 0.9,
    }
    same = old.rerun(name="again")
    assert same.status().params == old.status().params
    assert same.status().template == TemplateRef("t", 1)


def test_a_batch_without_a_template_reruns_with_one(yard: Yard) -> None:
    yard.templates.create("t", "llm", {**LLM, "template": "On {{ topic }}."})
    old = yard.submit("llm", ITEMS, params={**LLM, "max_tokens": 5})
    status = old.rerun(template="t").status()
    assert status.params == {**LLM, "template": "On {{ topic }}.", "max_tokens": 5}
    with pytest.raises(ConfigError, match="re-run which items"):
        old.rerun(state="broken")
