"""Per-caller rate limits on a real server at ingest=50/s (a bucket of 100 items): what a caller
over its limit is told, that batch items count one each, whose bucket a call drains, and that the
friendly client waits as told and then stores its write once.

On SQLite only: the limiter sits before any storage, so the database changes nothing here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from llmfeedback import FeedbackClient, RetryPolicy
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.service.api_keys import prefix_of
from storage import Storage
from tests.databases import sqlite_url
from tests.e2e.auth_support import (
    Metadata,
    Outcome,
    bearer,
    create_key,
    keyed_settings,
    outcome_of,
)
from tests.server_harness import ServerThread

RATE = 50.0
BUCKET = 2 * RATE
"""Two seconds of the rate (BURST_SECONDS)."""
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(frozen=True)
class Limited:
    """A server limiting ingest to 50 items/s per caller, and keys to call it with."""

    server: ServerThread
    stub: FeedbackServiceStub
    ingest: str
    other_ingest: str
    admin: str


def event(event_type: str = "limited_view") -> pb.LogEventRequest:
    """A fresh valid event (its own request id, so it is stored)."""
    return pb.LogEventRequest(user_id="u1", event_type=event_type, request_id=str(uuid.uuid4()))


def log_event(stub: FeedbackServiceStub, metadata: Metadata) -> Outcome:
    """How one LogEvent ends."""
    try:
        stub.LogEvent(event(), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return outcome_of(error)
    return Outcome(grpc.StatusCode.OK)


def log_batch(stub: FeedbackServiceStub, metadata: Metadata, size: int) -> int:
    """Log `size` events in one LogEvents call; returns how many were accepted."""
    request = pb.LogEventsRequest(events=[event() for _ in range(size)])
    return int(stub.LogEvents(request, metadata=metadata, timeout=10).accepted_count)


def quota_subjects(outcome: Outcome) -> list[str]:
    """The subjects of the QuotaFailure of a refusal."""
    failure = outcome.detail(error_details_pb2.QuotaFailure)
    return [] if failure is None else [violation.subject for violation in failure.violations]


def migrated_sqlite(path: Path) -> str:
    """The URL of a new, migrated SQLite database at `path`."""
    url = sqlite_url(path)
    with Storage.connect(url) as storage:
        storage.migrate()
    return url


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Limited]:
    url = migrated_sqlite(tmp_path / "limited.sqlite3")
    keys = [create_key(url, scope) for scope in ("ingest", "ingest", "admin")]
    settings = keyed_settings(url, rate_limits=f"ingest={RATE:g}/s")
    with ServerThread(settings) as server, grpc.insecure_channel(server.address) as channel:
        yield Limited(server, FeedbackServiceStub(channel), *keys)


def test_a_burst_of_single_writes_is_refused_with_when_and_whose_limit(limited: Limited) -> None:
    metadata = bearer(limited.ingest)
    # 80 calls on each of two connections: more than the server's 100 streams on one connection
    # would get some refused as UNAVAILABLE (REFUSED_STREAM), rate limits or not.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.insecure_channel(limited.server.address, options=own_connection) for _ in range(2)
    ]
    stubs = [FeedbackServiceStub(channel) for channel in channels]
    started = time.monotonic()
    calls = [
        stub.LogEvent.future(event(), metadata=metadata, timeout=10)
        for _ in range(80)
        for stub in stubs
    ]
    outcomes = []
    for call in calls:
        try:
            call.result()
            outcomes.append(Outcome(grpc.StatusCode.OK))
        except grpc.RpcError as error:
            outcomes.append(outcome_of(error))
    burst_seconds = time.monotonic() - started
    for channel in channels:
        channel.close()
    refused = [outcome for outcome in outcomes if outcome.code != grpc.StatusCode.OK]
    delays = [outcome.retry_delay or 0.0 for outcome in refused]
    time.sleep(max(delays))
    after_the_delay = log_event(limited.stub, metadata)

    accepted = len(outcomes) - len(refused)
    assert BUCKET <= accepted <= BUCKET + RATE * burst_seconds + 1, (accepted, burst_seconds)
    assert {(o.code, o.reason) for o in refused} == {(EXHAUSTED, "RATE_LIMITED")}
    assert {o.detail(error_details_pb2.ErrorInfo).domain for o in refused} == {"feedback.v1"}
    # Refused while the bucket is empty or less than one item in debt: 1 to 2 items' worth.
    assert all(1 / RATE <= delay <= 2 / RATE + 0.005 for delay in delays), delays
    assert {tuple(quota_subjects(o)) for o in refused} == {(prefix_of(limited.ingest),)}
    description = refused[0].detail(error_details_pb2.QuotaFailure).violations[0].description
    assert description == "at most 50 ingest items per second"
    assert after_the_delay.code == grpc.StatusCode.OK


def test_a_batch_counts_each_item_and_each_key_has_its_own_bucket(limited: Limited) -> None:
    """200 items at once get through (the bucket had some) and leave 100 items of debt: the next
    call is refused for about 100 / 50 = 2 s, while other keys' buckets are untouched."""
    started = time.monotonic()
    accepted = log_batch(limited.stub, bearer(limited.ingest), 200)
    refused = log_event(limited.stub, bearer(limited.ingest))
    elapsed = time.monotonic() - started
    try:  # a small batch is refused whole, too
        limited.stub.LogEvents(
            pb.LogEventsRequest(events=[event("never_stored") for _ in range(3)]),
            metadata=bearer(limited.ingest),
            timeout=10,
        )
        small_batch = Outcome(grpc.StatusCode.OK)
    except grpc.RpcError as error:
        small_batch = outcome_of(error)
    other_key = log_event(limited.stub, bearer(limited.other_ingest))
    admin_writes = log_event(limited.stub, bearer(limited.admin))
    stored = limited.stub.ListEvents(
        pb.ListEventsRequest(event_type="never_stored"), metadata=bearer(limited.admin)
    )

    assert accepted == 200
    assert (refused.code, refused.reason) == (EXHAUSTED, "RATE_LIMITED")
    assert refused.retry_delay is not None
    # (1 - (100 - 200)) / 50 = 2.02 s right after the batch, less what refilled meanwhile.
    in_debt = (1 + 200 - BUCKET) / RATE
    assert in_debt - elapsed - 0.01 <= refused.retry_delay <= in_debt, (refused, elapsed)
    assert quota_subjects(refused) == [prefix_of(limited.ingest)]
    assert (small_batch.code, small_batch.reason) == (EXHAUSTED, "RATE_LIMITED")
    assert other_key.code == grpc.StatusCode.OK
    assert admin_writes.code == grpc.StatusCode.OK  # the admin key's own ingest bucket
    assert list(stored.events) == []  # nothing of the refused batch


