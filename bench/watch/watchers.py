"""`python -m bench.watch.watchers ADDRESS COUNT OUTPUT`: hold COUNT watches with mixed filters
on one server until stdin closes, then write what they received to OUTPUT (JSON).

Run as its own process on the load core, so its decoding never runs on the server's core. It
prints "ready" once every watch got its first message. Records are timed on receipt against
their create_time (the server's clock, the same machine): an upper bound on commit to receipt.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.watch.mix import WATCH_MIX, WatchKind
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc

CHANNELS = 20
"""Connections the watches spread over (100 streams each for 2,000)."""
SAMPLE_EVERY = 1
"""Every record's delay is kept (a float each)."""


@dataclass
class Tally:
    """What the watches of one kind of filter received."""

    watches: int = 0
    records: int = 0
    messages: int = 0
    delays_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


async def _watch(
    stub: feedback_service_pb2_grpc.FeedbackServiceStub,
    request: pb.WatchFeedbackRequest,
    tally: Tally,
    started: asyncio.Event,
    ready: list[int],
    total: int,
) -> None:
    call: Any = stub.WatchFeedback(request)  # grpc-stubs types the sync call only
    try:
        first = True
        async for response in call:
            if first:
                first = False
                ready[0] += 1
                if ready[0] == total:
                    started.set()
                continue
            now = time.time()
            tally.messages += 1
            for watched in response.feedback:
                created = watched.feedback.create_time
                tally.delays_ms.append((now - created.seconds - created.nanos / 1e9) * 1000)
            tally.records += len(response.feedback)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED:
            name = error.code().name
            tally.errors[name] = tally.errors.get(name, 0) + 1


async def main(address: str, count: int, output: str) -> None:
    """Open the watches, say "ready", wait for stdin to close, write the tallies."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [feedback_service_pb2_grpc.FeedbackServiceStub(channel) for channel in channels]
    tallies: dict[str, Tally] = {kind.name: Tally() for kind in WATCH_MIX}
    started = asyncio.Event()
    ready = [0]
    tasks = []
    plan: list[tuple[WatchKind, int]] = [
        (kind, number) for kind in WATCH_MIX for number in range(kind.count(count))
    ]
    for index, (kind, number) in enumerate(plan):
        tallies[kind.name].watches += 1
        task = asyncio.create_task(
            _watch(
                stubs[index % CHANNELS],
                kind.request(number),
                tallies[kind.name],
                started,
                ready,
                len(plan),
            )
        )
        tasks.append(task)
    await asyncio.wait_for(started.wait(), 120)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    result: dict[str, Any] = {
        name: {
            "watches": tally.watches,
            "records": tally.records,
            "messages": tally.messages,
            "delays_ms": tally.delays_ms,
            "errors": tally.errors,
        }
        for name, tally in tallies.items()
    }
    with open(output, "w", encoding="utf-8") as file:
        json.dump(result, file)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
