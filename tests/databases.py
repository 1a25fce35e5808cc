"""Real test databases: throwaway PostgreSQL databases and fresh SQLite files, never mocks."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from storage.schema.models import Base

if TYPE_CHECKING:
    from pathlib import Path

POSTGRES_URL_VARIABLE = "FEEDBACK_TEST_POSTGRES_URL"
"""Environment variable naming the PostgreSQL server (and maintenance database) tests may use."""

REQUIRE_POSTGRES_VARIABLE = "FEEDBACK_REQUIRE_POSTGRES"
"""Set to 1 (as CI does) to fail, not skip, when PostgreSQL is unreachable."""

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

PROBE_TIMEOUT_S = 2
"""libpq's connect_timeout is whole seconds; a local server answers far sooner."""


def postgres_server_url() -> str:
    """The SQLAlchemy URL of the PostgreSQL server tests create their databases on."""
    return os.environ.get(POSTGRES_URL_VARIABLE, DEFAULT_POSTGRES_URL)


def postgres_required() -> bool:
    """Whether an unreachable PostgreSQL must fail the run instead of skipping its tests."""
    return os.environ.get(REQUIRE_POSTGRES_VARIABLE) == "1"


def masked(url: str) -> str:
    """The URL with its password hidden, for skip reasons and failure messages."""
    return make_url(url).render_as_string(hide_password=True)


def libpq_url(url: str) -> str:
    """The same database as a libpq URL that psycopg.connect() accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_unreachable_reason(url: str) -> str | None:
    """Why no PostgreSQL server answers at `url` (for a skip message), or None if one does."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=PROBE_TIMEOUT_S):
            return None
    except psycopg.Error as error:
        # libpq's message spans lines (error, then hint); a skip reason reads best as one.
        return f"PostgreSQL not reachable at {masked(url)}: {' '.join(str(error).split())}"


def create_postgres_database(server_url: str) -> str:
    """Create an empty, uniquely named database on the server and return its URL.

    The name carries the pid so concurrent test runs (and a crashed run's leftovers) never meet.
    """
    name = f"feedback_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, database_url: str) -> None:
    """Drop a database made by create_postgres_database, disconnecting whoever still uses it."""
    name = make_url(database_url).database
    if not name:
        raise ValueError(f"{masked(database_url)} names no database")
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def allow_connections(database_url: str, allowed: bool) -> None:
    """Cut a database off (new connections refused, existing ones ended) or let it back: an
    outage of one database that harms no other test."""
    name = make_url(database_url).database or ""
    with psycopg.connect(libpq_url(postgres_server_url()), autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


SEEDED_TABLES = {
    "change_clock": "UPDATE change_clock SET seq = 0",
    "change_horizons": "UPDATE change_horizons SET seq = 0, last_id = 0",
}
"""Tables the migrations fill, which a test's empty database keeps, reset to how they start."""


def empty_postgres_tables(database_url: str) -> None:
    """Delete every row and restart the id sequences, so each test sees ids from 1 again.

    DELETE, not TRUNCATE: on tables this small it is several times faster (TRUNCATE makes new
    files for every table and index), and a test pays it before every PostgreSQL run.
    """
    children_first = reversed(Base.metadata.sorted_tables)  # foreign keys never block a delete
    deletes = [
        sql.SQL("DELETE FROM {}").format(sql.Identifier(t.name))
        for t in children_first
        if t.name not in SEEDED_TABLES
    ]
    resets = [sql.SQL(reset) for reset in SEEDED_TABLES.values()]
    restart = sql.SQL(
        "SELECT setval(oid, 1, false) FROM pg_class"
        " WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"
    )
    with psycopg.connect(libpq_url(database_url)) as connection, connection.transaction():
        connection.execute(sql.SQL("; ").join([*deletes, *resets, restart]))


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite database file."""
    return f"sqlite:///{path}"