def test_without_keys_the_caller_is_the_peer_address(tmp_path: Path) -> None:
    """No key: every connection from one host shares the host's bucket, named by its address."""
    url = migrated_sqlite(tmp_path / "open.sqlite3")
    settings = keyed_settings(url, auth="none", rate_limits=f"ingest={RATE:g}/s")
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    with (
        ServerThread(settings) as server,
        grpc.insecure_channel(server.address, options=own_connection) as first,
        grpc.insecure_channel(server.address, options=own_connection) as second,
    ):
        accepted = log_batch(FeedbackServiceStub(first), (), 200)
        refused = log_event(FeedbackServiceStub(second), ())

    assert accepted == 200
    assert (refused.code, refused.reason) == (EXHAUSTED, "RATE_LIMITED")
    assert quota_subjects(refused) == ["ipv4:127.0.0.1"]


def test_the_client_waits_as_told_and_stores_its_write_once(limited: Limited) -> None:
    """llmfeedback retries RESOURCE_EXHAUSTED with RetryInfo after the delay the server gave.
    Its own backoff is capped at 10 ms here, so any longer wait is the server's RetryInfo."""
    log_batch(limited.stub, bearer(limited.ingest), 160)  # about 60 items (1.2 s) in debt
    probe = log_event(limited.stub, bearer(limited.ingest))  # refused: it takes nothing
    probed = time.monotonic()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    retry = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.01, sleep=sleep)
    with FeedbackClient(
        limited.server.address, api_key=limited.ingest, retry=retry, timeout=15
    ) as client:
        started = time.monotonic()
        stored = client.log_event("u1", "retried_view")
        took = time.monotonic() - started
    listed = limited.stub.ListEvents(
        pb.ListEventsRequest(event_type="retried_view"), metadata=bearer(limited.admin)
    )

    assert probe.code == EXHAUSTED
    assert probe.retry_delay is not None
    told = probe.retry_delay - (started - probed)  # what the client's first attempt was told
    assert len(waits) == 1, waits  # one wait as long as told was enough
    assert told - 0.2 <= waits[0] <= told + 0.01, (waits, told)
    assert waits[0] > 0.05  # the server's delay, not the client's backoff
    assert took >= waits[0]
    assert [e.id for e in listed.events] == [stored.id]


def test_ingest_slows_down_instead_of_failing(limited: Limited) -> None:
    """A stream over the rate is held back (flow control), not refused: 200 items in messages
    of 50 (201 items with the call's own) from a bucket of 100: the last message is let in only
    once 51 items have refilled, after 1.02 s."""
    messages = [
        pb.IngestRequest(items=[pb.IngestItem(event=event()) for _ in range(50)]) for _ in range(4)
    ]
    started = time.monotonic()
    response = limited.stub.Ingest(iter(messages), metadata=bearer(limited.ingest), timeout=30)
    took = time.monotonic() - started

    assert (response.received_count, response.accepted_count) == (200, 200)
    assert 1.0 <= took <= 10.0, took


def test_an_ingest_started_in_debt_is_slowed_down_not_refused(limited: Limited) -> None:
    # Timed from before the debt is made, so a slow machine cannot shorten what is measured.
    started = time.monotonic()
    log_batch(limited.stub, bearer(limited.ingest), 130)  # about 0.6 s in debt
    messages = [pb.IngestRequest(items=[pb.IngestItem(event=event()) for _ in range(10)])]
    try:
        response = limited.stub.Ingest(iter(messages), metadata=bearer(limited.ingest), timeout=30)
    except grpc.RpcError as error:
        outcome = outcome_of(error)
        raise AssertionError(f"refused: {outcome.code.name} {outcome.reason}") from error
    took = time.monotonic() - started

    assert response.accepted_count == 10
    assert took >= 0.5  # it waited for its turn: 0.6 s of debt and 11 items at 50/s
