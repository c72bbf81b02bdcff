"""Stores for the integration tests: every test taking ``store_url`` runs over a fresh SQLite
file and a fresh PostgreSQL database (cloned from a template, dropped afterwards). The
dashboard's modules share ``app`` (the dashboard over the test's yard) and ``ann`` (a client
signed in as operator ann); a module may define its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from batchyard import Yard
from tests.integration.test_dashboard_pages import dashboard, sign_in
from tests.procs.pgdb import Databases, require_server


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    databases = Databases()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def pg_url(pg_databases: Databases) -> Iterator[str]:
    """A fresh PostgreSQL database with the batchyard schema."""
    require_server()
    url = pg_databases.create()
    try:
        yield url
    finally:
        pg_databases.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'yard.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def app(yard: Yard) -> FastAPI:
    return dashboard(yard)


@pytest.fixture
def ann(app: FastAPI, yard: Yard) -> Iterator[TestClient]:
    with sign_in(app, yard, "ann") as client:
        yield client
