"""ExportUserData against hostile readers on a real `feedback-server` process: clients that open
the stream and never read, read a little and vanish, or open twenty at once. The server must
hold one chunk per stream at most, end stalled streams itself, free their slots, and refuse what
is over the export limits. And a user's export, like an erasure, must count every replaced vote
once, even those whose vote ids repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from reliability.hostile.raw_h2 import RawGrpcConnection
from reliability.hostile.rpc_log import RpcLog
from reliability.hostile.server import HostileServer
from tests.databases import sqlite_url
from tests.e2e.auth_support import outcome_of
from tests.hostile.erasure_support import (
    CALL_TIMEOUT,
    TOO_MANY_EXPORTS,
    ErasureServer,
    base_time,
    erase_user,
    import_items,
    log_problems,
    own_postgres_database,
    query,
    user_items,
    user_rows,
)

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(110)]

EXPORTED = "exported.person@example.org"
STALL_TIMEOUT_SECONDS = 3.0
EXPORTS_PER_CALLER = 4
"""The server's default max_exports_per_caller; every client here is one caller (127.0.0.1)."""
RSS_GROWTH_LIMIT_MB = 100.0
EXPORT_METHOD = "/feedback.v1.FeedbackService/ExportUserData"
LOG_QUIET_SECONDS = 0.3
END_SLACK_SECONDS = 5.0
"""Beyond the stall timeout: the watchdog's tick and the log line."""


class ExportServer:
    """One server for the module: a user with 50,000 records, a short stall timeout, per-RPC log
    lines and sampled RSS."""

    def __init__(self, server: HostileServer, records: int) -> None:
        self.server = server
        self.records = records
        self.log = RpcLog(server.log_file)
        self.channel = grpc.insecure_channel(server.address)
        self.stub = FeedbackServiceStub(self.channel)

    def full_export(self) -> Counter[str]:
        """Records per kind of one ordinary export of the user, which must end OK."""
        counts: Counter[str] = Counter()
        for chunk in self.stub.ExportUserData(
            pb.ExportUserDataRequest(user_id=EXPORTED), timeout=60
        ):
            kinds = [
                name
                for name in ("interactions", "feedback", "replaced_votes", "events")
                if len(getattr(chunk, name))
            ]
            assert len(kinds) == 1, f"a chunk holds {kinds}"
            counts[kinds[0]] += len(getattr(chunk, kinds[0]))
        return counts

    def quiet_mark(self) -> int:
        """The log's size once the lines of calls that just ended are in (the server logs a
        call after its client has seen the end)."""
        size = self.log.mark()
        while True:
            time.sleep(LOG_QUIET_SECONDS)
            if (now := self.log.mark()) == size:
                return size
            size = now

    def ended_since(self, mark: int, expected: int, timeout: float) -> Counter[str]:
        """Status codes of the ExportUserData calls the server logged after `mark`."""
        return self.log.settle(mark, [EXPORT_METHOD], expected=expected, timeout=timeout)


@pytest.fixture(scope="module")
def export_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportServer]:
    directory = tmp_path_factory.mktemp("exports")
    items, rows = user_items(
        EXPORTED, messages=12_500, revotes=5_000, events=20_000, start=base_time(), tag="e"
    )
    others, _ = user_items(
        "bystander-1", messages=100, revotes=10, events=100, start=base_time(), tag="b"
    )
    server = HostileServer(
        sqlite_url(directory / "exports.sqlite3"),
        directory / "server.log",
        {"FEEDBACK_STREAM_STALL_TIMEOUT": str(STALL_TIMEOUT_SECONDS)},
    )
    with server:
        running = ExportServer(server, rows.total)
        import_items(running.stub, others + items)
        assert rows.total == 50_000
        yield running
        running.channel.close()


def test_a_user_export_streams_each_record_once_one_kind_per_message(
    export_server: ExportServer,
) -> None:
    assert export_server.full_export() == Counter(
        {"interactions": 12_500, "feedback": 12_500, "replaced_votes": 5_000, "events": 20_000}
    )
    replaced = next(
        chunk.replaced_votes
        for chunk in export_server.stub.ExportUserData(
            pb.ExportUserDataRequest(user_id=EXPORTED), timeout=60
        )
        if chunk.replaced_votes
    )
    assert all(vote.HasField("replace_time") and vote.replaced_by_id for vote in replaced)


