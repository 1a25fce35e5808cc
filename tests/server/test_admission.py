"""Admission limits: what is refused, with which reason and details, and what is released."""

from __future__ import annotations

import asyncio

import pytest

from server.admission import (
    OVER_MEMORY_BUDGET,
    TOO_MANY_CALLS,
    TOO_MANY_EXPORTS,
    Admission,
    CallKind,
    Limits,
)
from server.service import ResourceExhausted, Unavailable

SERVICE = "feedback.v1.FeedbackService"
METHOD = f"/{SERVICE}/ExportEvents"


def _admission(**limits: int) -> Admission:
    return Admission(Limits(**limits), refusable_services=(SERVICE,))


def test_calls_over_the_limit_are_refused_with_a_retry_delay_until_one_ends() -> None:
    admission = _admission(max_calls=2)

    assert admission.admit(METHOD, CallKind.CALL, "a", "a" + ":1") is None
    assert admission.admit(METHOD, CallKind.CALL, "b", "b" + ":1") is None
    refusal = admission.admit(METHOD, CallKind.CALL, "c", "c" + ":1")

    assert isinstance(refusal, ResourceExhausted)
    assert refusal.reason == TOO_MANY_CALLS
    assert 0.05 <= refusal.retry_after_seconds <= 5.0
    admission.release(CallKind.CALL, "a", "a" + ":1")
    assert admission.admit(METHOD, CallKind.CALL, "c", "c" + ":1") is None
    assert admission.calls_in_progress == 2


def test_one_connection_cannot_take_every_call() -> None:
    admission = _admission(max_calls=10, max_calls_per_connection=2)
    for _ in range(2):
        assert admission.admit(METHOD, CallKind.CALL, "a", "ipv4:10.0.0.1:5000") is None

    refusal = admission.admit(METHOD, CallKind.CALL, "a", "ipv4:10.0.0.1:5000")

    assert isinstance(refusal, ResourceExhausted)
    assert refusal.reason == TOO_MANY_CALLS
    assert refusal.quota is not None
    assert refusal.quota.subject == "ipv4:10.0.0.1:5000"
    assert admission.admit(METHOD, CallKind.CALL, "a", "ipv4:10.0.0.1:5001") is None
    admission.release(CallKind.CALL, "a", "ipv4:10.0.0.1:5000")
    assert admission.admit(METHOD, CallKind.CALL, "a", "ipv4:10.0.0.1:5000") is None


def test_probes_are_never_refused_for_load_nor_counted() -> None:
    admission = _admission(max_calls=1)
    assert admission.admit(METHOD, CallKind.CALL, "a", "a" + ":1") is None

    assert admission.admit("/grpc.health.v1.Health/Check", CallKind.PROBE, "a", "a" + ":1") is None
    assert admission.calls_in_progress == 1


def test_exports_per_caller_are_refused_with_the_callers_quota() -> None:
    admission = _admission(max_exports=10, max_exports_per_caller=2)
    for _ in range(2):
        assert (
            admission.admit(METHOD, CallKind.EXPORT, "ipv4:10.0.0.1", "ipv4:10.0.0.1" + ":1")
            is None
        )

    refusal = admission.admit(METHOD, CallKind.EXPORT, "ipv4:10.0.0.1", "ipv4:10.0.0.1" + ":1")

    assert isinstance(refusal, ResourceExhausted)
    assert refusal.reason == TOO_MANY_EXPORTS
    assert refusal.quota is not None
    assert refusal.quota.subject == "ipv4:10.0.0.1"
    assert admission.admit(METHOD, CallKind.EXPORT, "ipv4:10.0.0.2", "ipv4:10.0.0.2" + ":1") is None
    admission.release(CallKind.EXPORT, "ipv4:10.0.0.1", "ipv4:10.0.0.1" + ":1")
    assert admission.admit(METHOD, CallKind.EXPORT, "ipv4:10.0.0.1", "ipv4:10.0.0.1" + ":1") is None


def test_exports_in_all_are_refused_without_a_quota_of_one_caller() -> None:
    admission = _admission(max_exports=2, max_exports_per_caller=2)
    assert admission.admit(METHOD, CallKind.EXPORT, "a", "a" + ":1") is None
    assert admission.admit(METHOD, CallKind.EXPORT, "b", "b" + ":1") is None

    refusal = admission.admit(METHOD, CallKind.EXPORT, "c", "c" + ":1")

    assert isinstance(refusal, ResourceExhausted)
    assert refusal.reason == TOO_MANY_EXPORTS
    assert refusal.quota is None


def test_over_the_memory_budget_streams_are_refused_but_unary_calls_go_on() -> None:
    async def scenario() -> tuple[object, object, object]:
        admission = _admission(memory_limit_bytes=1)  # any process is over one byte
        admission.start()
        await asyncio.sleep(0.05)
        try:
            return (
                admission.admit(METHOD, CallKind.EXPORT, "a", "a" + ":1"),
                admission.admit(METHOD, CallKind.STREAM, "a", "a" + ":1"),
                admission.admit(METHOD, CallKind.CALL, "a", "a" + ":1"),
            )
        finally:
            await admission.stop()

    export, stream, call = asyncio.run(scenario())

    assert isinstance(export, ResourceExhausted)
    assert export.reason == OVER_MEMORY_BUDGET
    assert isinstance(stream, ResourceExhausted)
    assert stream.reason == OVER_MEMORY_BUDGET
    assert call is None


@pytest.mark.parametrize("kind", [CallKind.CALL, CallKind.EXPORT, CallKind.PROBE])
def test_a_stopping_server_refuses_its_service_but_not_health(kind: CallKind) -> None:
    async def scenario() -> tuple[object, object]:
        admission = _admission()
        refusing = asyncio.create_task(
            admission.refuse_new_calls(quiet_seconds=0.05, at_most_seconds=1.0)
        )
        await asyncio.sleep(0)
        feedback = admission.admit(METHOD, kind, "a", "a" + ":1")
        health = admission.admit("/grpc.health.v1.Health/Check", CallKind.PROBE, "a", "a" + ":1")
        await refusing
        return feedback, health

    feedback, health = asyncio.run(scenario())

    assert isinstance(feedback, Unavailable)
    assert health is None
