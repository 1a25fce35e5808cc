"""TLS and mutual TLS on the real server (--tls-cert, --tls-key, --tls-client-ca) with
certificates made for this module, and API keys bound to a client certificate's identity.

Two servers, started once for the module on one SQLite database that requires keys: one serving
TLS, one demanding client certificates from the test CA. The connection is what is tested here,
so PostgreSQL would change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from llmfeedback import FeedbackClient, RetryPolicy, UnauthenticatedError, UnavailableError
from llmfeedback.cli import EXIT_UNAUTHENTICATED
from llmfeedback.cli import main as feedbackctl
from storage import Storage
from tests.certificates import (
    Certificates,
    KeyPair,
    make_certificates,
    openssl_missing_reason,
)
from tests.databases import sqlite_url
from tests.e2e.auth_support import create_key, grpcurl, keyed_settings
from tests.server_harness import ServerThread

NO_RETRIES = RetryPolicy(max_attempts=1)
GIVE_UP_SOON = ["-connect-timeout", "1"]
"""grpcurl redials a refused handshake until its connect timeout (10 s by default)."""


@dataclass(frozen=True)
class Pki:
    """The test CA with a server certificate and clients "alice" and "bob", and a stranger CA
    that issued another "alice"."""

    ours: Certificates
    bob: KeyPair
    stranger: Certificates

    @property
    def alice(self) -> KeyPair:
        """Alice's certificate from the CA the servers trust."""
        return self.ours.client


@dataclass(frozen=True)
class Servers:
    """The TLS and the mTLS server, and their keys."""

    tls: ServerThread
    mtls: ServerThread
    unbound: str
    """An admin key usable from any client."""
    alice_only: str
    """An ingest key bound to the client identity "alice"."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    reason = openssl_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    ours = make_certificates(tmp_path_factory.mktemp("pki"), client_common_name="alice")
    stranger = make_certificates(
        tmp_path_factory.mktemp("stranger-pki"), ca_name="stranger CA", client_common_name="alice"
    )
    return Pki(ours=ours, bob=ours.authority.issue_client("bob"), stranger=stranger)


@pytest.fixture(scope="module")
def servers(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    url = sqlite_url(tmp_path_factory.mktemp("tls-db") / "tls.sqlite3")
    with Storage.connect(url) as storage:
        storage.migrate()
    unbound = create_key(url, "admin", name="any client")
    alice_only = create_key(url, "ingest", name="alice's backend", client_identity="alice")
    certificate = {
        "tls_cert_file": str(pki.ours.server.certificate),
        "tls_key_file": str(pki.ours.server.private_key),
    }
    with (
        ServerThread(keyed_settings(url, **certificate)) as tls,
        ServerThread(
            keyed_settings(url, **certificate, tls_client_ca_file=str(pki.ours.ca))
        ) as mtls,
    ):
        yield Servers(tls=tls, mtls=mtls, unbound=unbound, alice_only=alice_only)


def client(
    server: ServerThread,
    key: str,
    ca: Path,
    identity: KeyPair | None = None,
    *,
    tls: bool | None = None,
) -> FeedbackClient:
    """A client without retries, trusting `ca`, presenting `identity` if given."""
    return FeedbackClient(
        server.address,
        api_key=key,
        tls=tls,
        ca_file=None if tls is False else ca,
        client_cert_file=None if identity is None else identity.certificate,
        client_key_file=None if identity is None else identity.private_key,
        retry=NO_RETRIES,
        timeout=10,
    )


def tls_flags(ca: Path, identity: KeyPair | None = None) -> list[str]:
    """grpcurl's flags to trust `ca` and present `identity`."""
    flags = ["-cacert", str(ca)]
    if identity is not None:
        flags += ["-cert", str(identity.certificate), "-key", str(identity.private_key)]
    return flags


def test_tls_with_the_right_ca_works_from_the_client_and_grpcurl(
    servers: Servers, pki: Pki
) -> None:
    with client(servers.tls, servers.unbound, pki.ours.ca) as connected:
        stored = connected.log_event("u1", "tls_view")
        stats = connected.get_stats(event_type="tls_view")
    by_grpcurl = grpcurl(
        servers.tls.address,
        "feedback.v1.FeedbackService/GetStats",
        secret=servers.unbound,
        data=json.dumps({"event_type": "tls_view"}),
        tls=tls_flags(pki.ours.ca),
    )
    listed = grpcurl(servers.tls.address, "list", tls=tls_flags(pki.ours.ca))

    assert stored.id > 0
    assert stats.events.total_count >= 1
    assert by_grpcurl.returncode == 0, by_grpcurl.stderr
    assert int(json.loads(by_grpcurl.stdout)["events"]["totalCount"]) >= 1
    assert listed.returncode == 0, listed.stderr  # reflection needs TLS, not a key


