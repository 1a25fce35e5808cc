"""What the API key, TLS and rate limit tests share: keys made the way operators make them, calls
to any FeedbackService method by its descriptor, and the rich status of a failed call."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.app import FEEDBACK_SERVICE
from server.config import Settings
from server.key_commands import run_key_command

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
FEEDBACK_SERVER = shutil.which("feedback-server") or str(
    Path(sys.executable).parent / "feedback-server"
)
CALL_TIMEOUT = 10.0
"""Seconds any one test call may take: a local server answers far sooner."""

Metadata = tuple[tuple[str, str], ...]


def keyed_settings(database_url: str, **changes: Any) -> Settings:
    """Settings of a small server that requires API keys, with `changes`."""
    fields: dict[str, Any] = {"storage_threads": 2, "log_level": "WARNING", "auth": "keys"}
    return Settings(database_url=database_url, **{**fields, **changes})


def bearer(secret: str) -> Metadata:
    """The call metadata that presents `secret` as an API key."""
    return (("authorization", f"Bearer {secret}"),)


def keys_command(database_url: str, *arguments: str) -> tuple[int, str, str]:
    """Run `feedback-server keys ARGUMENTS` in this process (what the CLI runs, without paying for
    a fresh interpreter); returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_key_command(
            [*arguments[:1], "--database-url", database_url, *arguments[1:]], environ={}
        )
    return code, out.getvalue(), err.getvalue()


def create_key(database_url: str, *scopes: str, name: str = "", client_identity: str = "") -> str:
    """The secret of a new key, made as `feedback-server keys create` makes it."""
    arguments = ["create", "--name", name, "--client-identity", client_identity]
    for scope in scopes:
        arguments += ["--scope", scope]
    code, out, err = keys_command(database_url, *arguments)
    assert code == 0, err
    return out.strip()


def keys_process(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the real `feedback-server keys ARGUMENTS` command in a child process."""
    return subprocess.run(
        [FEEDBACK_SERVER, "keys", *arguments[:1], "--database-url", database_url, *arguments[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Outcome:
    """How a call ended, with the google.rpc details the server sent."""

    code: grpc.StatusCode
    details: list[Message] = field(default_factory=list)
    message: str = ""

    def detail(self, kind: type[Any]) -> Any:
        """The first detail of this type, or None."""
        return next((detail for detail in self.details if isinstance(detail, kind)), None)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason ("" without one)."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return "" if info is None else str(info.reason)

    @property
    def metadata(self) -> dict[str, str]:
        """The ErrorInfo metadata."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return {} if info is None else dict(info.metadata)

    @property
    def retry_delay(self) -> float | None:
        """The RetryInfo delay in seconds, None without one."""
        info = self.detail(error_details_pb2.RetryInfo)
        return None if info is None else float(info.retry_delay.ToNanoseconds()) / 1e9


OK = Outcome(grpc.StatusCode.OK)

_DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
)


def outcome_of(error: grpc.RpcError) -> Outcome:
    """The status code and unpacked details of a failed call."""
    call: Any = error
    status = rpc_status.from_call(call)
    details: list[Message] = []
    for packed in () if status is None else status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    return Outcome(call.code(), details, str(call.details() or ""))


def method(name: str) -> MethodDescriptor:
    """A FeedbackService method by name."""
    return FEEDBACK_SERVICE.methods_by_name[name]


def request_class(descriptor: MethodDescriptor) -> type[Message]:
    """The generated request class of a method."""
    return message_factory.GetMessageClass(descriptor.input_type)


def invoke(
    channel: grpc.Channel,
    descriptor: MethodDescriptor,
    request: Message,
    metadata: Metadata = (),
) -> Outcome:
    """Call any FeedbackService method (unary, server- or client-streaming) and say how it ended;
    a client-streaming method is sent `request` as its only message."""
    path = f"/{FEEDBACK_SERVICE.full_name}/{descriptor.name}"
    serialize = type(request).SerializeToString
    deserialize = message_factory.GetMessageClass(descriptor.output_type).FromString
    try:
        if descriptor.name.startswith("Watch"):
            # A watch never ends by itself: an admitted one answers at once with a marker.
            watch = channel.unary_stream(path, serialize, deserialize)(
                request, metadata=metadata, timeout=CALL_TIMEOUT
            )
            next(iter(watch))
            watch.cancel()  # type: ignore[no-untyped-call]
        elif descriptor.server_streaming:
            list(
                channel.unary_stream(path, serialize, deserialize)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT
                )
            )
        elif descriptor.client_streaming:
            channel.stream_unary(path, serialize, deserialize)(
                iter([request]), metadata=metadata, timeout=CALL_TIMEOUT
            )
        else:
            channel.unary_unary(path, serialize, deserialize)(
                request, metadata=metadata, timeout=CALL_TIMEOUT
            )
    except grpc.RpcError as error:
        return outcome_of(error)
    return OK


def grpcurl(
    address: str,
    *command: str,
    secret: str | None = None,
    data: str | None = None,
    tls: Sequence[str] = ("-plaintext",),
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl against `address`, with an API key header when `secret` is given."""
    flags: list[str] = [*tls]
    if secret is not None:
        flags += ["-H", f"authorization: Bearer {secret}"]
    if data is not None:
        flags += ["-d", data]
    return subprocess.run(
        [GRPCURL, *flags, address, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def grpcurl_code(result: subprocess.CompletedProcess[str]) -> str:
    """The status grpcurl printed: "OK" on success, else its `Code: X` line's X."""
    if result.returncode == 0:
        return "OK"
    for line in result.stderr.splitlines():
        if line.strip().startswith("Code:"):
            return line.split(":", 1)[1].strip()
    return f"no code (exit {result.returncode}): {result.stderr.strip()}"


def names(items: Iterable[Any]) -> list[str]:
    """The `name` of each item (descriptors, enum values), for readable assertions."""
    return [str(item.name) for item in items]
