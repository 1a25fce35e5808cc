"""TLS and mutual TLS against a real gRPC server with certificates made for this session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from llmfeedback import FeedbackClient, RetryPolicy, UnavailableError
from llmfeedback.cli import main
from tests.certificates import CertificateAuthority, make_certificates

from .fake_service import RecordingServicer, serve

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.certificates import Certificates

NO_RETRIES = RetryPolicy(max_attempts=1)
KEY = "fbk_read_9sKq2VbN4xTz"


@pytest.fixture
def tls_address(certificates: Certificates, servicer: RecordingServicer) -> Iterator[str]:
    """A server presenting a certificate for 127.0.0.1 that the session CA signed."""
    credentials = grpc.ssl_server_credentials([certificates.server.pair()])
    with serve(servicer, credentials) as served:
        yield served


@pytest.fixture
def mtls_address(certificates: Certificates, servicer: RecordingServicer) -> Iterator[str]:
    """A server that also demands a client certificate signed by the session CA."""
    credentials = grpc.ssl_server_credentials(
        [certificates.server.pair()],
        root_certificates=certificates.ca.read_bytes(),
        require_client_auth=True,
    )
    with serve(servicer, credentials) as served:
        yield served


@pytest.fixture(scope="session")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates from another CA, which the servers above never trust (nor are trusted by)."""
    return make_certificates(tmp_path_factory.mktemp("stranger-pki"), ca_name="stranger CA")


def test_tls_with_a_ca_file_connects_and_sends_the_key(
    tls_address: str, servicer: RecordingServicer, certificates: Certificates
) -> None:
    with FeedbackClient(tls_address, ca_file=certificates.ca, api_key=KEY) as client:
        client.get_stats()

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == f"Bearer {KEY}"


