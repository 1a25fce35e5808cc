"""Database fixtures shared by every test suite: each test gets a migrated, empty database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from storage import Storage
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    empty_postgres_tables,
    postgres_required,
    postgres_server_url,
    postgres_unreachable_reason,
    sqlite_url,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test session, dropped at its end.

    Skips (or fails, with FEEDBACK_REQUIRE_POSTGRES=1) when no server answers.
    """
    server_url = postgres_server_url()
    reason = postgres_unreachable_reason(server_url)
    if reason is not None:
        if postgres_required():
            pytest.fail(reason)
        pytest.skip(reason)
    database_url = create_postgres_database(server_url)
    try:
        with Storage.connect(database_url) as storage:
            storage.migrate()
        yield database_url
    finally:
        drop_postgres_database(server_url, database_url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated database with no rows, once per supported database."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "feedback.sqlite3")
        with Storage.connect(url) as storage:
            storage.migrate()
        return url
    # Looked up lazily so a SQLite-only run never touches PostgreSQL.
    postgres_url: str = request.getfixturevalue("postgres_database_url")
    empty_postgres_tables(postgres_url)
    return postgres_url


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """A Storage connected to the test's empty database, closed afterwards."""
    with Storage.connect(database_url) as connected:
        yield connected
