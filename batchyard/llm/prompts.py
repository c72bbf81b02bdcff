"""Prompt templates: Jinja2 in a sandbox, rendered over one item into chat messages.

A template sees a JSON-object item's fields as top-level names and the whole item as ``item``
(``item`` wins over a field of that name); any other item is only ``item``. Templates come
from whoever submits a batch, so they render in Jinja's sandbox, and a name the item lacks is
an error rather than an empty string: a prompt silently missing its subject would still be
answered, and paid for.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from batchyard.errors import ConfigError, InputError
from batchyard.validation import Problem as Problem  # (their home was here)
from batchyard.validation import Validation as Validation

DEFAULT_PROBLEM_LIMIT = 20

#: Tests and filters after which a missing name is fine: the template handles its absence.
_GUARD_TESTS = frozenset({"defined", "undefined"})
_GUARD_FILTERS = frozenset({"default", "d"})
#: Field names listed in a problem before the rest is elided.
_SHOWN_FIELDS = 10

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


class RenderError(InputError):
    """A template cannot be rendered over an item: a field it needs is missing (named in
    ``missing``), or it tried something the sandbox forbids or that fails on this item."""

    def __init__(self, reason: str, *, missing: Sequence[str] = (), **where: Any) -> None:
        self.missing = tuple(missing)
        super().__init__(reason, **where)


class _Part(NamedTuple):
    """One compiled template, the role of its message, and the fields it reads unguarded."""

    role: str
    template: jinja2.Template
    names: frozenset[str]  # top-level names: ``{{ title }}``
    item_fields: frozenset[str]  # fields read through ``item``: ``{{ item.title }}``


class PromptTemplate:
    """A user prompt ``template`` and an optional ``system`` prompt, both Jinja2 templates.

    Raises :class:`~batchyard.errors.ConfigError` naming the line when either does not parse.
    """

    def __init__(
        self, template: str, system: str | None = None, variables: Mapping[str, Any] | None = None
    ) -> None:
        self.template = template
        self.system = system
        #: Names every item's prompt sees (the llm task's ``vars``); an item's own fields win.
        self.variables = dict(variables or {})
        self._parts = [_compile("user", template, "prompt template")]
        if system is not None:
            self._parts.insert(0, _compile("system", system, "system prompt"))

    @property
    def version(self) -> str:
        """A short hash of both sources: equal templates share cached answers and history."""
        parts: list[Any] = [self.template, self.system]
        if self.variables:  # without, the version of templates from before ``vars``
            parts.append(self.variables)
        source = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(source.encode()).hexdigest()[:16]

    def render(self, item: Any) -> list[dict[str, str]]:
        """The chat messages for ``item``: the system message if any, then the user message.

        Raises :class:`RenderError` when a field is missing (naming every missing one), when
        the template tries an operation the sandbox forbids, or when it fails on this item.
        """
        fields = item if isinstance(item, dict) else {}
        context = {**self.variables, **fields, "item": item}
        try:
            return [
                {"role": part.role, "content": part.template.render(context)}
                for part in self._parts
            ]
        except jinja2.UndefinedError as exc:
            raise self._missing_error(item, exc) from exc
        except SecurityError as exc:
            raise RenderError(f"template tried an unsafe operation: {exc.message}") from exc
        except Exception as exc:  # NOTE: a template is user code: any failure is this item's
            raise RenderError(f"template failed on this item: {type(exc).__name__}: {exc}") from exc

    def missing_fields(self, item: Any) -> list[str]:
        """Every field the templates refer to that ``item`` lacks, sorted.

        A name the template tests with ``is defined`` (or ``is undefined``) or gives a
        ``| default(...)`` anywhere is optional. Found by reading the templates, not by
        rendering them, so a field used only in a branch that is not taken is listed too;
        :func:`validate_rows` renders to be sure.
        """
        names = frozenset().union(*(part.names for part in self._parts))
        via_item = frozenset().union(*(part.item_fields for part in self._parts))
        if not isinstance(item, dict):
            return sorted((names - self.variables.keys()) | via_item)
        names = frozenset(name for name in names if name not in self.variables)
        return sorted(name for name in names | via_item if name not in item)

    def _missing_error(self, item: Any, exc: jinja2.UndefinedError) -> RenderError:
        missing = self.missing_fields(item)
        # Jinja quotes the name it missed; if that is none of ours, the failure is elsewhere
        # (``{{ doc.title }}`` with no title in doc) and a field not used this time is innocent.
        if not any(f"'{name}'" in (exc.message or "") for name in missing):
            return RenderError(f"template refers to something this item lacks: {exc.message}")
        if not isinstance(item, dict):
            reason = f"template needs {_named(missing)}, but this item is {_kind(item)}"
        else:
            reason = f"template needs {_named(missing)}, which this item lacks"
        return RenderError(reason, missing=missing)


def validate_rows(
    template: PromptTemplate,
    rows: Iterable[tuple[int, Any]],
    *,
    limit: int = DEFAULT_PROBLEM_LIMIT,
) -> Validation:
    """Render ``template`` over each ``(line_number, item)`` of ``rows`` and report the failures.

    Stops after ``limit`` problems, so a wrong template over a large file answers at once.
    """
    problems: list[Problem] = []
    checked = 0
    remaining: Iterator[tuple[int, Any]] = iter(rows)
    for line, item in remaining:
        checked += 1
        problem = _check_row(template, line, item)
        if problem is not None:
            problems.append(problem)
        if len(problems) >= limit:
            return Validation(tuple(problems), checked, next(remaining, None) is None)
    return Validation(tuple(problems), checked, True)


def _check_row(template: PromptTemplate, line: int, item: Any) -> Problem | None:
    try:
        template.render(item)
    except RenderError as exc:
        if not exc.missing:
            return Problem(line, f"line {line}: {exc.reason}")
        return Problem(line, f"line {line}: template needs {_named(exc.missing)} ({_has(item)})")
    return None


def _compile(role: str, source: str, what: str) -> _Part:
    try:
        ast = _ENV.parse(source)
        template = _ENV.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        where = f"line {exc.lineno}, column {_column(source, exc.lineno, exc.message or '')}"
        raise ConfigError(f"{what}, {where}: {exc.message}") from exc
    return _Part(role, template, *_referenced_fields(ast))


#: How Jinja names the tokens that end a tag, in its messages.
_TAG_ENDS = {"end of print statement": "}}", "end of statement block": "%}"}
_QUOTED = re.compile(r"(?:got|unexpected|unknown tag|named) '([^']+)'")


def _column(source: str, lineno: int, message: str) -> int:
    """Where on line ``lineno`` a syntax error is, 1-based. Jinja says only the line, so
    this finds the token its message names (``unexpected '}'``, ``got 'b'``, ``unknown
    tag 'foo'``) in the line's tags; for an unclosed tag, the last tag the line opens."""
    lines = source.splitlines() or [""]
    line = lines[min(max(lineno, 1), len(lines)) - 1]
    opened = max(line.rfind("{{"), line.rfind("{%"))
    first_tag = min((i for i in (line.find("{{"), line.find("{%")) if i >= 0), default=0)
    for token in _QUOTED.findall(message)[::-1]:
        at = line.find(_TAG_ENDS.get(token, token), first_tag + 2 if opened >= 0 else 0)
        if at >= 0:
            return at + 1
    return opened + 1 if opened >= 0 else 1


