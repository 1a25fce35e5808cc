"""The API key: sent as plain metadata on every call of every kind, from the argument or the
environment, checked before any call, and never retried when refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from llmfeedback import (
    RETRYABLE_CODES,
    EventItem,
    FeedbackClient,
    FeedbackItem,
    InteractionItem,
    PermissionDeniedError,
    QuotaViolation,
    ResourceExhaustedError,
    RetryPolicy,
    UnauthenticatedError,
)

from .fake_service import Abort

if TYPE_CHECKING:
    from collections.abc import Callable

    from .fake_service import RecordingServicer

KEY = "fbk_ingest_4Zx8Qm2LpA7rT9vK1cW3"
BEARER = f"Bearer {KEY}"

# Every RPC the client makes: the unary calls, the batches, the export streams and Ingest.
CLIENT_METHODS = {
    "RecordInteraction",
    "SubmitFeedback",
    "LogEvent",
    "GetStats",
    "ListFeedback",
    "ListFeedbackHistory",
    "ListInteractions",
    "ListEvents",
    "ExportFeedback",
    "ExportInteractions",
    "ExportEvents",
    "RecordInteractions",
    "SubmitFeedbackBatch",
    "LogEvents",
    "Ingest",
}


def authorizations(servicer: RecordingServicer) -> dict[str, list[object]]:
    """The authorization header of every call each method received, in order."""
    return {
        method: [call.metadata.get("authorization") for call in calls]
        for method, calls in servicer.calls.items()
    }


def test_the_key_goes_out_on_every_kind_of_call_over_a_plaintext_channel(
    address: str, servicer: RecordingServicer
) -> None:
    with FeedbackClient(address, api_key=KEY) as client:
        client.record_interaction("conv-1")
        client.submit_feedback("conv-1", score=5)
        client.log_event("alice", "click")
        client.get_stats()
        client.list_feedback()
        client.list_feedback_history("msg-1", "alice")
        client.list_interactions()
        client.list_events()
        list(client.export_feedback())
        list(client.export_interactions())
        list(client.export_events())
        client.record_interactions([InteractionItem("conv-1")])
        client.submit_feedback_batch([FeedbackItem("conv-1", score=4)])
        client.log_events([EventItem("alice", "click")])
        client.ingest([InteractionItem("conv-2"), EventItem("bob", "view")])
        with client.event_batcher() as batcher:
            batcher.log("carol", "page_view")

    assert set(servicer.calls) == CLIENT_METHODS
    assert len(servicer.calls["LogEvents"]) == 2  # log_events, then the batcher's call
    assert authorizations(servicer) == {
        method: [BEARER] * len(calls) for method, calls in servicer.calls.items()
    }


def test_every_retried_attempt_carries_the_key(
    address: str, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    unavailable = Abort(grpc.StatusCode.UNAVAILABLE)
    servicer.plan("LogEvent", unavailable, unavailable)
    servicer.plan("LogEvents", unavailable)
    servicer.plan("ExportEvents", unavailable)
    policy = RetryPolicy(sleep=sleeps.append)
    with FeedbackClient(address, api_key=KEY, retry=policy) as client:
        client.log_event("alice", "click")
        client.log_events([EventItem("alice", "click")])
        list(client.export_events())
        with client.event_batcher(retry=policy) as batcher:
            servicer.plan("LogEvents", unavailable)
            batcher.log("bob", "click")

    assert authorizations(servicer) == {
        "LogEvent": [BEARER] * 3,
        "LogEvents": [BEARER] * 4,
        "ExportEvents": [BEARER] * 2,
    }


def test_the_key_is_stripped_and_merged_with_other_metadata(
    address: str, servicer: RecordingServicer
) -> None:
    with FeedbackClient(address, api_key=f"  {KEY}\n", metadata={"x-tenant": "acme"}) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert (call.metadata["authorization"], call.metadata["x-tenant"]) == (BEARER, "acme")


def test_without_a_key_no_authorization_is_sent(address: str, servicer: RecordingServicer) -> None:
    with FeedbackClient(address) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert "authorization" not in call.metadata


def test_the_key_comes_from_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", KEY)
    with FeedbackClient(address) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == BEARER


def test_the_argument_wins_over_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "fbk_env_key")
    with FeedbackClient(address, api_key=KEY) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == BEARER


def test_an_empty_environment_variable_counts_as_unset(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "")
    with FeedbackClient(address) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert "authorization" not in call.metadata


def test_explicit_authorization_metadata_wins_over_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "fbk_env_key")
    with FeedbackClient(address, metadata=[("authorization", BEARER)]) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == BEARER


def test_a_key_on_a_shared_channel_is_sent_too(address: str, servicer: RecordingServicer) -> None:
    with grpc.insecure_channel(address) as channel:
        FeedbackClient(channel=channel, api_key=KEY).get_stats()

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == BEARER


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "api_key is empty"),
        (" \t\n", "api_key is empty"),
        ("fbk_two words", "character 8 of 13 is whitespace"),
        ("fbk_line\nbreak", "character 9 of 14 is whitespace"),
        ("fbk_tab\there", "character 8 of 12 is whitespace"),
        ("fbk_caf\u00e9", "character 8 of 8 is a non-printable or non-ASCII character"),
        ("fbk_nul\x00", "character 8 of 8 is a non-printable or non-ASCII character"),
        ("fbk_del\x7f", "character 8 of 8 is a non-printable or non-ASCII character"),
    ],
)
def test_malformed_keys_are_refused_without_repeating_them(key: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="api_key") as raised:
        FeedbackClient("127.0.0.1:1", api_key=key)

    assert complaint in str(raised.value)
    if key.strip():
        assert key.strip() not in str(raised.value)


def test_a_malformed_key_in_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "fbk_secret value")
    with pytest.raises(ValueError, match=r"^FEEDBACK_API_KEY must be printable") as raised:
        FeedbackClient("127.0.0.1:1")

    assert "secret" not in str(raised.value)


def test_a_key_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="api_key must be a str, not bytes"):
        FeedbackClient("127.0.0.1:1", api_key=b"fbk_bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["authorization", "Authorization"])
def test_a_key_and_authorization_metadata_together_are_refused(header: str) -> None:
    with pytest.raises(ValueError, match="not both"):
        FeedbackClient("127.0.0.1:1", api_key=KEY, metadata={header: BEARER})


def missing_scope_denial(scope: str) -> Abort:
    info = error_details_pb2.ErrorInfo(
        reason="MISSING_SCOPE", domain="feedback.v1", metadata={"required_scope": scope}
    )
    return Abort(grpc.StatusCode.PERMISSION_DENIED, f"this call needs the {scope} scope", [info])


def test_a_refused_key_raises_unauthenticated_once_without_retrying(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    info = error_details_pb2.ErrorInfo(reason="API_KEY_INVALID", domain="feedback.v1")
    servicer.plan("GetStats", Abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key", [info]))

    with pytest.raises(UnauthenticatedError) as raised:
        client.get_stats()

    assert (raised.value.message, raised.value.reason) == ("unknown API key", "API_KEY_INVALID")
    assert len(servicer.calls["GetStats"]) == 1


def test_a_missing_scope_raises_permission_denied_naming_it(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("ListFeedback", missing_scope_denial("read"))

    with pytest.raises(PermissionDeniedError) as raised:
        client.list_feedback()

    error = raised.value
    assert (error.missing_scope, error.reason, error.domain) == (
        "read",
        "MISSING_SCOPE",
        "feedback.v1",
    )
    assert len(servicer.calls["ListFeedback"]) == 1


def test_permission_denied_without_error_info_has_no_missing_scope(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("GetStats", Abort(grpc.StatusCode.PERMISSION_DENIED, "no"))

    with pytest.raises(PermissionDeniedError) as raised:
        client.get_stats()

    assert raised.value.missing_scope is None


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("LogEvent", lambda client: client.log_event("alice", "click")),
        ("LogEvents", lambda client: client.log_events([EventItem("alice", "click")])),
        ("ExportEvents", lambda client: list(client.export_events())),
        ("Ingest", lambda client: client.ingest([EventItem("alice", "click")])),
    ],
)
@pytest.mark.parametrize(
    ("denial", "error_type"),
    [
        (Abort(grpc.StatusCode.UNAUTHENTICATED, "missing API key"), UnauthenticatedError),
        (missing_scope_denial("ingest"), PermissionDeniedError),
    ],
)
def test_refusals_are_final_for_every_kind_of_call(
    client: FeedbackClient,
    servicer: RecordingServicer,
    sleeps: list[float],
    method: str,
    call: Callable[[FeedbackClient], object],
    denial: Abort,
    error_type: type[Exception],
) -> None:
    servicer.plan(method, denial, denial)

    with pytest.raises(error_type):
        call(client)

    assert len(servicer.calls[method]) == 1
    assert sleeps == []


def test_a_batcher_reports_a_refused_key_without_retrying(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", missing_scope_denial("ingest"), missing_scope_denial("ingest"))
    refused: list[tuple[EventItem, Exception]] = []

    with client.event_batcher(on_rejected=lambda item, error: refused.append((item, error))) as b:
        b.log("alice", "click")

    ((item, error),) = refused
    assert isinstance(error, PermissionDeniedError)
    assert (item.user_id, error.missing_scope) == ("alice", "ingest")
    assert len(servicer.calls["LogEvents"]) == 1


def quota_failure(*violations: tuple[str, str]) -> error_details_pb2.QuotaFailure:
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)
            for subject, description in violations
        ]
    )


def test_rate_limits_name_the_quota_and_are_retried_after_the_retry_info_delay(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2))
    quota = quota_failure(("api_key:fbk_ingest", "120 writes per minute"))
    servicer.plan(
        "LogEvent", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", [quota, retry_info])
    )

    client.log_event("alice", "click")

    assert len(servicer.calls["LogEvent"]) == 2
    assert sleeps == [2.0]


def test_a_quota_without_retry_info_is_final_and_lists_every_violation(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    quota = quota_failure(("api_key:fbk_read", "1000 reads per day"), ("project", "10 GB stored"))
    servicer.plan("GetStats", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", [quota]))

    with pytest.raises(ResourceExhaustedError) as raised:
        client.get_stats()

    assert raised.value.quota_violations == [
        QuotaViolation("api_key:fbk_read", "1000 reads per day"),
        QuotaViolation("project", "10 GB stored"),
    ]
    assert raised.value.retry_delay is None
    assert len(servicer.calls["GetStats"]) == 1


def test_refusal_codes_are_not_retryable() -> None:
    assert grpc.StatusCode.UNAUTHENTICATED not in RETRYABLE_CODES
    assert grpc.StatusCode.PERMISSION_DENIED not in RETRYABLE_CODES
