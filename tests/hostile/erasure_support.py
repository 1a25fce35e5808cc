"""What the erasure attacks share: server processes to freeze and kill, users loaded with known
rows, the raw rows counted around the service, and GetStats answers compared field by field.

Rows are counted with sqlite3 or psycopg straight from the database (as reliability.databases
does), so "nothing of the user is left" is believed only once the tables say so. Users are
loaded through ImportHistory with fixed times, so a reference server fed the other users' items
alone must answer every GetStats query as the server that erased the user does.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import privacy_pb2, stats_pb2
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from reliability.databases import libpq_url, sqlite_path
from reliability.server_process import ServerProcess
from tests.databases import create_postgres_database, drop_postgres_database, postgres_server_url
from tests.e2e.auth_support import Outcome, outcome_of

ResponseT = TypeVar("ResponseT")

RAW_TABLES = ("interactions", "feedback", "feedback_history", "events")
"""The tables an erasure deletes from; feedback_history holds the replaced votes."""
CALL_TIMEOUT = 10.0
ERASE_TIMEOUT = 60.0
"""An erasure of tens of thousands of rows takes about a second on an idle machine."""
IMPORT_CHUNK = 500
ERASURE_IN_PROGRESS = "ERASURE_IN_PROGRESS"
ERASURES_IN_FLIGHT = "ERASURES_IN_FLIGHT"
TOO_MANY_EXPORTS = "TOO_MANY_EXPORTS"
FREEZE_SETTLE_SECONDS = 0.05
FLOAT_TOLERANCE = 1e-9
"""Relative difference of two averages that is rounding, not a record counted or missed: sums
of floats take a record out by subtraction."""
SERVER_ERRORS = ("Traceback", "Fatal Python error", "deadlock detected")
"""What a server's log must never hold after an attack."""


class ErasureServer(ServerProcess):
    """`python -m server` on a database (logging warnings and errors only), to be frozen,
    SIGKILLed and started again on the same database."""

    @property
    def pid(self) -> int:
        """The running server's process id."""
        process = self._process
        if process is None:
            raise RuntimeError("server not started")
        return process.pid

    def running(self) -> bool:
        """Whether the process is started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything the server wrote to stderr, over all its starts."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ErasureServer:
        self.start()
        return self


def log_problems(*servers: ErasureServer) -> list[str]:
    """The lines of the servers' logs that hold a traceback, a fatal error or a deadlock."""
    return [
        line
        for server in servers
        for line in server.log_text().splitlines()
        if any(marker in line for marker in SERVER_ERRORS)
    ]


@contextlib.contextmanager
def frozen(server: ErasureServer) -> Iterator[None]:
    """SIGSTOP the server for the block (SIGCONT after, unless it was killed meanwhile): what it
    committed stands still, and a SIGKILL inside lands exactly there.

    A statement the server had sent already (PostgreSQL runs it without its client) finishes
    during FREEZE_SETTLE_SECONDS, before the block starts.
    """
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE_SETTLE_SECONDS)
        yield
    finally:
        if server.running():
            os.kill(server.pid, signal.SIGCONT)


# ---- databases ----


@contextlib.contextmanager
def own_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database of the test alone (the server migrates it), dropped after."""
    url = create_postgres_database(postgres_server_url())
    try:
        yield url
    finally:
        drop_postgres_database(postgres_server_url(), url)


def query(database_url: str, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement run straight on the database; `?` marks a parameter."""
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(database_url), timeout=30)) as db:
            return db.execute(sql, tuple(parameters)).fetchall()
    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as connection:
        statement = sql.replace("?", "%s")
        return connection.execute(statement, tuple(parameters)).fetchall()


def user_rows(database_url: str, user_id: str) -> dict[str, int]:
    """Rows per raw table whose user_id is `user_id`."""
    return {
        table: int(
            query(database_url, f"SELECT count(*) FROM {table} WHERE user_id = ?", [user_id])[0][0]
        )
        for table in RAW_TABLES
    }


def stored_request_ids(database_url: str, user_id: str) -> dict[str, set[str]]:
    """The request ids of the user's rows, per raw table (rows without one left out)."""
    return {
        table: {
            str(request_id)
            for (request_id,) in query(
                database_url,
                f"SELECT request_id FROM {table} WHERE user_id = ? AND request_id IS NOT NULL",
                [user_id],
            )
        }
        for table in RAW_TABLES
    }


