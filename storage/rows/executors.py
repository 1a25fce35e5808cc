"""The two ways a unit of work runs driver-level SQL: on a SQLAlchemy connection, or on sqlite3.

Both run the same statements of storage.rows.repository.Rows and raise the same storage errors;
only the cost differs (SQLite's group commit skips SQLAlchemy's per-statement machinery).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storage.error_translation import driver_errors, translated_errors

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from storage.rows.bulk_insert import Execute


def on_connection(connection: Connection) -> Execute:
    """Run statements through `connection` (and its transaction), errors translated."""

    def execute(sql: str, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        with translated_errors():
            result = connection.exec_driver_sql(sql, parameters)
            return result.fetchall() if result.returns_rows else []

    return execute


def on_sqlite(raw: sqlite3.Connection) -> Execute:
    """Run statements straight on a sqlite3 connection (and its transaction), errors translated."""

    def execute(sql: str, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        with driver_errors(sql, parameters):
            return raw.execute(sql, parameters).fetchall()

    return execute
