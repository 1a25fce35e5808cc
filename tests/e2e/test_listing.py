"""ListFeedback, ListInteractions and ListEvents on a real server: filters, order, pages, tokens."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llmfeedback import (
    EventItem,
    FailedPreconditionError,
    FeedbackClient,
    InvalidArgumentError,
    RetryPolicy,
    error_from_rpc_error,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def minutes(count: int) -> datetime:
    return T0 + timedelta(minutes=count)


def violations(error: InvalidArgumentError) -> dict[str, str]:
    return {violation.field: violation.description for violation in error.field_violations}


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


# ---- feedback ----


@pytest.fixture
def feedback(client: FeedbackClient) -> dict[str, int]:
    """Nine entries of every kind, by name; f1 is stored first."""
    client.record_interaction("conv-a", message_id="m1", user_id="u1", model="gpt-4o")
    client.record_interaction("conv-a", message_id="m2", user_id="u2", model="llama-3")
    client.record_interaction("conv-b", message_id="m3", model="gpt-4o")
    client.record_interaction("conv-c")
    entries: dict[str, dict[str, Any]] = {
        "f1": {"message_id": "m1", "score": 1, "text": "wrong"},
        "f2": {"message_id": "m2", "score": 3},
        "f3": {"conversation_id": "conv-b", "score": 5, "user_id": "u1"},
        "f4": {"message_id": "m3", "thumb": True, "text": "love it", "user_id": "u2"},
        "f5": {"conversation_id": "conv-a", "label": "GOOD"},
        "f6": {"conversation_id": "conv-c", "score": 4},
        "f7": {"conversation_id": "conv-c", "thumb": False},
        "f8": {"conversation_id": "conv-c", "label": "bad", "text": "meh"},
        "f9": {"conversation_id": "conv-c", "score": 2},
    }
    return {name: client.submit_feedback(**fields).id for name, fields in entries.items()}


ALL = ["f9", "f8", "f7", "f6", "f5", "f4", "f3", "f2", "f1"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ALL),
        ({"conversation_id": "conv-a"}, ["f5", "f2", "f1"]),
        ({"message_id": "m3"}, ["f4"]),
        # f1 and f5 inherit their user from the interaction they rate.
        ({"user_id": "u1"}, ["f3", "f1"]),
        ({"user_id": "u2"}, ["f5", "f4", "f2"]),
        # f1, f2 and f4 inherit their interaction's model, f3 and f5 the conversation's latest.
        ({"model": "gpt-4o"}, ["f4", "f3", "f1"]),
        ({"model": "llama-3"}, ["f5", "f2"]),
        ({"min_score": 3}, ["f6", "f3", "f2"]),
        ({"max_score": 2}, ["f9", "f1"]),
        ({"min_score": 2, "max_score": 4}, ["f9", "f6", "f2"]),
        ({"min_score": 5, "max_score": 5}, ["f3"]),
        ({"rating_kind": "score"}, ["f9", "f6", "f3", "f2", "f1"]),
        ({"rating_kind": "thumb"}, ["f7", "f4"]),
        ({"rating_kind": "label"}, ["f8", "f5"]),
        ({"label": "good"}, ["f5"]),
        ({"label": "Good "}, ["f5"]),
        ({"has_text": True}, ["f8", "f4", "f1"]),
        ({"has_text": False}, ["f9", "f7", "f6", "f5", "f3", "f2"]),
        ({"conversation_id": "conv-c", "rating_kind": "score", "has_text": False}, ["f9", "f6"]),
        ({"user_id": "nobody"}, []),
    ],
)
def test_feedback_filters_both_ways(
    client: FeedbackClient,
    feedback: dict[str, int],
    filters: dict[str, Any],
    expected: list[str],
) -> None:
    names = {entry_id: name for name, entry_id in feedback.items()}

    newest = [names[f.id] for f in client.iter_feedback(page_size=2, **filters)]
    oldest = [names[f.id] for f in client.iter_feedback(order="oldest_first", **filters)]

    assert newest == expected
    assert oldest == expected[::-1]


def test_feedback_time_range_is_half_open_on_create_time(
    client: FeedbackClient, feedback: dict[str, int]
) -> None:
    listed = {f.id: f.create_time.ToDatetime(tzinfo=UTC) for f in client.iter_feedback()}
    third, sixth = listed[feedback["f3"]], listed[feedback["f6"]]

    found = client.iter_feedback(start_time=third, end_time=sixth, order="oldest_first")

    assert [f.id for f in found] == [
        entry_id for entry_id, created in sorted(listed.items()) if third <= created < sixth
    ]
    assert feedback["f3"] in [f.id for f in client.iter_feedback(start_time=third)]
    assert feedback["f6"] not in [f.id for f in client.iter_feedback(end_time=sixth)]


def test_feedback_inherits_the_rated_interactions_model(client: FeedbackClient) -> None:
    client.record_interaction("conv-m", message_id="answer-1", model="gpt-4o-mini")

    by_message = client.submit_feedback(message_id="answer-1", score=4)
    by_conversation = client.submit_feedback("conv-m", thumb=True)
    same_model = client.submit_feedback(message_id="answer-1", score=5, model="gpt-4o-mini")

    assert by_message.model == by_conversation.model == same_model.model == "gpt-4o-mini"
    listed = list(client.iter_feedback(model="gpt-4o-mini", order="oldest_first"))
    assert [f.id for f in listed] == [by_message.id, by_conversation.id, same_model.id]
    assert {f.model for f in listed} == {"gpt-4o-mini"}


def test_feedback_naming_another_model_is_a_model_mismatch(client: FeedbackClient) -> None:
    client.record_interaction("conv-m", message_id="answer-1", model="gpt-4o-mini")

    with pytest.raises(FailedPreconditionError) as caught:
        client.submit_feedback(message_id="answer-1", score=4, model="llama-3")

    assert caught.value.reason == "MODEL_MISMATCH"
    assert list(client.iter_feedback()) == []


def test_feedback_may_name_the_model_an_interaction_left_unknown(client: FeedbackClient) -> None:
    client.record_interaction("conv-n", message_id="answer-2")

    stored = client.submit_feedback(message_id="answer-2", label="good", model="mistral-large")

    assert stored.model == "mistral-large"
    assert [f.id for f in client.iter_feedback(model="mistral-large")] == [stored.id]


# ---- interactions and events ----


def test_interaction_filters_and_time_range_on_occur_time(client: FeedbackClient) -> None:
    a = client.record_interaction("c1", message_id="m1", user_id="u1", model="x", occur_time=T0)
    b = client.record_interaction("c1", user_id="u2", occur_time=minutes(-10))
    c = client.record_interaction("c2", message_id="m3", user_id="u1", model="x")
    d = client.record_interaction("c2", model="y", occur_time=minutes(10))

    def ids(**filters: Any) -> list[int]:
        return [i.id for i in client.iter_interactions(**filters)]

    assert ids() == [d.id, c.id, b.id, a.id]
    assert ids(order="oldest_first") == [a.id, b.id, c.id, d.id]
    assert ids(conversation_id="c1") == [b.id, a.id]
    assert ids(message_id="m3") == [c.id]
    assert ids(user_id="u1") == [c.id, a.id]
    assert ids(model="x") == [c.id, a.id]
    assert ids(start_time=minutes(-10), end_time=minutes(10)) == [b.id, a.id]
    assert ids(start_time=minutes(10)) == [d.id, c.id]
    assert ids(conversation_id="c2", model="y") == [d.id]


def test_event_filters_and_time_range_on_event_time(client: FeedbackClient) -> None:
    events = [
        EventItem("u1", "page_view", event_time=minutes(1)),
        EventItem("u2", "click", event_time=minutes(2), details={"button": "buy"}),
        EventItem("u1", "click", event_time=minutes(3)),
        EventItem("u2", "page_view", event_time=minutes(-5)),
    ]
    e1, e2, e3, e4 = (result.id for result in client.log_events(events).results)

    def ids(**filters: Any) -> list[int]:
        return [e.id for e in client.iter_events(**filters)]

    assert ids() == [e4, e3, e2, e1]
    assert ids(order="oldest_first") == [e1, e2, e3, e4]
    assert ids(user_id="u1") == [e3, e1]
    assert ids(event_type="click") == [e3, e2]
    assert ids(user_id="u2", event_type="click") == [e2]
    assert ids(start_time=minutes(2)) == [e3, e2]
    assert ids(start_time=minutes(-5), end_time=minutes(2)) == [e4, e1]
    listed = {e.id: e for e in client.iter_events()}
    assert dict(listed[e2].details) == {"button": "buy"}
    assert listed[e2].event_time.ToDatetime(tzinfo=UTC) == minutes(2)


# ---- pages ----


@pytest.fixture
def many_events(client: FeedbackClient) -> list[int]:
    """1201 stored events, ids ascending."""
    results = client.log_events(EventItem(f"user-{n % 3}", "page_view") for n in range(1201))
    return [result.id for result in results.results]


def test_page_size_defaults_to_50_and_is_lowered_to_1000(
    client: FeedbackClient, many_events: list[int]
) -> None:
    default = client.list_events()
    large = client.list_events(page_size=5000)
    exact = client.list_events(page_size=1201)

    assert [e.id for e in default.events] == many_events[::-1][:50]
    assert default.next_page_token
    assert len(large.events) == 1000
    assert large.next_page_token
    assert len(exact.events) == 1000
    rest = client.list_events(page_size=1201, page_token=exact.next_page_token)
    assert [e.id for e in rest.events] == many_events[::-1][1000:]
    assert rest.next_page_token == ""


def test_the_last_page_has_no_token_even_when_it_is_full(
    client: FeedbackClient, many_events: list[int]
) -> None:
    first = client.list_events(user_id="user-0", page_size=200)
    second = client.list_events(user_id="user-0", page_size=200, page_token=first.next_page_token)
    third = client.list_events(user_id="user-0", page_size=200, page_token=second.next_page_token)

    user_0 = [i for n, i in enumerate(many_events) if n % 3 == 0][::-1]  # 401 events
    assert [len(page.events) for page in (first, second, third)] == [200, 200, 1]
    assert [e.id for page in (first, second, third) for e in page.events] == user_0
    assert third.next_page_token == ""
    exact = client.list_events(user_id="user-0", page_size=401)
    assert exact.next_page_token == ""


def test_negative_page_size_is_rejected(client: FeedbackClient) -> None:
    for list_method in (client.list_feedback, client.list_interactions, client.list_events):
        with pytest.raises(InvalidArgumentError) as caught:
            list_method(page_size=-1)
        assert violations(caught.value) == {"page_size": "must not be negative"}


def test_tokens_are_tied_to_their_filters_order_and_kind(
    client: FeedbackClient, many_events: list[int]
) -> None:
    token = client.list_events(user_id="user-1", page_size=10).next_page_token

    with pytest.raises(InvalidArgumentError) as other_filter:
        client.list_events(user_id="user-2", page_size=10, page_token=token)
    with pytest.raises(InvalidArgumentError) as other_order:
        client.list_events(user_id="user-1", order="oldest_first", page_token=token)
    with pytest.raises(InvalidArgumentError) as other_kind:
        client.list_interactions(user_id="user-1", page_token=token)

    expected = {"page_token": "was issued for different filters or another order"}
    assert violations(other_filter.value) == expected
    assert violations(other_order.value) == expected
    assert violations(other_kind.value) == expected
    # The same filters with the default order spelled out, and another page size, are fine.
    same = client.list_events(user_id="user-1", order="newest_first", page_token=token)
    assert len(same.events) == 50


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "eyJjIjoxfQ", "eyJjIjotMSwiZiI6IngifQ", "e30", "%%%", "A" * 300, "é"],
)
def test_malformed_tokens_are_rejected(client: FeedbackClient, token: str) -> None:
    for list_method in (client.list_feedback, client.list_interactions, client.list_events):
        with pytest.raises(InvalidArgumentError) as caught:
            list_method(page_token=token)
        assert violations(caught.value) == {
            "page_token": "is not a page token issued by this service"
        }


def test_every_bad_field_is_reported_at_once(stub: FeedbackServiceStub) -> None:
    request = pb.ListFeedbackRequest(
        conversation_id="bad id",
        message_id="bad id",
        user_id="bad id",
        model="m" * 129,
        min_score=6,
        max_score=0,
        rating_kind=7,  # type: ignore[arg-type]
        label="no good",
        start_time=timestamp_pb2.Timestamp(seconds=200),
        end_time=timestamp_pb2.Timestamp(seconds=100),
        order_by="score desc",
        page_size=-5,
        page_token="garbage",
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListFeedback(request, timeout=10)

    error = error_from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgumentError)
    fields = violations(error)
    assert sorted(fields) == sorted(
        [
            "conversation_id",
            "message_id",
            "user_id",
            "model",
            "min_score",
            "max_score",
            "rating_kind",
            "label",
            "end_time",
            "order_by",
            "page_size",
            "page_token",
        ]
    )
    assert fields["end_time"] == "must not be before start_time"
    assert fields["order_by"] == 'must be "create_time desc" or "create_time asc"'


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.list_events(event_type="1st"), "event_type"),
        (lambda c: c.list_events(user_id="a b"), "user_id"),
        (lambda c: c.list_interactions(conversation_id="a.b"), "conversation_id"),
        (lambda c: c.list_interactions(model="x" * 129), "model"),
        (lambda c: c.list_feedback(min_score=3, max_score=2), "max_score"),
        (lambda c: c.list_feedback(min_score=0), "min_score"),
        (lambda c: c.list_feedback(label="x" * 65), "label"),
        (
            lambda c: c.list_interactions(start_time=minutes(1), end_time=minutes(0)),
            "end_time",
        ),
        (lambda c: c.list_events(end_time=datetime(1960, 1, 1, tzinfo=UTC)), "end_time"),
    ],
)
def test_invalid_filters_name_their_field(
    client: FeedbackClient, call: Callable[[FeedbackClient], Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        call(client)

    assert list(violations(caught.value)) == [field]


@pytest.mark.parametrize("order_by", ["create_time", "create_time  ASC", " create_time asc "])
def test_order_by_follows_aip_132(
    stub: FeedbackServiceStub, client: FeedbackClient, order_by: str
) -> None:
    first = client.log_event("u", "a").id
    second = client.log_event("u", "b").id

    response = stub.ListEvents(pb.ListEventsRequest(order_by=order_by), timeout=10)

    assert [e.id for e in response.events] == [first, second]


# ---- pages while rows arrive ----


class Inserter:
    """A thread that logs small batches of events through its own client until stopped."""

    def __init__(self, server: ServerThread, batch: list[EventItem]) -> None:
        self._server = server
        self._batch = batch
        self._done = threading.Event()
        self._stored = threading.Condition()
        self.batches = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Inserter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def wait_for_more(self, than: int) -> int:
        """Block until more than `than` batches are stored (at most 10 s); returns the count."""
        with self._stored:
            self._stored.wait_for(lambda: self.batches > than, timeout=10)
            return self.batches

    def _run(self) -> None:
        with FeedbackClient(self._server.address, retry=RetryPolicy(max_attempts=1)) as writer:
            while not self._done.is_set():
                # New items each time: an item is one record, stored once however often sent.
                writer.log_events([replace(item, request_id=None) for item in self._batch])
                with self._stored:
                    self.batches += 1
                    self._stored.notify_all()


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_pages_never_skip_or_repeat_while_rows_arrive(
    server: ServerThread, client: FeedbackClient, order: Any
) -> None:
    initial = client.log_events(EventItem(f"user-{n % 2}", "tick") for n in range(600))
    at_start = [result.id for n, result in enumerate(initial.results) if n % 2 == 0]
    # Each batch adds two rows of user-0, fewer than a page: oldest first catches up and ends.
    batch = [EventItem(f"user-{n % 2}", "tick") for n in range(4)]

    seen: list[int] = []
    with Inserter(server, batch) as inserter:
        batches = inserter.wait_for_more(0)
        page_token = ""
        while True:
            page = client.list_events(
                user_id="user-0", page_size=7, page_token=page_token, order=order
            )
            seen.extend(e.id for e in page.events)
            if not page.next_page_token:
                break
            page_token = page.next_page_token
            batches = inserter.wait_for_more(batches)  # rows arrive between every two pages

    stored = [e.id for e in client.iter_events(user_id="user-0", order="oldest_first")]
    assert len(stored) > len(at_start) + 2, "rows did not arrive while paging"
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert set(at_start) <= set(seen), "a row that existed at the start was skipped"
    # Beyond those, exactly the rows stored within the range paged over were seen.
    assert sorted(seen) == [i for i in stored if i <= max(seen)]
    assert seen == sorted(seen, reverse=order == "newest_first")
    if order == "oldest_first":
        assert max(seen) > max(at_start), "rows stored while paging forward were not reached"
