"""The bulk loader: the project's schema filled with a year of realistic rows by raw executemany.

Rows go in through sqlite3 with the journal and fsyncs off and the secondary indexes (and any
triggers) dropped, 50k feedback rows per transaction; the indexes are then rebuilt from their own
CREATE statements and WAL is switched back on, so the server opens a normal database with exactly
the migrated schema. Values are encoded as storage.rows.row_codec encodes them (UTC text
times, JSON text, 0/1 booleans); tests/bench/test_read_dataset.py holds the two side by side.

Ids are given explicitly (the next free ones), so feedback can point at the interaction it rates;
AUTOINCREMENT's sqlite_sequence follows them, and the server carries on after the largest.
"""

from __future__ import annotations

import itertools
import marshal
import multiprocessing
import os
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar

from storage import Storage
from storage.engines import JSON_SERIALIZER

T = TypeVar("T")

ROWS_PER_TRANSACTION = 50_000
"""Feedback rows per transaction; interactions and events of the same stretch of time go along."""
TABLES = ("interactions", "feedback", "events")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
MODEL_WEIGHTS = (40, 25, 20, 10, 5)
LABELS = ("positive", "negative", "neutral", "good", "bad")
SCORE_WEIGHTS = (5, 8, 17, 35, 35)
EVENT_TYPES = tuple(
    f"{area}_{action}"
    for area in ("page", "chat", "search", "settings", "export")
    for action in ("view", "click", "open", "close")
)
TEXTS = (
    "Clear and concise",
    "Wrong answer, the function does not exist",
    "Too long",
    "Exactly what I needed, thanks!",
    "It ignored my second question",
    "Good explanation but the code has a bug",
    "Hallucinated a reference",
    "Perfect",
    "Could be more detailed about the edge cases",
    "The tone was a bit condescending",
)
METADATA = (JSON_SERIALIZER({}),) * 8 + tuple(
    JSON_SERIALIZER({"source": source}) for source in ("web", "mobile")
)
EVENT_DETAILS = tuple(
    JSON_SERIALIZER(details)
    for details in (
        {},
        {"page": "/dashboard"},
        {"page": "/pricing", "referrer": "newsletter"},
        {"query": "export csv", "results": 12},
        {"button": "regenerate"},
    )
)
CONVERSATIONS_PER_USER = 10
LINKED_SHARE = 0.5
"""Feedback that names a recorded message; the rest rates a whole conversation (FilAgent)."""
POOL_BITS = 12
POOL_SIZE = 1 << POOL_BITS
"""Hashes and latencies are drawn from pools of this size: random enough, far cheaper."""
NEWEST_KEPT = 50
ROWS_PER_STATEMENT = 500
"""Rows per INSERT; 500 x 17 parameters stays under SQLite's limit of 32,766."""
GENERATED_AHEAD = 2
PROGRESS_EVERY_STEPS = 20

INTERACTION_COLUMNS = (
    "id",
    "conversation_id",
    "message_id",
    "user_id",
    "model",
    "input_hash",
    "output_hash",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "metadata",
    "occur_time",
    "create_time",
)
FEEDBACK_COLUMNS = (
    "id",
    "conversation_id",
    "message_id",
    "user_id",
    "interaction_id",
    "model",
    "rating_kind",
    "score",
    "thumb_up",
    "label",
    "text",
    "latency_ms",
    "tokens_used",
    "input_hash",
    "output_hash",
    "metadata",
    "create_time",
)
EVENT_COLUMNS = ("id", "user_id", "event_type", "details", "event_time", "receive_time")

