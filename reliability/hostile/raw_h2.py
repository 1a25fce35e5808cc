"""A gRPC client spoken by hand over HTTP/2 (the `h2` package) on a plain socket.

A generated client always finishes its messages, reads what it is sent and closes politely; the
damage the suite needs does not: a length prefix that promises more than is ever sent, headers
and no body, a flow-control window that never opens, a TCP reset in the middle of a stream.
Everything here runs on one asyncio event loop, so thousands of streams cost no threads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from google.rpc import error_details_pb2, status_pb2

SERVICE_PATH = "/feedback.v1.FeedbackService/"
CONNECT_TIMEOUT_SECONDS = 5.0
READ_BYTES = 65_536
ALWAYS = 2**62
"""acknowledge_bytes of a reader that keeps reading."""
RESOURCE_EXHAUSTED = 8
STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def grpc_frame(message: bytes, *, declared_length: int | None = None) -> bytes:
    """gRPC's length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length, bytes.

    `declared_length` puts a different length in the prefix than the bytes that follow.
    """
    length = len(message) if declared_length is None else declared_length
    return struct.pack(">BI", 0, length) + message


def detail_kinds(status_details: bytes) -> frozenset[str]:
    """Names of the google.rpc detail messages (RetryInfo, QuotaFailure...) in a serialized
    google.rpc.Status, as carried by the grpc-status-details-bin trailer."""
    status = status_pb2.Status.FromString(status_details)
    return frozenset(detail.TypeName().rsplit(".", 1)[-1] for detail in status.details)


def retry_delay_seconds(status_details: bytes) -> float | None:
    """The RetryInfo delay of a serialized google.rpc.Status, if it has one."""
    for detail in status_pb2.Status.FromString(status_details).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def details_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> bytes | None:
    """grpc-status-details-bin from the trailing metadata of a grpc(.aio) error, if present."""
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            return value if isinstance(value, bytes) else value.encode()
    return None


@dataclass(slots=True, eq=False)
class RawStream:
    """What one hand-made stream got back: response headers, DATA bytes, and how it ended."""

    stream_id: int
    opened: float
    """time.monotonic() when its HEADERS were sent."""
    response_headers: dict[str, str] | None = None
    data_bytes: int = 0
    first_data: float | None = None
    """time.monotonic() of the first DATA frame, None if none came."""
    grpc_status: int | None = None
    grpc_message: str = ""
    status_details: bytes | None = None
    """The serialized google.rpc.Status of grpc-status-details-bin."""
    reset_code: int | None = None
    """The RST_STREAM error code, if the server reset the stream."""
    connection_lost: bool = False
    """The connection ended (GOAWAY for this stream, EOF or reset) before the stream did."""
    ended: float | None = None
    """time.monotonic() when it ended one of those ways; None while it is open."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the response headers (or the end)."""
    got_data: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the first DATA frame (or the end)."""

    @property
    def status_name(self) -> str:
        """OK, RESOURCE_EXHAUSTED...; "RST_STREAM", "connection lost" or "open" without one."""
        if self.grpc_status is not None:
            return STATUS_NAMES.get(self.grpc_status, str(self.grpc_status))
        if self.reset_code is not None:
            return "RST_STREAM"
        if self.connection_lost:
            return "connection lost"
        return "open"

    @property
    def answer_kind(self) -> str:
        """How the server ended it: "status" (a grpc-status), "reset", "connection", or "none"."""
        if self.grpc_status is not None:
            return "status"
        if self.reset_code is not None:
            return "reset"
        if self.connection_lost:
            return "connection"
        return "none"

    def detail_kinds(self) -> frozenset[str]:
        """Detail messages of its status (RetryInfo, QuotaFailure...)."""
        return frozenset() if self.status_details is None else detail_kinds(self.status_details)

    def finish(self, now: float) -> None:
        """Mark it ended (once) and wake whoever waits for it."""
        if self.ended is None:
            self.ended = now
        self.done.set()
        self.responded.set()
        self.got_data.set()


class RawGrpcConnection:
    """One client HTTP/2 connection to a gRPC server, driven by hand."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: h2.connection.H2Connection,
        *,
        acknowledge_bytes: int,
        authority: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._h2 = connection
        self._acknowledge_left = acknowledge_bytes
        self._authority = authority
        self.streams: dict[int, RawStream] = {}
        self.closed = False
        self.lost = asyncio.Event()
        """Set once the connection is gone, whoever ended it."""
        self.goaway_received = False
        self.closed_by_server = False
        """The server closed or reset the connection (rather than this side)."""
        self._settings_received = asyncio.Event()
        self._room = asyncio.Event()
        self._reading = asyncio.get_running_loop().create_task(self._read())

    @property
    def local_port(self) -> int:
        """This side's port: the server logs the peer as ipv4:127.0.0.1:<this port>."""
        name = self._writer.get_extra_info("sockname")
        return int(name[1])

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        initial_window: int | None = None,
        acknowledge_bytes: int = ALWAYS,
    ) -> RawGrpcConnection:
        """Open a connection, send the preface and SETTINGS, and wait for the server's SETTINGS.

        `initial_window` is the stream flow-control window offered to the server (0 lets it
        send no DATA at all); WINDOW_UPDATEs give back the first `acknowledge_bytes` received, then
        none (0: never; the server's connection window of 64 KiB then caps what it can send).
        """
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_SECONDS
        )
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if initial_window is not None:
            connection.local_settings = h2.settings.Settings(
                client=True,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window},
            )
        connection.initiate_connection()
        raw = cls(
            reader, writer, connection, acknowledge_bytes=acknowledge_bytes, authority=address
        )
        raw._flush()
        try:
            await asyncio.wait_for(raw._settings_received.wait(), CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            raw.reset_tcp()
            raise
        return raw

    async def open_stream(
        self,
        method: str,
        body: bytes | None,
        *,
        declared_length: int | None = None,
        end_stream: bool = True,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> RawStream:
        """Start a call of `method` (e.g. "ExportEvents"); waits while the server's
        MAX_CONCURRENT_STREAMS is reached. `body` None sends the headers alone (and
        `end_stream` False leaves the call waiting for a message that never comes)."""
        while self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams:
            if self.closed:
                raise ConnectionError("the connection is closed")
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise ConnectionError("the connection is closed")
        stream_id = self._h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE_PATH + method),
            (":authority", self._authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra_headers,
        ]
        stream = self.streams[stream_id] = RawStream(stream_id, time.monotonic())
        self._h2.send_headers(stream_id, headers, end_stream=body is None and end_stream)
        if body is not None:
            self._h2.send_data(
                stream_id, grpc_frame(body, declared_length=declared_length), end_stream=end_stream
            )
        self._flush()
        return stream

    def cancel_stream(self, stream: RawStream) -> None:
        """RST_STREAM(CANCEL) from this side, as a client abandoning a call does."""
        if self.closed:
            return
        try:
            self._h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    def end_stream(self, stream: RawStream) -> None:
        """Half-close this side of a stream (END_STREAM with an empty DATA frame)."""
        if self.closed:
            return
        try:
            self._h2.end_stream(stream.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()

    def reset_tcp(self) -> None:
        """Close with SO_LINGER 0, so the kernel sends a TCP RST instead of a FIN."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None and not self.closed:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        self._lost()

    async def close(self) -> None:
        """Send GOAWAY and close the socket (a FIN): the client that simply goes away."""
        if not self.closed:
            try:
                self._h2.close_connection()
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
            self._writer.close()
        self._lost()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._reading

    async def _read(self) -> None:
        try:
            while True:
                data = await self._reader.read(READ_BYTES)
                if not data:
                    break
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._handle(event)
                self._flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed_by_server = not self.closed
            self._lost()

    def _handle(self, event: h2.events.Event) -> None:
        now = time.monotonic()
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_received.set()
            self._room.set()
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_received = True
            last = event.last_stream_id or 0
            for refused in self.streams.values():
                if refused.ended is None and refused.stream_id > last:
                    refused.connection_lost = True
                    refused.finish(now)
            return
        stream_id = getattr(event, "stream_id", None)
        stream = None if stream_id is None else self.streams.get(stream_id)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.response_headers = _text_headers(event.headers)
            stream.responded.set()
            self._take_status(stream, stream.response_headers)  # a trailers-only answer
        elif isinstance(event, h2.events.TrailersReceived):
            self._take_status(stream, _text_headers(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            stream.data_bytes += len(event.data)
            if stream.first_data is None:
                stream.first_data = now
            stream.got_data.set()
            length = event.flow_controlled_length
            if length and self._acknowledge_left > 0:
                self._acknowledge_left -= length
                self._h2.acknowledge_received_data(length, stream.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream.reset_code = int(event.error_code) if event.error_code is not None else 0
            stream.finish(now)
            self._room.set()
        elif isinstance(event, h2.events.StreamEnded):
            stream.finish(now)
            self._room.set()

    @staticmethod
    def _take_status(stream: RawStream, headers: dict[str, str]) -> None:
        if "grpc-status" not in headers:
            return
        stream.grpc_status = int(headers["grpc-status"])
        stream.grpc_message = headers.get("grpc-message", "")
        encoded = headers.get("grpc-status-details-bin")
        if encoded:
            stream.status_details = base64.b64decode(encoded + "=" * (-len(encoded) % 4))

    def _flush(self) -> None:
        outgoing = self._h2.data_to_send()
        if outgoing and not self.closed:
            self._writer.write(outgoing)

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.lost.set()
        now = time.monotonic()
        for stream in self.streams.values():
            if stream.ended is None:
                stream.connection_lost = True
                stream.finish(now)
        self._room.set()


def _text_headers(headers: Iterable[tuple[bytes | str, bytes | str]]) -> dict[str, str]:
    return {
        (key.decode() if isinstance(key, bytes) else key): (
            value.decode("latin-1") if isinstance(value, bytes) else value
        )
        for key, value in headers
    }
