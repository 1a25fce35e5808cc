"""Erasure on a real server: a user's or a conversation's records leave every table and every
aggregate (stats answer as if they had never been written), writes about a subject under
erasure are refused, an interrupted erasure resumes, the log keeps hashes only, and a user's data
is exported whole."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, select

from llmfeedback import EventItem, FailedPreconditionError, FeedbackClient
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import privacy_pb2
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.config import Settings
from server.service.pii.redaction import TextHasher
from server.service.subjects import ERASURE_IN_PROGRESS, Subjects
from storage import Storage
from storage.schema.models import Base
from tests.server_harness import ServerThread

ALICE = "alice-7f3a9c"
"""A user id no other test writes, so finding it on disk means the erasure left it."""
BOB = "bob-2d81e4"


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _write_user(client: FeedbackClient, user: str, conversations: int) -> None:
    """Turns in `conversations` conversations, a replaced vote, a thumb and two events."""
    for number in range(conversations):
        client.record_interaction(
            f"{user}-c{number}",
            message_id=f"{user}-m{number}",
            user_id=user,
            model="model-a" if number % 2 else "model-b",
            latency_ms=40.0 + 7 * number,
            total_tokens=100 + number,
        )
    client.submit_feedback(message_id=f"{user}-m0", score=2, text="meh")
    client.submit_feedback(message_id=f"{user}-m0", score=5)  # replaces the first vote
    if conversations > 1:
        client.submit_feedback(message_id=f"{user}-m1", thumb=False, text="wrong")
    client.log_events(
        [
            EventItem(user, "page_view", details={"page": "/home"}),
            EventItem(user, "export", details={"rows": 3}),
        ]
    )


STATS_SHAPES: list[dict[str, Any]] = [
    {},
    {"group_by": "user"},
    {"group_by": "model"},
    {"group_by": "conversation"},
    {"group_by": "event_type"},
    {"model": "model-a"},
]


def _stats(client: FeedbackClient) -> list[dict[str, Any]]:
    """GetStats answers of several shapes, day buckets over the last two days included."""
    now = datetime.now(UTC)
    start = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    answers = [MessageToDict(client.get_stats(**shape)) for shape in STATS_SHAPES]
    answers.append(
        MessageToDict(
            client.get_stats(start_time=start, end_time=start + timedelta(days=2), bucket="day")
        )
    )
    return answers


def test_erasing_a_user_leaves_stats_as_if_they_had_never_written(
    client: FeedbackClient, stub: FeedbackServiceStub, database_url: str
) -> None:
    _write_user(client, BOB, 2)
    before = _stats(client)
    _write_user(client, ALICE, 3)
    assert _stats(client) != before

    erasure = stub.EraseUser(pb.EraseUserRequest(user_id=ALICE)).erasure

    assert erasure.erased == privacy_pb2.ErasedCounts(
        interactions=3, feedback=2, replaced_votes=1, events=2
    )
    assert erasure.subject_kind == privacy_pb2.SUBJECT_KIND_USER
    assert erasure.subject_hash == hashlib.sha256(ALICE.encode()).hexdigest()
    assert erasure.subject_hash_kind == privacy_pb2.HASH_KIND_SHA256
    assert erasure.HasField("finish_time")
    assert erasure.requested_by  # the caller's address: no keys on loopback
    assert _stats(client) == before
    assert not client.get_stats(user_id=ALICE).feedback.total_count
    assert not list(client.iter_feedback(user_id=ALICE))
    assert not list(client.iter_interactions(user_id=ALICE))
    assert not list(client.iter_events(user_id=ALICE))
    assert not client.list_feedback_history(f"{ALICE}-m0", ALICE)
    assert _rows_naming(database_url, ALICE) == []
    assert _rows_naming(database_url, BOB)  # the other user is all there


def _rows_naming(database_url: str, value: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every row of every table with a column that holds `value` (whole or in part)."""
    engine = create_engine(database_url)
    found = []
    try:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    if any(value in str(cell) for cell in row):
                        found.append((table.name, tuple(row)))
    finally:
        engine.dispose()
    return found