async def _stalled_streams(address: str) -> list[RawGrpcConnection]:
    """Every export slot of this caller taken by a stream that reads nothing: windows of 0 and
    1 KiB that are never opened further."""
    body = pb.ExportUserDataRequest(user_id=EXPORTED).SerializeToString()
    connections = []
    for number in range(EXPORTS_PER_CALLER):
        connection = await RawGrpcConnection.connect(
            address, initial_window=0 if number % 2 == 0 else 1024, acknowledge_bytes=0
        )
        await connection.open_stream("ExportUserData", body)
        connections.append(connection)
    return connections


def test_exports_nobody_reads_hold_little_and_the_stall_timeout_ends_them(
    export_server: ExportServer,
) -> None:
    server = export_server.server
    export_server.full_export()  # the server's memory after a whole export: the baseline
    before = server.rss_mb()
    assert before is not None
    mark = export_server.quiet_mark()

    async def stall_and_probe() -> tuple[str, Counter[str]]:
        connections = await _stalled_streams(server.address)
        try:
            await asyncio.sleep(0.5)
            # The four stalled streams hold this caller's slots: a fifth export is refused.
            refused = await asyncio.to_thread(_export_outcome, server.address)
            ended = await asyncio.to_thread(
                export_server.ended_since,
                mark,
                EXPORTS_PER_CALLER + 1,
                STALL_TIMEOUT_SECONDS + END_SLACK_SECONDS,
            )
            return refused, ended
        finally:
            await asyncio.gather(*(connection.close() for connection in connections))

    refused, ended = asyncio.run(stall_and_probe())
    assert refused == f"RESOURCE_EXHAUSTED {TOO_MANY_EXPORTS}"
    # The refused probe, and each stalled stream ended by the server (SLOW_READER).
    assert ended == Counter({"RESOURCE_EXHAUSTED": EXPORTS_PER_CALLER + 1})
    assert export_server.full_export().total() == export_server.records  # the slots are free
    after = server.rss_mb()
    assert after is not None
    peak = server.peak_rss_mb
    print(f"RSS before {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB; {dict(ended)}")
    assert server.peak_rss_mb - before < RSS_GROWTH_LIMIT_MB
    assert server.alive()


def _export_outcome(address: str) -> str:
    """How an ordinary export of the user ends: "OK" or code and ErrorInfo reason."""
    with grpc.insecure_channel(address) as channel:
        try:
            for _ in FeedbackServiceStub(channel).ExportUserData(
                pb.ExportUserDataRequest(user_id=EXPORTED), timeout=60
            ):
                pass
        except grpc.RpcError as error:
            failure = outcome_of(error)
            return f"{failure.code.name} {failure.reason}".strip()
    return "OK"


def test_readers_that_take_a_little_and_vanish_free_their_slots(
    export_server: ExportServer,
) -> None:
    server = export_server.server
    before = server.rss_mb()
    assert before is not None
    mark = export_server.quiet_mark()
    for round_number in range(3):  # more rounds than slots: a leaked slot would refuse one
        channels = [grpc.insecure_channel(server.address) for _ in range(EXPORTS_PER_CALLER)]
        for channel in channels:
            stream = iter(
                FeedbackServiceStub(channel).ExportUserData(
                    pb.ExportUserDataRequest(user_id=EXPORTED), timeout=60
                )
            )
            next(stream)
            next(stream)
        for channel in channels:
            channel.close()
        ended = export_server.ended_since(
            mark, EXPORTS_PER_CALLER * (round_number + 1), END_SLACK_SECONDS
        )
        assert ended == Counter({"CANCELLED": EXPORTS_PER_CALLER * (round_number + 1)})

    mark = export_server.quiet_mark()
    asyncio.run(_take_and_reset(server.address))
    ended = export_server.ended_since(mark, EXPORTS_PER_CALLER, END_SLACK_SECONDS)
    assert ended.total() == EXPORTS_PER_CALLER, ended  # how they are logged: see the next test
    assert export_server.full_export().total() == export_server.records  # the slots are free
    after = server.rss_mb()
    assert after is not None
    assert after - before < RSS_GROWTH_LIMIT_MB
    assert server.alive()


async def _take_and_reset(address: str) -> None:
    """Exports whose clients take 300 KB and then vanish with a TCP reset while the server is
    sending them more than their window holds."""
    body = pb.ExportUserDataRequest(user_id=EXPORTED).SerializeToString()
    connections = [
        await RawGrpcConnection.connect(address, acknowledge_bytes=300_000)
        for _ in range(EXPORTS_PER_CALLER)
    ]
    for connection in connections:
        stream = await connection.open_stream("ExportUserData", body)
        await asyncio.wait_for(stream.got_data.wait(), CALL_TIMEOUT)
    await asyncio.sleep(0.2)
    for connection in connections:
        connection.reset_tcp()


