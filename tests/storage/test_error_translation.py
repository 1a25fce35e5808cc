"""Real driver failures (not constructed ones) come out as the right StorageError subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, create_engine, event, insert
from sqlalchemy.engine import make_url

from storage import Storage, StorageUnavailable
from storage.error_translation import translated_errors
from tests.databases import empty_postgres_tables, sqlite_url
from tests.storage.factories import insert_event, new_event

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

BLOBS = Table(
    "blobs", MetaData(), Column("id", Integer, primary_key=True), Column("data", LargeBinary)
)


def fill_with_blobs(engine: Engine) -> None:
    """Insert 400 KiB, far more than the capped file holds, with errors translated."""
    with translated_errors(), engine.begin() as connection:
        for _ in range(100):
            connection.execute(insert(BLOBS).values(data=b"x" * 4096))


def test_sqlite_disk_full_is_unavailable(tmp_path: Path) -> None:
    """SQLITE_FULL, provoked by capping the file at a few pages on every connection."""
    engine = create_engine(sqlite_url(tmp_path / "small.sqlite3"))

    @event.listens_for(engine, "connect")
    def cap_size(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA max_page_count = 8")

    try:
        with engine.begin() as connection:
            BLOBS.create(connection)
        with pytest.raises(StorageUnavailable, match="full"):
            fill_with_blobs(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_read_only_transactions_are_unavailable(postgres_database_url: str) -> None:
    """A standby, or a database switched to read-only, refuses writes with SQLSTATE 25006, which
    psycopg files under InternalError rather than OperationalError: it is still "try later"."""
    empty_postgres_tables(postgres_database_url)
    read_only = make_url(postgres_database_url).update_query_dict(
        {"options": "-c default_transaction_read_only=on"}
    )

    with Storage.connect(read_only.render_as_string(hide_password=False)) as storage:
        storage.ping()
        with pytest.raises(StorageUnavailable, match="read-only"):
            storage.write(lambda repository: insert_event(repository, new_event()))