@pytest.mark.database_independent
def test_sqlite_keeps_no_bytes_of_an_erased_user(
    client: FeedbackClient, stub: FeedbackServiceStub, database_url: str
) -> None:
    _write_user(client, ALICE, 3)
    path = Path(database_url.removeprefix("sqlite:///"))
    _checkpoint(path)
    assert ALICE.encode() in path.read_bytes()

    stub.EraseUser(pb.EraseUserRequest(user_id=ALICE))

    # The erasure emptied the write-ahead log into the file, where secure_delete zeroed the rows.
    assert ALICE.encode() not in path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or ALICE.encode() not in wal.read_bytes()


def _checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_writes_about_a_subject_under_erasure_are_refused_until_it_resumes_and_ends(
    client: FeedbackClient, stub: FeedbackServiceStub, database_url: str
) -> None:
    client.record_interaction("carol-c0", message_id="carol-m0", user_id="carol")
    client.record_interaction("held-c", message_id="held-m", user_id="dave")
    # An erasure that started and stopped (its server went away) before deleting anything.
    subjects = Subjects()
    with Storage.connect(database_url) as storage:
        now = datetime.now(UTC)
        started = storage.write(
            lambda unit: unit.erasures.begin(subjects.of("user", "carol"), "test", now)
        )
        storage.write(
            lambda unit: unit.erasures.begin(subjects.of("conversation", "held-c"), "test", now)
        )

    refused: list[Callable[[], object]] = [
        lambda: stub.RecordInteraction(
            pb.RecordInteractionRequest(conversation_id="carol-c1", user_id="carol")
        ),
        # The user is inherited from the rated interaction.
        lambda: stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="carol-m0", score=4)),
        lambda: stub.LogEvent(pb.LogEventRequest(user_id="carol", event_type="view")),
        # The conversation is inherited too.
        lambda: stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="held-m", score=1)),
        lambda: stub.RecordInteraction(
            pb.RecordInteractionRequest(conversation_id="held-c", user_id="erin")
        ),
    ]
    for call in refused:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(raised.value) == ERASURE_IN_PROGRESS
    batch = client.log_events([EventItem("carol", "view"), EventItem("dave", "view")])
    assert [result.accepted for result in batch.results] == [False, True]
    assert isinstance(batch.results[0].error, FailedPreconditionError)
    assert batch.results[0].error.reason == ERASURE_IN_PROGRESS

    resumed = stub.EraseUser(pb.EraseUserRequest(user_id="carol")).erasure

    assert resumed.id == started.id
    assert resumed.erased.interactions == 1
    assert resumed.HasField("finish_time")
    log = stub.ListErasures(pb.ListErasuresRequest(user_id="carol")).erasures
    assert [entry.id for entry in log] == [started.id]
    client.log_event("carol", "view")  # taken again
    with pytest.raises(grpc.RpcError):  # the conversation's erasure is still under way
        stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="held-m", score=1))
    conversation = stub.EraseConversation(
        pb.EraseConversationRequest(conversation_id="held-c")
    ).erasure
    assert conversation.erased == privacy_pb2.ErasedCounts(interactions=1)
    assert conversation.subject_kind == privacy_pb2.SUBJECT_KIND_CONVERSATION


def _status(error: grpc.RpcError) -> status_pb2.Status:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return status


