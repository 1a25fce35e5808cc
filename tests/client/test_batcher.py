"""EventBatcher: background batches, backpressure policies, acknowledgement and reporting."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from llmfeedback import (
    BatcherStats,
    EventBatcher,
    EventItem,
    FeedbackClient,
    FeedbackError,
    InvalidArgumentError,
    QueueFullError,
    RetryPolicy,
    UnavailableError,
)
from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_service_pb2

from .fake_service import Abort, Hold, Reply, Stall, rich_status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from google.protobuf.message import Message
    from google.rpc import status_pb2

    from .fake_service import RecordingServicer

# Real waits, kept short: the batcher waits on its own condition so close() can cut them short.
FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "database restarting")


@pytest.fixture
def fast_client(address: str) -> Iterator[FeedbackClient]:
    with FeedbackClient(address, timeout=5.0, retry=FAST_RETRY) as feedback_client:
        yield feedback_client


@pytest.fixture
def release(servicer: RecordingServicer) -> Iterator[threading.Event]:
    """Released at the end of the test, so a held call never outlives it."""
    event = threading.Event()
    yield event
    event.set()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def batch_sizes(servicer: RecordingServicer) -> list[int]:
    return [
        len(request.events)
        for request in servicer.requests("LogEvents")
        if isinstance(request, feedback_service_pb2.LogEventsRequest)
    ]


def received(servicer: RecordingServicer) -> list[feedback_service_pb2.LogEventRequest]:
    return [
        event
        for event in servicer.received_items("LogEvents")
        if isinstance(event, feedback_service_pb2.LogEventRequest)
    ]


def reject_bad(item: Message) -> status_pb2.Status | None:
    assert isinstance(item, feedback_service_pb2.LogEventRequest)
    if item.event_type != "bad":
        return None
    violation = error_details_pb2.BadRequest.FieldViolation(field="event_type", description="no")
    return rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "event_type: no",
        error_details_pb2.BadRequest(field_violations=[violation]),
    )


def test_a_full_batch_is_sent_at_once(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with fast_client.event_batcher(max_batch=5, flush_interval=60) as batcher:
        for index in range(10):
            batcher.log(f"user-{index}", "click")
        wait_until(lambda: batcher.stats.accepted == 10)

        assert batch_sizes(servicer) == [5, 5]


def test_a_partial_batch_is_sent_after_the_flush_interval(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with fast_client.event_batcher(max_batch=500, flush_interval=0.05) as batcher:
        started = time.monotonic()
        for index in range(3):
            batcher.log(f"user-{index}", "click")
        wait_until(lambda: batcher.stats.accepted == 3)

        assert time.monotonic() - started >= 0.05
        assert batch_sizes(servicer) == [3]


def test_log_does_no_io_and_stamps_the_event_time_at_the_call(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with fast_client.event_batcher(flush_interval=60) as batcher:
        before = datetime.now(UTC)
        batcher.log("alice", "page_view", details={"path": "/pricing"})
        after = datetime.now(UTC)
        time.sleep(0.02)

        assert servicer.requests("LogEvents") == []
        assert batcher.stats == BatcherStats(
            enqueued=1, sent=0, accepted=0, rejected=0, dropped=0, pending=1
        )
        assert batcher.flush() is True

    (event,) = received(servicer)
    assert before <= event.event_time.ToDatetime(tzinfo=UTC) <= after
    assert dict(event.details) == {"path": "/pricing"}


def test_flush_returns_once_the_server_acknowledged(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    servicer.plan("LogEvents", Hold(release))
    with fast_client.event_batcher(flush_interval=60) as batcher:
        batcher.log("alice", "click")

        assert batcher.flush(timeout=0.05) is False
        assert batcher.stats.pending == 1
        release.set()
        assert batcher.flush() is True
        assert batcher.stats.accepted == 1
        assert batcher.stats.pending == 0


def test_close_sends_what_is_left_and_later_logs_raise(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", Stall(0.05))
    batcher = fast_client.event_batcher(flush_interval=60)
    for index in range(3):
        batcher.log(f"user-{index}", "click")

    assert batcher.close() is True

    assert batcher.closed
    assert batcher.stats.accepted == 3
    assert batch_sizes(servicer) == [3]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.log("alice", "click")
    assert batcher.close() is True


def stalled_batcher(
    client: FeedbackClient, servicer: RecordingServicer, release: threading.Event, **options: Any
) -> EventBatcher:
    """A batcher whose first event is held in flight, with room for one more."""
    servicer.plan("LogEvents", Hold(release))
    batcher = client.event_batcher(max_batch=1, flush_interval=0.001, max_queue=2, **options)
    batcher.log("in-flight", "click")
    wait_until(lambda: len(servicer.requests("LogEvents")) == 1)
    batcher.log("queued", "click")
    return batcher


def test_block_waits_for_room(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    with stalled_batcher(fast_client, servicer, release) as batcher:
        producer = threading.Thread(target=batcher.log, args=("waiting", "click"))
        producer.start()
        producer.join(0.05)
        assert producer.is_alive()
        release.set()
        producer.join(5)
        assert not producer.is_alive()

    assert batcher.stats.accepted == 3
    assert [event.user_id for event in received(servicer)] == ["in-flight", "queued", "waiting"]


def test_block_gives_up_after_block_timeout(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    with stalled_batcher(fast_client, servicer, release, block_timeout=0.05) as batcher:
        started = time.monotonic()
        with pytest.raises(QueueFullError, match=r"stayed full for 0\.05 s") as raised:
            batcher.log("refused", "click")
        assert time.monotonic() - started >= 0.05
        assert raised.value.max_queue == 2
        release.set()

    assert batcher.stats.enqueued == batcher.stats.accepted == 2


def test_raise_refuses_at_once_when_full(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    with stalled_batcher(fast_client, servicer, release, on_full="raise") as batcher:
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="is full"):
            batcher.log("refused", "click")
        assert time.monotonic() - started < 0.5
        release.set()

    assert batcher.stats.accepted == 2


def test_drop_hands_the_event_to_on_drop(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    dropped: list[EventItem] = []
    with stalled_batcher(
        fast_client, servicer, release, on_full="drop", on_drop=dropped.append
    ) as batcher:
        batcher.log("dropped", "click", details={"n": 1})
        release.set()

    assert [(item.user_id, item.details) for item in dropped] == [("dropped", {"n": 1})]
    stats = batcher.stats
    assert (stats.enqueued, stats.accepted, stats.dropped, stats.pending) == (2, 2, 1, 0)


def test_a_blocked_producer_learns_when_the_batcher_closes(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    batcher = stalled_batcher(fast_client, servicer, release)
    errors: list[Exception] = []

    def produce() -> None:
        try:
            batcher.log("blocked", "click")
        except RuntimeError as error:
            errors.append(error)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(0.05)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    producer.join(5)
    release.set()
    closer.join(5)

    assert [str(error) for error in errors] == ["the EventBatcher is closed"]
    assert batcher.stats.accepted == 2


def test_invalid_events_go_to_on_rejected_with_their_error(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = reject_bad
    rejected: list[tuple[EventItem, FeedbackError]] = []

    with fast_client.event_batcher(on_rejected=lambda *report: rejected.append(report)) as b:
        b.log("alice", "click")
        b.log("bob", "bad")
        b.log("carol", "click")

    ((item, error),) = rejected
    assert (item.user_id, item.event_type) == ("bob", "bad")
    assert isinstance(error, InvalidArgumentError)
    assert [violation.field for violation in error.field_violations] == ["event_type"]
    assert (b.stats.accepted, b.stats.rejected, b.stats.sent) == (2, 1, 3)
    assert batch_sizes(servicer) == [3]


def test_without_on_rejected_rejections_are_logged_and_counted(
    fast_client: FeedbackClient, servicer: RecordingServicer, caplog: pytest.LogCaptureFixture
) -> None:
    servicer.verdict = reject_bad

    with caplog.at_level(logging.ERROR, logger="llmfeedback"), fast_client.event_batcher() as b:
        b.log("bob", "bad")

    (record,) = caplog.records
    assert record.name == "llmfeedback"
    assert record.levelno == logging.ERROR
    assert "INVALID_ARGUMENT: event_type: no" in record.getMessage()
    assert "'bob'" in record.getMessage()
    assert b.stats.rejected == 1


def test_transient_failures_are_retried_until_acknowledged(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", UNAVAILABLE, UNAVAILABLE)

    with fast_client.event_batcher(flush_interval=60) as batcher:
        batcher.log("alice", "click")
        batcher.log("bob", "click")
        assert batcher.flush() is True

    assert batcher.stats == BatcherStats(
        enqueued=2, sent=2, accepted=2, rejected=0, dropped=0, pending=0
    )
    assert batch_sizes(servicer) == [2, 2, 2]


def test_suppressed_events_are_settled_not_reported_nor_sent_again(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    def answer(request: Message) -> Message:
        assert isinstance(request, feedback_service_pb2.LogEventsRequest)
        suppressed = batch_pb2.ITEM_OUTCOME_SUPPRESSED
        results = [
            batch_pb2.BatchItemResult(index=index, outcome=suppressed)
            if event.user_id == "opted-out"
            else batch_pb2.BatchItemResult(
                index=index,
                outcome=batch_pb2.ITEM_OUTCOME_REJECTED,
                error=rich_status(grpc.StatusCode.UNAVAILABLE, "shard down"),
            )
            for index, event in enumerate(request.events)
        ]
        return feedback_service_pb2.LogEventsResponse(results=results)

    servicer.plan("LogEvents", Reply(answer))
    reported: list[EventItem] = []

    with fast_client.event_batcher(
        flush_interval=60, on_rejected=lambda item, _: reported.append(item)
    ) as batcher:
        batcher.log("opted-out", "click")
        batcher.log("alice", "click")
        batcher.log("opted-out", "view")
        assert batcher.flush() is True

    assert batcher.stats == BatcherStats(
        enqueued=3, sent=3, accepted=1, rejected=0, dropped=0, pending=0, suppressed=2
    )
    assert [event.user_id for event in received(servicer)] == [
        "opted-out",
        "alice",
        "opted-out",
        "alice",
    ]
    assert reported == []


def test_retries_wait_at_least_the_retry_info_delay(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    delay = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=150_000_000))
    servicer.plan("LogEvents", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", [delay]))

    with fast_client.event_batcher(flush_interval=60) as batcher:
        batcher.log("alice", "click")
        started = time.monotonic()
        assert batcher.flush() is True

    assert time.monotonic() - started >= 0.15
    assert batch_sizes(servicer) == [1, 1]


def test_events_still_failing_after_the_retries_are_reported(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", UNAVAILABLE, UNAVAILABLE)
    rejected: list[tuple[EventItem, FeedbackError]] = []
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01)

    with fast_client.event_batcher(
        on_rejected=lambda *report: rejected.append(report), retry=retry
    ) as batcher:
        batcher.log("alice", "click")
        batcher.log("bob", "click")

    assert [(item.user_id, type(error)) for item, error in rejected] == [
        ("alice", UnavailableError),
        ("bob", UnavailableError),
    ]
    assert (batcher.stats.rejected, batcher.stats.pending) == (2, 0)


def test_a_close_that_times_out_reports_every_event_it_gives_up(
    fast_client: FeedbackClient, servicer: RecordingServicer, release: threading.Event
) -> None:
    rejected: list[tuple[EventItem, FeedbackError]] = []
    batcher = stalled_batcher(
        fast_client, servicer, release, on_rejected=lambda *report: rejected.append(report)
    )

    started = time.monotonic()
    assert batcher.close(timeout=0.05) is False

    assert time.monotonic() - started < 2
    assert sorted((item.user_id, error.code) for item, error in rejected) == [
        ("in-flight", grpc.StatusCode.CANCELLED),
        ("queued", grpc.StatusCode.CANCELLED),
    ]
    assert batcher.stats.rejected == 2
    assert batcher.stats.pending == 0


def test_nothing_is_lost_with_many_producers(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    producers, per_producer = 8, 2000
    batcher = fast_client.event_batcher(max_batch=500, flush_interval=0.01, max_queue=1000)

    def produce(producer: int) -> None:
        for sequence in range(per_producer):
            batcher.log(f"producer-{producer}", "tick", details={"sequence": sequence})

    threads = [threading.Thread(target=produce, args=(number,)) for number in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batcher.close() is True

    events = received(servicer)
    keys = Counter((event.user_id, event.details["sequence"]) for event in events)
    assert len(events) == len(keys) == producers * per_producer
    assert batcher.stats == BatcherStats(
        enqueued=16_000, sent=16_000, accepted=16_000, rejected=0, dropped=0, pending=0
    )
    assert max(batch_sizes(servicer)) <= 500


def test_closing_the_client_closes_its_batchers(address: str, servicer: RecordingServicer) -> None:
    with FeedbackClient(address) as client:
        batcher = client.event_batcher(flush_interval=60)
        batcher.log("alice", "click")

    assert batcher.closed
    assert [event.user_id for event in received(servicer)] == ["alice"]


def test_flush_and_close_from_a_callback_are_refused(
    fast_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = reject_bad
    errors: list[Exception] = []
    holder: list[EventBatcher] = []

    def on_rejected(item: EventItem, error: FeedbackError) -> None:
        try:
            holder[0].flush()
        except RuntimeError as refused:
            errors.append(refused)

    with fast_client.event_batcher(on_rejected=on_rejected) as batcher:
        holder.append(batcher)
        batcher.log("bob", "bad")

    assert [str(error) for error in errors] == [
        "flush() from a batcher callback would wait for itself"
    ]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 1001}, "max_batch"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"max_queue": 0}, "max_queue"),
        ({"on_full": "spill"}, "on_full"),
        ({"on_full": "drop"}, "on_drop is required"),
        ({"on_drop": print}, "on_drop is required"),
        ({"on_full": "raise", "block_timeout": 1.0}, "block_timeout"),
    ],
)
def test_nonsensical_settings_are_refused(
    fast_client: FeedbackClient, options: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fast_client.event_batcher(**options)  # type: ignore[arg-type]


def test_invalid_events_raise_in_log(fast_client: FeedbackClient) -> None:
    with fast_client.event_batcher() as batcher:
        with pytest.raises(ValueError, match="aware"):
            batcher.log("alice", "click", event_time=datetime(2024, 5, 1))
        assert batcher.stats.enqueued == 0


def test_an_open_batcher_sends_what_it_holds_at_interpreter_exit(
    address: str, servicer: RecordingServicer
) -> None:
    script = (
        "import sys\n"
        "from llmfeedback import FeedbackClient\n"
        "client = FeedbackClient(sys.argv[1])\n"
        "batcher = client.event_batcher(flush_interval=60)\n"
        "for index in range(3):\n"
        "    batcher.log(f'user-{index}', 'click')\n"
    )

    subprocess.run([sys.executable, "-c", script, address], check=True, timeout=30)

    assert [event.user_id for event in received(servicer)] == ["user-0", "user-1", "user-2"]