def rows_with_request_ids(database_url: str, request_ids: Iterable[str]) -> int:
    """Rows of any raw table, of any user, that carry one of `request_ids`."""
    wanted = sorted(set(request_ids))
    found = 0
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for table in RAW_TABLES:
            sql = f"SELECT count(*) FROM {table} WHERE request_id IN ({marks})"
            found += int(query(database_url, sql, chunk)[0][0])
    return found


def running_erasure(database_url: str, erasure_id: int) -> bool:
    """Whether the erasures table has the entry without a finish_time."""
    (finished,) = query(
        database_url, "SELECT finish_time FROM erasures WHERE id = ?", [erasure_id]
    )[0]
    return finished is None


def file_mentions(path: Path, needle: str) -> list[str]:
    """The files of a SQLite database (the file, its WAL and shared memory) that hold `needle`."""
    return [
        candidate.name
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if candidate.exists() and needle.encode() in candidate.read_bytes()
    ]


# ---- users with known rows ----


@dataclass(frozen=True, slots=True)
class Rows:
    """How many rows of each kind a user has: what an erasure of the user must count."""

    interactions: int = 0
    feedback: int = 0
    replaced_votes: int = 0
    events: int = 0

    @property
    def total(self) -> int:
        """Rows of every kind."""
        return self.interactions + self.feedback + self.replaced_votes + self.events

    def by_table(self) -> dict[str, int]:
        """The counts as user_rows() gives them."""
        return dict(
            zip(
                RAW_TABLES,
                (self.interactions, self.feedback, self.replaced_votes, self.events),
                strict=True,
            )
        )

    def message(self) -> privacy_pb2.ErasedCounts:
        """The ErasedCounts of an erasure of exactly these rows."""
        return privacy_pb2.ErasedCounts(
            interactions=self.interactions,
            feedback=self.feedback,
            replaced_votes=self.replaced_votes,
            events=self.events,
        )


def counts_of(erased: privacy_pb2.ErasedCounts) -> Rows:
    """An erasure's counts as Rows."""
    return Rows(erased.interactions, erased.feedback, erased.replaced_votes, erased.events)


