"""Calls any FeedbackService method over a real channel and checks what a client mistake may do.

The rules every answer must keep: a status a client can act on (never UNKNOWN or INTERNAL, and
UNIMPLEMENTED only for methods the server does not implement yet), a rich status that parses,
and rows that match the answer exactly (no partial writes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import sqlalchemy
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings

from llmfeedback.proto.feedback.v1 import feedback_service_pb2
from server.request_parsing import implements
from server.servicer import FeedbackServicer
from server.status import MALFORMED_REQUEST

SERVICE = feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"]
METHODS: tuple[MethodDescriptor, ...] = tuple(SERVICE.methods)
TABLES = ("interactions", "feedback", "events")

SINGLE_WRITES = {
    "RecordInteraction": "interactions",
    "SubmitFeedback": "feedback",
    "LogEvent": "events",
}
BATCH_WRITES = {
    "RecordInteractions": "interactions",
    "SubmitFeedbackBatch": "feedback",
    "LogEvents": "events",
}

CLIENT_MISTAKE_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
"""What a request may get from a healthy, idle server, whatever it contains."""

EXAMPLES_VARIABLE = "FUZZ_EXAMPLES"
_EXAMPLES = int(os.environ.get(EXAMPLES_VARIABLE, "0") or 0)


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings: `default_examples` (or FUZZ_EXAMPLES) examples, no flaky deadlines.

    CI runs derandomized, so a run is reproducible; a FUZZ_EXAMPLES run explores new inputs each
    time and prints the blob that reproduces a failure. No example database is written.
    """
    return settings(
        max_examples=_EXAMPLES or default_examples,
        deadline=None,
        derandomize=not _EXAMPLES,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # one server serves every example on purpose
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def implemented(method: MethodDescriptor) -> bool:
    """Whether the server serves `method` (else it answers UNIMPLEMENTED)."""
    return implements(FeedbackServicer, method.name)


def request_class(method: MethodDescriptor) -> type[Message]:
    """The generated class of the method's request message."""
    return message_factory.GetMessageClass(method.input_type)


@dataclass
class Outcome:
    """How a call ended: its code, every response received, and the rich status on failure."""

    code: grpc.StatusCode
    details: str = ""
    responses: list[Message] = field(default_factory=list)
    status: status_pb2.Status | None = None

    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The ErrorInfo detail of a failed call, if it has one."""
        for detail in self.status.details if self.status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info
        return None

    def is_malformed_request(self) -> bool:
        """Whether the call failed because its bytes did not decode."""
        info = self.error_info()
        return (
            self.code == grpc.StatusCode.INVALID_ARGUMENT
            and info is not None
            and info.reason == MALFORMED_REQUEST
        )


def call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    request: Message | bytes | list[Message] | list[bytes],
    timeout: float = 60,
) -> Outcome:
    """Call `method` with a message, or raw bytes that go to the server untouched.

    Client-streaming methods take a list: the messages (or byte strings) of the stream.
    """
    path = f"/{SERVICE.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    options: dict[str, Any] = {
        "request_serializer": _serialize,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming:
            assert isinstance(request, list)
            stream: Iterator[Any] = iter(request)
            responses = [channel.stream_unary(path, **options)(stream, timeout=timeout)]
        elif method.name.startswith("Watch"):
            # A watch never ends by itself: a valid one answers at once with its start marker.
            watch = channel.unary_stream(path, **options)(request, timeout=timeout)
            responses = [next(iter(watch))]
            watch.cancel()  # type: ignore[no-untyped-call]
        elif method.server_streaming:
            responses = list(channel.unary_stream(path, **options)(request, timeout=timeout))
        else:
            responses = [channel.unary_unary(path, **options)(request, timeout=timeout)]
    except grpc.RpcError as error:
        failed = cast(grpc.Call, error)  # every RpcError a channel raises is also its Call
        return Outcome(failed.code(), failed.details() or "", [], rpc_status.from_call(failed))
    return Outcome(grpc.StatusCode.OK, "", responses)


def _serialize(request: Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def assert_precise(method: MethodDescriptor, outcome: Outcome) -> None:
    """The call got a status a client can act on, with a message and details that parse."""
    if not implemented(method):
        assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
        return
    assert outcome.code in CLIENT_MISTAKE_CODES, f"{method.name}: {outcome.code} {outcome.details}"
    if outcome.code != grpc.StatusCode.OK:
        assert outcome.details, outcome
        assert outcome.status is not None, f"{method.name}: no google.rpc.Status trailer"
        assert outcome.status.code == outcome.code.value[0]


def assert_serving(channel: grpc.Channel) -> None:
    """The server still reports SERVING, overall and for FeedbackService."""
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE.full_name):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


_STORED = {"feedback": "(SELECT count(*) FROM feedback) + (SELECT count(*) FROM feedback_history)"}
"""A vote that replaces another moves that one to feedback_history: count every vote stored."""


class RowCounter:
    """Counts the stored interactions, feedback and events, read straight from the database."""

    def __init__(self, database_url: str) -> None:
        self._engine = sqlalchemy.create_engine(database_url)
        self._query = sqlalchemy.text(
            " UNION ALL ".join(
                f"SELECT '{table}', {_STORED.get(table, f'(SELECT count(*) FROM {table})')}"
                for table in TABLES
            )
        )

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        with self._engine.connect() as connection:
            return {str(name): int(count) for name, count in connection.execute(self._query)}

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()


def added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Rows added per table between two counts."""
    return {table: after[table] - before[table] for table in TABLES}


def assert_rows_match(
    method: MethodDescriptor, outcome: Outcome, rows_added: dict[str, int], items: int
) -> None:
    """Rows added agree with the answer: nothing unless OK, and exactly what was accepted.

    `items` is how many items a batch or stream request (Ingest, ImportHistory) carried.
    """
    nothing = dict.fromkeys(TABLES, 0)
    name = method.name
    if outcome.code != grpc.StatusCode.OK:
        if name not in STREAM_WRITES:  # they commit as they go; their own tests check counts
            assert rows_added == nothing, f"{name} failed with {outcome.code} but stored rows"
        return
    response: Any = outcome.responses[0] if outcome.responses else None
    if name in SINGLE_WRITES:
        table = SINGLE_WRITES[name]
        assert rows_added[table] in (0, 1), rows_added
        assert {t: n for t, n in rows_added.items() if t != table} == dict.fromkeys(
            set(TABLES) - {table}, 0
        ), rows_added
    elif name in BATCH_WRITES:
        table = BATCH_WRITES[name]
        assert len(response.results) == items
        assert [r.index for r in response.results] == list(range(items))
        counted = response.accepted_count + response.rejected_count + response.duplicate_count
        assert counted == items, response
        assert rows_added == {**nothing, table: response.accepted_count}, (rows_added, response)
    elif name in STREAM_WRITES:
        assert response.received_count == items
        counted = response.accepted_count + response.rejected_count + response.duplicate_count
        assert counted == items, response
        assert sum(rows_added.values()) == response.accepted_count, (rows_added, response)
    elif name in ERASURES:
        erased = response.erasure.erased
        removed = {
            "interactions": erased.interactions,
            "feedback": erased.feedback + erased.replaced_votes,
            "events": erased.events,
        }
        assert rows_added == {table: -removed[table] for table in TABLES}, (rows_added, response)
    else:
        assert rows_added == nothing, f"{name} is a read but stored rows"


STREAM_WRITES = frozenset({"Ingest", "ImportHistory"})
"""Client-streamed writes: each message holds items, the answer counts them."""

ERASURES = frozenset({"EraseUser", "EraseConversation"})
"""Erasures: they store no record and remove exactly the ones their answer counts."""


def item_count(method: MethodDescriptor, request: Any) -> int:
    """Items of a batch request or a stream of writes (0 for other methods)."""
    if method.name in STREAM_WRITES:
        return sum(len(message.items) for message in request)
    if method.name in BATCH_WRITES:
        (repeated,) = method.input_type.fields
        return len(getattr(request, repeated.name))
    return 0
