"""Storage failures, translated from driver exceptions so no caller needs to know SQLAlchemy."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every failure the storage layer reports."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or cannot write now (down, locked, read-only, disk full).

    Nothing was committed; the same call may succeed later.
    """


class TransactionRolledBack(StorageUnavailable):
    """The database rolled the transaction back to settle a conflict with a concurrent one: a
    deadlock (SQLSTATE 40P01) or a serialization failure (40001).

    The database itself is healthy, so this says nothing about its availability; nothing was
    committed, and running the same unit of work again from scratch is the cure.
    """


class Conflict(StorageError):
    """A uniqueness rule rejected the write (for example a message_id recorded twice)."""

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint
