"""Fixtures of the dashboard's browser tests (tests/e2e/test_dashboard*.py): one server and
one chromium per module, a watched tab per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.dashboard_site import Site, Watch, chromium, serving, watched_tab


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("dashboard")) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
    with watched_tab(browser) as watched:
        yield watched
