"""FeedbackClient with opted-out users against the real server, on both databases: suppressed
writes are answered, stored nowhere, counted apart from rejections and never sent again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from llmfeedback import (
    Event,
    EventItem,
    Feedback,
    FeedbackClient,
    FeedbackError,
    FeedbackItem,
    HistoricItem,
    Interaction,
    InteractionItem,
    InvalidArgumentError,
    OptOutAction,
    RetryPolicy,
    is_suppressed,
)
from llmfeedback.proto.feedback.v1 import privacy_pb2
from tests.server_harness import ServerThread

if TYPE_CHECKING:
    UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:  # not subscriptable at run time
    UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor


class CountCalls(UnaryUnaryClientInterceptor):
    """Counts the unary calls the client makes, by method name."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method.rsplit("/", 1)[-1]
        self.calls[method] = self.calls.get(method, 0) + 1
        return continuation(client_call_details, request)


@pytest.fixture
def counted(server: ServerThread) -> Iterator[tuple[FeedbackClient, CountCalls]]:
    """A client that retries (so a retried item would show) and counts its calls."""
    counter = CountCalls()
    channel = grpc.intercept_channel(grpc.insecure_channel(server.address), counter)
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)
    with FeedbackClient(channel=channel, timeout=10, retry=policy) as client:
        yield client, counter
    channel.close()


def totals(client: FeedbackClient, user: str | None = None) -> tuple[int, int, int]:
    stats = client.get_stats(user_id=user)
    return stats.interactions.total_count, stats.feedback.total_count, stats.events.total_count


def test_a_batch_counts_suppressed_items_apart_and_sends_them_once(
    counted: tuple[FeedbackClient, CountCalls],
) -> None:
    client, counter = counted
    client.opt_out_user("bob")

    result = client.log_events(
        [
            EventItem("alice", "page_view"),
            EventItem("bob", "page_view"),
            {"user_id": "carol", "event_type": "9-bad"},
            EventItem("bob", "click"),
        ]
    )

    assert counter.calls["LogEvents"] == 1
    assert (result.accepted_count, result.rejected_count, result.suppressed_count) == (1, 1, 2)
    assert result.duplicate_count == 0
    assert [item.index for item in result.suppressed] == [1, 3]
    assert [item.index for item in result.rejected] == [2]
    assert isinstance(result.rejected[0].error, InvalidArgumentError)
    bob = result.results[1]
    assert (bob.accepted, bob.suppressed, bob.id, bob.error, bob.duplicate) == (
        False,
        True,
        0,
        None,
        False,
    )
    assert bob.request_id
    assert not result.results[0].suppressed
    assert totals(client, "bob") == (0, 0, 0)
    assert totals(client) == (0, 0, 1)


def test_interaction_and_feedback_batches_suppress_the_opted_out_user(
    client: FeedbackClient,
) -> None:
    client.record_interaction("conv-b", message_id="bob-m0", user_id="bob")
    client.opt_out_user("bob")

    turns = client.record_interactions(
        [
            InteractionItem("conv-a", message_id="ann-m1", user_id="ann"),
            InteractionItem("conv-b", message_id="bob-m1", user_id="bob"),
        ]
    )
    votes = client.submit_feedback_batch(
        [
            FeedbackItem(message_id="ann-m1", score=4),
            FeedbackItem(message_id="bob-m0", score=1),  # bob's, by the rated interaction
            FeedbackItem(message_id="never-recorded", score=1),
        ]
    )

    assert [(r.accepted, r.suppressed) for r in turns] == [(True, False), (False, True)]
    assert (turns.accepted_count, turns.rejected_count, turns.suppressed_count) == (1, 0, 1)
    assert [(r.accepted, r.suppressed) for r in votes] == [
        (True, False),
        (False, True),
        (False, False),
    ]
    assert (votes.accepted_count, votes.rejected_count, votes.suppressed_count) == (1, 1, 1)
    assert totals(client, "bob") == (1, 0, 0)  # the turn from before the opt-out is kept
    assert totals(client) == (2, 1, 0)


def test_single_writes_about_an_opted_out_user_return_an_empty_record(
    counted: tuple[FeedbackClient, CountCalls],
) -> None:
    client, counter = counted
    stored = client.record_interaction("conv-b", message_id="bob-m0", user_id="bob")
    client.opt_out_user("bob")

    turn = client.record_interaction("conv-b", message_id="bob-m1", user_id="bob")
    vote = client.submit_feedback(message_id="bob-m0", score=2)  # the user is the turn's
    event = client.log_event("bob", "page_view")

    assert (turn, vote, event) == (Interaction(), Feedback(), Event())
    assert all(is_suppressed(record) for record in (turn, vote, event))
    assert not is_suppressed(stored)
    assert not is_suppressed(client.log_event("alice", "page_view"))
    assert (counter.calls["RecordInteraction"], counter.calls["SubmitFeedback"]) == (2, 1)
    assert counter.calls["LogEvent"] == 2
    assert totals(client, "bob") == (1, 0, 0)


def test_ingest_and_import_count_suppressed_items(client: FeedbackClient) -> None:
    client.opt_out_user("bob")
    now = datetime.now(UTC)

    ingested = client.ingest(
        [
            EventItem("alice", "page_view"),
            EventItem("bob", "page_view"),
            InteractionItem("conv-b", message_id="bob-m1", user_id="bob"),
            EventItem("alice", "9-bad"),
        ]
    )
    imported = client.import_history(
        [
            HistoricItem(EventItem("bob", "page_view"), now - timedelta(days=3)),
            HistoricItem(EventItem("alice", "page_view"), now - timedelta(days=2)),
        ]
    )

    assert (ingested.received_count, ingested.accepted_count) == (4, 1)
    assert (ingested.rejected_count, ingested.suppressed_count) == (1, 2)
    assert [rejection.index for rejection in ingested.rejections] == [3]
    assert (imported.received_count, imported.accepted_count) == (2, 1)
    assert (imported.rejected_count, imported.suppressed_count) == (0, 1)
    assert imported.rejections == ()
    assert totals(client, "bob") == (0, 0, 0)
    assert totals(client) == (0, 0, 2)