def _reason(error: grpc.RpcError) -> str:
    for detail in _status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def test_erasing_again_starts_a_new_entry_and_the_log_pages_newest_first(
    client: FeedbackClient, stub: FeedbackServiceStub
) -> None:
    _write_user(client, ALICE, 1)
    first = stub.EraseUser(pb.EraseUserRequest(user_id=ALICE)).erasure
    again = stub.EraseUser(pb.EraseUserRequest(user_id=ALICE)).erasure
    other = stub.EraseConversation(pb.EraseConversationRequest(conversation_id="gone")).erasure

    assert first.erased.interactions == 1
    assert again.id > first.id
    assert again.erased == privacy_pb2.ErasedCounts()
    assert other.erased == privacy_pb2.ErasedCounts()
    seen, token = [], ""
    while True:
        page = stub.ListErasures(pb.ListErasuresRequest(page_size=1, page_token=token))
        seen += [entry.id for entry in page.erasures]
        token = page.next_page_token
        if not token:
            break
    assert seen == [other.id, again.id, first.id]
    mine = stub.ListErasures(pb.ListErasuresRequest(user_id=ALICE)).erasures
    assert [entry.id for entry in mine] == [again.id, first.id]
    with pytest.raises(grpc.RpcError) as raised:  # a token of another filter
        stub.ListErasures(pb.ListErasuresRequest(page_size=1, page_token=token or _token(stub)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _token(stub: FeedbackServiceStub) -> str:
    """A page token issued for the erasures of another user."""
    return stub.ListErasures(pb.ListErasuresRequest(page_size=1, user_id=ALICE)).next_page_token


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (pb.EraseUserRequest(), "user_id"),
        (pb.EraseUserRequest(user_id="x" * 129), "user_id"),
        (pb.EraseUserRequest(user_id="a b"), "user_id"),
        (pb.EraseConversationRequest(conversation_id="a:b"), "conversation_id"),
        (pb.ExportUserDataRequest(user_id=""), "user_id"),
        (pb.ListErasuresRequest(user_id="a", conversation_id="b"), "conversation_id"),
        (pb.ListErasuresRequest(page_token="nonsense"), "page_token"),
        (pb.ListErasuresRequest(page_size=-1), "page_size"),
    ],
)
@pytest.mark.database_independent
def test_malformed_requests_name_the_field(
    stub: FeedbackServiceStub, request_message: Any, field: str
) -> None:
    methods: dict[type, Callable[[Any], object]] = {
        pb.EraseUserRequest: stub.EraseUser,
        pb.EraseConversationRequest: stub.EraseConversation,
        pb.ListErasuresRequest: stub.ListErasures,
        pb.ExportUserDataRequest: lambda request: list(stub.ExportUserData(request)),
    }
    with pytest.raises(grpc.RpcError) as raised:
        methods[type(request_message)](request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert _status(raised.value).details[0].Unpack(bad_request)
    assert [violation.field for violation in bad_request.field_violations] == [field]


def test_a_users_data_is_exported_whole_in_chunks_of_one_kind(
    client: FeedbackClient, stub: FeedbackServiceStub
) -> None:
    _write_user(client, ALICE, 2)
    _write_user(client, BOB, 1)
    client.log_events([EventItem(ALICE, "tick") for _ in range(1200)])

    chunks = list(stub.ExportUserData(pb.ExportUserDataRequest(user_id=ALICE)))

    kinds = [[name for name, value in MessageToDict(chunk).items() if value] for chunk in chunks]
    assert kinds == [["interactions"], ["feedback"], ["replacedVotes"], ["events"], ["events"]]
    assert [len(chunks[0].interactions), len(chunks[1].feedback)] == [2, 2]
    (replaced,) = chunks[2].replaced_votes
    assert (replaced.score, replaced.text) == (2, "meh")
    assert replaced.HasField("replace_time")
    events = [event for chunk in chunks[3:] for event in chunk.events]
    assert (len(events), len(chunks[3].events)) == (1202, 1000)
    assert {event.user_id for event in events} == {ALICE}
    assert [event.id for event in events] == sorted(event.id for event in events)


@pytest.mark.database_independent
def test_with_a_hash_key_the_log_keeps_keyed_hashes(tmp_path: Path, database_url: str) -> None:
    key = b"0123456789abcdef0123456789abcdef-erasure"
    key_file = tmp_path / "hash.key"
    key_file.write_bytes(key)
    settings = Settings(database_url=database_url, log_level="WARNING", hash_key_file=str(key_file))
    with ServerThread(settings) as server, grpc.insecure_channel(server.address) as channel:
        erasure = FeedbackServiceStub(channel).EraseUser(pb.EraseUserRequest(user_id=ALICE)).erasure
    assert erasure.subject_hash_kind == privacy_pb2.HASH_KIND_HMAC_SHA256
    assert erasure.subject_hash == TextHasher(key, purpose=b"subject")(ALICE)
    assert erasure.subject_hash != hashlib.sha256(ALICE.encode()).hexdigest()
    derived = hmac.new(key, b"llm-feedback/subject", hashlib.sha256).digest()
    assert erasure.subject_hash == hmac.new(derived, ALICE.encode(), hashlib.sha256).hexdigest()