def test_an_export_cut_by_a_reset_mid_message_is_logged_cancelled_without_a_traceback(
    export_server: ExportServer,
) -> None:
    mark = export_server.quiet_mark()
    asyncio.run(_take_and_reset(export_server.server.address))
    ended = export_server.ended_since(mark, EXPORTS_PER_CALLER, END_SLACK_SECONDS)
    with export_server.server.log_file.open("rb") as log:
        log.seek(mark)
        written = log.read().decode(errors="replace")
    assert (ended, "Traceback" in written) == (Counter({"CANCELLED": EXPORTS_PER_CALLER}), False)


def test_twenty_exports_at_once_are_refused_beyond_the_limit_not_crashed(
    export_server: ExportServer,
) -> None:
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def export() -> None:
        barrier.wait()
        outcomes.append(_export_outcome(export_server.server.address))

    threads = [threading.Thread(target=export) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    counted = Counter(outcomes)
    assert counted.total() == 20
    assert set(counted) == {"OK", f"RESOURCE_EXHAUSTED {TOO_MANY_EXPORTS}"}, counted
    print(f"20 exports at once: {dict(counted)}")
    # At most 4 stream at once; one that finished early lets a late thread in.
    assert counted["OK"] >= 1
    assert counted[f"RESOURCE_EXHAUSTED {TOO_MANY_EXPORTS}"] >= 20 - 2 * EXPORTS_PER_CALLER
    assert export_server.server.alive()
    assert export_server.full_export().total() == export_server.records


# ---- replaced votes whose ids repeat ----


def _votes_with_repeated_ids(stub: FeedbackServiceStub, user_id: str, messages: int) -> None:
    """`messages` votes of the user, each voted again but the last, then the newest vote voted
    twice more. Replacing the vote with the highest id lets SQLite give the new vote the same id
    (a rowid is the largest plus one), so the user's replaced votes end with one id twice: at
    the 500th/501st (messages=500) or 1000th/1001st (1000) replaced vote, an erasure batch's or
    an export chunk's edge."""
    votes = [
        pb.SubmitFeedbackRequest(message_id=f"{user_id}-{n}", user_id=user_id, score=1)
        for n in range(messages)
    ]
    votes += [
        pb.SubmitFeedbackRequest(message_id=f"{user_id}-{n}", user_id=user_id, score=2)
        for n in range(messages - 1)
    ]
    for start in range(0, len(votes), 250):
        answer = stub.SubmitFeedbackBatch(
            pb.SubmitFeedbackBatchRequest(feedback=votes[start : start + 250]), timeout=30
        )
        assert answer.accepted_count == len(votes[start : start + 250])
    for score in (3, 4):
        stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id=f"{user_id}-{messages - 2}", user_id=user_id, score=score
            ),
            timeout=CALL_TIMEOUT,
        )


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite"),
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ],
)
def test_replaced_votes_with_repeated_ids_are_exported_and_counted_once_each(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with own_database(kind, tmp_path, request) as database:
        server = ErasureServer(database, tmp_path / "server.log")
        with server, grpc.insecure_channel(server.address) as channel:
            stub = FeedbackServiceStub(channel)
            _votes_with_repeated_ids(stub, "exported-votes", 1000)
            _votes_with_repeated_ids(stub, "erased-votes", 500)
            stored = user_rows(database, "exported-votes")["feedback_history"]
            exported = sum(
                len(chunk.replaced_votes)
                for chunk in stub.ExportUserData(
                    pb.ExportUserDataRequest(user_id="exported-votes"), timeout=60
                )
            )
            replaced = user_rows(database, "erased-votes")["feedback_history"]
            erasure = erase_user(stub, "erased-votes")
            repeated = query(
                database,
                "SELECT count(*) - count(DISTINCT id) FROM feedback_history WHERE user_id = ?",
                ["exported-votes"],
            )[0][0]
            print(
                f"{kind}: {repeated} repeated ids; exported {exported} of {stored} replaced votes; "
                f"erasure counted {erasure.erased.replaced_votes} of {replaced}"
            )
            assert (exported, erasure.erased.replaced_votes) == (stored, replaced)
        assert log_problems(server) == []


@contextlib.contextmanager
def own_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database of the kind: a SQLite file, or a PostgreSQL database of the test's own."""
    if kind == "sqlite":
        yield sqlite_url(tmp_path / "votes.sqlite3")
        return
    request.getfixturevalue("postgres_database_url")  # skips when PostgreSQL is unreachable
    with own_postgres_database() as url:
        yield url
