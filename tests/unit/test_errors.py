"""The exception tree: one root, and the drawing in errors.py shows every class."""

from __future__ import annotations

import inspect
import re

from batchyard import errors
from batchyard.cli import common
from batchyard.errors import BatchyardError


def _classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]


def test_every_error_has_the_one_root() -> None:
    assert all(issubclass(cls, BatchyardError) for cls in _classes())
    assert issubclass(common.CommandError, BatchyardError)


def _drawn_tree() -> dict[str, str]:
    """Each class named in the drawing of errors.py, to the class drawn as its parent."""
    block = (errors.__doc__ or "").split("::", 1)[1]
    parent_of: dict[str, str] = {}
    path: list[str] = []
    for line in block.splitlines():
        found = re.search(r"[A-Z]\w+", line)
        if found is None:
            continue
        depth = (found.start() - 4) // 4  # the root is indented 4, each level 4 more
        path[depth:] = [found.group()]
        parent_of[found.group()] = path[depth - 1] if depth else ""
    return parent_of


def test_the_drawn_tree_shows_every_class_under_its_parent() -> None:
    drawn = _drawn_tree()
    classes = {cls.__name__: cls for cls in _classes()}
    assert set(drawn) == set(classes)
    for name, cls in classes.items():
        parent = cls.__mro__[1].__name__ if cls is not BatchyardError else ""
        assert drawn[name] == parent, name
