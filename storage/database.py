"""Storage: the process-wide handle that runs units of work against SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from storage.aggregates.cache import CacheCounts, CellCache
from storage.aggregates.reader import StatsReader
from storage.aggregates.rebuild import rebuild_rollups, register_sqlite_functions
from storage.aggregates.totals import KIND_NAMES, TOTALS_SQL
from storage.change_listener import ChangeListener
from storage.engines import (
    WRITE_TRANSACTION_OPTION,
    normalized_url,
    postgres_engine,
    sqlite_engine,
    sqlite_file,
)
from storage.error_translation import driver_errors, is_lock_contention, translated_errors
from storage.errors import StorageError, StorageUnavailable, TransactionRolledBack
from storage.rows import executors, id_blocks
from storage.rows.repository import Repository, Rows
from storage.schema.migrate import upgrade_to_head

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import datetime
    from pathlib import Path
    from types import TracebackType

    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

    from storage.records import StatsAnswer, StatsQuery

T = TypeVar("T")

Dialect = Literal["sqlite", "postgresql"]

SQLITE_MIN_FREE_BYTES = 256 * 1024
"""Room a SQLite database needs (free pages, or disk) for check_writable() to pass: a batch of
writes grows the file by a few pages, and a disk with less left fails the next commit."""


class Storage:
    """One per process: owns the connection pool and runs each unit of work in one transaction.

    Thread-safe: every call takes its own session and connection from the pool.
    """

    def __init__(self, engine: Engine, url: URL, *, database_file: Path | None) -> None:
        """Wrap a configured engine; use Storage.connect() rather than calling this."""
        self._engine = engine
        self._url = url
        self._database_file = database_file
        # Same pool; connections of this engine mark their transactions as writes.
        self._write_engine = engine.execution_options(**{WRITE_TRANSACTION_OPTION: True})
        # PostgreSQL's READ COMMITTED takes a snapshot per statement; a read unit of several
        # queries (stats of feedback, interactions and events) must agree with itself.
        # Read-only REPEATABLE READ transactions never fail to serialize. SQLite's WAL already
        # keeps one snapshot per transaction.
        read_engine = (
            engine.execution_options(isolation_level="REPEATABLE READ")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._read_sessions = sessionmaker(bind=read_engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(bind=self._write_engine, expire_on_commit=False)
        self._closed = threading.Event()
        self._stats_cache = CellCache()
        self._unavailable_listeners: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[int], None]] = []
        # Set by every unavailable report. A reader's SQLite connection opened while the file was
        # read-only stays read-only, and a PostgreSQL connection from before a restart is dead:
        # so after an outage check_writable() replaces the pool before and after its check, and
        # the writer's first write after health turns SERVING never gets such a connection.
        self._outage_seen = threading.Event()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        sqlite_busy_timeout_ms: int = 5000,
        sqlite_synchronous: str = "FULL",
        pool_size: int = 10,
    ) -> Storage:
        """Configure storage for a database URL; connections open lazily, on first use.

        Accepts sqlite:///path (the parent directory is created), postgresql://, postgres:// and
        postgresql+psycopg:// (the first two use psycopg 3). Raises ValueError for anything else,
        including in-memory SQLite. Call ping() to find out whether the database answers.
        """
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        parsed = normalized_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = sqlite_engine(
                parsed,
                busy_timeout_ms=sqlite_busy_timeout_ms,
                synchronous=sqlite_synchronous,
                pool_size=pool_size,
            )
            return cls(engine, parsed, database_file=sqlite_file(parsed))
        return cls(postgres_engine(parsed, pool_size=pool_size), parsed, database_file=None)

    @property
    def url(self) -> str:
        """The database URL with any password masked, fit for logs."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> Dialect:
        """Which database this is: "sqlite" or "postgresql"."""
        return "sqlite" if self._engine.dialect.name == "sqlite" else "postgresql"

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; safe when several processes start at once.

        Raises StorageUnavailable when the database cannot be reached or written.
        """
        self._check_open()
        with translated_errors():
            upgrade_to_head(
                self._engine, write_engine=self._write_engine, sqlite_file=self._database_file
            )

    def write(self, work: Callable[[Repository], T]) -> T:
        """Run `work` in one write transaction and commit; on any exception nothing is kept.

        The rollup changes of its writes are written after `work` returns, last in the
        transaction, in the lock order of storage.aggregates.write.RollupChanges.

        Raises Conflict when a unique rule rejects an insert (the unit is then over: retry in a
        new one), StorageUnavailable when the database cannot take the write now, and its subclass
        TransactionRolledBack when PostgreSQL ended the unit to break a deadlock (run it again).
        """
        self._check_open()
        with self._reported(), translated_errors():
            with self._write_sessions.begin() as session:
                repository = Repository(session)
                result = work(repository)
                repository.finish()
            self._report_changes(repository.change_seq)
            return result

    def read(self, work: Callable[[Repository], T]) -> T:
        """Run `work` in one read transaction, so it sees a single consistent snapshot.

        On SQLite this transaction takes no write lock; writing in it is a mistake.
        """
        self._check_open()
        with self._reported(), translated_errors(), self._read_sessions.begin() as session:
            return work(Repository(session))

    def read_stats(self, query: StatsQuery) -> StatsAnswer:
        """Answer a stats query from the rollups in one read transaction (one snapshot)."""
        self._check_open()
        with self._reported(), translated_errors(), self._read_sessions.begin() as session:
            # Straight on the driver's cursor: SQLAlchemy's result machinery cost more than the
            # queries themselves for a year of daily buckets.
            cursor = session.connection().connection.cursor()
            try:

                def execute(sql: str, parameters: tuple[Any, ...]) -> Sequence[Any]:
                    with driver_errors(sql, parameters):
                        cursor.execute(sql, parameters)
                        return cursor.fetchall()

                return StatsReader(execute, self.dialect, self._stats_cache).read(query)
            finally:
                cursor.close()

    def record_totals(self) -> dict[str, int]:
        """How many records of each kind (feedback, interactions, events) are stored, read from
        the rollups' total cells (storage.aggregates.totals): cheap at any size."""
        self._check_open()
        with self._reported(), translated_errors(), self._read_sessions.begin() as session:
            found = {str(name): int(count) for name, count in session.execute(text(TOTALS_SQL))}
        return {name: found.get(name, 0) for name in KIND_NAMES}

    @property
    def stats_cache_counts(self) -> CacheCounts:
        """Hits and misses of the GetStats cache in this process so far."""
        return self._stats_cache.counts

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the raw tables in one transaction.

        For rows written past the service (bulk loads with sqlite3.executemany, manual fixes).
        The id blocks of lists with a time range are rebuilt too (storage.rows.id_blocks).
        Writers wait meanwhile: SQLite's write lock, a SHARE lock on PostgreSQL's raw tables.
        """
        self._check_open()
        with translated_errors(), self._write_engine.begin() as connection:
            rebuild_rollups_on(connection)
            id_blocks.rebuild(connection.exec_driver_sql)

    def checkpoint(self) -> bool:
        """On SQLite, copy the write-ahead log into the database file and empty it, so deleted
        rows (zeroed there by secure_delete) leave no copy in the log; whether it was emptied
        (not while a reader holds an old snapshot). PostgreSQL: nothing to do, True.

        Raises StorageUnavailable when the database cannot be reached.
        """
        self._check_open()
        if self.dialect != "sqlite":
            return True
        with translated_errors(), self._write_engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            with driver_errors("PRAGMA wal_checkpoint(TRUNCATE)"):
                busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def vacuum(self) -> None:
        """Rewrite the database so that deleted rows leave no bytes behind: SQLite's VACUUM
        (secure_delete zeroes deleted cells, but a b-tree page keeps the unallocated gap its cells
        moved out of until it is rewritten); PostgreSQL's VACUUM FULL of every table, which
        takes each table's exclusive lock in turn (a maintenance window's job).
        """
        self._check_open()
        with translated_errors(), self._engine.connect() as connection:
            if self.dialect == "postgresql":
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM FULL"
                )
                return
            raw = connection.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            if raw.in_transaction:
                raw.rollback()  # the pool's own BEGIN: VACUUM runs outside transactions
            with driver_errors("VACUUM"):
                raw.execute("VACUUM")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def dedicated_writer(self) -> DedicatedWriter:
        """A writer for one thread that runs many short write transactions (group commit).

        It keeps one connection instead of checking one out and building a session per unit of
        work, which halves the fixed cost of a transaction (about 150 us of CPU on SQLite).
        """
        self._check_open()
        return DedicatedWriter(
            self._write_engine,
            self._check_open,
            on_unavailable=self._report_unavailable,
            on_changes=self._report_changes,
        )

    def ping(self) -> None:
        """Check that the database answers; raises StorageUnavailable if it does not."""
        self._check_open()
        with translated_errors(), self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def check_writable(self) -> None:
        """Check that the database would take a write now; raises StorageUnavailable if not.

        Answering is not enough: a read-only SQLite file still grants BEGIN IMMEDIATE, and a full
        one still reads. So on SQLite this writes (a table it rolls back) and checks the room left
        in the file and on the disk; on PostgreSQL it checks the server is not read-only.
        """
        self._check_open()
        outage = self._outage_seen.is_set()
        if outage:
            self._engine.dispose()  # test a new connection, not one from the outage
        with translated_errors(), self._engine.connect() as connection:
            try:
                if self.dialect == "sqlite":
                    raw = connection.connection.driver_connection
                    assert isinstance(raw, sqlite3.Connection)
                    _check_sqlite_writable(raw, self._database_file)
                else:
                    row = connection.execute(
                        text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                    ).one()
                    if row[0] or row[1] == "on":
                        raise StorageUnavailable("database unavailable: it is read-only")
            except BaseException:
                self._outage_seen.set()
                # A SQLite connection opened while the file was read-only stays read-only.
                with contextlib.suppress(Exception):
                    connection.invalidate()
                raise
        if outage:
            # Also drop what readers opened meanwhile: the writer reconnects from this pool.
            self._outage_seen.clear()
            self._engine.dispose()

    def on_unavailable(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a read or write fails with StorageUnavailable.

        Not for TransactionRolledBack: a deadlock or serialization failure says nothing about
        whether the database can take writes.

        It runs on the failing thread (a storage or writer thread), so it must be quick and
        thread-safe; the failure is raised to the caller as usual afterwards.
        """
        self._unavailable_listeners.append(listener)

    def on_changes(self, listener: Callable[[int], None]) -> None:
        """Call `listener` with the change log number of every write transaction this process
        committed that added records (storage.rows.changes), right after its commit.

        It runs on the writing thread, so it must be quick and thread-safe.
        """
        self._change_listeners.append(listener)

    def listen_for_changes(self, listener: Callable[[], None]) -> Closeable:
        """Call `listener` (on a thread of its own) whenever any process commits change log
        entries, until the returned object is closed; a hint that may come late or twice.

        On PostgreSQL a LISTEN connection hears every replica; SQLite has no such channel,
        so there only this process's own commits are heard (on_changes) and the rest polled.
        """
        if self.dialect != "postgresql":
            return _NothingToClose()
        conninfo = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        return ChangeListener(conninfo, listener)

    def compact_changes(self, before: datetime, limit: int) -> int:
        """Remove up to `limit` of the oldest change log entries committed before `before`;
        how many (storage.rows.changes.ChangeLog.compact)."""
        return self.write(lambda repository: repository.changes.compact(before, limit))

    def _report_changes(self, seq: int | None) -> None:
        if seq is not None:
            for listener in self._change_listeners:
                listener(seq)

    def close(self) -> None:
        """Close every pooled connection; the storage cannot be used afterwards."""
        self._closed.set()
        self._engine.dispose()

    def __enter__(self) -> Self:
        """Use as a context manager that closes the storage on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the storage."""
        self.close()

    def __repr__(self) -> str:
        """Show the masked URL, never the password."""
        return f"Storage({self.url!r})"

    def _check_open(self) -> None:
        """Refuse work after close(), which would otherwise silently open a new pool."""
        if self._closed.is_set():
            raise StorageError("storage is closed")

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Tell the listeners of on_unavailable() about a StorageUnavailable, then re-raise it."""
        try:
            yield
        except TransactionRolledBack:
            raise
        except StorageUnavailable:
            self._report_unavailable()
            raise

    def _report_unavailable(self) -> None:
        self._outage_seen.set()
        for listener in self._unavailable_listeners:
            listener()


def _check_sqlite_writable(raw: sqlite3.Connection, database_file: Path | None) -> None:
    """Begin a write transaction, allocate a page in it, measure the room left, roll back."""
    with driver_errors("BEGIN IMMEDIATE"):
        raw.execute("BEGIN IMMEDIATE")
    try:
        with driver_errors("CREATE TABLE"):
            # A new table takes a page: SQLITE_READONLY or SQLITE_FULL if the file cannot give it.
            raw.execute("CREATE TABLE storage_write_probe (probe INTEGER)")
            page_size, page_count, max_page_count, free_pages = (
                raw.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("page_size", "page_count", "max_page_count", "freelist_count")
            )
    finally:
        if raw.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                raw.execute("ROLLBACK")
    if (max_page_count - page_count + free_pages) * page_size < SQLITE_MIN_FREE_BYTES:
        raise StorageUnavailable("database unavailable: the database file is full")
    if database_file is not None:
        disk = os.statvfs(database_file.parent)
        if disk.f_bavail * disk.f_frsize < SQLITE_MIN_FREE_BYTES:
            raise StorageUnavailable("database unavailable: the disk is full")


def rebuild_rollups_on(
    connection: Connection, *, id_bounds: bool = False, extremes: bool = True
) -> None:
    """Rebuild the rollups inside `connection`'s write transaction (also used by migrations, with
    `id_bounds=True` from 0005 to 0009, whose counter tables have id bounds, and
    `extremes=False` before 0008: columns not there yet)."""
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        register_sqlite_functions(raw)
        dialect: Dialect = "sqlite"
    else:
        # Writers insert raw rows first, so they wait here and cannot slip between the reads.
        connection.exec_driver_sql("LOCK TABLE interactions, feedback, events IN SHARE MODE")
        dialect = "postgresql"

    def run(sql: str) -> None:
        connection.exec_driver_sql(sql, execution_options={"no_parameters": True})

    rebuild_rollups(run, dialect, id_bounds=id_bounds, extremes=extremes)


class DedicatedWriter:
    """Write transactions on one kept connection; use from a single thread only."""

    def __init__(
        self,
        engine: Engine,
        check_open: Callable[[], None],
        *,
        on_unavailable: Callable[[], None] = lambda: None,
        on_changes: Callable[[int | None], None] = lambda seq: None,
    ) -> None:
        """Write through `engine`'s connections; `check_open` refuses work after Storage.close(),
        `on_unavailable` hears of every write that failed with StorageUnavailable, `on_changes`
        of every commit's change log number."""
        self._engine = engine
        self._check_open = check_open
        self._on_unavailable = on_unavailable
        self._on_changes = on_changes
        self._connection: Connection | None = None

    def write(self, work: Callable[[Rows], T], *, busy_retry_seconds: float = 0.0) -> T:
        """Run `work` in one write transaction and commit; on any exception nothing is kept.

        With `busy_retry_seconds`, a write that found SQLite locked by other writers (other
        processes on the same file) for longer than the busy timeout, or that PostgreSQL rolled
        back to break a deadlock or a serialization failure, is rolled back and tried again until
        that many seconds have passed; `work` then may run more than once, so it must start from
        scratch each time. A deadlock that outlasts the retries raises TransactionRolledBack and,
        the database being healthy, is not reported to `on_unavailable`. Rollups are written
        last, as in Storage.write.
        """
        give_up_at = time.monotonic() + busy_retry_seconds
        pause = 0.005
        while True:
            try:
                return self._write_once(work)
            except StorageUnavailable as error:
                if not is_lock_contention(error) or time.monotonic() + pause > give_up_at:
                    if not isinstance(error, TransactionRolledBack):
                        self._on_unavailable()
                    raise
            # Jittered, so writers of several processes that failed together do not collide again.
            time.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, 0.2)

    def _write_once(self, work: Callable[[Rows], T]) -> T:
        self._check_open()
        try:
            with translated_errors():
                if self._connection is None or self._connection.invalidated:
                    self.close()
                    self._connection = self._engine.connect()
                if self._connection.dialect.name == "sqlite":
                    result, seq = self._write_sqlite(self._connection, work)
                else:
                    with self._connection.begin():
                        rows = Rows(executors.on_connection(self._connection), "postgresql")
                        result = work(rows)
                        rows.finish()
                    seq = rows.change_seq
            self._on_changes(seq)
            return result
        except StorageUnavailable as error:
            # Reconnect on the next write: the database may have restarted, and a SQLite file
            # opened while it was read-only stays read-only on that connection.
            if self._connection is not None and not is_lock_contention(error):
                with contextlib.suppress(Exception):
                    self._connection.invalidate()
            self.close()
            raise

    @staticmethod
    def _write_sqlite(connection: Connection, work: Callable[[Rows], T]) -> tuple[T, int | None]:
        """The transaction on sqlite3 itself: SQLAlchemy's per-transaction machinery cost more
        than a small batch's statements (see storage.rows.repository)."""
        raw = connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        with driver_errors("BEGIN IMMEDIATE"):
            raw.execute("BEGIN IMMEDIATE")
        try:
            rows = Rows(executors.on_sqlite(raw), "sqlite")
            result = work(rows)
            rows.finish()
            with driver_errors("COMMIT"):
                raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
            raise
        return result, rows.change_seq

    def close(self) -> None:
        """Give the connection back."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                connection.close()


class Closeable(Protocol):
    """Something that runs until closed."""

    def close(self) -> None:
        """Stop it."""
        ...


class _NothingToClose:
    def close(self) -> None:
        """Nothing runs."""
