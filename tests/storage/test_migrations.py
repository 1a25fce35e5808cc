"""Migrations build exactly the models' schema, once, even when processes race to run them."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, inspect, select, text

from storage import Storage
from storage.database import rebuild_rollups_on
from storage.records import EventFilter, Keyset, Percentiles, Score, StatsFilter, StatsQuery
from storage.rows import id_blocks
from storage.schema.migrate import alembic_config, current_revision, head_revision
from storage.schema.models import Base, EventRow, FeedbackRow, InteractionRow, ListIdBlockRow
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
    sqlite_url,
)
from tests.storage import full_scan
from tests.storage.factories import T0, insert_interaction, latest_interaction, new_interaction

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
    kept = storage.write(lambda repository: insert_interaction(repository, new_interaction()))

    storage.migrate()
    storage.migrate()

    assert revision_of(database_url) == head_revision() == "0013"
    assert schema_differences(database_url, Base.metadata) == []
    assert storage.read(lambda repository: latest_interaction(repository, "conv-1")) == kept
    assert (
        storage.read(
            lambda repository: full_scan.interaction_stats(repository, StatsFilter())
        ).total_count
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


def _events_at_0004(database_url: str) -> None:
    """Seven events stored at revision 0004, their ids against time order."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0004")
        with engine.begin() as connection:
            # Ids against time order: a later row per hour and one far behind its hour.
            times = [T0 + timedelta(hours=hours) for hours in (0, 30, 0.5, 800, 1, -5, 30.2)]
            connection.execute(
                insert(EventRow),
                [
                    {"user_id": "u", "event_type": "t", "event_time": time, "receive_time": time}
                    for time in times
                ],
            )
            rebuild_rollups_on(connection, id_bounds=False, extremes=False)
    finally:
        engine.dispose()


def _migrate(database_url: str, revision: str, *, down: bool = False) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            (command.downgrade if down else command.upgrade)(alembic_config(connection), revision)
    finally:
        engine.dispose()


