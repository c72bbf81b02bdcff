"""Prompt templates: rendering into chat messages, missing fields named, the sandbox, syntax
errors with their line, and the validation of many rows at once."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.errors import ConfigError, InputError
from batchyard.llm.prompts import PromptTemplate, RenderError, validate_rows


def refused(template: PromptTemplate, item: Any) -> RenderError:
    with pytest.raises(RenderError) as caught:
        template.render(item)
    return caught.value


def test_a_template_renders_the_item_fields_into_a_user_message() -> None:
    template = PromptTemplate("Summarise {{ title }}:\n{{ text }}\n")
    messages = template.render({"title": "Rivers", "text": "The Rhône is long.", "extra": 1})
    assert messages == [{"role": "user", "content": "Summarise Rivers:\nThe Rhône is long."}]


def test_the_system_prompt_comes_first_and_is_a_template_too() -> None:
    template = PromptTemplate("{{ text }}", system="You answer in {{ language }}.")
    assert template.render({"text": "Bonjour", "language": "French"}) == [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Bonjour"},
    ]


def test_the_whole_item_is_available_as_item() -> None:
    template = PromptTemplate(
        "{{ item.title }} / {{ item['key with space'] }} / {{ item | length }}"
    )
    rendered = template.render({"title": "T", "key with space": "K"})
    assert rendered[0]["content"] == "T / K / 2"


def test_item_means_the_whole_item_even_when_a_field_has_that_name() -> None:
    template = PromptTemplate("{{ item.item }}")
    assert template.render({"item": "inner"})[0]["content"] == "inner"


def test_html_is_not_escaped() -> None:
    template = PromptTemplate("{{ text }}")
    assert template.render({"text": "<b>&</b>"})[0]["content"] == "<b>&</b>"


def test_a_non_object_item_is_available_only_as_item() -> None:
    template = PromptTemplate("Items: {{ item | join(', ') }}")
    assert template.render(["a", "b"])[0]["content"] == "Items: a, b"
    assert PromptTemplate("{{ item }}").render("just text")[0]["content"] == "just text"


def test_a_missing_field_is_named() -> None:
    error = refused(PromptTemplate("{{ title }}: {{ text }}"), {"text": "x"})
    assert str(error) == "template needs field 'title', which this item lacks"
    assert error.missing == ("title",)
    assert isinstance(error, InputError)


def test_every_missing_field_is_named_at_once_across_both_templates() -> None:
    template = PromptTemplate("{{ title }} {{ item.body }}", system="{{ persona }}")
    error = refused(template, {"id": 1})
    assert error.missing == ("body", "persona", "title")
    assert "fields 'body', 'persona', 'title'" in str(error)


def test_a_non_object_item_lacks_every_field() -> None:
    error = refused(PromptTemplate("{{ title }}"), [1, 2])
    assert error.missing == ("title",)
    assert "this item is an array, not an object" in str(error)


def test_guarded_fields_are_optional() -> None:
    template = PromptTemplate(
        "{{ title | default('untitled') }}{% if note is defined %} ({{ note }}){% endif %}"
        "{{ item.tag | default('') }}"
    )
    assert template.missing_fields({}) == []
    assert template.render({})[0]["content"] == "untitled"
    assert template.render({"title": "T", "note": "n"})[0]["content"] == "T (n)"


def test_missing_fields_lists_what_the_item_lacks() -> None:
    template = PromptTemplate("{{ a }}{{ item.b }}{{ item['c'] }}{{ item.get('d') }}{{ e.f }}")
    assert template.missing_fields({"a": 1, "e": {"f": 2}}) == ["b", "c"]
    assert template.missing_fields({"a": 1, "b": 2, "c": 3, "e": 4}) == []
    assert template.missing_fields("text") == ["a", "b", "c", "e"]


def test_names_the_template_sets_itself_are_not_fields() -> None:
    template = PromptTemplate(
        "{% set greeting = 'hi' %}{{ greeting }}{% for item in items %}{{ item.x }}{% endfor %}"
    )
    assert template.missing_fields({}) == ["items"]
    assert template.render({"items": [{"x": 1}, {"x": 2}]})[0]["content"] == "hi12"


def test_a_nested_missing_attribute_is_reported_with_jinjas_words() -> None:
    error = refused(PromptTemplate("{{ doc.title }}"), {"doc": {}})
    assert error.missing == ()
    assert "has no attribute 'title'" in str(error)
    unused = PromptTemplate("{% if flag %}{{ detail }}{% endif %}{{ doc.title }}")
    error = refused(unused, {"flag": False, "doc": {}})  # 'detail' is missing but not at fault
    assert error.missing == () and "has no attribute 'title'" in str(error)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ text.format.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_the_sandbox_refuses_unsafe_operations(source: str) -> None:
    error = refused(PromptTemplate(source), {"text": "x"})
    assert "unsafe" in str(error)


def test_a_template_failing_on_an_item_is_that_items_error() -> None:
    error = refused(PromptTemplate("{{ 10 / n }}"), {"n": 0})
    assert "ZeroDivisionError" in str(error)


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("Hello\n{{ title }\n", 2, "unexpected '}'"),
        ("a\nb\n{% for x in xs %}\n{{ x }}\n", 4, "endfor"),
        ("{{ x | no_such_filter }}", 1, "no_such_filter"),
    ],
)
def test_a_syntax_error_names_its_line(source: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError, match=f"prompt template, line {line}, column \\d+: .*{words}"):
        PromptTemplate(source)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("Hello\n{{ title }\n", "line 2, column 10"),  # the lone '}'
        ("{{ a b }}", "line 1, column 6"),  # got 'b'
        ("x {{ a | }}", "line 1, column 10"),  # got the end of the tag
        ("{% foo %}", "line 1, column 4"),  # unknown tag 'foo'
        ("ok\n  {{ name ", "line 2, column 3"),  # the tag never closed
        ("{{ x | no_such_filter }}", "line 1, column 8"),
    ],
)
def test_a_syntax_error_names_its_column(source: str, where: str) -> None:
    with pytest.raises(ConfigError, match=f"prompt template, {where}: "):
        PromptTemplate(source)


def test_a_syntax_error_in_the_system_prompt_says_so() -> None:
    with pytest.raises(ConfigError, match="system prompt, line 1"):
        PromptTemplate("{{ text }}", system="{% if %}")


def test_the_version_is_stable_and_follows_both_sources() -> None:
    version = PromptTemplate("{{ text }}", system="Be brief.").version
    assert len(version) == 16 and int(version, 16) >= 0
    assert PromptTemplate("{{ text }}", system="Be brief.").version == version
    others = {
        PromptTemplate("{{ text }}").version,
        PromptTemplate("{{ text }}", system="").version,
        PromptTemplate("{{ text }} ", system="Be brief.").version,
        PromptTemplate("{{ text }}", system="Be brief!").version,
        PromptTemplate("{{ text }}Be brief.").version,
    }
    assert version not in others and len(others) == 5


def test_validation_names_each_bad_line_and_what_the_item_has() -> None:
    template = PromptTemplate("{{ title }}: {{ text }}")
    rows = [(1, {"title": "a", "text": "b"}), (2, {"id": 7, "text": "c"}), (4, "plain"), (5, {})]
    result = validate_rows(template, rows)
    assert [problem.line for problem in result.problems] == [2, 4, 5]
    assert [problem.message for problem in result.problems] == [
        "line 2: template needs field 'title' (item has: id, text)",
        "line 4: template needs fields 'text', 'title' (item is a string, not an object)",
        "line 5: template needs fields 'text', 'title' (item has no fields)",
    ]
    assert (result.checked, result.complete, result.ok) == (4, True, False)


def test_validation_confirms_guesses_by_rendering() -> None:
    template = PromptTemplate("{% if flag %}{{ detail }}{% endif %}{{ 1 // n }}")
    rows = [(1, {"flag": False, "n": 1}), (2, {"flag": True, "n": 1}), (3, {"flag": 0, "n": 0})]
    result = validate_rows(template, rows)
    assert [problem.line for problem in result.problems] == [2, 3]
    assert "needs field 'detail'" in result.problems[0].message
    assert "ZeroDivisionError" in result.problems[1].message


def test_validation_stops_at_its_limit() -> None:
    template = PromptTemplate("{{ title }}")
    rows = ((line, {"id": line}) for line in range(1, 1001))
    result = validate_rows(template, rows)
    assert (len(result.problems), result.checked, result.complete) == (20, 20, False)
    short = validate_rows(template, [(1, {}), (2, {})], limit=2)
    assert (len(short.problems), short.checked, short.complete) == (2, 2, True)


def test_validation_lists_only_the_first_fields_of_a_wide_item() -> None:
    item = {f"f{i}": i for i in range(12)}
    (problem,) = validate_rows(PromptTemplate("{{ title }}"), [(3, item)]).problems
    assert problem.message.endswith("(item has: f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, ...)")


def test_variables_are_seen_by_every_item_and_an_items_own_field_wins() -> None:
    template = PromptTemplate(
        "Question {{ n }} about {{ topic }}, {{ difficulty }}.",
        variables={"topic": "tides", "difficulty": "hard"},
    )
    assert template.render({"n": 3})[0]["content"] == "Question 3 about tides, hard."
    own = template.render({"n": 4, "topic": "moons"})[0]["content"]
    assert own == "Question 4 about moons, hard."
    assert template.missing_fields({"n": 1}) == []
    assert refused(template, {}).missing == ("n",)
    # Variables are part of the version: other variables, other answers and history.
    assert template.version != PromptTemplate(template.template).version
    other = PromptTemplate(template.template, variables={"topic": "moons", "difficulty": "hard"})
    assert template.version != other.version


def test_a_cache_key_takes_integers_past_64_bits() -> None:
    """Found by schemathesis: a JSON schema with a big integer in the llm task's ``json``
    made POST /estimate answer 500 (orjson refuses integers past 64 bits)."""
    from batchyard.llm.params import read_params

    params = read_params({"model": "m", "template": "hi", "json": {"maximum": 2**70}})
    small = params.cache_key({"messages": [], "n": 1})
    big, bigger = params.cache_key({"n": 2**70}), params.cache_key({"n": 2**71})
    assert len(big) == 64 and big != bigger
    assert small == params.cache_key({"messages": [], "n": 1})  # unchanged for the rest