def _referenced_fields(ast: nodes.Template) -> tuple[frozenset[str], frozenset[str]]:
    """The top-level names and the ``item.<field>`` fields the template reads unguarded."""
    guarded = _guarded_names(ast)
    names = meta.find_undeclared_variables(ast) - guarded - {"item"}
    if any(node.name == "item" for node in ast.find_all(nodes.Name) if node.ctx != "load"):
        return frozenset(names), frozenset()  # ``item`` is rebound, e.g. a loop variable
    called = {id(call.node) for call in ast.find_all(nodes.Call)}
    via_item = {
        field
        for node in ast.find_all((nodes.Getattr, nodes.Getitem))
        if id(node) not in called and (field := _item_field(node)) is not None
    }
    return frozenset(names), frozenset(via_item - guarded)


def _item_field(node: nodes.Node) -> str | None:
    """``title`` for ``item.title`` or ``item['title']``, else None."""
    if isinstance(node, nodes.Getattr) and _is_item(node.node):
        return node.attr
    if isinstance(node, nodes.Getitem) and _is_item(node.node):
        key = node.arg
        return key.value if isinstance(key, nodes.Const) and isinstance(key.value, str) else None
    return None


def _is_item(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "item"


def _guarded_names(ast: nodes.Template) -> set[str]:
    """Fields tested with ``is defined`` / ``is undefined`` or given a ``default`` anywhere."""
    guarded: set[str] = set()
    for node in ast.find_all((nodes.Test, nodes.Filter)):
        guards = _GUARD_TESTS if isinstance(node, nodes.Test) else _GUARD_FILTERS
        if node.name not in guards:
            continue
        subject = node.node
        if isinstance(subject, nodes.Name):
            guarded.add(subject.name)
        elif (field := _item_field(subject)) is not None:
            guarded.add(field)
    return guarded


def _named(fields: Sequence[str]) -> str:
    quoted = ", ".join(repr(field) for field in fields)
    return f"field {quoted}" if len(fields) == 1 else f"fields {quoted}"


def _has(item: Any) -> str:
    if not isinstance(item, dict):
        return f"item is {_kind(item)}"
    if not item:
        return "item has no fields"
    shown = ", ".join(list(item)[:_SHOWN_FIELDS])
    return f"item has: {shown}{', ...' if len(item) > _SHOWN_FIELDS else ''}"


def _kind(item: Any) -> str:
    """The JSON name of a non-object item's type."""
    if isinstance(item, list):
        return "an array, not an object"
    if isinstance(item, str):
        return "a string, not an object"
    if item is None:
        return "null, not an object"
    if isinstance(item, bool):
        return "a boolean, not an object"
    if isinstance(item, int | float):
        return "a number, not an object"
    return f"a {type(item).__name__}, not an object"
