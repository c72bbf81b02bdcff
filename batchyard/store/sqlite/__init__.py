"""The SQLite store (see ``store``)."""

from batchyard.store.rules import COMMIT_ITEMS
from batchyard.store.sqlite.connection import MAX_POSITION, MIN_SQLITE
from batchyard.store.sqlite.store import SqliteStore

__all__ = ["COMMIT_ITEMS", "MAX_POSITION", "MIN_SQLITE", "SqliteStore"]
