"""Bytes that are not a valid request: INVALID_ARGUMENT (ErrorInfo MALFORMED_REQUEST), no rows."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import event, given
from hypothesis import strategies as st

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from tests.fuzz.harness import (
    METHODS,
    SERVICE,
    Outcome,
    RowCounter,
    added,
    assert_precise,
    assert_rows_match,
    call,
    fuzz_settings,
    implemented,
    item_count,
    request_class,
)
from tests.fuzz.strategies import plausible_messages
from tests.fuzz.wire import malformed_bytes, named_malformations

INGEST = SERVICE.methods_by_name["Ingest"]
NOTHING = {"interactions": 0, "feedback": 0, "events": 0}


def _decodes(method_class: type[Message], data: bytes) -> Message | None:
    """The request the bytes encode, or None: the same parser (upb) the server runs."""
    try:
        return method_class.FromString(data)
    except DecodeError:
        return None


def _assert_malformed(method_name: str, outcome: Outcome, message_type: str) -> None:
    assert outcome.is_malformed_request(), f"{method_name}: {outcome.code} {outcome.details}"
    assert outcome.details.startswith(f"request is not a valid {message_type}: ")
    info = outcome.error_info()
    assert info is not None
    assert info.metadata["message_type"] == message_type


def test_every_kind_of_damage_to_every_method(channel: grpc.Channel, rows: RowCounter) -> None:
    """Truncated, wrong wire types, bad UTF-8, absurd varints, too deep: each named case."""
    before = rows.counts()
    for method in METHODS:
        for damage, data in named_malformations(method.input_type).items():
            request: bytes | list[bytes] = [data] if method.client_streaming else data
            outcome = call(channel, method, request)
            if implemented(method):
                _assert_malformed(f"{method.name} / {damage}", outcome, method.input_type.full_name)
            else:
                assert outcome.code == grpc.StatusCode.UNIMPLEMENTED
    assert added(before, rows.counts()) == NOTHING


_raw_requests = st.sampled_from(METHODS).flatmap(
    lambda method: st.tuples(st.just(method), malformed_bytes(method.input_type))
)


@pytest.mark.database_independent
@fuzz_settings(default_examples=400)
@given(method_and_bytes=_raw_requests)
def test_any_bytes_get_the_answer_their_decoding_calls_for(
    channel: grpc.Channel, rows: RowCounter, method_and_bytes: tuple[MethodDescriptor, bytes]
) -> None:
    """Bytes that decode are served like the request they encode; others are INVALID_ARGUMENT."""
    method, data = method_and_bytes
    parsed = _decodes(request_class(method), data)
    before = rows.counts()

    outcome = call(channel, method, [data] if method.client_streaming else data)

    rows_added = added(before, rows.counts())
    event(f"{'decodes' if parsed is not None else 'malformed'}: {outcome.code.name}")
    if parsed is None and implemented(method):
        _assert_malformed(method.name, outcome, method.input_type.full_name)
        assert rows_added == NOTHING
        return
    assert_precise(method, outcome)
    if parsed is not None:
        request = [parsed] if method.client_streaming else parsed
        assert_rows_match(method, outcome, rows_added, item_count(method, request))


@fuzz_settings(default_examples=100)
@given(
    before=st.lists(plausible_messages(pb.IngestRequest.DESCRIPTOR), max_size=3),
    damaged=malformed_bytes(pb.IngestRequest.DESCRIPTOR),
    after=st.lists(plausible_messages(pb.IngestRequest.DESCRIPTOR), min_size=1, max_size=2),
)
def test_ingest_stops_at_the_first_malformed_message(
    channel: grpc.Channel,
    rows: RowCounter,
    before: list[pb.IngestRequest],
    damaged: bytes,
    after: list[pb.IngestRequest],
) -> None:
    """Messages before it are committed and counted in the error; nothing after it is read."""
    if _decodes(pb.IngestRequest, damaged) is not None:
        return  # a damage that still decodes is an ordinary message; other tests cover those
    stream = (
        [m.SerializeToString() for m in before] + [damaged] + [m.SerializeToString() for m in after]
    )
    counts_before = rows.counts()

    outcome = call(channel, INGEST, stream)

    _assert_malformed("Ingest", outcome, "feedback.v1.IngestRequest")
    info = outcome.error_info()
    assert info is not None
    assert info.metadata["stream_index"] == str(len(before))
    assert info.metadata["received_count"] == str(sum(len(m.items) for m in before))
    stored = sum(added(counts_before, rows.counts()).values())
    assert stored == int(info.metadata["accepted_count"])
    assert f"the {len(before)} messages before it were processed" in outcome.details


@pytest.mark.parametrize("size", [1, 5])
def test_a_malformed_message_after_valid_ones_keeps_what_they_stored(
    channel: grpc.Channel, rows: RowCounter, size: int
) -> None:
    events = [pb.IngestItem(event=pb.LogEventRequest(user_id="u", event_type="t"))] * size
    stream = [pb.IngestRequest(items=events).SerializeToString(), b"\xff\xff", b""]

    outcome = call(channel, INGEST, stream)

    _assert_malformed("Ingest", outcome, "feedback.v1.IngestRequest")
    assert rows.counts()["events"] == size
    assert f"accepted_count {size}" in outcome.details
