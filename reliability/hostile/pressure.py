"""Clients that hold the server's resources rather than abandon calls: idle connections, slow
readers, a flood of writes in flight at once, and messages that never finish arriving."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import grpc

from llmfeedback import FeedbackError
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.databases import Database
from reliability.hostile.checkup import get_stats_latencies_ms, ordinary_client, p99_ms
from reliability.hostile.phase import (
    BASE_ENVIRONMENT,
    EXPORT_METHODS,
    SERVICE,
    Phase,
    Tally,
    bounded,
    judge_tally,
)
from reliability.hostile.plan import HostilePlan
from reliability.hostile.raw_h2 import (
    RawGrpcConnection,
    RawStream,
    detail_kinds,
    details_from_metadata,
)

ORDINARY_CALLS = 100
"""GetStats calls an ordinary client makes to measure p99 while the server is under pressure."""
IDLE_P99_LIMIT_MS = 100.0
SLOW_READER_P99_LIMIT_MS = 50.0
IDLE_TIMEOUT_SECONDS = 4
"""FEEDBACK_CONNECTION_IDLE_TIMEOUT for the idle phase: connections with no call are closed."""
CLOSE_SLACK_SECONDS = 8.0
"""How late after a timeout the server may act on it and still pass."""
IDLE_ENVIRONMENT = {"FEEDBACK_CONNECTION_IDLE_TIMEOUT": str(IDLE_TIMEOUT_SECONDS)}
STREAMS_PER_SLOW_CONNECTION = 50
"""Half the server's streams per connection, so the connection limit does not refuse them."""
MAX_EXPORTS = int(BASE_ENVIRONMENT["FEEDBACK_MAX_EXPORTS"])
MAX_EXPORTS_PER_CALLER = int(BASE_ENVIRONMENT["FEEDBACK_MAX_EXPORTS_PER_CALLER"])
SETTLE_SECONDS = 20.0
"""How long streams may take to be admitted (first chunk read) or refused."""
STALL_TIMEOUT_SECONDS = 2
STALLED_EXPORTS = 8
STALL_ENVIRONMENT = {
    "FEEDBACK_STREAM_STALL_TIMEOUT": str(STALL_TIMEOUT_SECONDS),
    "FEEDBACK_MAX_EXPORTS": str(STALLED_EXPORTS),
    "FEEDBACK_MAX_EXPORTS_PER_CALLER": str(2 * STALLED_EXPORTS),
}
"""Every export slot taken by a stalled export, so only the stall timeout can free one."""
CALLER_EXPORTS = 10
"""Exports one caller opens at once against a per-caller cap of MAX_EXPORTS_PER_CALLER."""
FLOOD_TIMEOUT_SECONDS = 120.0
FLOOD_CALLS_PER_CONNECTION = 100
FLOOD_CODES = frozenset({"OK", "RESOURCE_EXHAUSTED"})
MESSAGE_TIMEOUT_SECONDS = 2
HALF_SENT_ENVIRONMENT = {"FEEDBACK_MESSAGE_TIMEOUT": str(MESSAGE_TIMEOUT_SECONDS)}
HALF_SENT_STREAMS_PER_CONNECTION = 100
"""FEEDBACK_MAX_STREAMS_PER_CONNECTION: every stream of a round is open at once, so a server that
answers only when its message timeout passes still answers them all within one timeout."""
HALF_SENT_DECLARED_BYTES = 1_000_000
HALF_SENT_BODY = b"0123456789"
HALF_SENT_METHODS = ("GetStats", "LogEvent", "Ingest", "ExportEvents")
RSS_GROWTH_LIMIT_MB = 50.0
"""RSS after the last half-sent round may exceed the first round's by at most this much."""
PREFACE_SECONDS = 10.0


def _export(number: int) -> tuple[str, bytes]:
    if number % 2 == 0:
        return "ExportEvents", pb.ExportEventsRequest().SerializeToString()
    return "ExportFeedback", pb.ExportFeedbackRequest().SerializeToString()


