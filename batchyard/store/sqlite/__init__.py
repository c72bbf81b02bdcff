"""The SQLite store (see ``store``)."""

from batchyard.store.rules import COMMIT_ITEMS, MAX_POSITION
from batchyard.store.sqlite.connection import MIN_SQLITE
from batchyard.store.sqlite.store import SqliteStore

__all__ = ["COMMIT_ITEMS", "MAX_POSITION", "MIN_SQLITE", "SqliteStore"]
