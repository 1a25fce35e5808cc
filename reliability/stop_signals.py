"""kill -9 and SIGTERM under load: every write acknowledged before the signal must be stored."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import grpc

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.databases import Database
from reliability.results import ScenarioResult
from reliability.server_process import ServerProcess
from reliability.write_load import WriteLoad, WriteLog

KILL = "kill -9 under load"
TERMINATE = "SIGTERM drain"
LOAD_TIMEOUT_SECONDS = 180.0
EXIT_TIMEOUT_SECONDS = 60.0


async def kill_under_load(
    database: Database, workdir: Path, *, acknowledged_target: int, concurrency: int = 64
) -> ScenarioResult:
    """SIGKILL the server once `acknowledged_target` writes were acknowledged, restart it on the
    same database, and count the acknowledged writes the database does not hold."""
    result = ScenarioResult(KILL, database.kind)
    started = time.monotonic()
    prefix = f"kill-{secrets.token_hex(3)}"
    server = ServerProcess(database.url, workdir / f"{prefix}.log")
    try:
        server.start()
        load = WriteLoad(server.address, prefix=prefix, concurrency=concurrency)
        load.start()
        try:
            await load.wait_acknowledged(acknowledged_target, LOAD_TIMEOUT_SECONDS)
            result.figures["acknowledged_at_signal"] = len(load.log.acknowledged)
            server.kill()
        finally:
            log = await load.stop()
        restart_began = time.monotonic()
        server.start()
        result.figures["restart_seconds"] = round(time.monotonic() - restart_began, 2)
        after_restart = await _one_write(server.address, f"{prefix}-after-restart")
        result.figures["write_after_restart"] = after_restart
        result.check(after_restart == "OK", f"a write after the restart ended {after_restart}")
        _count(result, database, prefix, log)
    finally:
        server.stop()
        result.seconds = time.monotonic() - started
    return result


async def terminate_under_load(
    database: Database, workdir: Path, *, acknowledged_target: int, concurrency: int = 64
) -> ScenarioResult:
    """SIGTERM the server under load; it must drain, exit 0, and keep every acknowledged write."""
    result = ScenarioResult(TERMINATE, database.kind)
    started = time.monotonic()
    prefix = f"term-{secrets.token_hex(3)}"
    server = ServerProcess(database.url, workdir / f"{prefix}.log")
    try:
        server.start()
        load = WriteLoad(server.address, prefix=prefix, concurrency=concurrency)
        load.start()
        try:
            await load.wait_acknowledged(acknowledged_target, LOAD_TIMEOUT_SECONDS)
            result.figures["acknowledged_at_signal"] = len(load.log.acknowledged)
            signalled = time.monotonic()
            server.send_terminate()
            exit_code = await asyncio.to_thread(server.wait, EXIT_TIMEOUT_SECONDS)
            exit_seconds = time.monotonic() - signalled
        finally:
            log = await load.stop()
        result.figures["exit_code"] = exit_code
        result.figures["exit_seconds"] = round(exit_seconds, 2)
        result.figures["acknowledged_after_signal"] = sum(
            1 for moment in log.acknowledged_times if moment > signalled
        )
        result.figures["codes_after_signal"] = dict(
            log.failures_between(signalled, time.monotonic())
        )
        # Calls already sent when the signal came are what a drain must let finish.
        result.figures["in_flight_at_signal_failed"] = dict(
            log.failures_sent_before(signalled, signalled)
        )
        cancelled = result.figures["in_flight_at_signal_failed"].get("CANCELLED", 0)
        if cancelled:
            result.notes.append(
                f"{cancelled} writes in flight at SIGTERM ended CANCELLED, not drained "
                "(llmfeedback does not retry CANCELLED)"
            )
        result.check(exit_code == 0, f"the server exited with {exit_code}, not 0")
        if exit_code != 0:
            result.figures["server_log_tail"] = server.log_tail(5)
        _count(result, database, prefix, log)
    finally:
        server.stop()
        result.seconds = time.monotonic() - started
    return result


def _count(result: ScenarioResult, database: Database, prefix: str, log: WriteLog) -> None:
    """Compare acknowledged ids with the rows the database holds, straight from SQL."""
    stored = database.values_with_prefix("interactions", "message_id", f"{prefix}-w")
    acknowledged = set(log.acknowledged)
    missing = acknowledged - stored.keys()
    result.acknowledged = len(acknowledged)
    result.missing = len(missing)
    result.figures["sent"] = log.sent
    result.figures["stored"] = len(stored)
    # Committed but never answered (the answer died with the server): not a loss.
    result.figures["stored_not_acknowledged"] = len(stored.keys() - acknowledged)
    result.figures["codes"] = dict(log.codes)
    if missing:
        result.figures["missing_examples"] = sorted(missing)[:5]
    result.check(not missing, f"{len(missing)} acknowledged writes are not in the database")


async def _one_write(address: str, conversation: str) -> str:
    """Status code name of one RecordInteraction."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.FeedbackServiceStub(channel)
        try:
            await stub.RecordInteraction(
                pb.RecordInteractionRequest(conversation_id=conversation), timeout=10
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"
