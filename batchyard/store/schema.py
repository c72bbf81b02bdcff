"""Bringing a database's schema up to this version: the scripts of its dialect not yet
applied, in order, in the caller's transaction."""

from __future__ import annotations

import time

from batchyard.errors import SchemaTooNew
from batchyard.store.rows import migrations
from batchyard.store.tx import Tx


def migrate(tx: Tx, where: str) -> None:
    """Apply the missing schema scripts of ``tx``'s dialect. Raises SchemaTooNew when the
    database (``where``, for the message) was made by a newer batchyard."""
    scripts = migrations(tx.dialect.name)
    tx.run(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        f"name TEXT NOT NULL, applied_at {tx.dialect.real} NOT NULL)"
    )
    version = int(tx.one("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0])
    if version > len(scripts):
        raise SchemaTooNew(
            f"{where} has schema version {version}; this batchyard knows up to "
            f"{len(scripts)}. Upgrade batchyard to open it."
        )
    for migration in scripts[version:]:
        for statement in migration.statements():
            tx.run(statement)
        tx.run(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
