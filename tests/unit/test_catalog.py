"""Which functions a module offers as tasks (``batchyard tasks MODULE``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.catalog import builtin_tasks, module_of, module_tasks
from batchyard.errors import ConfigError


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("catalog_")]:
        del sys.modules[name]


def test_all_limits_what_a_module_offers(folder: Path) -> None:
    (folder / "catalog_listed.py").write_text(
        "__all__ = ['shown', 'helper_class']\n"
        "def shown(item):\n    return item\n"
        "def hidden(item):\n    return item\n"
        "class helper_class:\n    pass\n"
    )
    assert [e.name for e in module_tasks("catalog_listed")] == ["catalog_listed:shown"]


def test_decorated_imports_count_and_plain_imports_do_not(folder: Path) -> None:
    (folder / "catalog_mixed.py").write_text(
        "from os.path import join\n"
        "from batchyard.demo import score_lead\n"
        "def own(item, ctx):\n    return 1\n"
    )
    entries = {e.name: e.decorated for e in module_tasks("catalog_mixed")}
    assert entries == {"catalog_mixed:score_lead": True, "catalog_mixed:own": False}


def test_a_file_path_names_its_module() -> None:
    assert module_of("tasks.py") == "tasks"
    assert module_of("pkg/jobs.py") == "pkg.jobs"
    assert module_of("pkg.jobs") == "pkg.jobs"


def test_a_missing_module_is_a_config_error(folder: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import module 'catalog_nothing'"):
        module_tasks("catalog_nothing")


def test_builtins_have_a_description() -> None:
    llm = next(e for e in builtin_tasks() if e.name == "llm")
    assert llm.decorated and llm.description.startswith("The built-in llm task")
