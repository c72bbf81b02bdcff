"""The SQLite store (see ``store``)."""

from batchyard.store.sqlite.connection import MAX_POSITION, MIN_SQLITE
from batchyard.store.sqlite.store import SqliteStore
from batchyard.store.sqlite.submitting import COMMIT_ITEMS

__all__ = ["COMMIT_ITEMS", "MAX_POSITION", "MIN_SQLITE", "SqliteStore"]
