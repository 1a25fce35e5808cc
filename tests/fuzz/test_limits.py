"""Every documented input limit on a real server: accepted at the limit, rejected past it."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from llmfeedback.proto.feedback.v1 import batch_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from tests.fuzz.harness import (
    METHODS,
    SERVICE,
    Outcome,
    RowCounter,
    added,
    call,
    implemented,
    request_class,
)
from tests.fuzz.strategies import nested_object, struct_of

MIB = 1024 * 1024
NOTHING = {"interactions": 0, "feedback": 0, "events": 0}


def _call(channel: grpc.Channel, name: str, request: Message | list[Message]) -> Outcome:
    return call(channel, SERVICE.methods_by_name[name], request)


def _violations(outcome: Outcome) -> dict[str, str]:
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.status is not None
    found: dict[str, str] = {}
    for detail in outcome.status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


def _interaction(**fields: Any) -> pb.RecordInteractionRequest:
    return pb.RecordInteractionRequest(conversation_id="c", **fields)


def _event(**fields: Any) -> pb.LogEventRequest:
    return pb.LogEventRequest(user_id="u", event_type="t", **fields)


def _padded(key: str, size: int) -> dict[str, Any]:
    """A one-key object whose Struct is exactly `size` bytes serialized."""
    value = {key: ""}
    pad = size - struct_of(value).ByteSize()
    value[key] = "x" * pad
    while struct_of(value).ByteSize() > size:  # the length prefixes grew with the pad
        value[key] = value[key][:-1]
    assert struct_of(value).ByteSize() == size
    return value


def test_struct_keys_and_list_items_count_through_all_nesting(channel: grpc.Channel) -> None:
    flat = {f"k{i}": None for i in range(1000)}
    spread = {"a": list(range(498)), "b": {"c": [True] * 498}}  # 2 + 498 + 1 + 498 = 999 entries
    over = {**flat, "one_more": None}
    deep_over = {"a": list(range(499)), "b": {"c": [True] * 498}}  # 1000 + 1 nested key

    for accepted in (flat, spread, {**spread, "d": None}):
        outcome = _call(channel, "RecordInteraction", _interaction(metadata=struct_of(accepted)))
        assert outcome.code == grpc.StatusCode.OK, outcome
    for rejected in (over, {**deep_over, "d": None}):
        outcome = _call(channel, "LogEvent", _event(details=struct_of(rejected)))
        assert _violations(outcome) == {
            "details": "must have at most 1000 keys and list items in all, "
            "counting every nested object and list"
        }


@pytest.mark.database_independent
def test_struct_depth_counts_objects_and_lists(channel: grpc.Channel) -> None:
    lists_ten_deep: list[Any] = [1]
    for _ in range(8):
        lists_ten_deep = [lists_ten_deep]

    for accepted in (nested_object(10), {"a": lists_ten_deep}):
        outcome = _call(channel, "LogEvent", _event(details=struct_of(accepted)))
        assert outcome.code == grpc.StatusCode.OK, outcome
    for rejected in (nested_object(11), {"a": [lists_ten_deep]}):
        outcome = _call(channel, "LogEvent", _event(details=struct_of(rejected)))
        assert _violations(outcome) == {"details": "must be nested at most 10 levels deep"}


@pytest.mark.parametrize(
    ("name", "field", "limit"),
    [("metadata", "metadata", 16 * 1024), ("details", "details", 32 * 1024)],
)
def test_struct_size_limits(channel: grpc.Channel, name: str, field: str, limit: int) -> None:
    def request(size: int) -> Message:
        value = struct_of(_padded("pad", size))
        return _interaction(metadata=value) if name == "metadata" else _event(details=value)

    method = "RecordInteraction" if name == "metadata" else "LogEvent"
    assert _call(channel, method, request(limit)).code == grpc.StatusCode.OK
    assert _violations(_call(channel, method, request(limit + 1))) == {
        field: f"must be at most {limit} bytes serialized, got {limit + 1}"
    }


def test_text_limit_counts_characters_not_bytes(channel: grpc.Channel) -> None:
    assert _call(channel, "RecordInteraction", _interaction()).code == grpc.StatusCode.OK

    accepted = _call(
        channel,
        "SubmitFeedback",
        pb.SubmitFeedbackRequest(conversation_id="c", score=3, text="😀" * 2000),
    )
    rejected = _call(
        channel,
        "SubmitFeedback",
        pb.SubmitFeedbackRequest(conversation_id="c", score=3, text="x" * 2001),
    )

    assert accepted.code == grpc.StatusCode.OK, accepted
    assert _violations(rejected) == {"text": "must be at most 2000 characters, got 2001"}


@pytest.mark.parametrize(
    ("field", "longest"),
    [("conversation_id", 128), ("message_id", 128), ("user_id", 128), ("model", 128)],
)
def test_identifier_lengths(channel: grpc.Channel, field: str, longest: int) -> None:
    def request(length: int) -> pb.RecordInteractionRequest:
        message = _interaction()
        setattr(message, field, "a" * length)
        return message

    accepted = _call(channel, "RecordInteraction", request(longest))
    rejected = _call(channel, "RecordInteraction", request(longest + 1))

    assert accepted.code == grpc.StatusCode.OK, accepted
    assert list(_violations(rejected)) == [field]


def test_event_type_length(channel: grpc.Channel) -> None:
    assert (
        _call(channel, "LogEvent", pb.LogEventRequest(user_id="u", event_type="t" * 64)).code
        == grpc.StatusCode.OK
    )
    rejected = _call(channel, "LogEvent", pb.LogEventRequest(user_id="u", event_type="t" * 65))
    assert list(_violations(rejected)) == ["event_type"]


NUL_ALLOWED = frozenset(
    {
        # Only hashed, never stored: the contract lets them hold any text.
        "RecordInteraction.input_text",
        "RecordInteraction.output_text",
    }
)
"""Fields that accept a NUL character; the suite fails if any other field does."""


def _valid_request(method_name: str) -> Message:
    """A request of the method that the server accepts (with the conversation "c" recorded)."""
    valid: dict[str, Message] = {
        "RecordInteraction": pb.RecordInteractionRequest(conversation_id="c"),
        "SubmitFeedback": pb.SubmitFeedbackRequest(conversation_id="c", score=4),
        "LogEvent": pb.LogEventRequest(user_id="u", event_type="t"),
    }
    return valid.get(method_name) or request_class(SERVICE.methods_by_name[method_name])()


def test_no_string_field_of_any_request_stores_a_nul(
    channel: grpc.Channel, rows: RowCounter
) -> None:
    """Every string field, in every unary request: NUL is INVALID_ARGUMENT, nothing is stored."""
    _call(channel, "RecordInteraction", _interaction())
    accepted_nul: set[str] = set()
    for method in METHODS:
        if method.client_streaming or not implemented(method):
            continue
        for field in method.input_type.fields:
            if field.type != field.TYPE_STRING:
                continue
            request = _valid_request(method.name)
            setattr(request, field.name, "a\x00b")
            before = rows.counts()
            outcome = call(channel, method, request)
            if outcome.code == grpc.StatusCode.OK:
                accepted_nul.add(f"{method.name}.{field.name}")
                continue
            assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (
                method.name,
                field.name,
                outcome,
            )
            assert field.name in _violations(outcome), (method.name, field.name, outcome)
            assert added(before, rows.counts()) == NOTHING
    assert accepted_nul <= NUL_ALLOWED, accepted_nul - NUL_ALLOWED


def test_nul_in_struct_keys_and_strings(channel: grpc.Channel) -> None:
    for details in ({"a\x00": 1}, {"a": "b\x00"}, {"a": [{"b": ["\x00"]}]}):
        outcome = _call(channel, "LogEvent", _event(details=struct_of(details)))
        assert list(_violations(outcome)) == ["details"]


def test_batch_size_limits(channel: grpc.Channel, rows: RowCounter) -> None:
    event = _event()
    full = _call(channel, "LogEvents", pb.LogEventsRequest(events=[event] * 1000))
    before = rows.counts()
    over = _call(channel, "LogEvents", pb.LogEventsRequest(events=[event] * 1001))
    empty = _call(channel, "LogEvents", pb.LogEventsRequest())

    assert full.code == grpc.StatusCode.OK
    assert full.responses[0].accepted_count == 1000  # type: ignore[attr-defined]
    assert rows.counts()["events"] == 1000
    assert _violations(over) == {"events": "must hold 1 to 1000 items, got 1001"}
    assert _violations(empty) == {"events": "must hold 1 to 1000 items, got 0"}
    assert added(before, rows.counts()) == NOTHING


def test_item_size_limit_in_batches_and_ingest(channel: grpc.Channel, rows: RowCounter) -> None:
    small = _interaction(input_text="x" * 60_000)
    big = _interaction(input_text="x" * 66_000)
    assert small.ByteSize() < 64 * 1024 < big.ByteSize()

    batch = _call(
        channel, "RecordInteractions", pb.RecordInteractionsRequest(interactions=[small, big])
    )
    ingest = _call(
        channel,
        "Ingest",
        [
            pb.IngestRequest(
                items=[pb.IngestItem(interaction=small), pb.IngestItem(interaction=big)]
            )
        ],
    )

    outcomes = [r.outcome for r in batch.responses[0].results]  # type: ignore[attr-defined]
    assert outcomes == [batch_pb2.ITEM_OUTCOME_ACCEPTED, batch_pb2.ITEM_OUTCOME_REJECTED]
    rejection = batch.responses[0].results[1].error  # type: ignore[attr-defined]
    assert rejection.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert f"must be at most {64 * 1024} bytes serialized" in rejection.message
    totals = ingest.responses[0]
    assert (totals.accepted_count, totals.rejected_count) == (1, 1)  # type: ignore[attr-defined]
    assert rows.counts()["interactions"] == 2


@pytest.mark.database_independent
@pytest.mark.parametrize("method_name", ["RecordInteraction", "LogEvents", "Ingest"])
def test_messages_over_the_server_limit_get_resource_exhausted(
    channel: grpc.Channel, rows: RowCounter, method_name: str
) -> None:
    """gRPC itself refuses a message over 4 MiB before any handler runs."""
    huge = _interaction(input_text="x" * (4 * MIB + 1))
    requests: dict[str, Message | list[Message]] = {
        "RecordInteraction": huge,
        "LogEvents": pb.LogEventsRequest(
            events=[_event(details=struct_of({"p": "x" * 30_000}))] * 150
        ),
        "Ingest": [pb.IngestRequest(items=[pb.IngestItem(interaction=huge)])],
    }

    outcome = _call(channel, method_name, requests[method_name])

    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert rows.counts() == NOTHING


# ---- bugs this suite found (fixed) ----


def _page_token(cursor: int, fingerprint: str) -> str:
    raw = json.dumps({"c": cursor, "f": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.database_independent
def test_forged_page_token_with_a_huge_cursor_is_invalid_argument(channel: grpc.Channel) -> None:
    """Tokens are not secret: their fingerprint is a hash of the filters anyone can compute."""
    for _ in range(2):
        _call(channel, "RecordInteraction", _interaction())
    first = _call(channel, "ListInteractions", pb.ListInteractionsRequest(page_size=1))
    token: str = first.responses[0].next_page_token  # type: ignore[attr-defined]
    fingerprint = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["f"]

    outcome = _call(
        channel,
        "ListInteractions",
        pb.ListInteractionsRequest(page_size=1, page_token=_page_token(2**63, fingerprint)),
    )

    assert list(_violations(outcome)) == ["page_token"]


@pytest.mark.database_independent
def test_get_stats_rejects_invalid_timestamps(channel: grpc.Channel) -> None:
    for invalid in (timestamp_pb2.Timestamp(seconds=2**62), timestamp_pb2.Timestamp(nanos=-1)):
        outcome = _call(channel, "GetStats", pb.GetStatsRequest(start_time=invalid))
        assert list(_violations(outcome)) == ["start_time"]


LAST_VALID_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def test_get_stats_buckets_at_the_end_of_time(channel: grpc.Channel) -> None:
    for bucket in (1, 2, 3, 4):  # hour, day, week, month
        request = pb.GetStatsRequest(
            start_time=timestamp_pb2.Timestamp(seconds=LAST_VALID_SECOND - 3600),
            end_time=timestamp_pb2.Timestamp(seconds=LAST_VALID_SECOND),
            bucket=bucket,  # type: ignore[arg-type]
        )
        outcome = _call(channel, "GetStats", request)
        assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), outcome