@dataclass(slots=True, eq=False)
class _SilentSocket:
    """A TCP connection that sends nothing; `closed` is set if the server closes it."""

    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None]
    closed: asyncio.Event


async def _silent_socket(address: str) -> _SilentSocket:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    closed = asyncio.Event()

    async def until_eof() -> None:
        try:
            while await reader.read(4096):
                pass
        except (ConnectionError, OSError):
            pass
        closed.set()

    return _SilentSocket(writer, asyncio.get_running_loop().create_task(until_eof()), closed)


async def idle_connections(phase: Phase, plan: HostilePlan) -> None:
    """Thousands of connections that send the preface and SETTINGS, or nothing at all, and wait.

    An ordinary client's GetStats must stay fast while they are open, and the connections that
    completed the HTTP/2 handshake and made no call must be closed by the server once
    FEEDBACK_CONNECTION_IDLE_TIMEOUT passes.
    """
    result = phase.result
    address = phase.server.address
    handshaken: list[RawGrpcConnection] = []
    silent: list[_SilentSocket] = []
    failures: Counter[str] = Counter()

    async def open_one(number: int) -> None:
        try:
            if number % 2 == 0:
                handshaken.append(await RawGrpcConnection.connect(address))
            else:
                silent.append(await _silent_socket(address))
        except (OSError, TimeoutError) as error:
            failures[type(error).__name__] += 1

    opened_at = time.monotonic()
    await bounded(plan.idle_connections, 200, open_one, phase)
    result.figures["idle_connections"] = len(handshaken) + len(silent)
    result.figures["idle_connections_with_preface"] = len(handshaken)
    result.figures["connect_failures"] = dict(failures)
    result.check(not failures, f"{failures.total()} idle connections could not be opened")
    try:
        latencies, failed = await asyncio.to_thread(get_stats_latencies_ms, address, ORDINARY_CALLS)
        p99 = p99_ms(latencies)
        result.figures["get_stats_p99_ms_with_idle_connections"] = p99
        result.check(not failed, f"GetStats failed beside idle connections: {dict(failed)}")
        result.check(
            p99 is not None and p99 < IDLE_P99_LIMIT_MS,
            f"GetStats p99 was {p99} ms beside {len(handshaken) + len(silent)} idle connections "
            f"(limit {IDLE_P99_LIMIT_MS:.0f} ms)",
        )
        if not await phase.checkup(f"{len(handshaken) + len(silent)} idle connections"):
            return
        closing_deadline = opened_at + IDLE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS
        waits = [connection.lost.wait() for connection in handshaken]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*waits), max(0.0, closing_deadline - time.monotonic())
            )
        closed = sum(1 for connection in handshaken if connection.closed_by_server)
        result.figures["idle_closed_by_server"] = closed
        result.figures["silent_closed_by_server"] = sum(1 for s in silent if s.closed.is_set())
        result.check(
            closed == len(handshaken),
            f"{len(handshaken) - closed} of {len(handshaken)} connections idle (no call) for "
            f"{IDLE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS:.0f} s were still open "
            f"(FEEDBACK_CONNECTION_IDLE_TIMEOUT={IDLE_TIMEOUT_SECONDS})",
        )
    finally:
        for connection in handshaken:
            connection.reset_tcp()
        for socket in silent:
            socket.writer.transport.abort()
            socket.reader_task.cancel()
        await asyncio.gather(
            *(connection.close() for connection in handshaken),
            *(socket.reader_task for socket in silent),
            return_exceptions=True,
        )
    await asyncio.sleep(0.5)
    await phase.checkup(f"closing {len(handshaken) + len(silent)} idle connections")


