"""The /metrics HTTP endpoint: a small threaded server beside the event loop.

Scrapes run on their own threads (the text format is rendered in Python, which must not stall
the event loop), each bounded in time and in number: a client that sends nothing, or never reads
its answer, holds one thread for at most SOCKET_TIMEOUT_SECONDS, and beyond MAX_CONNECTIONS open
at once new connections are closed unanswered. One scrape renders at a time: rendering holds the
GIL, and sixteen at once would leave the event loop a sixteenth of it (calls wait meanwhile), so a
flood of scrapes costs the loop at most one thread's share. Only GET /metrics is served (404
elsewhere).
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST

SOCKET_TIMEOUT_SECONDS = 10.0
"""How long a scrape's connection may wait on its client (a read or a write) before it is closed:
Prometheus's default scrape timeout."""
MAX_CONNECTIONS = 16
"""Connections served at once; Prometheus holds one per target."""
POLL_SECONDS = 0.25
"""How often the accepting thread checks whether it should stop."""
PATH = "/metrics"

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" or "[IPv6]:PORT"; raises ValueError naming the problem."""
    host, separator, port = address.strip().rpartition(":")
    if not separator or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-address must be HOST:PORT, not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    """GET /metrics of what `render` writes, bound when made, served from start() until stop()."""

    def __init__(self, address: str, render: Callable[[], bytes]) -> None:
        """Bind `address` (port 0 picks one); raises OSError saying why it cannot listen."""
        host, port = parse_address(address)
        server_class = _IPv6Server if ":" in host else _IPv4Server
        try:
            self._server = server_class((host, port), _QuietHandler)
        except OSError as error:
            reason = error.strerror or str(error)
            raise OSError(
                error.errno,
                f"cannot listen on --metrics-address {address} (FEEDBACK_METRICS_ADDRESS): "
                f"{reason}",
            ) from error
        self._server.set_app(_only_metrics(render))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve scrapes on a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name="metrics-endpoint",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the socket (blocking, up to POLL_SECONDS); scrapes in
        progress end on their own daemon threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


def _only_metrics(render: Callable[[], bytes]) -> Any:
    rendering = threading.Lock()

    def serve(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: metrics are at {PATH}\n".encode()]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        with rendering:  # the answer is made whole here; it is sent after, unlocked
            body = render()
            headers = [("Content-Type", CONTENT_TYPE_LATEST)]
            if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):  # as Prometheus asks
                body = gzip.compress(body, compresslevel=1)
                headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    return serve


class _IPv4Server(ThreadingMixIn, WSGIServer):
    """A WSGI server with a thread per connection, at most MAX_CONNECTIONS at once."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    address_family = socket.AF_INET

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the host (a DNS wait at start)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a new thread if a slot is free; otherwise close the connection at once."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out, reset or sent garbage: nothing to report."""


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr, and a time limit on every read and write."""

    timeout = SOCKET_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: Prometheus scrapes every few seconds."""
