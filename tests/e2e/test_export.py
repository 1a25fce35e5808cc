"""ExportFeedback, ExportInteractions and ExportEvents on a real server: complete, chunked,
resumable, consistent while rows arrive, and validated like the lists."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from llmfeedback import (
    EventItem,
    FeedbackClient,
    FeedbackItem,
    InteractionItem,
    InvalidArgumentError,
    RetryPolicy,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def log_events(client: FeedbackClient, count: int, user_id: str = "u") -> list[int]:
    results = client.log_events(EventItem(user_id, f"type-{n % 3}") for n in range(count))
    return [result.id for result in results.results]


def test_export_streams_everything_oldest_first_in_chunks_of_1000(client: FeedbackClient) -> None:
    ids = log_events(client, 2500)

    chunks = list(client.export_events())

    assert [len(chunk.records) for chunk in chunks] == [1000, 1000, 500]
    assert [event.id for chunk in chunks for event in chunk.records] == ids
    assert all(chunk.resume_token for chunk in chunks)


def test_export_newest_first_and_filtered(client: FeedbackClient) -> None:
    ids = log_events(client, 1500)

    exported = [
        event.id
        for chunk in client.export_events(event_type="type-1", order="newest_first")
        for event in chunk.records
    ]

    assert exported == [i for n, i in enumerate(ids) if n % 3 == 1][::-1]


def test_export_resumes_after_any_chunk_without_gap_or_repeat(client: FeedbackClient) -> None:
    ids = log_events(client, 2300)
    chunks = list(client.export_events(user_id="u"))

    for done, chunk in enumerate(chunks[:-1], start=1):
        rest = [
            event.id
            for later in client.export_events(user_id="u", resume_token=chunk.resume_token)
            for event in later.records
        ]
        assert rest == ids[done * 1000 :]
    last = list(client.export_events(user_id="u", resume_token=chunks[-1].resume_token))
    assert last == []


def test_a_list_token_resumes_an_export_of_the_same_selection(client: FeedbackClient) -> None:
    ids = log_events(client, 30)
    page = client.list_events(page_size=10, order="oldest_first")

    rest = list(client.export_events(resume_token=page.next_page_token))

    assert [event.id for chunk in rest for event in chunk.records] == ids[10:]


def test_export_tokens_are_tied_to_filters_and_order(client: FeedbackClient) -> None:
    log_events(client, 1001)
    token = next(client.export_events()).resume_token

    for other in (
        lambda: client.export_events(user_id="u", resume_token=token),
        lambda: client.export_events(order="newest_first", resume_token=token),
        lambda: client.export_interactions(resume_token=token),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            list(other())
        assert [v.field for v in caught.value.field_violations] == ["resume_token"]


def test_export_validates_before_sending_anything(stub: FeedbackServiceStub) -> None:
    request = pb.ExportFeedbackRequest(
        user_id="bad user", min_score=9, order_by="newest", resume_token="nope"
    )

    with pytest.raises(grpc.RpcError) as caught:
        next(iter(stub.ExportFeedback(request, timeout=10)))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for field in ("user_id", "min_score", "order_by", "resume_token"):
        assert field in details


def test_export_of_nothing_is_an_empty_stream(client: FeedbackClient) -> None:
    assert list(client.export_feedback()) == []
    assert list(client.export_interactions(model="none")) == []


def test_every_kind_exports_every_field(client: FeedbackClient) -> None:
    interaction = client.record_interaction(
        "conv-1",
        message_id="m1",
        user_id="u1",
        model="gpt-4o",
        input_text="hi",
        latency_ms=12.5,
        prompt_tokens=3,
        completion_tokens=4,
        metadata={"app": "demo", "n": 2},
    )
    feedback = client.submit_feedback_batch(
        [
            FeedbackItem(message_id="m1", score=4, text="ok", metadata={"k": [1, "x"]}),
            FeedbackItem("conv-1", thumb=False),
            FeedbackItem("conv-1", label="good", latency_ms=3.0, tokens_used=9),
        ]
    )
    event = client.log_event("u1", "page_view", details={"page": "/"})

    [interactions] = client.export_interactions()
    [feedback_chunk] = client.export_feedback()
    [events] = client.export_events()

    assert list(interactions.records) == [interaction]
    listed = {f.id: f for f in client.iter_feedback()}
    assert [f.id for f in feedback_chunk.records] == [r.id for r in feedback.results]
    assert list(feedback_chunk.records) == [listed[r.id] for r in feedback.results]
    assert feedback_chunk.records[0].model == "gpt-4o"
    assert feedback_chunk.records[1].WhichOneof("rating") == "thumb"
    assert list(events.records) == [event]


def test_export_while_rows_arrive_misses_and_repeats_nothing(
    server: ServerThread, client: FeedbackClient
) -> None:
    at_start = log_events(client, 3000)
    done = threading.Event()

    def insert() -> None:
        with FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as writer:
            while not done.is_set():
                log_events(writer, 50)

    thread = threading.Thread(target=insert, daemon=True)
    thread.start()
    try:
        exported = [event.id for chunk in client.export_events() for event in chunk.records]
    finally:
        done.set()
        thread.join(timeout=30)

    stored = [event.id for chunk in client.export_events() for event in chunk.records]
    assert len(stored) > len(at_start)
    assert len(exported) == len(set(exported))
    assert exported == sorted(exported)
    assert exported == stored[: len(exported)]
    assert set(at_start) <= set(exported)


def test_interactions_export_in_chunks_too(client: FeedbackClient) -> None:
    results = client.record_interactions(InteractionItem(f"conv-{n}") for n in range(1200))

    chunks = list(client.export_interactions(order="newest_first"))

    assert [len(chunk.records) for chunk in chunks] == [1000, 200]
    ids = [r.id for r in results.results]
    assert [i.id for chunk in chunks for i in chunk.records] == ids[::-1]