Row = tuple[object, ...]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Shape:
    """How many rows of each kind a dataset of `feedback` feedback entries holds.

    At 10M feedback: 2.5M interactions, 5M events, 1M conversations of 100k users. Feedback is
    what the bench reads; the other tables are smaller so a 10M load stays within minutes.
    """

    feedback: int

    @property
    def interactions(self) -> int:
        """One recorded chat turn per four ratings (a turn is often rated more than once)."""
        return self.feedback // 4

    @property
    def events(self) -> int:
        """One analytics event per two ratings."""
        return self.feedback // 2

    @property
    def conversations(self) -> int:
        """Ten ratings per conversation on average."""
        return max(CONVERSATIONS_PER_USER, self.feedback // 10)

    @property
    def users(self) -> int:
        """Each user owns ten conversations."""
        return self.conversations // CONVERSATIONS_PER_USER


@dataclass(frozen=True, slots=True)
class Year:
    """The year the rows spread over: [start, end), both at midnight UTC."""

    start: datetime
    end: datetime

    @classmethod
    def ending_today(cls, now: datetime | None = None) -> Year:
        """The 365 days before today's midnight UTC, so writes during the bench fall after it."""
        moment = now or datetime.now(UTC)
        end = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(end - timedelta(days=365), end)


def conversation_id(index: int) -> str:
    """The id of the `index`th conversation."""
    return f"conv-{index:07d}"


def user_id(index: int) -> str:
    """The id of the `index`th user."""
    return f"user-{index:06d}"


def owner(conversation_index: int) -> int:
    """The user who owns a conversation; the same in every load, whatever its size."""
    return conversation_index // CONVERSATIONS_PER_USER


def sqlite_time(moment: datetime) -> str:
    """A UTC time as storage.rows.row_codec stores it: naive, fixed width, microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass(slots=True)
class LoadRun:
    """Rows one load added and where its time went."""

    rows: dict[str, int] = field(default_factory=dict)
    insert_seconds: float = 0.0
    index_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        """Insert and index time together."""
        return self.insert_seconds + self.index_seconds

    @property
    def rows_per_second(self) -> float:
        """Rows of every table added per second, indexes included."""
        return sum(self.rows.values()) / self.seconds if self.seconds else 0.0


def create_database(database: Path) -> None:
    """A new file with the project's schema, made by its own migrations."""
    with Storage.connect(f"sqlite:///{database}") as storage:
        storage.migrate()


def table_counts(database: Path) -> dict[str, int]:
    """Rows per raw table."""
    with closing(sqlite3.connect(database)) as connection:
        return table_counts_of(connection)


class BulkLoader:
    """Grows one database file to a Shape: each load adds what the previous loads lack."""

    def __init__(self, database: Path, year: Year, *, seed: int = 4) -> None:
        self._database = database
        self._year = year
        self._seed = seed
        self.newest_feedback: list[Row] = []
        """The last feedback rows inserted (a page), to compare with what the server reads."""

    def extend_to(self, shape: Shape, progress: Progress) -> LoadRun:
        """Insert rows until the tables hold `shape`, then rebuild indexes and restore WAL.

        A second process generates the rows of the next transaction while this one inserts.
        """
        run = LoadRun()
        with closing(sqlite3.connect(self._database, isolation_level=None)) as connection:
            counts = table_counts_of(connection)
            missing = {
                "interactions": max(0, shape.interactions - counts["interactions"]),
                "feedback": max(0, shape.feedback - counts["feedback"]),
                "events": max(0, shape.events - counts["events"]),
            }
            if not any(missing.values()):
                return run
            plan = Plan.of(
                shape,
                self._year,
                seed=self._seed + counts["feedback"],
                first_ids=(
                    _next_id(connection, "interactions"),
                    _next_id(connection, "feedback"),
                    _next_id(connection, "events"),
                ),
                missing=(missing["interactions"], missing["feedback"], missing["events"]),
            )
            _bulk_pragmas(connection)
            schema = _drop_secondary_schema(connection)
            started = time.perf_counter()
            for step, (interactions, feedback, events) in enumerate(_generated(plan), 1):
                connection.execute("BEGIN")
                _insert(connection, "interactions", INTERACTION_COLUMNS, interactions)
                _insert(connection, "feedback", FEEDBACK_COLUMNS, feedback)
                _insert(connection, "events", EVENT_COLUMNS, events)
                connection.execute("COMMIT")
                if feedback:
                    self.newest_feedback = _unflattened(feedback, len(FEEDBACK_COLUMNS))[
                        -NEWEST_KEPT:
                    ]
                if step % PROGRESS_EVERY_STEPS == 0 and step < plan.steps:
                    done = missing["feedback"] * step // plan.steps
                    progress(f"inserted {done:,} of {missing['feedback']:,} feedback rows")
            run.insert_seconds = time.perf_counter() - started
            run.rows = missing
            progress(
                f"inserted {sum(missing.values()):,} rows in {run.insert_seconds:.0f} s; "
                f"rebuilding {len(schema)} indexes"
            )
            started = time.perf_counter()
            for statement in schema:
                connection.execute(statement)
            run.index_seconds = time.perf_counter() - started
            _normal_pragmas(connection)
        return run


def table_counts_of(connection: sqlite3.Connection) -> dict[str, int]:
    """Rows per raw table through an open connection."""
    return {
        table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        for table in TABLES
    }


@dataclass(frozen=True, slots=True)
class Plan:
    """One load, cut into steps a worker process can generate alone (so, picklable)."""

    shape: Shape
    start: datetime
    """The year's start as a naive UTC datetime."""
    span_us: int
    seed: int
    first_ids: tuple[int, int, int]
    """First id of the load per table, in TABLES order."""
    missing: tuple[int, int, int]
    """Rows to add per table, in TABLES order."""
    steps: int

    @classmethod
    def of(
        cls,
        shape: Shape,
        year: Year,
        *,
        seed: int,
        first_ids: tuple[int, int, int],
        missing: tuple[int, int, int],
        rows_per_step: int = ROWS_PER_TRANSACTION,
    ) -> Plan:
        """A load spreading `missing` rows over `year`, `rows_per_step` feedback rows a step."""
        return cls(
            shape=shape,
            start=year.start.astimezone(UTC).replace(tzinfo=None),
            span_us=(year.end - year.start) // timedelta(microseconds=1),
            seed=seed,
            first_ids=first_ids,
            missing=missing,
            steps=max(1, -(-missing[1] // rows_per_step)),
        )

    def active_conversations(self, step: int) -> tuple[int, int]:
        """First index and number of the conversations open during `step`.

        Conversations start evenly over the year and stay open for two steps, so the rows of one
        step name a few thousand of them, as a day of real traffic does.
        """
        conversations = self.shape.conversations
        first = conversations * max(step - 1, 0) // self.steps
        return first, max(1, conversations * (step + 1) // self.steps - first)

    def share(self, table: int, step: int) -> tuple[int, int]:
        """First id and row count of `table` (index into TABLES) in `step`."""
        total = self.missing[table]
        before = total * step // self.steps
        return self.first_ids[table] + before, total * (step + 1) // self.steps - before


Statements = list[Row]
"""A table's rows of one step, flattened ROWS_PER_STATEMENT rows at a time."""


def _generated(plan: Plan) -> Iterator[tuple[Statements, Statements, Statements]]:
    """Each step's rows in order, generated by a worker process up to two steps ahead."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with gRPC threads
    with ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as worker:
        pending: deque[Future[bytes]] = deque()
        for step in range(plan.steps):
            pending.append(worker.submit(_generate_step, plan, step))
            if len(pending) > GENERATED_AHEAD:
                yield marshal.loads(pending.popleft().result())
        while pending:
            yield marshal.loads(pending.popleft().result())


def _exit_with_parent(parent: int) -> None:
    """In the worker: exit when the bench dies, rather than block forever on a full pipe."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _generate_step(plan: Plan, step: int) -> bytes:
    """The rows of one step as statement parameters, marshalled (cheaper to load than pickles)."""
    return marshal.dumps(tuple(_flattened(rows) for rows in generate_step(plan, step)))


def _flattened(rows: list[Row]) -> Statements:
    """The parameters of one multi-row INSERT per ROWS_PER_STATEMENT rows."""
    return [
        tuple(itertools.chain.from_iterable(rows[start : start + ROWS_PER_STATEMENT]))
        for start in range(0, len(rows), ROWS_PER_STATEMENT)
    ]


def _unflattened(statements: Statements, width: int) -> list[Row]:
    """The rows of the last statement."""
    last = statements[-1]
    return [last[start : start + width] for start in range(0, len(last), width)]


def generate_step(plan: Plan, step: int) -> tuple[list[Row], list[Row], list[Row]]:
    """The interactions, feedback and events of stretch `step` of the year.

    Deterministic for a plan and step. Within one load, times rise with ids.
    """
    rng = random.Random(plan.seed * 1_000_003 + step)
    first_us = plan.span_us * step // plan.steps
    length_us = plan.span_us * (step + 1) // plan.steps - first_us
    # One set of times for all three tables: formatting times is the generator's largest cost.
    counts = [plan.share(table, step)[1] for table in range(len(TABLES))]
    times = _spread_times(plan.start, rng, first_us, length_us, max(counts))
    interactions = _interactions(plan, step, rng, _spaced(times, counts[0]))
    feedback = _feedback(plan, step, rng, _spaced(times, counts[1]), interactions)
    events = _events(plan, step, rng, _spaced(times, counts[2]))
    return interactions, feedback, events


def _spaced(times: list[str], count: int) -> list[str]:
    """`count` of the ascending times, evenly spaced, still ascending."""
    if count == len(times):
        return times
    return [times[index * len(times) // count] for index in range(count)]


def _spread_times(
    start: datetime, rng: random.Random, first_us: int, length_us: int, count: int
) -> list[str]:
    """`count` ascending stored-text times spread evenly (with jitter) over a stretch.

    "YYYY-MM-DD HH:MM:" is formatted once per minute; "SS.ffffff" comes from the float
    seconds, which hold the 8 digits exactly.
    """
    result: list[str] = []
    append, rnd = result.append, rng.random
    minutes: dict[int, str] = {}
    per_row = length_us / max(count, 1)
    for index in range(count):
        minute, microseconds = divmod(first_us + int((index + rnd()) * per_row), 60_000_000)
        prefix = minutes.get(minute)
        if prefix is None:
            prefix = minutes[minute] = (start + timedelta(minutes=minute)).isoformat(" ")[:17]
        append("%s%09.6f" % (prefix, microseconds / 1e6))  # noqa: UP031 (twice as fast here)
    return result


def _pool(rng: random.Random, make: Callable[[], T], size: int) -> list[T]:
    return [make() for _ in range(size)]


def _interactions(plan: Plan, step: int, rng: random.Random, times: list[str]) -> list[Row]:
    first_id, count = plan.share(0, step)
    rnd, bits = rng.random, rng.getrandbits
    first_conversation, conversations = plan.active_conversations(step)
    hashes = _pool(rng, lambda: f"{rng.getrandbits(256):064x}", POOL_SIZE)
    latencies = _pool(rng, lambda: round(rng.lognormvariate(6.5, 0.6), 3), POOL_SIZE)
    models = rng.choices(MODELS, MODEL_WEIGHTS, k=count)
    rows: list[Row] = []
    for row_id, model, moment in zip(range(first_id, first_id + count), models, times, strict=True):
        conversation = first_conversation + int(rnd() * conversations)
        prompt = 20 + int(rnd() * 1980)
        completion = 10 + int(rnd() * 790)
        rows.append(
            (
                row_id,
                conversation_id(conversation),
                f"msg-{row_id:010d}",
                user_id(owner(conversation)),
                model,
                hashes[bits(POOL_BITS)],
                hashes[bits(POOL_BITS)],
                latencies[bits(POOL_BITS)],
                prompt,
                completion,
                prompt + completion,
                METADATA[0],
                moment,
                moment,
            )
        )
    return rows


def _feedback(
    plan: Plan, step: int, rng: random.Random, times: list[str], interactions: Sequence[Row]
) -> list[Row]:
    """Half rate a recorded answer (and inherit from it), half a whole conversation.

    An answer is rated at most once: its owner's second vote would replace the first.
    """
    first_id, count = plan.share(1, step)
    rnd, bits = rng.random, rng.getrandbits
    first_conversation, conversations = plan.active_conversations(step)
    latencies = _pool(rng, lambda: round(rng.lognormvariate(6.5, 0.6), 3), POOL_SIZE)
    kinds = rng.choices(("score", "thumb", "label"), (60, 25, 15), k=count)
    scores = rng.choices(range(1, 6), SCORE_WEIGHTS, k=count)
    rows: list[Row] = []
    linked = len(interactions)
    voted: set[int] = set()  # a user votes once per message (a second vote would replace it)
    for row_id, kind, score, moment in zip(
        range(first_id, first_id + count), kinds, scores, times, strict=True
    ):
        pick = int(rnd() * linked) if linked and rnd() < LINKED_SHARE else None
        if pick is not None and pick not in voted:
            voted.add(pick)
            rated = interactions[pick]
            interaction, conversation, message, user, model = rated[0:5]
            input_hash, output_hash, latency = rated[5:8]
            tokens = rated[10]  # the interaction's total_tokens
        else:
            index = first_conversation + int(rnd() * conversations)
            conversation, user = conversation_id(index), user_id(owner(index))
            message = interaction = model = input_hash = output_hash = latency = tokens = None
            if rnd() < 0.5:  # FilAgent's shape: the client sends latency and tokens itself
                latency, tokens = latencies[bits(POOL_BITS)], 30 + int(rnd() * 2770)
        rows.append(
            (
                row_id,
                conversation,
                message,
                user,
                interaction,
                model,
                kind,
                score if kind == "score" else None,
                (1 if rnd() < 0.7 else 0) if kind == "thumb" else None,
                LABELS[int(rnd() * len(LABELS))] if kind == "label" else None,
                TEXTS[int(rnd() * len(TEXTS))] if rnd() < 0.3 else None,
                latency,
                tokens,
                input_hash,
                output_hash,
                METADATA[int(rnd() * len(METADATA))],
                moment,
            )
        )
    return rows


def _events(plan: Plan, step: int, rng: random.Random, times: list[str]) -> list[Row]:
    first_id, count = plan.share(2, step)
    rnd = rng.random
    first_conversation, conversations = plan.active_conversations(step)
    types = rng.choices(EVENT_TYPES, k=count)
    details = rng.choices(EVENT_DETAILS, k=count)
    return [
        (
            row_id,
            user_id(owner(first_conversation + int(rnd() * conversations))),
            event_type,
            detail,
            moment,
            moment,
        )
        for row_id, event_type, detail, moment in zip(
            range(first_id, first_id + count), types, details, times, strict=True
        )
    ]


def _next_id(connection: sqlite3.Connection, table: str) -> int:
    """The next id AUTOINCREMENT would give: past every id ever used, deleted ones included."""
    row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return 1 + (int(row[0]) if row is not None else 0)


def _insert(
    connection: sqlite3.Connection, table: str, columns: Sequence[str], statements: Statements
) -> None:
    """Insert the rows: executemany over full multi-row statements, then the shorter last one.

    A row per statement costs about 40 % more: sqlite_sequence (AUTOINCREMENT) is updated and
    the statement reset once per execution.
    """
    width = len(columns)
    full = [values for values in statements if len(values) == width * ROWS_PER_STATEMENT]
    if full:
        connection.executemany(_insert_sql(table, tuple(columns), ROWS_PER_STATEMENT), full)
    for values in statements[len(full) :]:
        connection.execute(_insert_sql(table, tuple(columns), len(values) // width), values)


@cache
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


def _bulk_pragmas(connection: sqlite3.Connection) -> None:
    """No journal, no fsync, a large cache: a crash mid-load loses the file, which is scratch."""
    _set_journal_mode(connection, "off")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("PRAGMA cache_size = -1000000")  # KiB: 1 GB
    connection.execute("PRAGMA temp_store = MEMORY")
    connection.execute("PRAGMA threads = 2")  # CREATE INDEX sorts on both cores


def _normal_pragmas(connection: sqlite3.Connection) -> None:
    """Back to what the server expects: WAL (stored in the file) and durable syncs."""
    _set_journal_mode(connection, "wal")
    connection.execute("PRAGMA synchronous = FULL")


def _set_journal_mode(connection: sqlite3.Connection, mode: str) -> None:
    """Switch the journal mode, or fail: SQLite keeps WAL without a word while anyone reads."""
    (actual,) = connection.execute(f"PRAGMA journal_mode = {mode}").fetchone()
    if actual.lower() != mode:
        raise RuntimeError(f"journal_mode stayed {actual!r}, not {mode!r}: is a server still open?")


def _drop_secondary_schema(connection: sqlite3.Connection) -> list[str]:
    """Drop the raw tables' indexes and triggers; returns the statements that recreate them.

    Indexes SQLite made for UNIQUE constraints have no SQL and stay.
    """
    tables = ", ".join(f"'{table}'" for table in TABLES)
    objects = connection.execute(
        "SELECT type, name, sql FROM sqlite_master "
        f"WHERE type IN ('index', 'trigger') AND sql IS NOT NULL AND tbl_name IN ({tables}) "
        "ORDER BY type, name"
    ).fetchall()
    for kind, name, _ in objects:
        connection.execute(f'DROP {kind.upper()} "{name}"')
    return [sql for _, _, sql in objects]