async def _zero_window_exports(
    address: str, count: int, per_connection: int
) -> tuple[list[RawGrpcConnection], list[RawStream]]:
    """`count` exports on connections that offer a zero window: the server can send no DATA."""
    connections = [
        await RawGrpcConnection.connect(address, initial_window=0, acknowledge_bytes=0)
        for _ in range(math.ceil(count / per_connection))
    ]
    streams = []
    for number in range(count):
        method, body = _export(number)
        streams.append(await connections[number // per_connection].open_stream(method, body))
    return connections, streams


async def _settled(streams: list[RawStream], seconds: float) -> None:
    """Wait until every stream was answered (headers, a status or a reset) or `seconds` pass."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(stream.responded.wait() for stream in streams)), seconds
        )


def _tally_streams(streams: list[RawStream]) -> Tally:
    """Open streams count as admitted (mid-stream); ended ones by how they ended."""
    tally = Tally(started=len(streams))
    for stream in streams:
        status = stream.status_name
        if status == "open":
            tally.mid_stream += 1
        elif status == "RESOURCE_EXHAUSTED":
            tally.refusal(status, stream.detail_kinds())
        elif status == "OK":
            tally.completed += 1
        else:
            tally.unexpected[status] += 1
    return tally


async def slow_readers(phase: Phase, plan: HostilePlan) -> None:
    """Exports whose client never reads (a zero window): most must be refused with
    RESOURCE_EXHAUSTED and RetryInfo, and GetStats must stay fast while they are open."""
    result = phase.result
    since = phase.log.mark()
    connections, streams = await _zero_window_exports(
        phase.server.address, plan.slow_readers, STREAMS_PER_SLOW_CONNECTION
    )
    try:
        await _settled(streams, SETTLE_SECONDS)
        tally = _tally_streams(streams)
        result.figures["slow_readers"] = len(streams)
        result.figures["admitted"] = tally.mid_stream
        result.figures["resource_exhausted"] = tally.refused["RESOURCE_EXHAUSTED"]
        result.check(
            tally.mid_stream <= MAX_EXPORTS,
            f"{tally.mid_stream} of {len(streams)} never-read exports were kept open "
            f"(FEEDBACK_MAX_EXPORTS={MAX_EXPORTS}); the rest must be refused",
        )
        latencies, failed = await asyncio.to_thread(
            get_stats_latencies_ms, phase.server.address, ORDINARY_CALLS
        )
        p99 = p99_ms(latencies)
        result.figures["get_stats_p99_ms_with_slow_readers"] = p99
        result.check(not failed, f"GetStats failed beside slow readers: {dict(failed)}")
        result.check(
            p99 is not None and p99 < SLOW_READER_P99_LIMIT_MS,
            f"GetStats p99 was {p99} ms beside {len(streams)} slow readers "
            f"(limit {SLOW_READER_P99_LIMIT_MS:.0f} ms)",
        )
        if not await phase.checkup(f"{len(streams)} slow readers opened"):
            return
    finally:
        for number, connection in enumerate(connections):
            if number % 2:
                connection.reset_tcp()
        await asyncio.gather(*(connection.close() for connection in connections))
    await asyncio.sleep(1.0)
    if await phase.checkup(f"closing {len(streams)} slow readers"):
        await judge_tally(
            phase, tally, since=since, methods=EXPORT_METHODS, least_mid_stream=0, exact=True
        )


async def stalled_exports(phase: Phase, plan: HostilePlan) -> None:
    """Exports whose client takes no message fill every export slot; once
    FEEDBACK_STREAM_STALL_TIMEOUT passes the server must end each one itself (its log line, not
    OK) and so free its slot: an ordinary export then streams in full while the stalled
    clients still hold their connections.

    Whether the end shows on the wire is reported, not judged: gRPC queues the trailers behind
    the message the closed window holds back, so the client may see nothing until it leaves.
    """
    result = phase.result
    since = phase.log.mark()
    connections: list[RawGrpcConnection] = []
    streams: list[RawStream] = []
    for number in range(STALLED_EXPORTS):
        window = 0 if number % 2 == 0 else 1024
        connection = await RawGrpcConnection.connect(
            phase.server.address, initial_window=window, acknowledge_bytes=0
        )
        connections.append(connection)
        method, body = _export(number)
        streams.append(await connection.open_stream(method, body))
    try:
        await _settled(streams, SETTLE_SECONDS)
        stalled = _tally_streams(streams)
        result.figures["stalled_exports"] = len(streams)
        result.figures["admitted"] = stalled.mid_stream
        result.check(
            stalled.mid_stream == len(streams),
            f"only {stalled.mid_stream} of {len(streams)} exports were admitted "
            f"({dict(stalled.refused)} {dict(stalled.unexpected)}); the phase needs them all",
        )
        logged = await asyncio.to_thread(
            phase.log.settle,
            since,
            EXPORT_METHODS,
            expected=len(streams),
            timeout=STALL_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS,
        )
        result.figures["logged"] = dict(logged)
        result.check(
            logged.total() == len(streams) and "OK" not in logged,
            f"{STALL_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS:.0f} s after {len(streams)} exports "
            f"stalled the server had ended {logged.total()} ({dict(logged)}); it must end each "
            f"(FEEDBACK_STREAM_STALL_TIMEOUT={STALL_TIMEOUT_SECONDS})",
        )
        rows, failure = await asyncio.to_thread(_ordinary_export, phase.server.address)
        result.figures["ordinary_export_rows"] = rows
        result.check(
            failure is None and rows == phase.dataset.events,
            f"an ordinary export beside the stalled ones got {rows} of {phase.dataset.events} "
            f"rows ({failure or 'no error'}): their slots must be free again",
        )
        ended = [stream for stream in streams if stream.answer_kind in ("status", "reset")]
        result.figures["ended_on_the_wire"] = dict(Counter(s.status_name for s in ended))
        if len(ended) < len(streams):
            result.notes.append(
                f"{len(streams) - len(ended)} of {len(streams)} stalled exports saw no end on "
                "the wire (trailers wait behind the message the closed window holds)"
            )
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    await phase.checkup(f"{len(streams)} stalled exports")


def _ordinary_export(address: str) -> tuple[int, str | None]:
    """Rows an ordinary client's ExportEvents got, and the error that stopped it, if any."""
    rows = 0
    try:
        with ordinary_client(address) as client:
            for chunk in client.export_events(timeout=30):
                rows += len(chunk.records)
    except FeedbackError as error:
        return rows, f"{error.code.name}: {error.message}"
    return rows, None


async def one_caller_cap(phase: Phase, plan: HostilePlan) -> None:
    """One caller (one connection) opens CALLER_EXPORTS exports it never reads: exactly
    MAX_EXPORTS_PER_CALLER stay open, and the rest get RESOURCE_EXHAUSTED with RetryInfo and
    QuotaFailure."""
    result = phase.result
    connections, streams = await _zero_window_exports(
        phase.server.address, CALLER_EXPORTS, CALLER_EXPORTS
    )
    try:
        await _settled(streams, SETTLE_SECONDS)
        tally = _tally_streams(streams)
        quota = sum(1 for stream in streams if "QuotaFailure" in stream.detail_kinds())
        result.figures.update(tally.figures())
        result.figures["refusals_with_quota_failure"] = quota
        result.check(
            tally.mid_stream == MAX_EXPORTS_PER_CALLER,
            f"one caller kept {tally.mid_stream} of {CALLER_EXPORTS} exports open "
            f"(FEEDBACK_MAX_EXPORTS_PER_CALLER={MAX_EXPORTS_PER_CALLER})",
        )
        refused = tally.refused["RESOURCE_EXHAUSTED"]
        result.check(
            refused == CALLER_EXPORTS - MAX_EXPORTS_PER_CALLER,
            f"{refused} of {CALLER_EXPORTS} exports were refused with RESOURCE_EXHAUSTED",
        )
        result.check(
            tally.refused_without_retry_info == 0 and quota == refused,
            f"of {refused} refusals, {refused - tally.refused_without_retry_info} carry "
            f"RetryInfo and {quota} QuotaFailure (all must carry both)",
        )
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    await phase.checkup(f"{CALLER_EXPORTS} exports of one caller")


async def flood(phase: Phase, plan: HostilePlan) -> None:
    """LogEvent and SubmitFeedback calls all in flight at once, over connections of 100 calls:
    each ends OK or RESOURCE_EXHAUSTED with RetryInfo, each OK is stored, no refusal is."""
    result = phase.result
    prefix = f"hostile-flood-{secrets.token_hex(3)}-"
    since = phase.log.mark()
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(phase.server.address, options=options)
        for _ in range(math.ceil(plan.flood_calls / FLOOD_CALLS_PER_CONNECTION))
    ]
    codes: Counter[str] = Counter()
    without_retry_info = 0
    acknowledged: set[str] = set()
    refused: set[str] = set()
    messages: dict[str, str] = {}

    async def one(number: int) -> None:
        nonlocal without_retry_info
        stub = pb_grpc.FeedbackServiceStub(channels[number % len(channels)])
        user = f"{prefix}{number}"
        try:
            if number % 2 == 0:
                await stub.LogEvent(
                    pb.LogEventRequest(
                        user_id=user, event_type="hostile.flood", request_id=str(uuid.uuid4())
                    ),
                    timeout=FLOOD_TIMEOUT_SECONDS,
                )
            else:
                await stub.SubmitFeedback(
                    pb.SubmitFeedbackRequest(
                        conversation_id=f"{prefix}c{number}",
                        message_id=f"{prefix}m{number}",
                        user_id=user,
                        score=1 + number % 5,
                        request_id=str(uuid.uuid4()),
                    ),
                    timeout=FLOOD_TIMEOUT_SECONDS,
                )
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            codes[code] += 1
            if code != "RESOURCE_EXHAUSTED" and code not in messages:
                messages[code] = error.details() or ""
            if code == "RESOURCE_EXHAUSTED":
                refused.add(user)
                details = details_from_metadata(error.trailing_metadata())  # type: ignore[arg-type]
                if details is None or "RetryInfo" not in detail_kinds(details):
                    without_retry_info += 1
            return
        codes["OK"] += 1
        acknowledged.add(user)

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(number) for number in range(plan.flood_calls)))
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))
    result.figures["flood_calls"] = plan.flood_calls
    result.figures["flood_seconds"] = round(time.monotonic() - started, 1)
    result.figures["codes"] = dict(codes)
    result.figures["messages"] = messages
    if not await phase.checkup(f"a flood of {plan.flood_calls} calls"):
        return
    result.check(
        set(codes) <= FLOOD_CODES,
        f"flood calls ended {dict(codes)} (only OK or RESOURCE_EXHAUSTED may)",
    )
    result.check(
        without_retry_info == 0,
        f"{without_retry_info} of {codes['RESOURCE_EXHAUSTED']} RESOURCE_EXHAUSTED answers "
        "carry no RetryInfo",
    )
    database = Database("sqlite", phase.database_url)
    stored = database.values_with_prefix("events", "user_id", prefix)
    stored += database.values_with_prefix("feedback", "user_id", prefix)
    missing = acknowledged - stored.keys()
    refused_stored = refused & stored.keys()
    duplicates = sum(rows - 1 for rows in stored.values() if rows > 1)
    result.acknowledged = len(acknowledged)
    result.missing = len(missing)
    result.figures["refused_but_stored"] = len(refused_stored)
    result.check(not missing, f"{len(missing)} acknowledged writes are not in the database")
    result.check(
        not refused_stored, f"{len(refused_stored)} writes refused RESOURCE_EXHAUSTED were stored"
    )
    result.check(duplicates == 0, f"{duplicates} flood writes were stored twice")
    logged = await asyncio.to_thread(
        phase.log.settle,
        since,
        {SERVICE + "LogEvent", SERVICE + "SubmitFeedback"},
        expected=len(acknowledged),
        timeout=20.0,
    )
    result.figures["logged"] = dict(logged)
    result.check(
        logged["OK"] == len(acknowledged) and logged.total() <= plan.flood_calls,
        f"the server logged {dict(logged)} for {len(acknowledged)} acknowledged of "
        f"{plan.flood_calls} calls",
    )


