"""The PostgreSQL store (see ``store``). Needs psycopg 3 and psycopg-pool:
``pip install 'batchyard[postgres]'``."""

from batchyard.store.postgres.connection import CHANNEL, POOL_SIZE
from batchyard.store.postgres.store import PostgresStore
from batchyard.store.rules import COMMIT_ITEMS, MAX_POSITION

__all__ = ["CHANNEL", "COMMIT_ITEMS", "MAX_POSITION", "POOL_SIZE", "PostgresStore"]
