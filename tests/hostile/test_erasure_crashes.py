"""Erasures cut short by a SIGKILL of their server, by a database that goes away, or by a client
that leaves, against real `feedback-server` processes. The erasure log and the write refusals
must carry an erasure over the crash, the next EraseUser must finish it with the counts of every
run, and afterwards the user must be gone from every list, every aggregate (each GetStats answer
equal to a reference server's that never had the user) and, on SQLite, from the file's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_pb2, privacy_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from reliability.hostile.raw_h2 import RawGrpcConnection
from tests.databases import allow_connections, sqlite_url
from tests.e2e.auth_support import Outcome
from tests.hostile.erasure_support import (
    CALL_TIMEOUT,
    ERASURE_IN_PROGRESS,
    ErasureServer,
    Rows,
    attempt,
    base_time,
    counts_nothing,
    counts_of,
    erase_user,
    erasures_of,
    file_mentions,
    frozen,
    import_items,
    listed,
    log_problems,
    own_postgres_database,
    query,
    running_erasure,
    stats_answers,
    stats_differences,
    stats_queries,
    timestamp,
    user_items,
    user_rows,
    verdict,
    wait_finished,
)

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(110)]

VICTIM = "erasure.victim@example.org"
BYSTANDERS = ("bystander-1", "bystander-2", "bystander-3")
LATE_BYSTANDER = "bystander-late"
"""Writes only while the victim's erasure is interrupted: its writes must be taken meanwhile."""
KILL_WITHIN_SECONDS = 30.0
REFUSED = f"FAILED_PRECONDITION {ERASURE_IN_PROGRESS}"
NOTHING_LISTED = dict.fromkeys(("interactions", "feedback", "events", "exported"), 0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the database under attack, a reference database), both empty and of one kind."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "attacked.sqlite3"), sqlite_url(tmp_path / "reference.sqlite3")
        return
    request.getfixturevalue("postgres_database_url")  # skips when PostgreSQL is unreachable
    with own_postgres_database() as attacked, own_postgres_database() as reference:
        yield attacked, reference


def kill_mid_erasure(server: ErasureServer, database_url: str, stub: FeedbackServiceStub) -> None:
    """SIGKILL the server once ListErasures shows its erasure of the victim with a batch done,
    checked again in the database with the server frozen, so that it cannot finish between the
    look and the kill."""
    deadline = time.monotonic() + KILL_WITHIN_SECONDS
    while time.monotonic() < deadline:
        entries = erasures_of(stub, VICTIM)
        if entries and entries[0].batches > 0:
            with frozen(server):
                assert running_erasure(database_url, entries[0].id), "finished before the kill"
                server.kill()
            return
        time.sleep(0.005)
    raise AssertionError(f"the erasure showed no batch within {KILL_WITHIN_SECONDS:.0f} s")


def _reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a batch item's status."""
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return str(info.reason)
    return ""


def victim_writes(stub: FeedbackServiceStub, rated_message: str | None) -> dict[str, str]:
    """Every way to write about the victim, each answered: what each got (code and reason, and
    the subject_kind a refusal names). A vote that inherits the victim needs one of its
    interactions left (`rated_message`)."""
    singles: dict[str, tuple[object, object]] = {
        "RecordInteraction": (
            stub.RecordInteraction,
            pb.RecordInteractionRequest(conversation_id="conv-v-new", user_id=VICTIM),
        ),
        "SubmitFeedback": (
            stub.SubmitFeedback,
            pb.SubmitFeedbackRequest(conversation_id="conv-v-new", user_id=VICTIM, score=4),
        ),
        "LogEvent": (stub.LogEvent, pb.LogEventRequest(user_id=VICTIM, event_type="view")),
    }
    if rated_message is not None:
        # No user_id: the vote takes the victim from the interaction it rates.
        singles["SubmitFeedback, user inherited"] = (
            stub.SubmitFeedback,
            pb.SubmitFeedbackRequest(message_id=rated_message, thumb=feedback_pb2.THUMB_UP),
        )
    got: dict[str, str] = {}
    for name, (method, request) in singles.items():
        answer = attempt(method, request)  # type: ignore[arg-type]
        got[name] = verdict(answer)
        if isinstance(answer, Outcome):
            got[name] += f" subject_kind={answer.metadata.get('subject_kind')}"
    event = pb.LogEventRequest(user_id=VICTIM, event_type="view")
    batch = stub.LogEvents(pb.LogEventsRequest(events=[event]), timeout=CALL_TIMEOUT)
    (result,) = batch.results
    got["LogEvents item"] = f"{batch_pb2.ItemOutcome.Name(result.outcome)} {_reason(result.error)}"
    streamed = stub.Ingest(
        iter([pb.IngestRequest(items=[pb.IngestItem(event=event)])]), timeout=CALL_TIMEOUT
    )
    got["Ingest item"] = f"rejected {streamed.rejected_count} " + " ".join(
        _reason(rejection.error) for rejection in streamed.rejections
    )
    imported = stub.ImportHistory(
        iter(
            [
                pb.ImportHistoryRequest(
                    items=[pb.ImportItem(event=event, create_time=timestamp(base_time()))]
                )
            ]
        ),
        timeout=CALL_TIMEOUT,
    )
    got["ImportHistory item"] = f"rejected {imported.rejected_count} " + " ".join(
        _reason(rejection.error) for rejection in imported.rejections
    )
    return got


