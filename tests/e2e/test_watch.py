"""The live tail against a real server on SQLite and PostgreSQL: starts, resumes, filters,
progress markers, precise errors, and what slow or vanished clients do to it."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from llmfeedback import FeedbackClient, OutOfRangeError, RetryPolicy
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc
from server.config import Settings
from tests.server_harness import ServerThread

WAIT_SECONDS = 10.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Writes may name any conversation; watches may be old."""
    return Settings(
        database_url=database_url,
        storage_threads=4,
        log_level="WARNING",
        accept_unknown_conversations=True,
    )


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.Channel) -> feedback_service_pb2_grpc.FeedbackServiceStub:
    return feedback_service_pb2_grpc.FeedbackServiceStub(channel)


def _submit(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub, conversation: str, **rating: object
) -> int:
    request = pb.SubmitFeedbackRequest(conversation_id=conversation, **rating)  # type: ignore[arg-type]
    return int(stub.SubmitFeedback(request, timeout=10).feedback.id)


def _read_until(call: Any, records: int) -> tuple[list[pb.WatchFeedbackResponse], list[str]]:
    """Responses until `records` records came; and the conversations of those records."""
    responses: list[pb.WatchFeedbackResponse] = []
    conversations: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    iterator = iter(call)
    while len(conversations) < records:
        assert time.monotonic() < deadline, f"only {conversations} arrived"
        response = next(iterator)
        responses.append(response)
        conversations.extend(item.feedback.conversation_id for item in response.feedback)
    return responses, conversations


def _cancel(call: Any) -> None:
    call.cancel()


def _status(error: grpc.RpcError) -> status_pb2.Status:
    metadata: Any = error.trailing_metadata()
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status")


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for detail in _status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def test_a_watch_from_now_sends_a_start_marker_then_each_new_record_with_its_position(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    _submit(stub, "before", score=1)
    call = stub.WatchFeedback(pb.WatchFeedbackRequest())
    first = next(iter(call))
    assert list(first.feedback) == []
    assert first.position

    ids = [_submit(stub, f"c{n}", score=n + 1) for n in range(3)]

    responses, conversations = _read_until(call, 3)
    _cancel(call)
    assert conversations == ["c0", "c1", "c2"]
    records = [item for response in responses for item in response.feedback]
    assert [item.feedback.id for item in records] == ids
    assert len({item.position for item in records}) == 3
    assert responses[-1].position == records[-1].position


def test_resuming_from_any_position_skips_and_repeats_nothing(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    start = next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest()))).position
    for n in range(6):
        _submit(stub, f"c{n}", score=3)
    call = stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=start))
    responses, conversations = _read_until(call, 6)
    _cancel(call)
    assert conversations == [f"c{n}" for n in range(6)]
    positions = [item.position for response in responses for item in response.feedback]

    for index, position in enumerate(positions):
        again = stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=position))
        if index == len(positions) - 1:
            marker = next(iter(again))
            assert list(marker.feedback) == []
            _cancel(again)
            continue
        _, rest = _read_until(again, 6 - index - 1)
        _cancel(again)
        assert rest == conversations[index + 1 :]


def test_filters_select_what_the_list_would(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    call = stub.WatchFeedback(pb.WatchFeedbackRequest(min_score=4, has_text=True, model=""))
    next(iter(call))
    _submit(stub, "low", score=2, text="meh")
    _submit(stub, "high-no-text", score=5)
    _submit(stub, "thumb", thumb=1, text="nice")
    _submit(stub, "wanted", score=4, text="good")
    _, conversations = _read_until(call, 1)
    _cancel(call)
    assert conversations == ["wanted"]
    listed = stub.ListFeedback(pb.ListFeedbackRequest(min_score=4, has_text=True))
    assert [entry.conversation_id for entry in listed.feedback] == ["wanted"]


def test_an_idle_watch_gets_progress_markers_that_move_its_position_on(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    call = stub.WatchFeedback(
        pb.WatchFeedbackRequest(
            conversation_id="nobody", progress_interval=duration_pb2.Duration(seconds=1)
        )
    )
    iterator = iter(call)
    start = next(iterator).position
    _submit(stub, "someone-else", score=3)
    started = time.monotonic()
    marker = next(iterator)
    waited = time.monotonic() - started
    _cancel(call)
    assert list(marker.feedback) == []
    assert marker.position != start
    assert 0.5 < waited < 5
    # The marker's position is past the other conversation's record: resuming there skips it.
    resumed = stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=marker.position))
    iterator = iter(resumed)
    next(iterator)
    _submit(stub, "after", score=3)
    assert [item.feedback.conversation_id for item in next(iterator).feedback] == ["after"]
    _cancel(resumed)