def base_time() -> datetime:
    """Two days ago on the whole hour: items are placed at whole seconds after it, the same
    for every server a test feeds."""
    return (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp of a UTC datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def seconds(stamp: Timestamp) -> float:
    """A Timestamp as seconds since the epoch, comparable with time.time()."""
    return stamp.seconds + stamp.nanos / 1e9


def user_items(
    user_id: str,
    *,
    messages: int,
    revotes: int,
    events: int,
    start: datetime,
    tag: str,
    latency_ms: tuple[float, float] = (20.0, 200.0),
) -> tuple[list[pb.ImportItem], Rows]:
    """ImportHistory items of one user, and the rows they make: `messages` interactions in 7
    conversations, each rated once (as many current votes); the first `revotes` of them rated
    again (the first ratings become replaced votes); `events` events of three types. Times
    spread over a day from `start`; interaction latencies spread across `latency_ms`.

    Conversation and message ids carry `tag`, never the user id, so a search for the user id in
    a database file finds only what an erasure left behind.
    """
    low, high = latency_ms
    spread = max(messages - 1, 1)
    items: list[pb.ImportItem] = []
    for number in range(messages):
        interaction = pb.RecordInteractionRequest(
            conversation_id=f"conv-{tag}-{number % 7}",
            message_id=f"msg-{tag}-{number}",
            user_id=user_id,
            model=("model-a", "model-b")[number % 2],
            input_text=f"question {number}",
            latency_ms=low + (high - low) * number / spread,
            total_tokens=10 + number % 90,
        )
        at = timestamp(start + timedelta(seconds=number * 11))
        items.append(pb.ImportItem(interaction=interaction, create_time=at))
    for number in range(messages):
        vote = pb.SubmitFeedbackRequest(
            message_id=f"msg-{tag}-{number}",
            user_id=user_id,
            score=1 + number % 5,
            latency_ms=low + number % 50,
            tokens_used=5 + number % 20,
            text="fine" if number % 3 == 0 else "",
        )
        at = timestamp(start + timedelta(seconds=number * 11 + 5))
        items.append(pb.ImportItem(feedback=vote, create_time=at))
    for number in range(min(revotes, messages)):
        vote = pb.SubmitFeedbackRequest(
            message_id=f"msg-{tag}-{number}", user_id=user_id, score=1 + (number + 2) % 5
        )
        at = timestamp(start + timedelta(hours=20, seconds=number))
        items.append(pb.ImportItem(feedback=vote, create_time=at))
    for number in range(events):
        event = pb.LogEventRequest(
            user_id=user_id, event_type=("view", "click", "copy")[number % 3]
        )
        at = timestamp(start + timedelta(seconds=number * 7))
        items.append(pb.ImportItem(event=event, create_time=at))
    return items, Rows(messages, messages, min(revotes, messages), events)


def import_items(stub: FeedbackServiceStub, items: Sequence[pb.ImportItem]) -> None:
    """ImportHistory the items in one stream; every one must be accepted."""
    requests = (
        pb.ImportHistoryRequest(items=items[start : start + IMPORT_CHUNK])
        for start in range(0, len(items), IMPORT_CHUNK)
    )
    answer = stub.ImportHistory(requests, timeout=120)
    assert answer.accepted_count == len(items), (
        f"{answer.accepted_count} of {len(items)} imported; {list(answer.rejections)[:3]}"
    )


# ---- calls ----


def attempt(
    method: Callable[..., ResponseT], request: Any, timeout: float = CALL_TIMEOUT
) -> ResponseT | Outcome:
    """The response of a call, or the Outcome (status and unpacked details) of its failure."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        return outcome_of(error)


def verdict(result: object) -> str:
    """ "OK" for a response, "CODE REASON" for a failed call's Outcome."""
    if isinstance(result, Outcome):
        return f"{result.code.name} {result.reason}".strip()
    return "OK"


def erase_user(stub: FeedbackServiceStub, user_id: str) -> privacy_pb2.Erasure:
    """The finished Erasure EraseUser answers (fails the test on an error)."""
    answer = attempt(stub.EraseUser, pb.EraseUserRequest(user_id=user_id), ERASE_TIMEOUT)
    assert not isinstance(answer, Outcome), f"EraseUser({user_id}) failed: {answer}"
    return answer.erasure


def erasures_of(stub: FeedbackServiceStub, user_id: str) -> list[privacy_pb2.Erasure]:
    """The user's entries of the erasure log, newest first."""
    request = pb.ListErasuresRequest(user_id=user_id)
    return list(stub.ListErasures(request, timeout=CALL_TIMEOUT).erasures)


def wait_finished(stub: FeedbackServiceStub, user_id: str) -> privacy_pb2.Erasure:
    """Poll ListErasures until the user's newest erasure has a finish_time; that entry."""
    deadline = time.monotonic() + ERASE_TIMEOUT
    while time.monotonic() < deadline:
        entries = erasures_of(stub, user_id)
        if entries and entries[0].HasField("finish_time"):
            return entries[0]
        time.sleep(0.05)
    raise AssertionError(f"the erasure of {user_id} did not finish within {ERASE_TIMEOUT:.0f} s")


def field_violations(outcome: Outcome) -> set[str]:
    """The fields a failed call's BadRequest names."""
    bad = outcome.detail(error_details_pb2.BadRequest)
    return set() if bad is None else {violation.field for violation in bad.field_violations}


# ---- what is left ----


def listed(stub: FeedbackServiceStub, user_id: str) -> dict[str, int]:
    """What the user's lists hold (first page of up to 1000) and ExportUserData streams."""
    exported = sum(
        len(chunk.interactions)
        + len(chunk.feedback)
        + len(chunk.replaced_votes)
        + len(chunk.events)
        for chunk in stub.ExportUserData(pb.ExportUserDataRequest(user_id=user_id), timeout=60)
    )
    interactions = stub.ListInteractions(
        pb.ListInteractionsRequest(user_id=user_id, page_size=1000), timeout=CALL_TIMEOUT
    )
    votes = stub.ListFeedback(
        pb.ListFeedbackRequest(user_id=user_id, page_size=1000), timeout=CALL_TIMEOUT
    )
    events = stub.ListEvents(
        pb.ListEventsRequest(user_id=user_id, page_size=1000), timeout=CALL_TIMEOUT
    )
    return {
        "interactions": len(interactions.interactions),
        "feedback": len(votes.feedback),
        "events": len(events.events),
        "exported": exported,
    }


def stats_queries(start: datetime, user_ids: Sequence[str]) -> dict[str, pb.GetStatsRequest]:
    """GetStats queries that together read every rollup an erasure must correct: all time, per
    model, user, conversation and event type, daily and hourly buckets over the items' days, a
    comparison with the period before, and each named user alone."""
    begin, end = timestamp(start - timedelta(days=1)), timestamp(start + timedelta(days=2))
    queries = {
        "all": pb.GetStatsRequest(),
        "by model": pb.GetStatsRequest(group_by=stats_pb2.STATS_GROUP_BY_MODEL, top_n=1000),
        "by user": pb.GetStatsRequest(group_by=stats_pb2.STATS_GROUP_BY_USER, top_n=1000),
        "by conversation": pb.GetStatsRequest(
            group_by=stats_pb2.STATS_GROUP_BY_CONVERSATION, top_n=1000
        ),
        "by event type": pb.GetStatsRequest(group_by=stats_pb2.STATS_GROUP_BY_EVENT_TYPE),
        "daily": pb.GetStatsRequest(
            start_time=begin, end_time=end, bucket=stats_pb2.TIME_BUCKET_DAY
        ),
        "hourly, model-a": pb.GetStatsRequest(
            start_time=begin, end_time=end, bucket=stats_pb2.TIME_BUCKET_HOUR, model="model-a"
        ),
        "compared": pb.GetStatsRequest(
            start_time=timestamp(start), end_time=end, compare_previous=True
        ),
    }
    for user_id in user_ids:
        queries[f"user {user_id}"] = pb.GetStatsRequest(user_id=user_id)
        queries[f"user {user_id}, daily"] = pb.GetStatsRequest(
            user_id=user_id, start_time=begin, end_time=end, bucket=stats_pb2.TIME_BUCKET_DAY
        )
    return queries


def stats_answers(
    stub: FeedbackServiceStub, queries: dict[str, pb.GetStatsRequest]
) -> dict[str, pb.GetStatsResponse]:
    """Every query's answer."""
    return {name: stub.GetStats(request, timeout=CALL_TIMEOUT) for name, request in queries.items()}


def stats_differences(
    got: dict[str, pb.GetStatsResponse], expected: dict[str, pb.GetStatsResponse]
) -> list[str]:
    """Per query whose answers differ, the fields that differ: "query: path got X, reference Y"."""
    return [
        f"{name}: {difference}"
        for name in expected
        for difference in message_differences(got[name], expected[name])
    ]


def message_differences(got: Message, expected: Message, path: str = "") -> list[str]:
    """The fields (dotted paths) whose values differ between two messages of one type; floats
    within FLOAT_TOLERANCE of each other are equal."""
    differences: list[str] = []
    names = {field.name for field, _ in got.ListFields()} | {
        field.name for field, _ in expected.ListFields()
    }
    for name in sorted(names):
        mine, theirs, where = getattr(got, name), getattr(expected, name), f"{path}{name}"
        if isinstance(mine, Message):
            differences += message_differences(mine, theirs, f"{where}.")
        elif hasattr(mine, "items"):  # a map
            if dict(mine) != dict(theirs):
                differences.append(f"{where} got {dict(mine)}, reference {dict(theirs)}")
        elif isinstance(mine, Sequence) and not isinstance(mine, str | bytes):  # repeated
            if len(mine) != len(theirs):
                differences.append(f"{where} got {len(mine)} entries, reference {len(theirs)}")
            elif mine and isinstance(mine[0], Message):
                for index, (one, other) in enumerate(zip(mine, theirs, strict=True)):
                    differences += message_differences(one, other, f"{where}[{index}].")
            elif list(mine) != list(theirs):
                differences.append(f"{where} got {list(mine)}, reference {list(theirs)}")
        elif isinstance(mine, float) and isinstance(theirs, float):
            if not math.isclose(mine, theirs, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE):
                differences.append(f"{where} got {mine}, reference {theirs}")
        elif mine != theirs:
            differences.append(f"{where} got {mine}, reference {theirs}")
    return differences


def counts_nothing(answer: pb.GetStatsResponse) -> bool:
    """Whether a GetStats answer counts no record of any kind, in total or in any bucket."""
    periods: list[Any] = [answer, *answer.buckets]
    return all(
        period.feedback.total_count == 0
        and period.interactions.total_count == 0
        and period.events.total_count == 0
        for period in periods
    )