VICTIM_REFUSALS = {
    "RecordInteraction": f"{REFUSED} subject_kind=user",
    "SubmitFeedback": f"{REFUSED} subject_kind=user",
    "SubmitFeedback, user inherited": f"{REFUSED} subject_kind=user",
    "LogEvent": f"{REFUSED} subject_kind=user",
    "LogEvents item": f"ITEM_OUTCOME_REJECTED {ERASURE_IN_PROGRESS}",
    "Ingest item": f"rejected 1 {ERASURE_IN_PROGRESS}",
    "ImportHistory item": f"rejected 1 {ERASURE_IN_PROGRESS}",
}


def late_bystander_writes(stub: FeedbackServiceStub) -> list[str]:
    """Writes of a user nobody erases; their times are given, so the reference stores the same."""
    at = timestamp(base_time())
    return [
        verdict(
            attempt(
                stub.RecordInteraction,
                pb.RecordInteractionRequest(
                    conversation_id="conv-late",
                    message_id="msg-late-1",
                    user_id=LATE_BYSTANDER,
                    model="model-a",
                    latency_ms=33.0,
                    occur_time=at,
                    request_id=str(uuid.uuid4()),
                ),
            )
        ),
        verdict(
            attempt(
                stub.SubmitFeedback,
                pb.SubmitFeedbackRequest(
                    message_id="msg-late-1",
                    user_id=LATE_BYSTANDER,
                    score=2,
                    request_id=str(uuid.uuid4()),
                ),
            )
        ),
        verdict(
            attempt(
                stub.LogEvent,
                pb.LogEventRequest(
                    user_id=LATE_BYSTANDER,
                    event_type="view",
                    event_time=at,
                    request_id=str(uuid.uuid4()),
                ),
            )
        ),
    ]


