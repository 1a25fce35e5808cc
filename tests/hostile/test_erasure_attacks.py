"""The erasure RPCs abused by their callers against a real `feedback-server` process: floods of
EraseUser for many users and for one, malformed ids and page tokens, and keys without the admin
scope. The server must bound the erasures it runs, keep answering reads, refuse precisely, and
erase nothing for a caller who may not.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import access_pb2, privacy_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.service.api_keys import prefix_of
from tests.databases import sqlite_url
from tests.e2e.auth_support import Metadata, Outcome, bearer, create_key, outcome_of
from tests.hostile.erasure_support import (
    CALL_TIMEOUT,
    ERASE_TIMEOUT,
    ERASURES_IN_FLIGHT,
    ErasureServer,
    Rows,
    attempt,
    base_time,
    erase_user,
    erasures_of,
    field_violations,
    import_items,
    log_problems,
    seconds,
    user_items,
    user_rows,
    verdict,
)

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(110)]

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
FLOODED_USERS = 50
MAX_ERASURES_IN_FLIGHT = 4
"""The contract's bound on the subjects one server erases at once."""
STATS_P99_LIMIT_SECONDS = 1.0
MAX_ATTEMPTS = 200


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ErasureServer]:
    """A server on a fresh SQLite file, stopped after the test."""
    with ErasureServer(
        sqlite_url(tmp_path / "attacked.sqlite3"), tmp_path / "server.log"
    ) as server:
        yield server


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


class Flood:
    """Callers that each erase one user, all starting at once, retrying as RetryInfo says."""

    def __init__(self, stub: FeedbackServiceStub, users: list[str]) -> None:
        self.stub = stub
        self.users = users
        self.first_answers: Counter[str] = Counter()
        self.refusals: list[Outcome] = []
        self._start = threading.Barrier(len(users))
        self._lock = threading.Lock()

    def erase_all(self) -> dict[str, privacy_pb2.Erasure]:
        """Every user's finished erasure, once every caller got one."""
        with ThreadPoolExecutor(len(self.users)) as pool:
            return dict(zip(self.users, pool.map(self._erase, self.users), strict=True))

    def _erase(self, user_id: str) -> privacy_pb2.Erasure:
        jitter = random.Random(user_id)
        self._start.wait()
        for number in range(MAX_ATTEMPTS):
            answer = attempt(
                self.stub.EraseUser, pb.EraseUserRequest(user_id=user_id), ERASE_TIMEOUT
            )
            with self._lock:
                if number == 0:
                    self.first_answers[verdict(answer)] += 1
                if not isinstance(answer, Outcome):
                    return answer.erasure
                self.refusals.append(answer)
            assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{user_id}: {answer}"
            time.sleep((answer.retry_delay or 1.0) * jitter.uniform(0.2, 1.0))
        raise AssertionError(f"{user_id} was not erased in {MAX_ATTEMPTS} attempts")


class StatsReader:
    """GetStats calls one after another on a thread, timed, until stopped."""

    def __init__(self, stub: FeedbackServiceStub) -> None:
        self.latencies: list[float] = []
        self._stub = stub
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> StatsReader:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=CALL_TIMEOUT)

    def _read(self) -> None:
        while not self._done.is_set():
            began = time.perf_counter()
            self._stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT)
            self.latencies.append(time.perf_counter() - began)
            time.sleep(0.01)