def test_the_event_batcher_counts_suppressed_events_and_reports_none(
    counted: tuple[FeedbackClient, CountCalls],
) -> None:
    client, _ = counted
    client.opt_out_user("bob")
    reported: list[tuple[EventItem, FeedbackError]] = []
    batcher = client.event_batcher(
        max_batch=10, flush_interval=60, on_rejected=lambda *report: reported.append(report)
    )
    for n in range(25):
        batcher.log("bob" if n % 5 else "alice", "tick", details={"n": n})
    batcher.log("alice", "9-bad")

    assert batcher.flush(timeout=10)
    flushed = batcher.stats
    batcher.log("bob", "tick")
    assert batcher.close(timeout=10)
    closed = batcher.stats

    assert (flushed.enqueued, flushed.accepted, flushed.suppressed) == (26, 5, 20)
    assert (flushed.rejected, flushed.pending, flushed.duplicates) == (1, 0, 0)
    assert [item.event_type for item, _ in reported] == ["9-bad"]
    assert (closed.enqueued, closed.suppressed, closed.pending) == (27, 21, 0)
    assert closed.enqueued == closed.accepted + closed.rejected + closed.suppressed
    assert totals(client) == (0, 0, 5)


def test_opt_out_opt_in_and_the_record_of_choices(client: FeedbackClient) -> None:
    client.log_event("alice", "signup")
    assert not client.get_opt_out("alice").HasField("opt_out")
    assert list(client.get_opt_out("alice").choices) == []

    opted = client.opt_out_user("alice")
    again = client.opt_out_user("alice")
    state = client.get_opt_out("alice")
    back = client.opt_in_user("alice")
    not_opted_out = client.opt_in_user("alice")
    after = client.get_opt_out("alice")

    assert opted.opt_out.user_hash == hashlib.sha256(b"alice").hexdigest()
    assert opted.opt_out.user_hash_kind == privacy_pb2.HASH_KIND_SHA256
    assert opted.opt_out.requested_by  # the caller's address: this server has no keys
    assert not opted.HasField("erasure")
    assert again.opt_out == opted.opt_out  # the first opt-out's time is kept
    assert state.opt_out == opted.opt_out
    assert [choice.action for choice in state.choices] == [OptOutAction.OPT_OUT_ACTION_OPT_OUT] * 2
    assert (back, not_opted_out) == (True, False)
    assert not after.HasField("opt_out")
    assert [choice.action for choice in after.choices] == [
        OptOutAction.OPT_OUT_ACTION_OPT_IN,
        OptOutAction.OPT_OUT_ACTION_OPT_IN,
        OptOutAction.OPT_OUT_ACTION_OPT_OUT,
        OptOutAction.OPT_OUT_ACTION_OPT_OUT,
    ]
    times = [choice.event_time.ToDatetime() for choice in after.choices]
    assert times == sorted(times, reverse=True)
    assert totals(client, "alice") == (0, 0, 1)  # the past was kept
    assert client.log_event("alice", "came_back").id > 0


def test_opting_out_with_erase_past_data_erases_and_then_suppresses(
    client: FeedbackClient,
) -> None:
    client.record_interaction("conv-a", message_id="ann-m1", user_id="ann")
    client.submit_feedback(message_id="ann-m1", score=3)
    client.log_event("ann", "page_view")
    client.log_event("bob", "page_view")

    response = client.opt_out_user("ann", erase_past_data=True)

    erasure = response.erasure
    assert erasure.subject_kind == privacy_pb2.SUBJECT_KIND_USER
    assert erasure.subject_hash == response.opt_out.user_hash
    erased = erasure.erased
    assert (erased.interactions, erased.feedback, erased.events) == (1, 1, 1)
    assert erasure.HasField("finish_time")
    assert [entry.id for entry in client.iter_erasures(user_id="ann")] == [erasure.id]
    assert list(client.export_user_data("ann")) == []
    assert is_suppressed(client.log_event("ann", "page_view"))
    assert totals(client) == (0, 0, 1)
    (choice,) = client.get_opt_out("ann").choices
    assert choice.erase_requested


def test_a_batch_repeating_a_suppressed_item_answers_both_as_suppressed(
    client: FeedbackClient,
) -> None:
    client.opt_out_user("bob")
    twice = [EventItem("bob", "click", request_id="7c0f4b1e-96a5-4d4c-9c43-3c2a4e0c2f10")] * 2

    batch = client.log_events(twice)
    ingested = client.ingest(twice)

    assert batch.suppressed_count == 2
    assert (ingested.suppressed_count, ingested.duplicate_count) == (2, 0)


def test_a_vote_about_an_opted_out_user_is_suppressed_though_its_turn_was_too(
    client: FeedbackClient,
) -> None:
    client.opt_out_user("bob")
    result = client.ingest(
        [
            InteractionItem("bob-c1", message_id="bob-m1", user_id="bob"),
            FeedbackItem(message_id="bob-m1", user_id="bob", score=4),
        ]
    )
    assert (result.suppressed_count, result.rejected_count) == (2, 0)


@pytest.mark.database_independent
def test_malformed_user_ids_are_refused(client: FeedbackClient) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.opt_out_user("not an id"),
        lambda: client.opt_in_user(""),
        lambda: client.get_opt_out("x" * 129),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as refused:
            call()
        assert [violation.field for violation in refused.value.field_violations] == ["user_id"]
