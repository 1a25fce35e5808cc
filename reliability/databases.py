"""The databases scenarios damage, and the direct SQL that counts what they kept.

Counting goes around the service on purpose: a row the server says it stored is only believed
once sqlite3 or psycopg finds it in the file or the PostgreSQL database.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
DATABASE_KINDS = (SQLITE, POSTGRESQL)

# Only these columns are ever counted; the names go into SQL text, so they are checked first.
COUNTED_COLUMNS = frozenset(
    {("interactions", "message_id"), ("feedback", "user_id"), ("events", "user_id")}
)


@dataclass(frozen=True, slots=True)
class Database:
    """One database a scenario uses: its kind and the SQLAlchemy URL the server is given."""

    kind: str
    url: str

    def values_with_prefix(self, table: str, column: str, prefix: str) -> Counter[str]:
        """How many rows hold each value of `column` that starts with `prefix`."""
        if (table, column) not in COUNTED_COLUMNS:
            raise ValueError(f"{table}.{column} is not a counted column")
        pattern = prefix.replace("_", r"\_").replace("%", r"\%") + "%"
        if self.kind == SQLITE:
            text = (
                f"SELECT {column}, count(*) FROM {table} "
                f"WHERE {column} LIKE ? ESCAPE '\\' GROUP BY {column}"
            )
            with sqlite3.connect(sqlite_path(self.url)) as connection:
                rows: list[tuple[Any, ...]] = connection.execute(text, (pattern,)).fetchall()
        else:
            query = sql.SQL(
                "SELECT {column}, count(*) FROM {table} WHERE {column} LIKE %s GROUP BY {column}"
            ).format(column=sql.Identifier(column), table=sql.Identifier(table))
            with psycopg.connect(libpq_url(self.url), connect_timeout=5) as connection:
                rows = connection.execute(query, (pattern,)).fetchall()
        return Counter({str(value): int(count) for value, count in rows})


def sqlite_database(directory: Path, name: str) -> Database:
    """A fresh SQLite file in `directory` (the server creates and migrates it)."""
    return Database(SQLITE, f"sqlite:///{directory / (name + '.sqlite3')}")


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL."""
    database = make_url(url).database
    if not database:
        raise ValueError(f"{url} names no SQLite file")
    return database


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as the libpq URL psycopg.connect() accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_postgres_database(server_url: str, name: str) -> Database:
    """An empty, uniquely named database on the server at `server_url`."""
    unique = f"reliability_{name}_{secrets.token_hex(4)}".replace("-", "_")
    with psycopg.connect(libpq_url(server_url), autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(unique)))
    url = make_url(server_url).set(drivername="postgresql+psycopg", database=unique)
    return Database(POSTGRESQL, url.render_as_string(hide_password=False))


def drop_postgres_database(server_url: str, database: Database) -> None:
    """Drop a database made by create_postgres_database, disconnecting whoever still uses it."""
    name = make_url(database.url).database
    if not name:
        raise ValueError("the database URL names no database")
    with psycopg.connect(libpq_url(server_url), autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def postgres_unreachable_reason(server_url: str) -> str | None:
    """Why no PostgreSQL answers at `server_url`, or None if one does."""
    try:
        with psycopg.connect(libpq_url(server_url), connect_timeout=2):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL not reachable: {' '.join(str(error).split())}"