async def half_sent_messages(phase: Phase, plan: HostilePlan) -> None:
    """Rounds of streams whose length prefix promises 1,000,000 bytes and that end after 10,
    and of streams that send headers and never any DATA: each must be answered (a status or
    RST_STREAM) within FEEDBACK_MESSAGE_TIMEOUT and slack, and RSS must not grow round after
    round."""
    result = phase.result
    since = phase.log.mark()
    rounds: list[dict[str, object]] = []
    first_rss: float | None = None
    for round_number in range(1, plan.half_sent_rounds + 1):
        figures = await _half_sent_round(phase, plan)
        await asyncio.sleep(0.5)
        rss = phase.server.rss_mb()
        figures["rss_mb"] = None if rss is None else round(rss, 1)
        rounds.append(figures)
        result.figures["rounds"] = rounds
        unanswered = figures["unanswered"]
        result.check(
            unanswered == 0,
            f"round {round_number}: {unanswered} of {figures['streams']} half-sent or "
            f"header-only streams got no answer within "
            f"{MESSAGE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS:.0f} s "
            f"(FEEDBACK_MESSAGE_TIMEOUT={MESSAGE_TIMEOUT_SECONDS})",
        )
        if not await phase.checkup(f"half-sent round {round_number}"):
            return
        if first_rss is None:
            first_rss = rss
    last_rss = rounds[-1]["rss_mb"]
    if isinstance(first_rss, float) and isinstance(last_rss, float):
        growth = round(last_rss - first_rss, 1)
        result.figures["rss_growth_mb"] = growth
        result.check(
            growth <= RSS_GROWTH_LIMIT_MB,
            f"RSS grew {growth} MB from round 1 to round {len(rounds)} "
            f"(limit {RSS_GROWTH_LIMIT_MB:.0f} MB)",
        )
    ok = sum(int(str(figures["answered_ok"])) for figures in rounds)
    if ok:
        result.notes.append(
            f"{ok} half-sent streams were answered OK: the server took a truncated message "
            "for the end of the stream"
        )
    result.figures["logged"] = dict(phase.log.codes(since))


