"""Export and Ingest streams abandoned every way a real client abandons them.

Killed and interrupted client processes, deadlines that pass mid-stream, cancel() on the call,
TCP resets, and readers that stop reading and then leave. Each kind counts what its clients saw
so the server's log can be held to one line per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.databases import Database
from reliability.hostile.export_child import SLOW_READER_OPTIONS
from reliability.hostile.phase import (
    EXPORT_METHODS,
    SERVICE,
    Phase,
    Tally,
    bounded,
    judge_tally,
)
from reliability.hostile.plan import HostilePlan
from reliability.hostile.raw_h2 import RawGrpcConnection, detail_kinds, details_from_metadata
from reliability.hostile.server import REPOSITORY_ROOT

CHILD_START_SECONDS = 30.0
"""A client process on a busy 2-core machine can take this long to import grpc and connect."""
CHUNK_PAUSE_SECONDS = 0.05
"""In-process slow readers wait this long after each chunk: 20 chunks outlast any deadline."""
DEADLINE_CHUNK_PAUSE_SECONDS = 0.1
"""Ten chunks of events at this pace take a second, twice the longest deadline."""
FIRST_DATA_SECONDS = 10.0
HOLD_SECONDS = (0.2, 0.6)
"""How long a reader that stopped reading keeps the stream before it goes away."""
INGEST_ITEMS_PER_MESSAGE = 100
INGEST_CHUNK = 1000
"""The server commits an Ingest stream in chunks of this many items (MAX_BATCH_ITEMS)."""
ABANDON_ENVIRONMENT = {
    "FEEDBACK_MAX_EXPORTS": "64",
    "FEEDBACK_MAX_EXPORTS_PER_CALLER": "64",
    "FEEDBACK_STREAM_STALL_TIMEOUT": "30",
}
"""Caps above the phase's own concurrency (so streams get abandoned, not refused) and a stall
timeout longer than any reader holds a stream (so the client, not the server, ends it)."""
CONCURRENCY = 8
RESET_READ_BYTES = 128 * 1024
"""A reset reader takes this much at full speed, then stops giving window back: the server is
still streaming (an export is over 500 KiB) when the reset comes, never done."""
CHILD_CONCURRENCY = 4


def _export_call(
    stub: pb_grpc.FeedbackServiceAsyncStub, number: int, timeout: float | None = None
) -> grpc.aio.UnaryStreamCall[object, object]:
    """ExportEvents for even numbers, ExportFeedback for odd ones."""
    call: grpc.aio.UnaryStreamCall[object, object]
    if number % 2 == 0:
        call = stub.ExportEvents(pb.ExportEventsRequest(), timeout=timeout)  # type: ignore[assignment]
    else:
        call = stub.ExportFeedback(pb.ExportFeedbackRequest(), timeout=timeout)  # type: ignore[assignment]
    return call


def _method(number: int) -> str:
    return "ExportEvents" if number % 2 == 0 else "ExportFeedback"


def _request(number: int) -> bytes:
    message = pb.ExportEventsRequest() if number % 2 == 0 else pb.ExportFeedbackRequest()
    return message.SerializeToString()


def _record_error(tally: Tally, error: grpc.aio.AioRpcError) -> None:
    """A refusal (RESOURCE_EXHAUSTED and its details) or something unexpected."""
    code = error.code().name
    if code == "RESOURCE_EXHAUSTED":
        details = details_from_metadata(error.trailing_metadata())  # type: ignore[arg-type]
        tally.refusal(code, () if details is None else detail_kinds(details))
    else:
        tally.unexpected[code] += 1


def _channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """Channels with their own connections (no shared subchannel), windows kept small."""
    options = [*SLOW_READER_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def killed_clients(phase: Phase, plan: HostilePlan) -> None:
    """Client processes (a slow Python reader, and feedbackctl export) sent SIGKILL or SIGINT
    mid-stream: the killer of the unfixed server."""
    tally = Tally()
    since = phase.log.mark()

    async def python_client(number: int) -> None:
        kind = "events" if number % 2 == 0 else "feedback"
        stop = signal.SIGKILL if number % 4 < 2 else signal.SIGINT
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reliability.hostile.export_child",
            phase.server.address,
            kind,
            cwd=REPOSITORY_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        tally.started += 1
        assert child.stdout is not None
        try:
            line = (await asyncio.wait_for(child.stdout.readline(), CHILD_START_SECONDS)).decode()
        except TimeoutError:
            line = ""
        if line.startswith("chunk"):
            tally.mid_stream += 1
            await asyncio.sleep(random.uniform(0, 0.3))
        elif line.startswith("error"):
            parts = line.split()
            tally.refusal(parts[1], parts[2].split(",") if len(parts) > 2 else ())
        elif line.startswith("done"):
            tally.completed += 1
        else:
            tally.unexpected["no first chunk within 30 s"] += 1
        _signal(child, stop)
        await child.wait()

    await bounded(plan.killed_clients, CHILD_CONCURRENCY, python_client, phase)
    await phase.checkup(f"{tally.started} killed export clients")
    await judge_tally(
        phase,
        tally,
        since=since,
        methods=EXPORT_METHODS,
        least_mid_stream=plan.killed_clients // 2,
        exact=True,
    )
    phase.result.figures["python_clients"] = phase.result.figures.pop("started")
    await _killed_cli_clients(phase, plan)


async def _killed_cli_clients(phase: Phase, plan: HostilePlan) -> None:
    """`feedbackctl export` as a user runs it, killed 0.4 to 1.2 s after it starts (as in the
    issue's reproduction): whether it reached the server is unknown, so only bounds are checked."""
    feedbackctl = Path(sys.executable).with_name("feedbackctl")
    if not feedbackctl.exists():
        phase.result.notes.append(f"{feedbackctl} not found: no feedbackctl clients")
        return
    since = phase.log.mark()
    started = 0
    finished = 0

    async def cli_client(number: int) -> None:
        nonlocal started, finished
        output = phase.workdir / f"export-{number}.jsonl"
        child = await asyncio.create_subprocess_exec(
            str(feedbackctl),
            "--address",
            phase.server.address,
            "export",
            "events" if number % 2 == 0 else "feedback",
            "-o",
            str(output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        started += 1
        try:
            await asyncio.wait_for(child.wait(), random.uniform(0.4, 1.2))
            finished += 1
        except TimeoutError:
            _signal(child, signal.SIGKILL if number % 4 < 2 else signal.SIGINT)
            await child.wait()

    await bounded(plan.killed_cli_clients, CHILD_CONCURRENCY, cli_client, phase)
    phase.result.figures["feedbackctl_clients"] = started
    phase.result.figures["feedbackctl_finished_before_signal"] = finished
    if await phase.checkup(f"{started} killed feedbackctl exports"):
        logged = await asyncio.to_thread(
            phase.log.settle, since, EXPORT_METHODS, expected=0, timeout=3.0
        )
        phase.result.figures["feedbackctl_logged"] = dict(logged)
        phase.result.check(
            logged.total() <= started,
            f"the server logged {logged.total()} exports for {started} feedbackctl clients",
        )


async def deadline_exports(phase: Phase, plan: HostilePlan) -> None:
    """Slow readers whose deadline, 0.01 to 0.5 s, passes while the export streams (the short
    ones often before the first chunk, so the long ones make sure some are cut mid-stream)."""
    tally = Tally()
    since = phase.log.mark()
    channels = _channels(phase.server.address, 4)
    count = plan.deadline_exports

    async def one(number: int) -> None:
        stub = pb_grpc.FeedbackServiceStub(channels[number % len(channels)])
        timeout = 0.01 + 0.49 * number / max(1, count - 1)
        # ExportEvents only, read at DEADLINE_CHUNK_PAUSE_SECONDS: it outlasts every deadline,
        # so no export can finish just as its deadline passes.
        call = _export_call(stub, 0, timeout)
        tally.started += 1
        chunks = 0
        try:
            async for _ in call:
                chunks += 1
                await asyncio.sleep(DEADLINE_CHUNK_PAUSE_SECONDS)
            tally.completed += 1
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                tally.mid_stream += chunks > 0
            else:
                _record_error(tally, error)

    try:
        await bounded(count, CONCURRENCY, one, phase)
    finally:
        for channel in channels:
            await channel.close(None)
    await phase.checkup(f"{tally.started} exports past their deadline")
    # A call whose deadline passed before its first chunk may never have reached the server;
    # how many get a chunk in time depends on the machine's load, so only one in eight must.
    await judge_tally(
        phase,
        tally,
        since=since,
        methods=EXPORT_METHODS,
        least_mid_stream=count // 8,
        exact=False,
    )


async def cancelled_exports(phase: Phase, plan: HostilePlan) -> None:
    """call.cancel() after 0, 1 or 2 chunks."""
    tally = Tally()
    since = phase.log.mark()
    channels = _channels(phase.server.address, 4)
    count = plan.cancelled_exports

    async def one(number: int) -> None:
        stub = pb_grpc.FeedbackServiceStub(channels[number % len(channels)])
        call = _export_call(stub, number)
        tally.started += 1
        wanted = number % 3
        chunks = 0
        try:
            while chunks < wanted:
                if await call.read() is grpc.aio.EOF:  # type: ignore[attr-defined]
                    tally.completed += 1
                    return
                chunks += 1
                await asyncio.sleep(CHUNK_PAUSE_SECONDS)
        except grpc.aio.AioRpcError as error:
            _record_error(tally, error)
            return
        call.cancel()
        tally.mid_stream += chunks > 0

    try:
        await bounded(count, CONCURRENCY, one, phase)
    finally:
        for channel in channels:
            await channel.close(None)
    await phase.checkup(f"{tally.started} cancelled exports")
    await judge_tally(
        phase,
        tally,
        since=since,
        methods=EXPORT_METHODS,
        least_mid_stream=count // 2,
        exact=False,
    )


async def reset_exports(phase: Phase, plan: HostilePlan) -> None:
    """TCP resets (SO_LINGER 0): after the first DATA (while reading, or with the window left
    shut), right after the request, or after the preface alone."""
    tally = Tally()
    since = phase.log.mark()
    before_headers = 0

    async def one(number: int) -> None:
        nonlocal before_headers
        mode = number % 4
        connection = await RawGrpcConnection.connect(
            phase.server.address, acknowledge_bytes=RESET_READ_BYTES if mode == 0 else 0
        )
        if mode == 3:
            before_headers += 1
            connection.reset_tcp()
            return
        stream = await connection.open_stream(_method(number), _request(number))
        tally.started += 1
        if mode == 2:
            connection.reset_tcp()
            return
        try:
            await asyncio.wait_for(stream.got_data.wait(), FIRST_DATA_SECONDS)
        except TimeoutError:
            tally.unexpected["no DATA within 10 s"] += 1
        await asyncio.sleep(random.uniform(0, 0.02))
        _settle_raw(tally, stream.status_name, stream.detail_kinds(), stream.data_bytes)
        connection.reset_tcp()

    await bounded(plan.reset_exports, CONCURRENCY, one, phase)
    phase.result.figures["reset_before_headers"] = before_headers
    await phase.checkup(f"{tally.started + before_headers} TCP resets")
    await judge_tally(
        phase,
        tally,
        since=since,
        methods=EXPORT_METHODS,
        least_mid_stream=plan.reset_exports // 3,
        exact=False,
    )


def _settle_raw(tally: Tally, status: str, details: frozenset[str], data_bytes: int) -> None:
    """Count a raw stream about to be abandoned by what it has seen so far."""
    if status == "open":
        tally.mid_stream += data_bytes > 0
    elif status == "OK":
        tally.completed += 1
    elif status == "RESOURCE_EXHAUSTED":
        tally.refusal(status, details)
    else:
        tally.unexpected[status] += 1


async def stopped_readers(phase: Phase, plan: HostilePlan) -> None:
    """Readers that stop reading and later go away: a 1 KiB window never updated, a zero
    window, or a grpc call never iterated; then GOAWAY and FIN, or the channel closed."""
    tally = Tally()
    since = phase.log.mark()

    async def raw(number: int, window: int) -> None:
        connection = await RawGrpcConnection.connect(
            phase.server.address, initial_window=window, acknowledge_bytes=0
        )
        stream = await connection.open_stream(_method(number), _request(number))
        tally.started += 1
        answered = stream.got_data if window else stream.responded
        try:
            await asyncio.wait_for(answered.wait(), FIRST_DATA_SECONDS)
        except TimeoutError:
            tally.unexpected["no answer within 10 s"] += 1
        await asyncio.sleep(random.uniform(*HOLD_SECONDS))
        status = stream.status_name
        if status == "open":
            tally.mid_stream += 1
        else:
            _settle_raw(tally, status, stream.detail_kinds(), stream.data_bytes)
        await connection.close()

    async def never_iterated(number: int) -> None:
        (channel,) = _channels(phase.server.address, 1)
        try:
            call = _export_call(pb_grpc.FeedbackServiceStub(channel), number)
            tally.started += 1
            try:
                await asyncio.wait_for(call.initial_metadata(), FIRST_DATA_SECONDS)
            except TimeoutError:
                tally.unexpected["no response headers within 10 s"] += 1
            await asyncio.sleep(random.uniform(*HOLD_SECONDS))
            if call.done():
                try:
                    await call.read()
                    tally.completed += 1
                except grpc.aio.AioRpcError as error:
                    _record_error(tally, error)
            else:
                tally.mid_stream += 1
        finally:
            await channel.close(None)

    async def one(number: int) -> None:
        mode = number % 3
        if mode == 0:
            await raw(number, 1024)
        elif mode == 1:
            await raw(number, 0)
        else:
            await never_iterated(number)

    await bounded(plan.stopped_exports, CONCURRENCY, one, phase)
    await phase.checkup(f"{tally.started} readers that stopped reading")
    await judge_tally(
        phase,
        tally,
        since=since,
        methods=EXPORT_METHODS,
        least_mid_stream=plan.stopped_exports * 2 // 3,
        exact=True,
    )


async def abandoned_ingests(phase: Phase, plan: HostilePlan) -> None:
    """Ingest streams cancelled, or whose deadline passes, after 1,500 to 3,500 items.

    Ingest answers only at its end, so the client knows nothing of what was stored; what must
    hold is that the server lives, logs each stream once, and stores only items that were sent,
    each once. Whether it stores whole 1000-item chunks only is noted, not judged: a stream cut
    off looks like a finished one to the handler, which then writes its last partial chunk.
    """
    prefix = f"hostile-ingest-{secrets.token_hex(3)}-"
    since = phase.log.mark()
    sent: dict[str, int] = {}
    codes: dict[str, int] = {}
    channels = _channels(phase.server.address, 2)

    async def one(number: int) -> None:
        marker = f"{prefix}{number}-"
        cut = 1500 + (number * 700) % 2001
        sent[marker] = 0
        gate = asyncio.Event()

        async def items() -> AsyncIterator[pb.IngestRequest]:
            while sent[marker] < cut:
                message = pb.IngestRequest()
                for _ in range(INGEST_ITEMS_PER_MESSAGE):
                    message.items.add().event.CopyFrom(
                        pb.LogEventRequest(
                            user_id=f"{marker}{sent[marker]}",
                            event_type="hostile.ingest",
                            request_id=str(uuid.uuid4()),
                        )
                    )
                    sent[marker] += 1
                yield message
            gate.set()
            await asyncio.sleep(3600)  # the stream stays open until abandoned

        stub = pb_grpc.FeedbackServiceStub(channels[number % len(channels)])
        timeout = 2.0 if number % 2 else None
        call = stub.Ingest(items(), timeout=timeout)
        await gate.wait()
        await asyncio.sleep(0.3)  # time for the server to commit what it has
        if timeout is None:
            call.cancel()
        try:
            await call
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] = codes.get(error.code().name, 0) + 1
        except asyncio.CancelledError:
            codes["CANCELLED"] = codes.get("CANCELLED", 0) + 1

    try:
        await bounded(plan.abandoned_ingests, CONCURRENCY, one, phase)
    finally:
        for channel in channels:
            await channel.close(None)
    result = phase.result
    result.figures["ingest_streams"] = len(sent)
    result.figures["ingest_items_sent"] = sum(sent.values())
    result.figures["client_codes"] = codes
    if not await phase.checkup(f"{len(sent)} abandoned Ingest streams"):
        return
    logged = await asyncio.to_thread(
        phase.log.settle, since, {SERVICE + "Ingest"}, expected=len(sent), timeout=10.0
    )
    result.figures["logged"] = dict(logged)
    result.check(
        logged.total() == len(sent),
        f"the server logged {logged.total()} Ingest calls for {len(sent)} abandoned streams",
    )
    result.check(
        set(logged) <= {"CANCELLED", "DEADLINE_EXCEEDED"},
        f"abandoned Ingest streams were logged as {dict(logged)}",
    )
    result.check(
        set(codes) <= {"CANCELLED", "DEADLINE_EXCEEDED"},
        f"abandoned Ingest clients saw {codes}",
    )
    await asyncio.sleep(1.0)  # a chunk still committing when the stream ended
    stored = Database("sqlite", phase.database_url).values_with_prefix("events", "user_id", prefix)
    per_stream = {marker: 0 for marker in sent}
    for user_id, rows in stored.items():
        per_stream[user_id[: user_id.rindex("-") + 1]] += rows
    duplicates = sum(rows - 1 for rows in stored.values() if rows > 1)
    over = {marker: rows for marker, rows in per_stream.items() if rows > sent[marker]}
    partial = sum(1 for rows in per_stream.values() if rows % INGEST_CHUNK)
    result.figures["ingest_rows_stored"] = sum(per_stream.values())
    result.figures["streams_with_a_partial_chunk_stored"] = partial
    result.check(duplicates == 0, f"{duplicates} Ingest items were stored twice")
    result.check(not over, f"streams stored more rows than they sent: {over}")
    if partial:
        result.notes.append(
            f"{partial} of {len(sent)} abandoned Ingest streams had a partial chunk stored: "
            "the server took the cut-off stream for a finished one"
        )


def _signal(child: asyncio.subprocess.Process, number: int) -> None:
    """Signal a client unless it has ended: one may end on its own between the check and the
    signal (ProcessLookupError), which is an ending like any other."""
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(number)
