"""Alembic upgrades run from code, serialised across processes that start at the same time."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select

if TYPE_CHECKING:
    from collections.abc import Iterator

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent / "migrations"

POSTGRES_MIGRATION_LOCK_KEY = 0x6665_6564_6261_636B
"""pg_advisory_lock key shared by every server process: the ASCII bytes of "feedback"."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration without alembic.ini, migrating through `connection` if given."""
    config = Config()
    # configparser interpolates "%", which may appear in an installation path.
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision the code ships, which migrate() brings the database to."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None before the first migration."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine, *, write_engine: Engine, sqlite_file: Path | None) -> None:
    """Upgrade the database to head unless another process is doing it; then it is a no-op.

    `write_engine` begins transactions that will write (BEGIN IMMEDIATE on SQLite), so the whole
    upgrade is one transaction and a crash leaves the previous revision intact.
    """
    with _migration_lock(engine, sqlite_file), write_engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")


@contextmanager
def _migration_lock(engine: Engine, sqlite_file: Path | None) -> Iterator[None]:
    """Hold the database-wide migration lock for the duration of the block."""
    if engine.dialect.name == "postgresql":
        with _postgres_advisory_lock(engine):
            yield
    elif sqlite_file is not None:
        with _file_lock(sqlite_file.with_name(sqlite_file.name + ".migrate-lock")):
            yield
    else:
        yield


@contextmanager
def _postgres_advisory_lock(engine: Engine) -> Iterator[None]:
    """A session-level advisory lock on its own connection, released even if the upgrade fails.

    Autocommit keeps that connection out of a transaction while it waits and holds; should the
    process die, PostgreSQL releases the lock with the session.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(select(func.pg_advisory_lock(POSTGRES_MIGRATION_LOCK_KEY)))
        try:
            yield
        finally:
            # A broken connection already lost the lock with its session.
            if not connection.invalidated:
                connection.execute(select(func.pg_advisory_unlock(POSTGRES_MIGRATION_LOCK_KEY)))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on a side file; unlike fcntl record locks, flock also excludes threads."""
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
