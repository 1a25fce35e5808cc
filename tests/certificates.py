"""Throwaway X.509 certificates for TLS and mTLS tests, made with openssl at test time.

No key material is ever committed: each test session makes its own certificate authority in a
temporary directory and issues what it needs from it. Keys are ECDSA P-256, which openssl makes in
milliseconds (an RSA key takes far longer), and certificates are valid for two days.

    from tests.certificates import CertificateAuthority, make_certificates

    certificates = make_certificates(tmp_path)  # CA, server for 127.0.0.1/localhost, one client
    server_credentials = grpc.ssl_server_credentials(
        [certificates.server.pair()],
        root_certificates=certificates.ca.read_bytes(),  # to verify client certificates (mTLS)
        require_client_auth=True,
    )
    FeedbackClient(address, ca_file=certificates.ca,
                   client_cert_file=certificates.client.certificate,
                   client_key_file=certificates.client.private_key)

    authority = CertificateAuthority.create(tmp_path / "other", name="another CA")
    stranger = authority.issue_client("stranger")  # a client the first CA never vouched for

Servers verify client certificates against the CA; the client's common name (CN) is what
`grpc.ServicerContext.peer_identities()` and `auth_context()["x509_common_name"]` return.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = [
    "DEFAULT_HOSTS",
    "CertificateAuthority",
    "Certificates",
    "KeyPair",
    "make_certificates",
    "openssl_missing_reason",
]

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
"""Names a test server certificate covers by default: the loopback address and its host name."""

_VALID_DAYS = 2
"""Long enough for any test run (and a clock a day off), short enough to be useless if leaked."""


def openssl_missing_reason() -> str | None:
    """Why certificates cannot be made here (for pytest.skip), or None when openssl is present."""
    return None if shutil.which("openssl") else "the openssl command line is not installed"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key, as files."""

    certificate: Path
    """The certificate, signed by the authority that issued it."""
    private_key: Path
    """Its unencrypted private key (readable by the owner only)."""

    def pair(self) -> tuple[bytes, bytes]:
        """(private key, certificate) bytes, the pair `grpc.ssl_server_credentials` takes."""
        return self.private_key.read_bytes(), self.certificate.read_bytes()


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed test CA that issues server and client certificates into its directory."""

    certificate: Path
    """The CA certificate (PEM): what clients pass as ca_file, and mTLS servers as roots."""
    private_key: Path
    """The CA's private key, used to sign what it issues."""
    directory: Path
    """Where issued certificates and keys are written."""

    @classmethod
    def create(cls, directory: Path, *, name: str = "feedback test CA") -> CertificateAuthority:
        """Make a new CA (key and self-signed certificate) in `directory`, created if needed."""
        directory.mkdir(parents=True, exist_ok=True)
        certificate, private_key = directory / "ca.pem", directory / "ca.key"
        config = directory / "ca.cnf"
        config.write_text(
            _request_config(
                name,
                [
                    "basicConstraints = critical, CA:TRUE",
                    "keyUsage = critical, keyCertSign, cRLSign",
                    "subjectKeyIdentifier = hash",
                ],
            )
        )
        _openssl(
            "req", "-x509", "-new", *_NEW_KEY, "-keyout", private_key, "-out", certificate,
            "-config", config, "-days", str(_VALID_DAYS), "-set_serial", _serial(),
        )  # fmt: skip
        private_key.chmod(0o600)
        config.unlink()
        return cls(certificate=certificate, private_key=private_key, directory=directory)

    def issue_server(
        self, hosts: Sequence[str] = DEFAULT_HOSTS, *, name: str = "server"
    ) -> KeyPair:
        """A server certificate for `hosts` (IP addresses and DNS names, as subjectAltNames).

        Its CN is the first host; files are `<name>.pem` and `<name>.key`. To dial an address the
        certificate does not name, clients pass the channel option
        ("grpc.ssl_target_name_override", one of the hosts).
        """
        if not hosts:
            raise ValueError("a server certificate needs at least one host")
        names = ", ".join(_subject_alt_name(host) for host in hosts)
        return self._issue(
            name,
            hosts[0],
            ["extendedKeyUsage = serverAuth", f"subjectAltName = {names}"],
        )

    def issue_client(self, common_name: str, *, name: str | None = None) -> KeyPair:
        """A client certificate for mutual TLS whose CN (the peer identity) is `common_name`."""
        usage = ["extendedKeyUsage = clientAuth"]
        return self._issue(name or f"client-{common_name}", common_name, usage)

    def _issue(self, name: str, common_name: str, extensions: list[str]) -> KeyPair:
        """Make a key and a CSR for `common_name`, and sign it with `extensions` added."""
        certificate = self.directory / f"{name}.pem"
        private_key = self.directory / f"{name}.key"
        request = self.directory / f"{name}.csr"
        request_config = self.directory / f"{name}-request.cnf"
        request_config.write_text(_request_config(common_name, []))
        _openssl(
            "req", "-new", *_NEW_KEY, "-keyout", private_key, "-out", request,
            "-config", request_config,
        )  # fmt: skip
        private_key.chmod(0o600)
        signing_config = self.directory / f"{name}-extensions.cnf"
        signing_config.write_text(
            "[leaf]\n"
            + "\n".join(
                [
                    "basicConstraints = critical, CA:FALSE",
                    "keyUsage = critical, digitalSignature",
                    "subjectKeyIdentifier = hash",
                    "authorityKeyIdentifier = keyid",
                    *extensions,
                ]
            )
            + "\n"
        )
        _openssl(
            "x509", "-req", "-in", request, "-CA", self.certificate, "-CAkey", self.private_key,
            "-set_serial", _serial(), "-days", str(_VALID_DAYS), "-sha256",
            "-extfile", signing_config, "-extensions", "leaf", "-out", certificate,
        )  # fmt: skip
        for leftover in (request, request_config, signing_config):
            leftover.unlink()
        return KeyPair(certificate=certificate, private_key=private_key)