def test_a_server_signed_by_another_ca_is_refused(
    tls_address: str, servicer: RecordingServicer, stranger: Certificates
) -> None:
    with (
        FeedbackClient(tls_address, ca_file=stranger.ca, retry=NO_RETRIES, timeout=5) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()

    assert servicer.calls == {}


def test_tls_with_the_system_roots_does_not_trust_a_private_ca(
    tls_address: str, servicer: RecordingServicer
) -> None:
    with (
        FeedbackClient(tls_address, tls=True, retry=NO_RETRIES, timeout=5) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()

    assert servicer.calls == {}


def test_a_plaintext_client_cannot_talk_to_a_tls_server(
    tls_address: str, servicer: RecordingServicer
) -> None:
    with (
        FeedbackClient(tls_address, retry=NO_RETRIES, timeout=5) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()

    assert servicer.calls == {}


def test_a_target_name_override_reaches_a_server_certified_for_another_name(
    certificates: Certificates, servicer: RecordingServicer
) -> None:
    named = certificates.authority.issue_server(["feedback.internal"], name="named-server")
    credentials = grpc.ssl_server_credentials([named.pair()])
    options = [("grpc.ssl_target_name_override", "feedback.internal")]
    with serve(servicer, credentials) as address:
        with (
            FeedbackClient(address, ca_file=certificates.ca, retry=NO_RETRIES, timeout=5) as plain,
            pytest.raises(UnavailableError),
        ):
            plain.get_stats()  # the certificate does not name 127.0.0.1
        with FeedbackClient(address, ca_file=certificates.ca, channel_options=options) as client:
            client.get_stats()

    assert len(servicer.calls["GetStats"]) == 1


def test_mutual_tls_without_a_client_certificate_fails(
    mtls_address: str, servicer: RecordingServicer, certificates: Certificates
) -> None:
    with (
        FeedbackClient(mtls_address, ca_file=certificates.ca, retry=NO_RETRIES, timeout=5) as c,
        pytest.raises(UnavailableError),
    ):
        c.get_stats()

    assert servicer.calls == {}


def test_mutual_tls_with_a_certificate_of_another_ca_fails(
    mtls_address: str,
    servicer: RecordingServicer,
    certificates: Certificates,
    stranger: Certificates,
) -> None:
    with (
        FeedbackClient(
            mtls_address,
            ca_file=certificates.ca,
            client_cert_file=stranger.client.certificate,
            client_key_file=stranger.client.private_key,
            retry=NO_RETRIES,
            timeout=5,
        ) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()

    assert servicer.calls == {}


def test_mutual_tls_with_a_client_certificate_identifies_the_client(
    mtls_address: str, servicer: RecordingServicer, certificates: Certificates
) -> None:
    with FeedbackClient(
        mtls_address,
        ca_file=certificates.ca,
        client_cert_file=certificates.client.certificate,
        client_key_file=certificates.client.private_key,
    ) as client:
        client.get_stats()
        list(client.export_events())

    assert [call.peer_identities for call in servicer.calls["GetStats"]] == [
        (b"feedback-test-client",)
    ]
    assert len(servicer.calls["ExportEvents"]) == 1


def test_tls_settings_come_from_the_environment(
    mtls_address: str,
    servicer: RecordingServicer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_CA_FILE", str(certificates.ca))
    monkeypatch.setenv("FEEDBACK_CLIENT_CERT", str(certificates.client.certificate))
    monkeypatch.setenv("FEEDBACK_CLIENT_KEY", str(certificates.client.private_key))
    with FeedbackClient(mtls_address) as client:
        client.get_stats()

    assert len(servicer.calls["GetStats"]) == 1


def test_tls_false_wins_over_the_environment(
    address: str,
    servicer: RecordingServicer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_TLS", "1")
    monkeypatch.setenv("FEEDBACK_CA_FILE", str(certificates.ca))
    with FeedbackClient(address, tls=False) as client:  # the plaintext fake service
        client.get_stats()

    assert len(servicer.calls["GetStats"]) == 1


def test_feedback_tls_in_the_environment_turns_tls_on(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_TLS", "yes")
    with (
        FeedbackClient(address, retry=NO_RETRIES, timeout=5) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()  # a TLS handshake with a plaintext server

    assert servicer.calls == {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"client_cert_file": "client.pem"}, "needs both a client certificate and its key"),
        ({"client_key_file": "client.key"}, "needs both a client certificate and its key"),
        ({"tls": False, "ca_file": "ca.pem"}, "tls=False contradicts ca_file"),
        ({"ca_file": ""}, "an empty path is not a file"),
    ],
)
def test_contradictory_tls_arguments_are_refused(
    arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FeedbackClient("127.0.0.1:1", **arguments)  # type: ignore[arg-type]


def test_tls_arguments_and_own_credentials_are_refused_together(certificates: Certificates) -> None:
    with pytest.raises(ValueError, match="not both"):
        FeedbackClient(
            "127.0.0.1:1",
            ca_file=certificates.ca,
            credentials=grpc.ssl_channel_credentials(),
        )


def test_tls_arguments_with_a_shared_channel_are_refused(certificates: Certificates) -> None:
    with (
        grpc.insecure_channel("127.0.0.1:1") as channel,
        pytest.raises(ValueError, match="channel"),
    ):
        FeedbackClient(channel=channel, tls=True)


def test_a_feedback_tls_word_that_is_neither_yes_nor_no_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_TLS", "maybe")
    with pytest.raises(ValueError, match="FEEDBACK_TLS must be 1 or 0"):
        FeedbackClient("127.0.0.1:1")


def test_a_ca_file_that_is_not_pem_is_refused_before_any_call(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(ValueError, match="is not a PEM file with a CERTIFICATE block"):
        FeedbackClient("127.0.0.1:1", ca_file=not_pem)


def test_a_client_key_that_is_a_certificate_is_refused(certificates: Certificates) -> None:
    with pytest.raises(ValueError, match=r"client key .* PRIVATE KEY block"):
        FeedbackClient(
            "127.0.0.1:1",
            client_cert_file=certificates.client.certificate,
            client_key_file=certificates.client.certificate,
        )


def test_a_missing_ca_file_raises_file_not_found_saying_what_it_was(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        FeedbackClient("127.0.0.1:1", ca_file=tmp_path / "absent.pem")

    assert raised.value.__notes__ == ["reading the CA file for TLS"]


def test_the_cli_connects_with_a_ca_file(
    tls_address: str, servicer: RecordingServicer, certificates: Certificates
) -> None:
    exit_code = main(["--address", tls_address, "--ca-file", str(certificates.ca), "stats"])

    assert exit_code == 0
    assert len(servicer.calls["GetStats"]) == 1


def test_the_cli_connects_with_mutual_tls_and_a_key(
    mtls_address: str, servicer: RecordingServicer, certificates: Certificates
) -> None:
    exit_code = main(
        [
            "--address",
            mtls_address,
            "log",
            "alice",
            "click",
            "--ca-file",
            str(certificates.ca),
            "--client-cert",
            str(certificates.client.certificate),
            "--client-key",
            str(certificates.client.private_key),
            "--api-key",
            KEY,
        ]
    )

    assert exit_code == 0
    (call,) = servicer.calls["LogEvent"]
    assert (call.peer_identities, call.metadata["authorization"]) == (
        (b"feedback-test-client",),
        f"Bearer {KEY}",
    )


def test_the_cli_without_a_client_certificate_fails_on_a_mutual_tls_server(
    mtls_address: str, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--address", mtls_address, "--ca-file", str(certificates.ca), "--timeout", "3"]

    assert main([*arguments, "stats"]) == 1
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


def test_an_authority_issues_clients_with_their_own_names(tmp_path: Path) -> None:
    authority = CertificateAuthority.create(tmp_path, name="issuer")
    first, second = authority.issue_client("ingest-a"), authority.issue_client("ingest-b")

    assert first.certificate != second.certificate
    assert first.private_key.stat().st_mode & 0o077 == 0
    assert b"BEGIN CERTIFICATE" in first.certificate.read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "ca.key",
        "ca.pem",
        "client-ingest-a.key",
        "client-ingest-a.pem",
        "client-ingest-b.key",
        "client-ingest-b.pem",
    ]