def test_a_watch_continues_an_oldest_first_export_from_its_last_token(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    for n in range(3):
        _submit(stub, f"old{n}", score=3)
    chunks = list(stub.ExportFeedback(pb.ExportFeedbackRequest(min_score=2)))
    token = chunks[-1].resume_token
    _submit(stub, "between", score=4)

    call = stub.WatchFeedback(pb.WatchFeedbackRequest(min_score=2, start_page_token=token))
    iterator = iter(call)
    next(iterator)
    _submit(stub, "later", score=5)
    _, conversations = _read_until(call, 2)
    _cancel(call)
    assert conversations == ["between", "later"]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"start_position": "not-a-position"}, "start_position"),
        ({"start_page_token": "bogus"}, "start_page_token"),
        ({"progress_interval": duration_pb2.Duration(nanos=5)}, "progress_interval"),
        ({"min_score": 9}, "min_score"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
    request_fields: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest(**request_fields))))  # type: ignore[arg-type]
    assert _code(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    next(d for d in _status(raised.value).details if d.Unpack(bad))
    assert [violation.field for violation in bad.field_violations] == [field]


def test_positions_of_another_kind_another_database_or_the_future_are_refused(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    events_position = next(iter(stub.WatchEvents(pb.WatchEventsRequest()))).position
    feedback_position = next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest()))).position
    raw = bytearray(_decoded(feedback_position))
    foreign = bytes(raw[:2]) + bytes(8) + bytes(raw[10:])
    future = bytes(raw[:10]) + (2**40).to_bytes(8, "big") + bytes(raw[18:])
    for position, why in (
        (events_position, "not of feedback"),
        (_encoded(foreign), "another database"),
        (_encoded(future), "ahead of the database"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=position))))
        assert _code(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert why in str(raised.value.details())


def test_a_position_older_than_the_history_is_out_of_range_with_the_oldest_position(
    server: ServerThread, stub: feedback_service_pb2_grpc.FeedbackServiceStub
) -> None:
    old = next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest()))).position
    _submit(stub, "c1", score=3)
    _submit(stub, "c2", score=3)
    assert _compact_everything(server) >= 2

    with pytest.raises(grpc.RpcError) as raised:
        next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=old))))
    assert _code(raised.value) == grpc.StatusCode.OUT_OF_RANGE
    info = _error_info(raised.value)
    assert info.reason == "POSITION_COMPACTED"
    oldest = info.metadata["oldest_position"]
    call = stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=oldest))
    iterator = iter(call)
    next(iterator)
    _submit(stub, "c3", score=3)
    assert [item.feedback.conversation_id for item in next(iterator).feedback] == ["c3"]
    _cancel(call)


SMALL_WINDOW = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024))
"""A client channel that lets the server send only about 1 KB ahead of what it read."""


