"""How a client proves who it is: the API key header and the TLS (or mTLS) channel credentials.

The API key travels as plain per-call metadata, `authorization: Bearer <key>`, not as gRPC call
credentials: grpcio silently drops call credentials on insecure channels (grpc/grpc#19234), so a
key given that way would never reach a server on plaintext loopback, and the failure would look
like a missing key. Metadata goes out on every channel alike.

Every setting falls back to its FEEDBACK_* environment variable when its argument is None, so
scripts and the CLI can be configured without code; an argument always wins over the variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "API_KEY_ENVIRONMENT_VARIABLE",
    "AUTHORIZATION_KEY",
    "CA_FILE_ENVIRONMENT_VARIABLE",
    "CLIENT_CERT_ENVIRONMENT_VARIABLE",
    "CLIENT_KEY_ENVIRONMENT_VARIABLE",
    "TLS_ENVIRONMENT_VARIABLE",
    "TlsFiles",
    "authorization_metadata",
    "channel_credentials",
    "checked_api_key",
    "has_tls_arguments",
    "resolve_api_key",
    "resolve_tls",
]

API_KEY_ENVIRONMENT_VARIABLE = "FEEDBACK_API_KEY"
"""Environment variable holding the API key when `api_key` is not given."""

TLS_ENVIRONMENT_VARIABLE = "FEEDBACK_TLS"
"""Set to 1 (or true, yes, on) to connect over TLS with the system's root certificates."""

CA_FILE_ENVIRONMENT_VARIABLE = "FEEDBACK_CA_FILE"
"""PEM file of the certificate authorities to trust instead of the system's; implies TLS."""

CLIENT_CERT_ENVIRONMENT_VARIABLE = "FEEDBACK_CLIENT_CERT"
"""PEM certificate chain the client presents for mutual TLS; needs FEEDBACK_CLIENT_KEY."""

CLIENT_KEY_ENVIRONMENT_VARIABLE = "FEEDBACK_CLIENT_KEY"
"""PEM private key of FEEDBACK_CLIENT_CERT."""

AUTHORIZATION_KEY = "authorization"
"""The metadata key that carries the API key, as `Bearer <key>`."""

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def checked_api_key(api_key: str, *, source: str = "api_key") -> str:
    """The key without surrounding whitespace; ValueError if it could not form a valid header.

    The message names the offending position, never the key itself, so it is safe to print.
    """
    if not isinstance(api_key, str):
        raise TypeError(f"{source} must be a str, not {type(api_key).__name__}")
    key = api_key.strip()
    if not key:
        raise ValueError(f"{source} is empty")
    for position, character in enumerate(key, start=1):
        # Visible ASCII only: a gRPC header value takes nothing else, and a space, tab or line
        # break inside a key is always a copy-and-paste accident.
        if not "!" <= character <= "~":
            what = "whitespace" if character.isspace() else "a non-printable or non-ASCII character"
            raise ValueError(
                f"{source} must be printable ASCII without spaces; character {position} of "
                f"{len(key)} is {what}"
            )
    return key


def resolve_api_key(api_key: str | None, environ: Mapping[str, str]) -> str | None:
    """The checked key from the argument, else from FEEDBACK_API_KEY (empty counts as unset)."""
    if api_key is not None:
        return checked_api_key(api_key)
    from_environment = environ.get(API_KEY_ENVIRONMENT_VARIABLE, "")
    if not from_environment:
        return None
    return checked_api_key(from_environment, source=API_KEY_ENVIRONMENT_VARIABLE)


def authorization_metadata(
    metadata: tuple[tuple[str, str], ...],
    api_key: str | None,
    environ: Mapping[str, str],
) -> tuple[tuple[str, str], ...]:
    """Call metadata with the API key's authorization header added, refusing two of them.

    An explicit `api_key` beside an authorization entry in `metadata` is a ValueError (which one
    would the caller mean?); FEEDBACK_API_KEY yields to an explicit entry, as any argument does.
    """
    has_authorization = any(key.lower() == AUTHORIZATION_KEY for key, _ in metadata)
    if has_authorization:
        if api_key is not None:
            raise ValueError("give the API key as api_key or as authorization metadata, not both")
        return metadata
    key = resolve_api_key(api_key, environ)
    if key is None:
        return metadata
    return (*metadata, (AUTHORIZATION_KEY, f"Bearer {key}"))


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS channel is built from, after arguments and environment are merged."""

    ca_file: Path | None = None
    """PEM roots to trust; None for the system's."""
    client_cert_file: Path | None = None
    """PEM certificate chain presented for mutual TLS; None for plain TLS."""
    client_key_file: Path | None = None
    """PEM private key of `client_cert_file`."""


