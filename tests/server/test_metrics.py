"""The metrics' parts on their own: the flag, the histogram, the hooks, a busy port, metrics off."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from server.app import create_server
from server.config import Settings, parse_settings
from server.metrics.calls import grpc_type
from server.metrics.endpoint import parse_address
from server.service.histogram import Histogram
from tests.e2e.metrics_support import parse
from tests.server_harness import ServerThread


def _settings(tmp_path: Path, **changes: object) -> Settings:
    fields: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        "storage_threads": 2,
        "log_level": "WARNING",
    }
    return Settings(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_flag_wins_over_the_environment_and_defaults_to_off() -> None:
    assert parse_settings([], {})[1].metrics_address == ""
    from_env = parse_settings([], {"FEEDBACK_METRICS_ADDRESS": "127.0.0.1:9100"})[1]
    assert from_env.metrics_address == "127.0.0.1:9100"
    flagged = parse_settings(
        ["--metrics-address", "0.0.0.0:9200"], {"FEEDBACK_METRICS_ADDRESS": "127.0.0.1:9100"}
    )[1]
    assert flagged.metrics_address == "0.0.0.0:9200"


@pytest.mark.parametrize("address", ["9100", "host:", "host:port", "h:99999"])
def test_a_malformed_address_is_a_usage_error(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--metrics-address", address], {})
    assert "--metrics-address must be HOST:PORT" in capsys.readouterr().err


def test_addresses_parse_with_ipv6_and_an_empty_host() -> None:
    assert parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_address("[::1]:0") == ("::1", 0)
    assert parse_address(":9100") == ("0.0.0.0", 9100)


def test_histogram_buckets_are_upper_bounds_and_cumulative() -> None:
    histogram = Histogram([0.1, 1, 10])
    for value in (0.05, 0.1, 0.5, 1, 20):
        histogram.observe(value)

    counts, total = histogram.snapshot()

    assert counts == [2, 4, 4, 5]
    assert total == pytest.approx(21.65)
    with pytest.raises(ValueError, match="increasing"):
        Histogram([1, 1])


def test_grpc_types_follow_go_grpc_prometheus() -> None:
    assert [grpc_type(False, False), grpc_type(True, False)] == ["unary", "client_stream"]
    assert [grpc_type(False, True), grpc_type(True, True)] == ["server_stream", "bidi_stream"]


def test_a_busy_port_fails_the_start_with_a_message_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = ServerThread(_settings(tmp_path, metrics_address=address))
        with pytest.raises(OSError, match=r"--metrics-address .*: Address already in use"):
            server.start()
        server.stop()


def test_hooks_feed_the_watchers_and_webhook_series(tmp_path: Path) -> None:
    with ServerThread(_settings(tmp_path, metrics_address="127.0.0.1:0")) as running:
        metrics = running.feedback_server.metrics
        metrics.count_watchers_with(lambda: {"feedback": 3, "events": 1})
        metrics.count_webhook_delivery("delivered")
        metrics.count_webhook_delivery("delivered")
        metrics.count_webhook_delivery("timed_out")
        port = running.feedback_server.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            samples = parse(answer.read().decode())

    assert metrics.watchers("feedback") == 3
    assert samples.get("feedback_watchers", kind="feedback") == 3
    assert samples.get("feedback_watchers", kind="events") == 1
    assert samples.get("feedback_watchers", kind="interactions") == 0
    assert samples.get("feedback_webhook_deliveries_total", outcome="delivered") == 2
    assert samples.get("feedback_webhook_deliveries_total", outcome="timed_out") == 1
    assert samples.get("feedback_webhook_deliveries_total", outcome="dropped") == 0


def test_the_endpoint_stops_with_the_server(tmp_path: Path) -> None:
    running = ServerThread(_settings(tmp_path, metrics_address="127.0.0.1:0")).start()
    port = running.feedback_server.metrics_port
    assert port is not None
    running.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_metrics_off_counts_nothing_and_listens_nowhere(tmp_path: Path) -> None:
    async def build() -> set[str]:
        server, _ = await create_server(_settings(tmp_path, address="127.0.0.1:0"))
        try:
            assert server.metrics_port is None
            assert server.metrics.calls is None
            assert server._boundary.calls is None
            return set(parse(server.metrics.render().decode()).types)
        finally:
            await server.stop(0)

    names = asyncio.run(build())

    assert not any(name.startswith("grpc_server") for name in names)
    assert "feedback_write_queue_depth" in names  # the hooks and sources are there all the same


def test_codes_are_counted_under_the_code_the_call_ended_with(tmp_path: Path) -> None:
    from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
    from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub

    with ServerThread(_settings(tmp_path, metrics_address="127.0.0.1:0")) as running:
        with grpc.insecure_channel(running.address) as channel:
            stub = FeedbackServiceStub(channel)
            with pytest.raises(grpc.RpcError) as missing:
                stub.SubmitFeedback(
                    pb.SubmitFeedbackRequest(conversation_id="never-recorded", score=3), timeout=5
                )
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        calls = running.feedback_server.metrics.calls
        assert calls is not None
        stats = calls.method("/feedback.v1.FeedbackService/SubmitFeedback", "unary")
        # The call is counted as it ends on the server, which may be just after the client
        # read its status.
        deadline = time.monotonic() + 5
        while not sum(stats.handled.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stats.started == 1
        assert stats.handled[grpc.StatusCode.NOT_FOUND] == 1
        assert sum(stats.handled.values()) == 1
        assert stats.sent == 0


def test_a_scrape_asking_for_gzip_gets_the_same_families_compressed(tmp_path: Path) -> None:
    with ServerThread(_settings(tmp_path, metrics_address="127.0.0.1:0")) as running:
        url = f"http://127.0.0.1:{running.feedback_server.metrics_port}/metrics"
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            encoding = answer.headers["Content-Encoding"]
            compressed = parse(gzip.decompress(answer.read()).decode())
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.headers["Content-Encoding"] is None
            plain = parse(answer.read().decode())

    assert encoding == "gzip"
    assert set(compressed.types) == set(plain.types)
    assert compressed.types["grpc_server_handled"] == "counter"
