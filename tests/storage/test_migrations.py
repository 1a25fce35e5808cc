"""Migrations build exactly the models' schema, once, even when processes race to run them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from storage import Storage
from storage.models import Base
from storage.records import StatsFilter
from storage.schema_migration import current_revision, head_revision
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
    sqlite_url,
)
from tests.storage.factories import new_interaction

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

RACING_PROCESSES = 6


def schema_differences(database_url: str, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def revision_of(database_url: str) -> str | None:
    """The Alembic revision a database is at."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(database_url: str) -> None:
    assert schema_differences(database_url, Base.metadata) == []


def test_schema_comparison_notices_a_difference(database_url: str) -> None:
    """Guards the test above: an empty diff must not come from a comparison that sees nothing."""
    altered = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(altered)
    feedback = altered.tables["feedback"]
    feedback.indexes.remove(next(i for i in feedback.indexes if i.name == "ix_feedback_score"))

    differences = schema_differences(database_url, altered)

    assert [difference[0] for difference in differences] == ["remove_index"]


def test_migrate_again_is_a_no_op(storage: Storage, database_url: str) -> None:
    kept = storage.write(lambda repository: repository.insert_interaction(new_interaction()))

    storage.migrate()
    storage.migrate()

    assert revision_of(database_url) == head_revision() == "0005"
    assert schema_differences(database_url, Base.metadata) == []
    assert storage.read(lambda repository: repository.latest_interaction("conv-1")) == kept
    assert (
        storage.read(lambda repository: repository.interaction_stats(StatsFilter())).total_count
        == 1
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched yet, as on a first deployment."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "fresh.sqlite3")
        return
    request.getfixturevalue("postgres_database_url")  # skips when no server answers
    url = create_postgres_database(postgres_server_url())
    try:
        yield url
    finally:
        drop_postgres_database(postgres_server_url(), url)


def test_racing_first_migrations_all_succeed_once(unmigrated_database_url: str) -> None:
    """Several server processes starting together must not trip over each other's migration."""
    start = threading.Barrier(RACING_PROCESSES)
    failures: list[BaseException] = []

    def start_a_server() -> None:
        # Its own Storage, as a separate process would have: separate pool, separate lock holder.
        with Storage.connect(unmigrated_database_url) as storage:
            start.wait()
            try:
                storage.migrate()
            except BaseException as failure:
                failures.append(failure)

    threads = [threading.Thread(target=start_a_server) for _ in range(RACING_PROCESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert revision_of(unmigrated_database_url) == head_revision()
    assert schema_differences(unmigrated_database_url, Base.metadata) == []