@pytest.mark.database_independent
def test_fifty_users_erased_at_once_run_four_at_a_time_while_reads_keep_answering(
    sqlite_server: ErasureServer,
) -> None:
    """50 concurrent EraseUser for 50 users of 950 rows: the erasure log's own times show at
    most 4 under way at any moment, the others are refused with ERASURES_IN_FLIGHT and a
    RetryInfo delay, GetStats keeps its p99 under a second, and retrying erases all 50."""
    users = [f"flooded-{number}" for number in range(FLOODED_USERS)]
    items: list[pb.ImportItem] = []
    loaded: dict[str, Rows] = {}
    for number, user_id in enumerate(users):
        user, loaded[user_id] = user_items(
            user_id, messages=200, revotes=50, events=500, start=base_time(), tag=f"f{number}"
        )
        items += user
    with grpc.insecure_channel(sqlite_server.address) as channel:
        stub = FeedbackServiceStub(channel)
        import_items(stub, items)
        flood = Flood(stub, users)
        with StatsReader(stub) as reader:
            erasures = flood.erase_all()

        p99 = _percentile(reader.latencies, 0.99)
        print(
            f"first answers {dict(flood.first_answers)}; {len(flood.refusals)} refusals; "
            f"GetStats p99 {p99:.3f} s over {len(reader.latencies)} calls"
        )
        assert flood.first_answers[f"RESOURCE_EXHAUSTED {ERASURES_IN_FLIGHT}"] >= FLOODED_USERS // 2
        assert {verdict(refusal) for refusal in flood.refusals} == {
            f"RESOURCE_EXHAUSTED {ERASURES_IN_FLIGHT}"
        }
        assert all(r.retry_delay is not None and r.retry_delay > 0 for r in flood.refusals)
        assert p99 < STATS_P99_LIMIT_SECONDS
        under_way = [(seconds(e.start_time), seconds(e.finish_time)) for e in erasures.values()]
        assert _most_at_once(under_way) <= MAX_ERASURES_IN_FLIGHT
        for user_id, erasure in erasures.items():
            assert erasure.erased == loaded[user_id].message()
            assert sum(user_rows(sqlite_server.database_url, user_id).values()) == 0
        assert stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT).events.total_count == 0
    assert log_problems(sqlite_server) == []


@pytest.mark.database_independent
def test_fifty_erasures_of_one_user_at_once_are_one_erasure(sqlite_server: ErasureServer) -> None:
    user_id = "one.flooded@example.org"
    items, rows = user_items(
        user_id, messages=5000, revotes=2000, events=8000, start=base_time(), tag="o"
    )
    with grpc.insecure_channel(sqlite_server.address) as channel:
        stub = FeedbackServiceStub(channel)
        import_items(stub, items)
        request = pb.EraseUserRequest(user_id=user_id)
        calls = [
            stub.EraseUser.future(request, timeout=ERASE_TIMEOUT) for _ in range(FLOODED_USERS)
        ]
        erasures = [future.result().erasure for future in calls]
        assert all(erasure == erasures[0] for erasure in erasures)
        assert erasures[0].erased == rows.message()
        assert [entry.id for entry in erasures_of(stub, user_id)] == [erasures[0].id]
        assert sum(user_rows(sqlite_server.database_url, user_id).values()) == 0
    assert log_problems(sqlite_server) == []


# ---- malformed requests ----


def _token(body: object) -> str:
    """A page token of our format (URL-safe base64 of JSON) around any body."""
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _refused_fields(stub: FeedbackServiceStub, method: str, request: object) -> set[str]:
    """The BadRequest fields of the INVALID_ARGUMENT the call must get."""
    answer = attempt(getattr(stub, method), request)
    assert isinstance(answer, Outcome), (method, request)
    assert answer.code == INVALID_ARGUMENT, (
        method,
        request,
        answer,
    )
    return field_violations(answer)


