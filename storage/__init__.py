"""Persistence of interactions, feedback and events on SQLite or PostgreSQL, as plain records."""

from storage.database import Storage
from storage.errors import Conflict, StorageError, StorageUnavailable, TransactionRolledBack
from storage.rows.repository import Repository

__all__ = [
    "Conflict",
    "Repository",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "TransactionRolledBack",
]