def resolve_tls(
    *,
    tls: bool | None,
    ca_file: str | Path | None,
    client_cert_file: str | Path | None,
    client_key_file: str | Path | None,
    environ: Mapping[str, str],
) -> TlsFiles | None:
    """The TLS files to use, or None for a plaintext channel; ValueError for contradictions.

    Each argument left None falls back to its environment variable. A CA file or client
    certificate implies TLS; `tls=False` forces plaintext (and ignores the TLS variables), but
    contradicts a CA file or certificate given as an argument.
    """
    explicit = {
        "ca_file": ca_file,
        "client_cert_file": client_cert_file,
        "client_key_file": client_key_file,
    }
    if tls is False:
        given = [name for name, value in explicit.items() if value is not None]
        if given:
            raise ValueError(f"tls=False contradicts {', '.join(given)}, which need TLS")
        return None
    ca = _path(ca_file, environ, CA_FILE_ENVIRONMENT_VARIABLE)
    cert = _path(client_cert_file, environ, CLIENT_CERT_ENVIRONMENT_VARIABLE)
    key = _path(client_key_file, environ, CLIENT_KEY_ENVIRONMENT_VARIABLE)
    if (cert is None) != (key is None):
        raise ValueError(
            "mutual TLS needs both a client certificate and its key "
            f"(client_cert_file/{CLIENT_CERT_ENVIRONMENT_VARIABLE} and "
            f"client_key_file/{CLIENT_KEY_ENVIRONMENT_VARIABLE}), or neither"
        )
    wanted = _tls_flag(environ) if tls is None else tls
    if not wanted and ca is None and cert is None:
        return None
    return TlsFiles(ca_file=ca, client_cert_file=cert, client_key_file=key)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Read the PEM files and build TLS channel credentials (mutual TLS with a client cert)."""
    root = None if files.ca_file is None else _read_pem(files.ca_file, "CA file", "CERTIFICATE")
    chain = (
        None
        if files.client_cert_file is None
        else _read_pem(files.client_cert_file, "client certificate", "CERTIFICATE")
    )
    private_key = (
        None
        if files.client_key_file is None
        else _read_pem(files.client_key_file, "client key", "PRIVATE KEY")
    )
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=private_key, certificate_chain=chain
    )


def has_tls_arguments(
    tls: bool | None,
    ca_file: str | Path | None,
    client_cert_file: str | Path | None,
    client_key_file: str | Path | None,
) -> bool:
    """Whether any TLS setting was passed as an argument (environment variables aside)."""
    return tls is not None or any(
        value is not None for value in (ca_file, client_cert_file, client_key_file)
    )


def _path(value: str | Path | None, environ: Mapping[str, str], variable: str) -> Path | None:
    """The argument as a path, else the variable's (empty counts as unset)."""
    if value is not None:
        if not str(value):
            raise ValueError(f"an empty path is not a file (for {variable})")
        return Path(value)
    from_environment = environ.get(variable, "")
    return Path(from_environment) if from_environment else None


def _tls_flag(environ: Mapping[str, str]) -> bool:
    """FEEDBACK_TLS as a boolean; ValueError for a word that is neither yes nor no."""
    word = environ.get(TLS_ENVIRONMENT_VARIABLE, "").strip().lower()
    if not word or word in _FALSE_WORDS:
        return False
    if word in _TRUE_WORDS:
        return True
    raise ValueError(f"{TLS_ENVIRONMENT_VARIABLE} must be 1 or 0 (true/false, yes/no, on/off)")


def _read_pem(path: Path, what: str, label: str) -> bytes:
    """Read a PEM file, refusing one without the expected block now rather than at handshake.

    grpcio would take any bytes and fail every call later with an opaque UNAVAILABLE.
    """
    try:
        content = path.read_bytes()
    except OSError as error:
        error.add_note(f"reading the {what} for TLS")
        raise
    if b"-----BEGIN " not in content or label.encode() + b"-----" not in content:
        raise ValueError(f"the {what} {path} is not a PEM file with a {label} block")
    return content