def test_a_slow_reader_is_ended_with_its_position_and_writers_never_wait_for_it(
    settings: Settings,
) -> None:
    small = dataclasses.replace(settings, watch_buffer_kb=64)
    with (
        ServerThread(small) as running,
        grpc.insecure_channel(running.address) as writer_channel,
        grpc.insecure_channel(running.address, options=SMALL_WINDOW) as slow_channel,
    ):
        writer = feedback_service_pb2_grpc.FeedbackServiceStub(writer_channel)
        call = feedback_service_pb2_grpc.FeedbackServiceStub(slow_channel).WatchFeedback(
            pb.WatchFeedbackRequest()
        )
        positions = [next(iter(call)).position]
        text = "x" * 1500
        for n in range(200):
            _submit(writer, f"c{n}", score=3, text=text)
        _wait_for(lambda: running.feedback_server.tail.watchers == 0)  # dropped, not waited on
        received: list[str] = []
        with pytest.raises(grpc.RpcError) as raised:
            _read_slowly(call, positions, received)
        assert _code(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = _error_info(raised.value)
        assert info.reason == "WATCH_BUFFER_FULL"
        assert info.metadata["position"] == positions[-1]
        assert len(received) < 200  # none at all when one read of the tail overflowed it
        # Resuming from the position gets exactly the records after the last one received.
        resumed = writer.WatchFeedback(pb.WatchFeedbackRequest(start_position=positions[-1]))
        _, rest = _read_until(resumed, 200 - len(received))
        _cancel(resumed)
        assert received + rest == [f"c{n}" for n in range(200)]


def test_a_stopping_server_ends_watches_unavailable_with_their_position(settings: Settings) -> None:
    running = ServerThread(settings).start()
    channel = grpc.insecure_channel(running.address)
    stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
    call = stub.WatchFeedback(pb.WatchFeedbackRequest())
    iterator = iter(call)
    next(iterator)
    _submit(stub, "c1", score=3)
    last = next(iterator).position
    stopper = threading.Thread(target=running.stop, args=(5.0,))
    started = time.monotonic()
    stopper.start()
    with pytest.raises(grpc.RpcError) as raised:
        next(iterator)
    stopper.join()
    channel.close()
    assert _code(raised.value) == grpc.StatusCode.UNAVAILABLE
    info = _error_info(raised.value)
    assert info.reason == "SERVER_STOPPING"
    assert info.metadata["position"] == last
    assert time.monotonic() - started < 4  # the grace was not spent waiting for the watch


def test_vanished_clients_leave_no_watcher_behind(
    server: ServerThread, stub: feedback_service_pb2_grpc.FeedbackServiceStub
) -> None:
    calls = [stub.WatchFeedback(pb.WatchFeedbackRequest()) for _ in range(20)]
    for call in calls:
        next(iter(call))
    _wait_for(lambda: server.feedback_server.tail.watchers == 20)  # live after their marker
    for call in calls:
        _cancel(call)
    deadline = time.monotonic() + WAIT_SECONDS
    while server.feedback_server.tail.watchers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.feedback_server.tail.watchers == 0
    assert server.feedback_server.tail.interest == 0


def test_the_watch_limit_per_caller_is_resource_exhausted(settings: Settings) -> None:
    limited = dataclasses.replace(settings, max_watches_per_caller=2)
    with ServerThread(limited) as running, grpc.insecure_channel(running.address) as channel:
        stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
        open_calls = [stub.WatchFeedback(pb.WatchFeedbackRequest()) for _ in range(2)]
        for call in open_calls:
            next(iter(call))
        with pytest.raises(grpc.RpcError) as raised:
            next(iter(stub.WatchEvents(pb.WatchEventsRequest())))
        assert _code(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _error_info(raised.value).reason == "TOO_MANY_WATCHES"
        # Unary calls are not counted against watches.
        _submit(stub, "still-served", score=3)
        for call in open_calls:
            _cancel(call)


def test_the_client_iterator_resumes_by_itself_across_a_server_restart(settings: Settings) -> None:
    first = ServerThread(settings).start()
    port = first.port
    received: list[str] = []
    with FeedbackClient(first.address, retry=RetryPolicy(max_attempts=50)) as client:
        watch = client.watch_feedback(min_score=3)

        def follow() -> None:
            for watched in watch:
                received.append(watched.record.conversation_id)
                if len(received) == 4:
                    watch.close()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        _wait_for(lambda: bool(watch.position))
        client.submit_feedback("a", score=4)
        client.submit_feedback("low", score=1)
        client.submit_feedback("b", score=5)
        _wait_for(lambda: len(received) == 2)
        first.stop(1.0)
        second = ServerThread(settings, address=f"127.0.0.1:{port}").start()
        try:
            with FeedbackClient(f"127.0.0.1:{port}") as writer:
                writer.submit_feedback("c", score=3)
                writer.submit_feedback("d", score=4)
            follower.join(WAIT_SECONDS)
        finally:
            watch.close()
            second.stop()
    assert received == ["a", "b", "c", "d"]
    assert watch.reconnects >= 1


def test_the_client_iterator_raises_out_of_range_for_a_compacted_position(
    server: ServerThread,
    client: FeedbackClient,
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
) -> None:
    position = next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest()))).position
    client.submit_feedback("x", score=3)
    _compact_everything(server)
    with (
        pytest.raises(OutOfRangeError) as raised,
        client.watch_feedback(start_position=position) as watch,
    ):
        next(iter(watch))
    assert raised.value.reason == "POSITION_COMPACTED"
    assert raised.value.metadata["oldest_position"]


def _compact_everything(server: ServerThread) -> int:
    """Compact the whole change log now, as if the watch history had passed."""
    history = server.feedback_server.change_history
    return server.run(history.compact(older_than=timedelta(0)))


def _read_slowly(call: Any, positions: list[str], received: list[str]) -> None:
    """Read the stream a little at a time, noting each position and record, until it ends."""
    deadline = time.monotonic() + WAIT_SECONDS
    for response in call:
        positions.append(response.position)
        received.extend(item.feedback.conversation_id for item in response.feedback)
        time.sleep(0.01)
        assert time.monotonic() < deadline


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _decoded(position: str) -> bytes:
    return base64.urlsafe_b64decode(position + "=" * (-len(position) % 4))


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_watch_resumed_after_an_erasure_never_sends_the_erased_records(
    client: FeedbackClient, stub: feedback_service_pb2_grpc.FeedbackServiceStub
) -> None:
    start = next(iter(stub.WatchFeedback(pb.WatchFeedbackRequest()))).position
    client.submit_feedback("c-erased", user_id="leaving", score=1)
    client.submit_feedback("c-kept", user_id="staying", score=5)
    client.erase_user("leaving")

    call = stub.WatchFeedback(pb.WatchFeedbackRequest(start_position=start))
    _, conversations = _read_until(call, 1)
    _cancel(call)
    assert conversations == ["c-kept"]
