"""The one place where driver and SQLAlchemy exceptions become StorageError subclasses."""

from __future__ import annotations

import re
import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy import exc as sa_exc

from storage.errors import Conflict, StorageError, StorageUnavailable, TransactionRolledBack
from storage.schema.models import Base

if TYPE_CHECKING:
    from collections.abc import Iterator

_SQLITE_UNAVAILABLE_CODES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_IOERR"}
    | {"SQLITE_CANTOPEN", "SQLITE_PROTOCOL"}
)
"""Primary SQLite result codes meaning "cannot serve now, may later". A corrupt file is not
among them: retrying cannot help, so it stays a plain StorageError."""

_SQLITE_LOCK_CODES = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})
"""Another connection holds a lock: waiting longer, or trying again, is the cure."""

_POSTGRES_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")
"""SQLSTATE classes: connection, rollback (serialization/deadlock), resources, operator, system."""

_POSTGRES_READ_ONLY = "25006"
"""read_only_sql_transaction: a replica or a server in recovery took the write."""

_POSTGRES_UNIQUE_VIOLATION = "23505"

_POSTGRES_ROLLED_BACK = frozenset({"40001", "40P01"})
"""serialization_failure and deadlock_detected: PostgreSQL ended this transaction so that a
concurrent one could go on; the database is fine and the transaction may simply run again."""

_SQLITE_UNIQUE_COLUMNS = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w.]+(?:, [\w.]+)*)")
_SQLITE_UNIQUE_INDEX = re.compile(r"UNIQUE constraint failed: index '(?P<index>[^']+)'")


@contextmanager
def translated_errors() -> Iterator[None]:
    """Run a block so that any SQLAlchemy failure inside it surfaces as a StorageError.

    Programming errors detected while binding parameters (a naive datetime, a NaN in JSON) are
    re-raised as the ValueError or TypeError they are, not disguised as storage failures.
    """
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        raise storage_error_for(error) from error


@contextmanager
def driver_errors(sql: str, parameters: tuple[object, ...] = ()) -> Iterator[None]:
    """Translate errors of a statement run on a DBAPI cursor as SQLAlchemy's are translated."""
    try:
        yield
    except (sqlite3.Error, psycopg.Error) as error:
        base = sqlite3.Error if isinstance(error, sqlite3.Error) else psycopg.Error
        wrapped = sa_exc.DBAPIError.instance(sql, parameters, error, base)
        raise storage_error_for(wrapped) from error


def storage_error_for(error: sa_exc.SQLAlchemyError) -> Exception:
    """Return the exception a caller of the storage layer should see for a SQLAlchemy error."""
    if isinstance(error, sa_exc.IntegrityError):
        constraint = _unique_constraint_name(error)
        if constraint is not None:
            message = f"unique constraint {constraint} rejected the write"
            return Conflict(message, constraint=constraint)
        return StorageError(f"integrity rule rejected the write: {_driver_message(error)}")
    if _is_rolled_back(error):
        return TransactionRolledBack(f"transaction rolled back: {_driver_message(error)}")
    if _is_unavailable(error):
        return StorageUnavailable(f"database unavailable: {_driver_message(error)}")
    if (
        isinstance(error, sa_exc.StatementError)
        and not isinstance(error, sa_exc.DBAPIError)
        and isinstance(error.orig, ValueError | TypeError)
    ):
        return error.orig
    return StorageError(f"storage failure: {_driver_message(error)}")


def _is_rolled_back(error: sa_exc.SQLAlchemyError) -> bool:
    """Whether PostgreSQL rolled the transaction back for a deadlock or serialization failure."""
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else None
    return isinstance(original, psycopg.Error) and original.sqlstate in _POSTGRES_ROLLED_BACK


def _is_unavailable(error: sa_exc.SQLAlchemyError) -> bool:
    """Whether the failure is about the database's state (down, locked, full), not the request."""
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no pooled connection came free, or the server went away
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    original = error.orig
    if isinstance(original, sqlite3.Error):
        # Extended codes (SQLITE_READONLY_DBMOVED, SQLITE_IOERR_WRITE) extend a primary one.
        name: str = getattr(original, "sqlite_errorname", "")
        return "_".join(name.split("_")[:2]) in _SQLITE_UNAVAILABLE_CODES
    if isinstance(original, psycopg.Error):
        state = original.sqlstate or ""
        return state == _POSTGRES_READ_ONLY or state.startswith(_POSTGRES_UNAVAILABLE_CLASSES)
    return False


def is_lock_contention(error: BaseException) -> bool:
    """Whether a StorageUnavailable came from another writer's locks, so that a new attempt of the
    whole transaction may well succeed and the connection is fine: SQLite's SQLITE_BUSY or
    SQLITE_LOCKED ("database is locked", the busy timeout outlasted) or a PostgreSQL deadlock or
    serialization failure (TransactionRolledBack)."""
    if isinstance(error, TransactionRolledBack):
        return True
    cause: BaseException | None = error
    while cause is not None:
        original = cause.orig if isinstance(cause, sa_exc.DBAPIError) else cause
        if isinstance(original, sqlite3.Error):
            name: str = getattr(original, "sqlite_errorname", "")
            return "_".join(name.split("_")[:2]) in _SQLITE_LOCK_CODES
        cause = cause.__cause__
    return False


def _unique_constraint_name(error: sa_exc.IntegrityError) -> str | None:
    """Name the unique constraint a write violated, the same on both databases; None if another."""
    original = error.orig
    if isinstance(original, psycopg.Error):
        if original.sqlstate != _POSTGRES_UNIQUE_VIOLATION:
            return None
        return original.diag.constraint_name
    if isinstance(original, sqlite3.IntegrityError):
        message = str(original)
        index = _SQLITE_UNIQUE_INDEX.search(message)
        if index is not None:
            return index.group("index")
        columns = _SQLITE_UNIQUE_COLUMNS.search(message)
        if columns is None:
            return None
        return _constraint_covering(columns.group("columns").split(", "))
    return None


def _constraint_covering(qualified_columns: list[str]) -> str:
    """Map SQLite's "table.column, table.column" report to the constraint's name in the models.

    SQLite reports columns, not constraint names; PostgreSQL reports names. Looking the columns
    up in the models gives callers the PostgreSQL name on both.
    """
    table_name = qualified_columns[0].split(".", 1)[0]
    columns = [qualified.split(".", 1)[1] for qualified in qualified_columns]
    table = Base.metadata.tables.get(table_name)
    if table is not None:
        for constraint in table.constraints:
            if (
                isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
                and [column.name for column in constraint.columns] == columns
            ):
                return str(constraint.name)
        for index in table.indexes:
            if index.unique and [column.name for column in index.columns] == columns:
                return str(index.name)
    return f"uq_{table_name}_{'_'.join(columns)}"


def _driver_message(error: sa_exc.SQLAlchemyError) -> str:
    """The driver's own words, without SQLAlchemy's statement dump and parameters."""
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        return str(error.orig).strip()
    return str(error)
