"""`feedback-server --metrics-address`: a real process, known calls, and its /metrics scraped and
parsed with prometheus_client's parser: exact counts per method and code, go-grpc-prometheus's
names and labels, and the service's own feedback_* metrics."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import payloads
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.app import FEEDBACK_SERVICE
from server.metrics.calls import CODE_NAMES, GO_DEFAULT_BUCKETS
from server.metrics.feedback import TOTALS_MAX_AGE_SECONDS
from tests.e2e.auth_support import bearer, create_key
from tests.e2e.metrics_support import (
    MetricsServer,
    Samples,
    every_call_ended,
    held_stream,
    wait_for,
)

TIMEOUT = 10.0
GO_CODES = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
}  # fmt: skip
"""google.golang.org/grpc/codes: Code.String() of every code, the grpc_code values Go exports."""


@pytest.fixture
def keyed_server(database_url: str) -> Iterator[tuple[MetricsServer, str]]:
    """A keyed server allowing one call at a time, with metrics on, and a read+ingest key."""
    secret = create_key(database_url, "ingest", "read")
    server = MetricsServer(
        *("--database-url", database_url, "--auth", "keys"),
        *("--accept-unknown-conversations", "--max-concurrent-calls", "1"),
    )
    yield server, secret
    server.stop()


def _calls_in_progress(server: MetricsServer, count: int) -> None:
    samples = wait_for(server.scrape, lambda s: s.get("feedback_calls_in_progress") == count)
    assert samples.get("feedback_calls_in_progress") == count


@pytest.mark.database_independent
def test_counts_every_call_by_method_and_final_code(
    keyed_server: tuple[MetricsServer, str],
) -> None:
    server, secret = keyed_server
    key = bearer(secret)
    with grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        submit = payloads.submit_feedback_request()
        for _ in range(3):
            stub.SubmitFeedback(submit, metadata=key, timeout=TIMEOUT)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as invalid:
                stub.SubmitFeedback(pb.SubmitFeedbackRequest(), metadata=key, timeout=TIMEOUT)
            assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as unauthenticated:
            stub.SubmitFeedback(submit, timeout=TIMEOUT)
        assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED

        # An Ingest held open takes the one call allowed: admission refuses the next.
        release = threading.Event()
        held = stub.Ingest.future(
            held_stream(payloads.ingest_message(5), release), metadata=key, timeout=TIMEOUT
        )
        _calls_in_progress(server, 1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitFeedback(submit, metadata=key, timeout=TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert held.result().accepted_count == 5

        # A client that goes away mid-stream: CANCELLED, counted when the server notices.
        never = threading.Event()
        vanished = stub.Ingest.future(held_stream(None, never), metadata=key, timeout=TIMEOUT)
        _calls_in_progress(server, 1)
        vanished.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        _calls_in_progress(server, 0)
        never.set()

        ingest = stub.Ingest(
            iter([payloads.ingest_message(5), payloads.ingest_message(5)]),
            metadata=key,
            timeout=TIMEOUT,
        )
        assert ingest.accepted_count == 10
        chunks = list(stub.ExportFeedback(pb.ExportFeedbackRequest(), metadata=key, timeout=30))
        assert sum(len(chunk.feedback) for chunk in chunks) == 3
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    time.sleep(TOTALS_MAX_AGE_SECONDS)  # the stored totals an earlier scrape read are stale
    samples = wait_for(server.scrape, every_call_ended)

    handled = "grpc_server_handled_total"
    assert {
        dict(labels)["grpc_code"]: value
        for labels, value in samples.matching(handled, grpc_method="SubmitFeedback").items()
        if value
    } == {"OK": 3, "InvalidArgument": 2, "Unauthenticated": 1, "ResourceExhausted": 1}
    assert samples.call("grpc_server_started_total", "SubmitFeedback") == 7
    # Read whole: not the refused ones (admission and keys answer before reading).
    assert samples.call("grpc_server_msg_received_total", "SubmitFeedback") == 5
    assert samples.call("grpc_server_msg_sent_total", "SubmitFeedback") == 3
    assert samples.call("grpc_server_handling_seconds_count", "SubmitFeedback") == 7
    assert samples.grpc_type("SubmitFeedback") == "unary"

    assert {
        dict(labels)["grpc_code"]: value
        for labels, value in samples.matching(handled, grpc_method="Ingest").items()
        if value
    } == {"OK": 2, "Canceled": 1}
    assert samples.grpc_type("Ingest") == "client_stream"
    assert samples.call("grpc_server_msg_received_total", "Ingest") == 3
    assert samples.call("grpc_server_msg_sent_total", "Ingest") == 2

    assert samples.grpc_type("ExportFeedback") == "server_stream"
    assert samples.call(handled, "ExportFeedback", grpc_code="OK") == 1
    assert samples.call("grpc_server_msg_sent_total", "ExportFeedback") == len(chunks)
    assert samples.call("grpc_server_msg_received_total", "ExportFeedback") == 1

    health_service = "grpc.health.v1.Health"
    assert samples.call(handled, "Check", health_service, grpc_code="OK") == 1
    assert samples.grpc_type("Watch", health_service) == "server_stream"
    assert samples.grpc_type("ServerReflectionInfo", "grpc.reflection.v1.ServerReflection") == (
        "bidi_stream"
    )

    assert samples.get("feedback_admission_refusals_total", reason="TOO_MANY_CALLS") == 1
    assert samples.get("feedback_stored_rows", kind="feedback") == 3
    assert samples.get("feedback_stored_rows", kind="events") == 15
    assert samples.get("feedback_stored_rows", kind="interactions") == 0
    assert samples.get("feedback_group_commit_batch_items_sum") == 3 + 15
    batches = samples.get("feedback_group_commit_batch_items_count")
    assert 1 <= batches <= 3 + 3
    assert samples.get("feedback_group_commit_seconds_count") == batches
    assert samples.get("feedback_database_up") == 1
    assert samples.get("feedback_write_queue_depth") == 0


@pytest.mark.database_independent
def test_exports_every_method_at_zero_with_go_names_and_buckets(
    keyed_server: tuple[MetricsServer, str],
) -> None:
    server, _ = keyed_server

    samples = server.scrape()

    assert set(CODE_NAMES.values()) == GO_CODES
    for method in FEEDBACK_SERVICE.methods:
        assert samples.call("grpc_server_started_total", method.name) == 0
        codes = samples.matching("grpc_server_handled_total", grpc_method=method.name)
        assert {dict(labels)["grpc_code"] for labels in codes} == GO_CODES, method.name
        assert set(codes.values()) == {0}
        buckets = samples.matching("grpc_server_handling_seconds_bucket", grpc_method=method.name)
        assert sorted(float(dict(labels)["le"]) for labels in buckets) == [
            *GO_DEFAULT_BUCKETS,
            float("inf"),
        ]
    assert samples.types["grpc_server_started"] == "counter"
    assert samples.types["grpc_server_handling_seconds"] == "histogram"
    assert samples.helps["grpc_server_handled"] == (
        "Total number of RPCs completed on the server, regardless of success or failure."
    )
    assert samples.types["feedback_write_queue_depth"] == "gauge"
    for kind in ("feedback", "interactions", "events"):
        assert samples.get("feedback_watchers", kind=kind) == 0
    for outcome in ("delivered", "failed", "dropped"):
        assert samples.get("feedback_webhook_deliveries_total", outcome=outcome) == 0
    assert samples.get("process_resident_memory_bytes") > 0


@pytest.mark.database_independent
def test_serves_only_metrics(keyed_server: tuple[MetricsServer, str]) -> None:
    server, _ = keyed_server

    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://{server.metrics_address}{path}", timeout=TIMEOUT)
        assert answer.value.code == 404, path
    request = urllib.request.Request(f"http://{server.metrics_address}/metrics", method="POST")
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(request, data=b"x", timeout=TIMEOUT)
    assert posted.value.code == 405


@pytest.mark.postgres
def test_each_replica_counts_its_own_calls_and_both_see_the_whole_database(
    own_database: str,
) -> None:
    replicas = [
        MetricsServer("--database-url", own_database, "--accept-unknown-conversations")
        for _ in range(2)
    ]
    try:
        for replica, calls in zip(replicas, (4, 6), strict=True):
            with grpc.insecure_channel(replica.address) as channel:
                stub = FeedbackServiceStub(channel)
                for _ in range(calls):
                    stub.SubmitFeedback(payloads.submit_feedback_request(), timeout=TIMEOUT)
        scrapes: list[Samples] = [wait_for(r.scrape, every_call_ended) for r in replicas]
    finally:
        for replica in replicas:
            replica.stop()

    for samples, calls in zip(scrapes, (4, 6), strict=True):
        assert samples.call("grpc_server_handled_total", "SubmitFeedback", grpc_code="OK") == calls
        assert samples.get("feedback_group_commit_batch_items_sum") == calls
        # Database-wide: each replica reads the same rollup totals.
        assert samples.get("feedback_stored_rows", kind="feedback") == 10
        assert samples.get("feedback_database_up") == 1


@pytest.mark.database_independent
def test_counts_the_watches_open_per_kind(keyed_server: tuple[MetricsServer, str]) -> None:
    server, secret = keyed_server
    metadata = (("authorization", f"Bearer {secret}"),)
    with grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        watches: list[Any] = [
            stub.WatchFeedback(pb.WatchFeedbackRequest(), metadata=metadata),
            stub.WatchFeedback(pb.WatchFeedbackRequest(min_score=4), metadata=metadata),
            stub.WatchEvents(pb.WatchEventsRequest(), metadata=metadata),
        ]
        for watch in watches:
            next(iter(watch))
        samples = server.scrape()
        assert samples.get("feedback_watchers", kind="feedback") == 2
        assert samples.get("feedback_watchers", kind="events") == 1
        assert samples.get("feedback_watchers", kind="interactions") == 0
        for watch in watches:
            watch.cancel()
        samples = wait_for(
            server.scrape, lambda s: s.get("feedback_watchers", kind="feedback") == 0
        )
    assert samples.get("feedback_watchers", kind="events") == 0