async def _half_sent_round(phase: Phase, plan: HostilePlan) -> dict[str, object]:
    """One round, HALF_SENT_STREAMS_PER_CONNECTION streams per connection; returns its figures."""
    total = plan.half_sent_streams + plan.slowloris_streams
    connections = [
        await RawGrpcConnection.connect(phase.server.address)
        for _ in range(math.ceil(total / HALF_SENT_STREAMS_PER_CONNECTION))
    ]
    half_sent: list[RawStream] = []
    header_only: list[RawStream] = []
    budget = MESSAGE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS
    opening_deadline = time.monotonic() + budget

    async def fill(index: int) -> None:
        connection = connections[index]
        for number in range(index, total, len(connections)):
            if time.monotonic() > opening_deadline:
                return
            method = HALF_SENT_METHODS[number % len(HALF_SENT_METHODS)]
            try:
                if number < plan.half_sent_streams:
                    half_sent.append(
                        await connection.open_stream(
                            method, HALF_SENT_BODY, declared_length=HALF_SENT_DECLARED_BYTES
                        )
                    )
                else:
                    header_only.append(await connection.open_stream(method, None, end_stream=False))
            except ConnectionError:
                return

    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(fill(index) for index in range(len(connections)))), budget
            )
        streams = half_sent + header_only
        last_opened = max((stream.opened for stream in streams), default=time.monotonic())
        remaining = last_opened + budget - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(stream.done.wait() for stream in streams)), max(0.0, remaining)
            )
        answered = [s for s in streams if s.answer_kind in ("status", "reset", "connection")]
        return {
            "streams": total,
            "opened": len(streams),
            "unanswered": total - len(answered),
            "answers": dict(Counter(stream.answer_kind for stream in answered)),
            "codes": dict(Counter(stream.status_name for stream in answered)),
            "answered_ok": sum(1 for stream in answered if stream.status_name == "OK"),
            "slowest_answer_seconds": round(
                max((s.ended - s.opened for s in answered if s.ended is not None), default=0), 2
            ),
        }
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))