@pytest.mark.database_independent
def test_malformed_erasure_requests_are_refused_with_the_field_at_fault(
    sqlite_server: ErasureServer,
) -> None:
    with grpc.insecure_channel(sqlite_server.address) as channel:
        stub = FeedbackServiceStub(channel)
        kept = user_items("kept-user", messages=3, revotes=1, events=3, start=base_time(), tag="k")
        import_items(stub, kept[0])

        for user_id in ("", "u" * 129, "a\x00b", "\x00", "kept user", "kept-user\n", "ü" * 10):
            assert _refused_fields(stub, "EraseUser", pb.EraseUserRequest(user_id=user_id)) == {
                "user_id"
            }, repr(user_id)
        for conversation_id in ("", "c" * 129, "c\x00", "has@sign"):
            request = pb.EraseConversationRequest(conversation_id=conversation_id)
            assert _refused_fields(stub, "EraseConversation", request) == {"conversation_id"}
        assert user_rows(sqlite_server.database_url, "kept-user") == kept[1].by_table()
        longest = erase_user(stub, "u" * 128)  # the longest id is an id
        assert longest.HasField("finish_time")

        with pytest.raises(grpc.RpcError) as exported:
            list(
                stub.ExportUserData(
                    pb.ExportUserDataRequest(user_id="a\x00b"), timeout=CALL_TIMEOUT
                )
            )
        refused = outcome_of(exported.value)
        assert (refused.code, field_violations(refused)) == (INVALID_ARGUMENT, {"user_id"})

        not_utf8 = channel.unary_unary(
            "/feedback.v1.FeedbackService/EraseUser",
            request_serializer=lambda body: body,
            response_deserializer=pb.EraseUserResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as unparsed:
            not_utf8(b"\x0a\x02\xff\xfe", timeout=CALL_TIMEOUT)  # user_id of two bytes, not UTF-8
        assert outcome_of(unparsed.value).code == INVALID_ARGUMENT

        listed_feedback = stub.ListFeedback(
            pb.ListFeedbackRequest(page_size=1), timeout=CALL_TIMEOUT
        )
        erase_user(stub, "kept-user")
        erase_user(stub, "kept-user")  # a second erasure of the user: three entries in the log
        of_user = stub.ListErasures(
            pb.ListErasuresRequest(page_size=1, user_id="kept-user"), timeout=CALL_TIMEOUT
        )
        garbage = {
            "garbage": "garbage",
            "not base64": "!!!###",
            "too long": "A" * 300,
            "a JSON list": _token([1, 2]),
            "a JSON string": _token("c"),
            "cursor 0": _token({"c": 0, "f": "x"}),
            "cursor 2**63": _token({"c": 2**63, "f": "x"}),
            "cursor 1.5": _token({"c": 1.5, "f": "x"}),
            "cursor true": _token({"c": True, "f": "x"}),
            "another fingerprint": _token({"c": 1, "f": "0" * 16}),
            "ListFeedback's token": listed_feedback.next_page_token,
            "the token of another filter": of_user.next_page_token,
        }
        for name, token in garbage.items():
            assert _refused_fields(
                stub, "ListErasures", pb.ListErasuresRequest(page_token=token)
            ) == {"page_token"}, name
        malformed_lists: tuple[tuple[pb.ListErasuresRequest, str], ...] = (
            (
                pb.ListErasuresRequest(user_id="kept-user", conversation_id="conv-k-0"),
                "conversation_id",
            ),
            (pb.ListErasuresRequest(page_size=-1), "page_size"),
            (pb.ListErasuresRequest(user_id="a\x00b"), "user_id"),
            (pb.ListErasuresRequest(conversation_id="has@sign"), "conversation_id"),
        )
        for listing, field in malformed_lists:
            assert field in _refused_fields(stub, "ListErasures", listing), listing

        walked: list[int] = []
        token = ""
        while True:
            page = stub.ListErasures(
                pb.ListErasuresRequest(page_size=1, page_token=token), timeout=CALL_TIMEOUT
            )
            walked += [entry.id for entry in page.erasures]
            if not (token := page.next_page_token):
                break
        assert walked == sorted(walked, reverse=True)
        assert len(walked) == 3
        everything = stub.ListErasures(
            pb.ListErasuresRequest(page_size=2**31 - 1), timeout=CALL_TIMEOUT
        )
        assert [entry.id for entry in everything.erasures] == walked
    assert log_problems(sqlite_server) == []


# ---- permissions ----


ERASURE_RPCS = ("EraseUser", "EraseConversation", "ListErasures", "ExportUserData")
KEPT = "kept.by.scopes@example.org"


def _call_as(stub: FeedbackServiceStub, name: str, metadata: Metadata) -> object:
    """The answer of one erasure RPC about KEPT (its first conversation for EraseConversation),
    or the Outcome of its failure."""
    try:
        if name == "EraseUser":
            return stub.EraseUser(pb.EraseUserRequest(user_id=KEPT), metadata=metadata, timeout=30)
        if name == "EraseConversation":
            request = pb.EraseConversationRequest(conversation_id="conv-p-0")
            return stub.EraseConversation(request, metadata=metadata, timeout=30)
        if name == "ListErasures":
            return stub.ListErasures(pb.ListErasuresRequest(), metadata=metadata, timeout=30)
        chunks = stub.ExportUserData(
            pb.ExportUserDataRequest(user_id=KEPT), metadata=metadata, timeout=30
        )
        return list(chunks)
    except grpc.RpcError as error:
        return outcome_of(error)


@pytest.mark.database_independent
def test_only_admin_keys_reach_the_erasure_rpcs(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path / "keyed.sqlite3")
    admin = create_key(database, "admin", name="erasure admin")
    items, rows = user_items(KEPT, messages=30, revotes=10, events=30, start=base_time(), tag="p")
    server = ErasureServer(database, tmp_path / "server.log", ["--auth", "keys"])
    with server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)

        def make(scope: access_pb2.Scope.ValueType) -> str:
            request = pb.CreateApiKeyRequest(name="erasure attack", scopes=[scope])
            return str(
                stub.CreateApiKey(request, metadata=bearer(admin), timeout=CALL_TIMEOUT).secret
            )

        ingest, read = make(access_pb2.SCOPE_INGEST), make(access_pb2.SCOPE_READ)
        imported = stub.ImportHistory(
            iter([pb.ImportHistoryRequest(items=items)]), metadata=bearer(admin), timeout=60
        )
        assert imported.accepted_count == len(items)

        credentials = {"no key": (), "ingest": bearer(ingest), "read": bearer(read)}
        verdicts = {
            (name, key): verdict(_call_as(stub, name, metadata))
            for name in ERASURE_RPCS
            for key, metadata in credentials.items()
        }
        assert verdicts == {
            **{(name, "no key"): "UNAUTHENTICATED API_KEY_MISSING" for name in ERASURE_RPCS},
            **{(name, "ingest"): "PERMISSION_DENIED MISSING_SCOPE" for name in ERASURE_RPCS},
            **{(name, "read"): "PERMISSION_DENIED MISSING_SCOPE" for name in ERASURE_RPCS},
        }
        assert user_rows(database, KEPT) == rows.by_table(), "a refused call erased rows"

        exported = _call_as(stub, "ExportUserData", bearer(admin))
        assert isinstance(exported, list)
        assert (
            sum(
                len(c.interactions) + len(c.feedback) + len(c.replaced_votes) + len(c.events)
                for c in exported
            )
            == rows.total
        )
        by_conversation = _call_as(stub, "EraseConversation", bearer(admin))
        assert isinstance(by_conversation, pb.EraseConversationResponse)
        assert by_conversation.erasure.HasField("finish_time")
        by_user = _call_as(stub, "EraseUser", bearer(admin))
        assert isinstance(by_user, pb.EraseUserResponse)
        assert by_user.erasure.requested_by == prefix_of(admin)
        assert sum(user_rows(database, KEPT).values()) == 0
        log = _call_as(stub, "ListErasures", bearer(admin))
        assert isinstance(log, pb.ListErasuresResponse)
        assert [entry.id for entry in log.erasures] == [
            by_user.erasure.id,
            by_conversation.erasure.id,
        ]
    assert log_problems(server) == []