def _rebuild_at_0009(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            rebuild_rollups_on(connection, id_bounds=True)
    finally:
        engine.dispose()


def test_revision_0005_fills_the_id_bounds_a_rebuild_would(unmigrated_database_url: str) -> None:
    """Bounds backfilled from rows stored before 0005 equal those of a rebuild of the rollups."""
    _events_at_0004(unmigrated_database_url)
    _migrate(unmigrated_database_url, "0009")
    migrated = rollup_bounds(unmigrated_database_url)
    _rebuild_at_0009(unmigrated_database_url)

    assert migrated == rollup_bounds(unmigrated_database_url)
    # Five hours, three days, two months and the total hold the seven events.
    assert len([bounds for bounds in migrated if bounds[-1] is not None]) == 5 + 3 + 2 + 1


def test_revision_0010_drops_the_id_bounds_and_its_downgrade_fills_them_again(
    unmigrated_database_url: str,
) -> None:
    _events_at_0004(unmigrated_database_url)
    _migrate(unmigrated_database_url, "0009")
    before = rollup_bounds(unmigrated_database_url)

    _migrate(unmigrated_database_url, "head")
    engine = create_engine(unmigrated_database_url)
    try:
        with engine.connect() as connection:
            columns = {
                column["name"] for column in inspect(connection).get_columns("event_rollups")
            }
    finally:
        engine.dispose()
    assert "min_id" not in columns
    assert "max_id" not in columns

    _migrate(unmigrated_database_url, "0009", down=True)
    assert rollup_bounds(unmigrated_database_url) == before


def rollup_bounds(database_url: str) -> list[tuple[Any, ...]]:
    """(level, bucket_start, dimension, key, min_id, max_id) of every event counter cell."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT level, bucket_start, dimension, dimension_key, min_id, max_id"
                    " FROM event_rollups ORDER BY 1, 2, 3, 4"
                )
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def test_revision_0006_keeps_each_users_newest_vote_and_the_rest_as_history(
    unmigrated_database_url: str,
) -> None:
    """Votes stored before one-vote-per-user: the newest stays, the rest become its history."""
    engine = create_engine(unmigrated_database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0005")
        with engine.begin() as connection:
            votes: list[tuple[str, str | None, int]] = [
                ("m1", "u1", 1),
                ("m1", "u1", 2),
                ("m1", "u2", 3),
                ("m1", "u1", 4),
            ]
            votes += [("m1", None, 5), ("m1", None, 5)]  # anonymous: not votes
            connection.execute(
                insert(FeedbackRow),
                [
                    {
                        "conversation_id": "c1",
                        "message_id": message_id,
                        "user_id": user_id,
                        "rating_kind": "score",
                        "score": score,
                        "create_time": T0 + timedelta(minutes=n),
                    }
                    for n, (message_id, user_id, score) in enumerate(votes)
                ],
            )
            rebuild_rollups_on(connection, id_bounds=True, extremes=False)
    finally:
        engine.dispose()

    with Storage.connect(unmigrated_database_url) as storage:
        storage.migrate()
        current = storage.read(
            lambda repository: full_scan.feedback_stats(repository, StatsFilter())
        )
        history = storage.read(lambda repository: repository.feedback_history("m1", "u1", 10))
        rolled_up = storage.read_stats(StatsQuery()).overall.feedback

    assert [(vote.rating, vote.replaced_by_id, vote.replaces_id) for vote in history] == [
        (Score(1), 2, None),
        (Score(2), 4, 1),
        (Score(4), None, 2),
    ]
    assert history[0].replace_time == T0 + timedelta(minutes=1)
    assert rolled_up is not None
    assert current.total_count == rolled_up.total_count == 4
    assert rolled_up.score_counts == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2}


def test_revision_0008_fills_the_extremes_of_rows_stored_before(
    unmigrated_database_url: str,
) -> None:
    engine = create_engine(unmigrated_database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0007")
        with engine.begin() as connection:
            connection.execute(
                insert(FeedbackRow),
                [
                    {
                        "conversation_id": "c1",
                        "model": "m1",
                        "rating_kind": "score",
                        "score": 4,
                        "latency_ms": 150.5,
                        "tokens_used": 250,
                        "create_time": T0,
                    }
                ],
            )
            connection.execute(
                insert(InteractionRow),
                [
                    {
                        "conversation_id": "c1",
                        "latency_ms": 150.5,
                        "total_tokens": 250,
                        "occur_time": T0,
                        "create_time": T0,
                    }
                ],
            )
            rebuild_rollups_on(connection, id_bounds=True, extremes=False)
    finally:
        engine.dispose()

    with Storage.connect(unmigrated_database_url) as storage:
        storage.migrate()
        answer = storage.read_stats(
            StatsQuery(start_time=T0 - timedelta(days=1), end_time=T0 + timedelta(days=1))
        )

    # Bins alone would say 151.4 and 248.4 (test_percentile_extremes).
    for stats in (answer.overall.feedback, answer.overall.interactions):
        assert stats is not None
        assert stats.latency_ms_percentiles == Percentiles(
            p50=150.5, p90=150.5, p95=150.5, p99=150.5
        )
    assert answer.overall.feedback is not None
    assert answer.overall.feedback.tokens_percentiles == Percentiles(
        p50=250, p90=250, p95=250, p99=250
    )
    assert answer.overall.interactions is not None
    tokens = answer.overall.interactions.total_tokens_percentiles
    assert tokens == Percentiles(p50=250, p90=250, p95=250, p99=250)


def test_revision_0009_fills_the_id_blocks_writes_would_keep(unmigrated_database_url: str) -> None:
    """Blocks backfilled from rows stored before 0009 bound every row; pages by time find them."""
    engine = create_engine(unmigrated_database_url)
    # Three blocks of events, times against id order; a feedback row in its own kind.
    times = [T0 + timedelta(seconds=(index * 7919) % 3000) for index in range(2100)]
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0007")
        with engine.begin() as connection:
            connection.execute(
                insert(EventRow),
                [
                    {"user_id": "u", "event_type": "t", "event_time": time, "receive_time": time}
                    for time in times
                ],
            )
            connection.execute(
                insert(FeedbackRow),
                [{"conversation_id": "c", "rating_kind": "score", "score": 2, "create_time": T0}],
            )
    finally:
        engine.dispose()

    with Storage.connect(unmigrated_database_url) as storage:
        storage.migrate()
        blocks = storage.read(
            lambda repository: {
                tuple(row) for row in repository.session.execute(select(ListIdBlockRow.__table__))
            }
        )
        start, end = T0 + timedelta(seconds=100), T0 + timedelta(seconds=200)
        window = EventFilter(start_time=start, end_time=end)
        page = storage.read(lambda repository: repository.event_entries(window, Keyset(limit=1000)))

    expected = {("feedback", 0, T0, T0, 1)}
    for block in range(3):
        block_times = [
            time for index, time in enumerate(times, 1) if index // id_blocks.BLOCK_IDS == block
        ]
        expected.add(("events", block, min(block_times), max(block_times), len(block_times)))
    assert blocks == expected
    in_window = [index for index, time in enumerate(times, 1) if start <= time < end]
    assert [entry.id for entry in page] == in_window[::-1]


def test_revision_0011_says_every_earlier_hash_is_plain_sha256(
    unmigrated_database_url: str,
) -> None:
    _migrate(unmigrated_database_url, "0010")
    engine = create_engine(unmigrated_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO interactions (conversation_id, message_id, input_hash, metadata,"
                    " occur_time, create_time) VALUES ('c', 'hashed', :hash, '{}', :at, :at),"
                    " ('c', 'unhashed', NULL, '{}', :at, :at)"
                ),
                {"hash": "ab" * 32, "at": T0},
            )
        _migrate(unmigrated_database_url, "head")
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT message_id, input_hash_kind, output_hash_kind, redactions"
                    " FROM interactions ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()

    decoded = [
        (message, kind, output, str(redactions)) for message, kind, output, redactions in rows
    ]
    assert decoded == [("hashed", "sha256", None, "{}"), ("unhashed", None, None, "{}")]
    _migrate(unmigrated_database_url, "0010", down=True)


def test_sqlite_ids_are_never_handed_out_twice_and_0012_repairs_tables_that_lost_it(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "copied.sqlite3")
    _migrate(url, "0011")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            # What 0011 as first released did to every raw table: a batch copy without
            # AUTOINCREMENT.
            operations = Operations(MigrationContext.configure(connection))
            with operations.batch_alter_table("events", recreate="always"):
                pass
            for _ in range(3):
                connection.execute(
                    text(
                        "INSERT INTO events (user_id, event_type, event_time, receive_time)"
                        " VALUES ('u', 'view', :at, :at)"
                    ),
                    {"at": T0},
                )
            connection.execute(text("DELETE FROM events WHERE id = 3"))
        assert "AUTOINCREMENT" not in _table_sql(engine, "events")
        _migrate(url, "head")
        for table in ("interactions", "feedback", "feedback_history", "events"):
            assert "AUTOINCREMENT" in _table_sql(engine, table), table
        with engine.begin() as connection:
            assert connection.execute(
                text("SELECT id FROM events ORDER BY id")
            ).scalars().all() == [1, 2]
            connection.execute(text("DELETE FROM events WHERE id = 2"))
            connection.execute(
                text(
                    "INSERT INTO events (user_id, event_type, event_time, receive_time)"
                    " VALUES ('u', 'view', :at, :at)"
                ),
                {"at": T0},
            )
            ids = connection.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
    finally:
        engine.dispose()
    assert ids == [1, 3]  # 2 is not handed out again (3 was, once, before the repair)


def _table_sql(engine: Any, table: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": table},
            ).scalar_one()
        )