@dataclass(frozen=True)
class Certificates:
    """What most TLS tests need: a CA, a server certificate it signed and a client one."""

    authority: CertificateAuthority
    """The CA, to issue more certificates."""
    server: KeyPair
    """A server certificate for the hosts asked for."""
    client: KeyPair
    """A client certificate for mutual TLS."""

    @property
    def ca(self) -> Path:
        """The CA certificate file: clients' ca_file, mTLS servers' root certificates."""
        return self.authority.certificate


def make_certificates(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    client_common_name: str = "feedback-test-client",
    ca_name: str = "feedback test CA",
) -> Certificates:
    """Make a CA in `directory` and issue a server certificate for `hosts` and a client one."""
    authority = CertificateAuthority.create(directory, name=ca_name)
    return Certificates(
        authority=authority,
        server=authority.issue_server(hosts),
        client=authority.issue_client(client_common_name),
    )


# A fresh unencrypted P-256 key for each request.
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _request_config(common_name: str, extensions: list[str]) -> str:
    """An openssl req configuration that asks nothing and ignores the system's openssl.cnf."""
    lines = [
        "[req]",
        "prompt = no",
        "distinguished_name = subject",
        "x509_extensions = extensions",
        "[subject]",
        f"CN = {common_name}",
        "[extensions]",
        *extensions,
    ]
    return "\n".join(lines) + "\n"


def _subject_alt_name(host: str) -> str:
    """`IP:` for an address, `DNS:` for a name: clients match addresses only against IP entries."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def _serial() -> str:
    """A random serial number, so no serial file is kept and no two certificates share one."""
    return f"0x{secrets.token_hex(16)}"


def _openssl(*arguments: str | os.PathLike[str]) -> None:
    """Run openssl, raising with its error output when it fails."""
    command = ["openssl", *(os.fspath(argument) for argument in arguments)]
    # The system configuration may add extensions (or demand a prompt); each call brings its own.
    environment = {**os.environ, "OPENSSL_CONF": os.devnull}
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, check=False, timeout=60
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"openssl {arguments[0]} failed ({completed.returncode}): {completed.stderr.strip()}"
        )
