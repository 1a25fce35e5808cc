"""Two replicas on one PostgreSQL database: a watcher on one sees what both commit, each record
once, in commit order, quickly; and a watch resumes on the other replica from its position."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc
from server.config import Settings
from tests.server_harness import ServerThread

pytestmark = pytest.mark.postgres

WRITERS_PER_REPLICA = 4
WRITES_PER_WRITER = 60
WAIT_SECONDS = 20.0


@pytest.fixture
def replicas(own_database: str) -> Iterator[tuple[ServerThread, ServerThread]]:
    settings = Settings(
        database_url=own_database,
        storage_threads=4,
        log_level="WARNING",
        accept_unknown_conversations=True,
    )
    with ServerThread(settings) as first, ServerThread(settings) as second:
        yield first, second


def _stub(channel: grpc.Channel) -> feedback_service_pb2_grpc.FeedbackServiceStub:
    return feedback_service_pb2_grpc.FeedbackServiceStub(channel)


def _order_key(position: str) -> tuple[int, int]:
    raw = base64.urlsafe_b64decode(position + "=" * (-len(position) % 4))
    return int.from_bytes(raw[10:18], "big"), int.from_bytes(raw[18:26], "big")


def test_a_watcher_on_one_replica_gets_every_commit_of_both_once_in_commit_order(
    replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = replicas
    with (
        grpc.insecure_channel(first.address) as watch_channel,
        grpc.insecure_channel(first.address) as first_channel,
        grpc.insecure_channel(second.address) as second_channel,
    ):
        call: Any = _stub(watch_channel).WatchFeedback(pb.WatchFeedbackRequest())
        iterator = iter(call)
        next(iterator)
        acknowledged: dict[str, float] = {}
        sequences: dict[str, list[str]] = {}
        lock = threading.Lock()

        def write(channel: grpc.Channel, writer: str) -> None:
            stub = _stub(channel)
            mine = sequences.setdefault(writer, [])
            for n in range(WRITES_PER_WRITER):
                conversation = f"{writer}-{n}"
                stub.SubmitFeedback(
                    pb.SubmitFeedbackRequest(conversation_id=conversation, score=1 + n % 5),
                    timeout=30,
                )
                with lock:
                    acknowledged[conversation] = time.monotonic()
                mine.append(conversation)

        writers = [
            threading.Thread(target=write, args=(channel, f"{name}{number}"))
            for name, channel in (("a", first_channel), ("b", second_channel))
            for number in range(WRITERS_PER_REPLICA)
        ]
        for thread in writers:
            thread.start()
        expected = 2 * WRITERS_PER_REPLICA * WRITES_PER_WRITER
        received: list[tuple[str, str, float]] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while len(received) < expected:
            assert time.monotonic() < deadline, f"{len(received)} of {expected} arrived"
            response = next(iterator)
            now = time.monotonic()
            received.extend(
                (w.feedback.conversation_id, w.position, now) for w in response.feedback
            )
        for thread in writers:
            thread.join()
        call.cancel()

    conversations = [conversation for conversation, _, _ in received]
    assert len(conversations) == len(set(conversations)) == expected
    assert set(conversations) == set(acknowledged)
    keys = [_order_key(position) for _, position, _ in received]
    assert keys == sorted(keys), "records did not come in position order"
    # A writer waits for each acknowledgement before the next write: its records commit in
    # that order, so they must come in that order, whichever replica committed them.
    for writer, written in sequences.items():
        came = [c for c in conversations if c.startswith(f"{writer}-")]
        assert came == written, writer
    delays = sorted(at - acknowledged[conversation] for conversation, _, at in received)
    remote = sorted(
        at - acknowledged[conversation]
        for conversation, _, at in received
        if conversation.startswith("b")
    )
    print(
        f"delivery after acknowledgement: median {delays[len(delays) // 2] * 1000:.0f} ms, "
        f"from the other replica median {remote[len(remote) // 2] * 1000:.0f} ms"
    )
    assert remote[len(remote) // 2] < 0.5


def test_a_watch_resumes_on_the_other_replica_from_its_position(
    replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = replicas
    with (
        grpc.insecure_channel(first.address) as first_channel,
        grpc.insecure_channel(second.address) as second_channel,
    ):
        writer = _stub(first_channel)
        call: Any = _stub(first_channel).WatchFeedback(pb.WatchFeedbackRequest())
        iterator = iter(call)
        next(iterator)
        writer.SubmitFeedback(pb.SubmitFeedbackRequest(conversation_id="one", score=3))
        position = next(iterator).position
        call.cancel()
        for conversation in ("two", "three"):
            writer.SubmitFeedback(pb.SubmitFeedbackRequest(conversation_id=conversation, score=3))
        resumed: Any = _stub(second_channel).WatchFeedback(
            pb.WatchFeedbackRequest(start_position=position)
        )
        got: list[str] = []
        deadline = time.monotonic() + WAIT_SECONDS
        for response in resumed:
            got.extend(w.feedback.conversation_id for w in response.feedback)
            if len(got) >= 2 or time.monotonic() > deadline:
                break
        resumed.cancel()
    assert got == ["two", "three"]
