"""The /metrics port under abuse: many scrapes at once, scrapes that never read their answer,
clients that send nothing, and garbage instead of HTTP. The gRPC server keeps serving meanwhile,
counts every call it served, still answers a plain scrape, and stops promptly with the abusers
still connected."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench import payloads
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.metrics.endpoint import MAX_CONNECTIONS
from tests.e2e.metrics_support import MetricsServer, every_call_ended, scrape, wait_for

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(90)]

ABUSE_SECONDS = 3.0
SCRAPERS = 40
"""Threads scraping in a loop, well past the endpoint's MAX_CONNECTIONS."""
STALLED = 4
"""Connections that ask for /metrics and never read the answer (a tiny receive buffer)."""
SILENT = 4
"""Connections that send nothing at all."""
SLOWEST_CALL_SECONDS = 2.0
"""The most one SubmitFeedback may take while the metrics port is abused."""
GARBAGE = (
    b"\x00\xff\x13\x37" * 512,
    b"GARBAGE\r\n\r\n",
    b"GET " + b"/metrics" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\npartial",
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MetricsServer]:
    """A server on SQLite with metrics on."""
    started = MetricsServer("--data-dir", str(tmp_path), "--accept-unknown-conversations")
    yield started
    started.stop()


def _open(address: str, receive_buffer: int | None = None) -> socket.socket:
    host, port = address.rsplit(":", 1)
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(5)
    connection.connect((host, int(port)))
    return connection


def test_the_grpc_server_keeps_serving_while_its_metrics_port_is_abused(
    server: MetricsServer,
) -> None:
    url = f"http://{server.metrics_address}/metrics"
    stop = threading.Event()
    outcomes = {"scraped": 0, "turned away": 0, "garbage answered": 0}
    lock = threading.Lock()

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    def scrape_forever() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read()
                note("scraped")
            except OSError:  # closed unanswered past MAX_CONNECTIONS
                note("turned away")

    def garbage_forever(seed: int) -> None:
        generator = random.Random(seed)
        while not stop.is_set():
            with contextlib.suppress(OSError), _open(server.metrics_address) as connection:
                connection.sendall(generator.choice(GARBAGE))
                connection.recv(1024)
                note("garbage answered")

    held = [_open(server.metrics_address) for _ in range(SILENT)]
    for _ in range(STALLED):
        stalled = _open(server.metrics_address, receive_buffer=1024)
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(stalled)
    attackers = [threading.Thread(target=scrape_forever) for _ in range(SCRAPERS)]
    attackers += [threading.Thread(target=garbage_forever, args=(seed,)) for seed in range(4)]
    for attacker in attackers:
        attacker.start()
    served = 0
    slowest = 0.0
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = FeedbackServiceStub(channel)
            started = time.monotonic()
            while time.monotonic() - started < ABUSE_SECONDS:
                sent = time.monotonic()
                stub.SubmitFeedback(payloads.submit_feedback_request(), timeout=10)
                slowest = max(slowest, time.monotonic() - sent)
                served += 1
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join(timeout=30)

    print(f"{served} calls, slowest {slowest:.3f} s; {outcomes}")
    assert served >= 50
    assert slowest < SLOWEST_CALL_SECONDS
    assert outcomes["scraped"] > 0
    assert outcomes["turned away"] > 0  # more scrapers than MAX_CONNECTIONS
    assert SCRAPERS > MAX_CONNECTIONS
    assert outcomes["garbage answered"] > 0
    # The stalled and silent connections still hold their slots: a scrape is answered beside them.
    samples = wait_for(lambda: scrape(url), every_call_ended)
    assert samples.call("grpc_server_handled_total", "SubmitFeedback", grpc_code="OK") == served
    assert samples.get("feedback_stored_rows", kind="feedback") == served
    stopping = time.monotonic()
    server.stop()
    assert server.process.returncode == 0
    assert time.monotonic() - stopping < 10
    for connection in held:
        connection.close()