def test_an_erasure_killed_halfway_refuses_writes_until_run_again_then_leaves_nothing(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    """20,000 rows of the victim (17 batches), whose latencies stretch past the bystanders' on
    both sides so the rollups' extremes must be read again, among 2,800 rows of three bystanders
    sharing the victim's models, event types and days."""
    attacked, reference_url = two_databases
    start = base_time()
    victim, loaded = user_items(
        VICTIM,
        messages=5000,
        revotes=2000,
        events=8000,
        start=start,
        tag="v",
        latency_ms=(1.0, 9000.0),
    )
    others: list[pb.ImportItem] = []
    for number, user_id in enumerate(BYSTANDERS):
        others += user_items(
            user_id, messages=300, revotes=100, events=300, start=start, tag=f"b{number}"
        )[0]
    queries = stats_queries(start, [VICTIM, BYSTANDERS[0], LATE_BYSTANDER])

    server = ErasureServer(attacked, tmp_path / "attacked.log")
    reference = ErasureServer(reference_url, tmp_path / "reference.log")
    with contextlib.ExitStack() as stack:
        for process in (server, reference):
            stack.callback(process.stop)
            process.start()
        stub = FeedbackServiceStub(stack.enter_context(grpc.insecure_channel(server.address)))
        reference_stub = FeedbackServiceStub(
            stack.enter_context(grpc.insecure_channel(reference.address))
        )
        half = len(others) // 2
        import_items(stub, others[:half] + victim + others[half:])
        import_items(reference_stub, others)
        assert user_rows(attacked, VICTIM) == loaded.by_table()
        stats_answers(stub, queries)  # answers and cells cached, which the erasure must outdate

        cut = stub.EraseUser.future(pb.EraseUserRequest(user_id=VICTIM), timeout=60)
        kill_mid_erasure(server, attacked, stub)
        with pytest.raises(grpc.RpcError):
            cut.result(timeout=CALL_TIMEOUT)
        left = user_rows(attacked, VICTIM)
        assert 0 < sum(left.values()) < loaded.total, left

        server.start()
        stub = FeedbackServiceStub(stack.enter_context(grpc.insecure_channel(server.address)))
        (interrupted,) = erasures_of(stub, VICTIM)
        assert not interrupted.HasField("finish_time")
        assert interrupted.batches > 0
        # Each batch counted its rows in its own transaction: the log and the tables agree.
        counted = counts_of(interrupted.erased).by_table()
        assert {table: counted[table] + left[table] for table in left} == loaded.by_table()

        rated = query(
            attacked, "SELECT message_id FROM interactions WHERE user_id = ? LIMIT 1", [VICTIM]
        )
        refusals = victim_writes(stub, str(rated[0][0]) if rated else None)
        assert refusals == {name: VICTIM_REFUSALS[name] for name in refusals}
        assert len(refusals) >= len(VICTIM_REFUSALS) - 1
        assert user_rows(attacked, VICTIM) == left, "a refused write was stored"
        assert late_bystander_writes(stub) == ["OK"] * 3
        assert late_bystander_writes(reference_stub) == ["OK"] * 3

        finished = erase_user(stub, VICTIM)
        assert finished.id == interrupted.id
        assert finished.HasField("finish_time")
        assert finished.erased == loaded.message()  # both runs together
        assert finished.batches > interrupted.batches
        assert [entry.id for entry in erasures_of(stub, VICTIM)] == [interrupted.id]

        assert user_rows(attacked, VICTIM) == dict.fromkeys(left, 0)
        assert listed(stub, VICTIM) == NOTHING_LISTED
        answers = stats_answers(stub, queries)
        assert counts_nothing(answers[f"user {VICTIM}"])
        assert counts_nothing(answers[f"user {VICTIM}, daily"])
        assert stats_differences(answers, stats_answers(reference_stub, queries)) == []

        # Taken again once finished; the request id of an erased write is a new write again.
        again = pb.LogEventRequest(user_id=VICTIM, event_type="view", request_id=str(uuid.uuid4()))
        first = stub.LogEvents(pb.LogEventsRequest(events=[again]), timeout=CALL_TIMEOUT)
        assert first.results[0].outcome == batch_pb2.ITEM_OUTCOME_ACCEPTED
        erase_user(stub, VICTIM)
        replay = stub.LogEvents(pb.LogEventsRequest(events=[again]), timeout=CALL_TIMEOUT)
        assert replay.results[0].outcome == batch_pb2.ITEM_OUTCOME_ACCEPTED  # not DUPLICATE
        assert user_rows(attacked, VICTIM)["events"] == 1
    assert log_problems(server, reference) == []


@pytest.mark.postgres
def test_an_erasure_the_database_drops_halfway_is_unavailable_then_resumes(
    postgres_database_url: str, tmp_path: Path
) -> None:
    items, loaded = user_items(
        VICTIM, messages=3000, revotes=1000, events=5000, start=base_time(), tag="v"
    )
    with own_postgres_database() as database:
        server = ErasureServer(database, tmp_path / "server.log")
        with server, grpc.insecure_channel(server.address) as channel:
            stub = FeedbackServiceStub(channel)
            import_items(stub, items)
            cut = stub.EraseUser.future(pb.EraseUserRequest(user_id=VICTIM), timeout=60)
            while not (entries := erasures_of(stub, VICTIM)) or entries[0].batches == 0:
                time.sleep(0.005)
            allow_connections(database, False)
            try:
                with pytest.raises(grpc.RpcError) as dropped:
                    cut.result(timeout=30)
                assert dropped.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                allow_connections(database, True)
            assert 0 < sum(user_rows(database, VICTIM).values()) < loaded.total
            deadline = time.monotonic() + CALL_TIMEOUT
            while (
                outcome := verdict(
                    attempt(stub.LogEvent, pb.LogEventRequest(user_id=VICTIM, event_type="x"))
                )
            ) != REFUSED:
                assert time.monotonic() < deadline, f"a write about the victim got {outcome}"
                time.sleep(0.1)  # until the server has its connections back
            resumed = erase_user(stub, VICTIM)
            assert resumed.id == entries[0].id
            assert resumed.erased == loaded.message()
            assert sum(user_rows(database, VICTIM).values()) == 0


DEADLINE_VICTIM = "left.by.deadline@example.org"
CLOSED_VICTIM = "left.by.close@example.org"
RESET_VICTIM = "left.by.reset@example.org"


@pytest.mark.database_independent
def test_an_erasure_whose_client_leaves_finishes_on_the_server(tmp_path: Path) -> None:
    """A deadline of 0.2 s, a closed channel and a TCP reset each leave an erasure of 20,000
    rows behind: the server finishes each, and a call joining one under way gets its entry."""
    database = tmp_path / "left.sqlite3"
    start = base_time()
    items, _ = user_items(BYSTANDERS[0], messages=100, revotes=10, events=100, start=start, tag="b")
    loaded: dict[str, Rows] = {}
    for number, user_id in enumerate((DEADLINE_VICTIM, CLOSED_VICTIM, RESET_VICTIM)):
        user, loaded[user_id] = user_items(
            user_id, messages=5000, revotes=2000, events=8000, start=start, tag=f"l{number}"
        )
        items += user
    server = ErasureServer(sqlite_url(database), tmp_path / "server.log")
    with server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        import_items(stub, items)

        answer = attempt(stub.EraseUser, pb.EraseUserRequest(user_id=DEADLINE_VICTIM), 0.2)
        assert verdict(answer) == "DEADLINE_EXCEEDED"
        finished = wait_finished(stub, DEADLINE_VICTIM)
        assert finished.erased == loaded[DEADLINE_VICTIM].message()
        # Once finished, a call starts a new erasure, which finds nothing (the contract).
        again = erase_user(stub, DEADLINE_VICTIM)
        assert again.id > finished.id
        assert counts_of(again.erased) == Rows()

        leaving = grpc.insecure_channel(server.address)
        cut = FeedbackServiceStub(leaving).EraseUser.future(
            pb.EraseUserRequest(user_id=CLOSED_VICTIM), timeout=60
        )
        under_way = _started(stub, CLOSED_VICTIM)
        leaving.close()
        with pytest.raises(grpc.RpcError):
            cut.result(timeout=CALL_TIMEOUT)
        joined = erase_user(stub, CLOSED_VICTIM)
        assert joined.id == under_way.id
        assert joined.erased == loaded[CLOSED_VICTIM].message()

        asyncio.run(_erase_and_reset(server.address, RESET_VICTIM))
        assert wait_finished(stub, RESET_VICTIM).erased == loaded[RESET_VICTIM].message()

        for user_id, rows in loaded.items():
            assert user_rows(server.database_url, user_id) == dict.fromkeys(rows.by_table(), 0)
            assert counts_nothing(
                stub.GetStats(pb.GetStatsRequest(user_id=user_id), timeout=CALL_TIMEOUT)
            )
    assert log_problems(server) == []


@pytest.mark.database_independent
def test_erased_users_leave_no_trace_in_the_sqlite_file_once_vacuumed(tmp_path: Path) -> None:
    """Ten users with 1,100 rows each, among a user who stays, all erased: once `feedback-server
    vacuum` rewrote the file, it holds none of their ids. (Before, secure_delete has zeroed
    every deleted cell, but a b-tree page keeps the gap its cells moved out of until it is
    rewritten: the README says so.)"""
    database = tmp_path / "erased.sqlite3"
    erased = [f"gone.user{number}@example.org" for number in range(10)]
    items: list[pb.ImportItem] = []
    for number, user_id in enumerate(erased):
        items += user_items(
            user_id, messages=500, revotes=100, events=500, start=base_time(), tag=f"g{number}"
        )[0]
    items += user_items(
        BYSTANDERS[0], messages=200, revotes=20, events=200, start=base_time(), tag="s"
    )[0]
    server = ErasureServer(sqlite_url(database), tmp_path / "server.log")
    with server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        import_items(stub, items)
        for user_id in erased:
            erase_user(stub, user_id)
            assert sum(user_rows(server.database_url, user_id).values()) == 0
    vacuumed = subprocess.run(
        [sys.executable, "-m", "server", "vacuum", "--database-url", sqlite_url(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert file_mentions(database, BYSTANDERS[0]) == [
        database.name
    ]  # the search finds what is there
    assert [user_id for user_id in erased if file_mentions(database, user_id)] == []


def _started(stub: FeedbackServiceStub, user_id: str) -> privacy_pb2.Erasure:
    """The user's erasure entry as soon as ListErasures shows it, which must still run."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        entries = erasures_of(stub, user_id)
        if entries:
            assert not entries[0].HasField("finish_time"), (
                "the erasure ended before the client left"
            )
            return entries[0]
        time.sleep(0.005)
    raise AssertionError(f"no erasure of {user_id} started")


async def _erase_and_reset(address: str, user_id: str) -> None:
    """EraseUser over a hand-made HTTP/2 connection that a TCP reset ends once the call is sent:
    a client process that dies mid-call."""
    connection = await RawGrpcConnection.connect(address)
    await connection.open_stream(
        "EraseUser", pb.EraseUserRequest(user_id=user_id).SerializeToString()
    )
    await asyncio.sleep(0.1)
    connection.reset_tcp()
