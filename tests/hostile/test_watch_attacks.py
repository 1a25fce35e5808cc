"""Hostile watchers against a real server: clients that never read a byte, cut their connection,
or open watches by the thousand. The writers must never wait for them, nothing may be left
behind, and the server keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc
from reliability.hostile.raw_h2 import RawGrpcConnection
from server.config import Settings
from tests.server_harness import ServerThread

WAIT_SECONDS = 15.0
STALL_SECONDS = 2.0


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/feedback.sqlite3",
        storage_threads=4,
        log_level="WARNING",
        accept_unknown_conversations=True,
        watch_buffer_kb=64,
        stream_stall_timeout_seconds=STALL_SECONDS,
        max_watches=500,
    )
    with ServerThread(settings) as server:
        yield server


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _write(address: str, count: int, text: str = "x" * 1500) -> float:
    """Seconds `count` sequential SubmitFeedback calls took."""
    with grpc.insecure_channel(address) as channel:
        stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
        started = time.monotonic()
        for n in range(count):
            stub.SubmitFeedback(
                pb.SubmitFeedbackRequest(conversation_id=f"c{n % 7}", score=3, text=text),
                timeout=10,
            )
        return time.monotonic() - started


async def _stalled_watches(address: str, count: int) -> list[RawGrpcConnection]:
    """`count` watches on connections that let the server send their start marker (256 bytes
    of window), then never read again."""
    connections = []
    for _ in range(count):
        connection = await RawGrpcConnection.connect(
            address, initial_window=256, acknowledge_bytes=0
        )
        await connection.open_stream("WatchFeedback", pb.WatchFeedbackRequest().SerializeToString())
        connections.append(connection)
    return connections


def test_watchers_that_never_read_are_dropped_and_ended_while_writes_go_on(
    running: ServerThread,
) -> None:
    server = running.feedback_server
    baseline = _write(running.address, 100)
    loop = asyncio.new_event_loop()
    try:
        connections = loop.run_until_complete(_stalled_watches(running.address, 20))
        _wait_for(lambda: server.tail.watchers == 20, "the stalled watches did not go live")
        during = _write(running.address, 100)
        # Their 64 KiB buffers overflowed: they are out of the fan-out at once...
        _wait_for(lambda: server.tail.watchers == 0, "a stalled watcher is still fed")
        # ...and the stall timeout ends the calls, so nothing of theirs stays held.
        admission = server._boundary.admission
        _wait_for(lambda: admission.watches_in_progress == 0, "a stalled watch is still open")
        assert server.tail.interest == 0
        for connection in connections:
            loop.run_until_complete(connection.close())
    finally:
        loop.close()
    assert during < max(3 * baseline, 2.0), (baseline, during)


def test_watches_cut_by_a_tcp_reset_leave_nothing_behind(running: ServerThread) -> None:
    server = running.feedback_server
    loop = asyncio.new_event_loop()
    try:
        connections = loop.run_until_complete(_stalled_watches(running.address, 10))
        _wait_for(lambda: server.tail.watchers == 10, "the watches did not go live")
        for connection in connections:
            connection.reset_tcp()
        loop.run_until_complete(asyncio.sleep(0.2))  # the aborts close the sockets on the loop
    finally:
        loop.close()
    admission = server._boundary.admission
    _wait_for(lambda: admission.watches_in_progress == 0, "a reset watch is still open")
    _wait_for(lambda: server.tail.watchers == 0, "a reset watch is still fed")
    assert _write(running.address, 5) < 5


def test_a_flood_of_watches_past_the_limit_is_refused_precisely_and_the_server_serves(
    running: ServerThread,
) -> None:
    async def flood() -> tuple[int, dict[str, int]]:
        opened = 0
        refused: dict[str, int] = {}
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
            calls = [stub.WatchFeedback(pb.WatchFeedbackRequest()) for _ in range(700)]

            async def first(call: object) -> None:
                nonlocal opened
                try:
                    await call.read()  # type: ignore[attr-defined]
                    opened += 1
                except grpc.aio.AioRpcError as error:
                    refused[error.code().name] = refused.get(error.code().name, 0) + 1

            await asyncio.gather(*(first(call) for call in calls))
            assert (
                await stub.SubmitFeedback(
                    pb.SubmitFeedbackRequest(conversation_id="alive", score=3), timeout=10
                )
            ).feedback.id
            for call in calls:
                call.cancel()
        return opened, refused

    opened, refused = asyncio.run(flood())
    assert opened == 500
    assert refused == {"RESOURCE_EXHAUSTED": 200}
    server = running.feedback_server
    _wait_for(lambda: server._boundary.admission.watches_in_progress == 0, "watches left open")