COSTLY_CLIENTS = 32
COSTLY_STATS_P99_LIMIT_MS = 1000.0
"""GetStats beside the costly writes: each costs about 60 ms of CPU to redact, and on the event
loop (before the redaction thread) they held GetStats for 1.8-2.2 s."""


def costly_metadata() -> dict[str, str]:
    """16 KiB of digit groups: every run is a phone number candidate and a card candidate."""
    return {f"k{number}": ("1 2 3 4 5 6 7 8 " * 20)[:200] for number in range(75)}


async def costly_texts(phase: Phase, plan: HostilePlan) -> None:
    """COSTLY_CLIENTS clients send writes as costly to redact as free text can be, while an
    ordinary client calls GetStats: every write is answered OK and stored once, and GetStats
    stays under COSTLY_STATS_P99_LIMIT_MS."""
    result = phase.result
    prefix = f"hostile-costly-{secrets.token_hex(3)}-"
    metadata = costly_metadata()
    numbers = iter(range(plan.costly_writes))
    acknowledged: set[str] = set()
    codes: Counter[str] = Counter()

    async def client(stub: pb_grpc.FeedbackServiceAsyncStub) -> None:
        for number in numbers:
            request = pb.SubmitFeedbackRequest(
                conversation_id=f"{prefix}c{number}", user_id=f"{prefix}{number}", score=2
            )
            request.metadata.update(metadata)
            try:
                await stub.SubmitFeedback(request, timeout=FLOOD_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
                continue
            codes["OK"] += 1
            acknowledged.add(f"{prefix}{number}")

    started = time.monotonic()
    channel = grpc.aio.insecure_channel(phase.server.address)
    try:
        stub = pb_grpc.FeedbackServiceStub(channel)
        writers = asyncio.gather(*(client(stub) for _ in range(COSTLY_CLIENTS)))
        latencies, failed = await asyncio.to_thread(
            get_stats_latencies_ms, phase.server.address, ORDINARY_CALLS
        )
        await writers
    finally:
        await channel.close(None)
    p99 = p99_ms(latencies)
    result.figures["costly_writes"] = plan.costly_writes
    result.figures["costly_seconds"] = round(time.monotonic() - started, 1)
    result.figures["codes"] = dict(codes)
    result.figures["get_stats_p99_ms_with_costly_writes"] = p99
    if not await phase.checkup(f"{plan.costly_writes} costly writes"):
        return
    result.check(codes == {"OK": plan.costly_writes}, f"costly writes ended {dict(codes)}")
    result.check(not failed, f"GetStats failed beside costly writes: {dict(failed)}")
    result.check(
        p99 is not None and p99 < COSTLY_STATS_P99_LIMIT_MS,
        f"GetStats p99 was {p99} ms beside costly writes "
        f"(limit {COSTLY_STATS_P99_LIMIT_MS:.0f} ms)",
    )
    stored = Database("sqlite", phase.database_url).values_with_prefix(
        "feedback", "user_id", prefix
    )
    result.acknowledged = len(acknowledged)
    result.missing = len(acknowledged - stored.keys())
    result.check(result.missing == 0, f"{result.missing} acknowledged costly writes are missing")