def test_a_wrong_ca_or_plaintext_cannot_reach_a_tls_server(servers: Servers, pki: Pki) -> None:
    failures = []
    for connected in (
        client(servers.tls, servers.unbound, pki.stranger.ca),
        client(servers.tls, servers.unbound, pki.ours.ca, tls=False),
    ):
        with connected, pytest.raises(UnavailableError) as refused:
            connected.get_stats()
        failures.append(refused.value.code)
    wrong_ca = grpcurl(servers.tls.address, "list", tls=tls_flags(pki.stranger.ca))
    plaintext = grpcurl(servers.tls.address, "list", tls=["-plaintext", *GIVE_UP_SOON])

    assert failures == [grpc.StatusCode.UNAVAILABLE] * 2
    assert wrong_ca.returncode != 0
    assert "certificate" in wrong_ca.stderr
    assert plaintext.returncode != 0


def test_mtls_lets_in_only_clients_with_a_certificate_from_its_ca(
    servers: Servers, pki: Pki
) -> None:
    refused = {}
    for name, identity in (
        ("no certificate", None),
        ("stranger's alice", pki.stranger.client),
        ("a server certificate", pki.ours.server),  # our CA's, but not for client auth
    ):
        with client(servers.mtls, servers.unbound, pki.ours.ca, identity) as connected:
            try:
                connected.get_stats()
                refused[name] = "OK"
            except (UnavailableError, UnauthenticatedError) as error:
                refused[name] = error.code.name
    with client(servers.mtls, servers.unbound, pki.ours.ca, pki.bob) as connected:
        let_in = connected.log_event("u1", "mtls_view")
    grpcurl_with = grpcurl(servers.mtls.address, "list", tls=tls_flags(pki.ours.ca, pki.bob))
    grpcurl_without = grpcurl(
        servers.mtls.address, "list", tls=[*tls_flags(pki.ours.ca), *GIVE_UP_SOON]
    )

    assert refused == {
        "no certificate": "UNAVAILABLE",
        "stranger's alice": "UNAVAILABLE",
        "a server certificate": "UNAVAILABLE",
    }
    assert let_in.id > 0
    assert grpcurl_with.returncode == 0, grpcurl_with.stderr
    assert grpcurl_without.returncode != 0


def test_a_key_bound_to_alice_works_only_from_alices_certificate(
    servers: Servers, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    with client(servers.mtls, servers.alice_only, pki.ours.ca, pki.alice) as connected:
        stored = connected.log_event("u1", "alice_view")
    wrong = {}
    for name, server, identity in (
        ("bob's certificate", servers.mtls, pki.bob),
        ("TLS without a certificate", servers.tls, None),
    ):
        with (
            client(server, servers.alice_only, pki.ours.ca, identity) as connected,
            pytest.raises(UnauthenticatedError) as refused,
        ):
            connected.log_event("u1", "not_alice_view")
        wrong[name] = refused.value.reason
    with client(servers.mtls, servers.unbound, pki.ours.ca, pki.bob) as connected:
        bob_unbound = connected.log_event("u1", "bob_view")
    flags = ["--address", servers.mtls.address, "--ca-file", str(pki.ours.ca)]
    alice_flags = ["--client-cert", str(pki.alice.certificate)]
    alice_flags += ["--client-key", str(pki.alice.private_key)]
    bob_flags = [
        "--client-cert",
        str(pki.bob.certificate),
        "--client-key",
        str(pki.bob.private_key),
    ]
    capsys.readouterr()
    ctl_alice = feedbackctl(
        [*flags, *alice_flags, "--api-key", servers.alice_only, "log", "u1", "ctl_view"]
    )
    ctl_bob = feedbackctl(
        [*flags, *bob_flags, "--api-key", servers.alice_only, "log", "u1", "ctl_view"]
    )
    printed = capsys.readouterr()

    assert stored.id > 0
    assert wrong == {
        "bob's certificate": "API_KEY_WRONG_CLIENT",
        "TLS without a certificate": "API_KEY_WRONG_CLIENT",
    }
    assert bob_unbound.id > 0
    assert (ctl_alice, ctl_bob) == (0, EXIT_UNAUTHENTICATED)
    assert "ctl_view" in printed.out
    assert "bound to another TLS client certificate" in printed.err
    assert servers.alice_only not in printed.out + printed.err  # the key is never printed
