"""The suite's own machinery, without a server: gRPC framing, status details, the log counter,
how a death is described, and the scenario's summary and registration."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from reliability.hostile.raw_h2 import detail_kinds, grpc_frame, retry_delay_seconds
from reliability.hostile.rpc_log import RpcLog
from reliability.hostile.scenario import SUMMARY, summarize
from reliability.hostile.server import exit_description, raise_open_file_limit
from reliability.profiles import QUICK
from reliability.results import FAIL, PASS, SKIP, ScenarioResult
from reliability.suite import SCENARIOS, Suite

METHOD = "/feedback.v1.FeedbackService/ExportEvents"


def _status(*details: object) -> bytes:
    status = status_pb2.Status(code=8, message="busy")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    serialized: bytes = status.SerializeToString()
    return serialized


def test_a_grpc_frame_can_promise_more_than_it_carries() -> None:
    frame = grpc_frame(b"0123456789", declared_length=1_000_000)

    assert frame[0] == 0
    assert struct.unpack(">I", frame[1:5]) == (1_000_000,)
    assert frame[5:] == b"0123456789"
    assert grpc_frame(b"abc")[1:5] == b"\x00\x00\x00\x03"


def test_status_details_name_retry_info_and_quota_failure() -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=5 * 10**8)
    )
    quota = error_details_pb2.QuotaFailure()

    assert detail_kinds(_status(retry, quota)) == {"RetryInfo", "QuotaFailure"}
    assert retry_delay_seconds(_status(retry)) == 1.5
    assert detail_kinds(_status()) == frozenset()
    assert retry_delay_seconds(_status(quota)) is None


def _line(method: str, code: str) -> str:
    return json.dumps({"message": "rpc", "method": method, "code": code, "peer": "ipv4:x:1"})


def test_the_log_counter_counts_rpc_lines_after_a_mark_only(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text(_line(METHOD, "OK") + "\n")
    log = RpcLog(path)
    mark = log.mark()
    with path.open("a") as out:
        out.write(_line(METHOD, "CANCELLED") + "\n")
        out.write('{"message": "serving"}\n')
        out.write(_line("/other/Method", "CANCELLED") + "\n")
        out.write('{"message": "rpc", "method": "' + METHOD + '", "co')  # cut by a crash

    assert log.codes(mark, {METHOD}) == {"CANCELLED": 1}
    assert log.codes(0, {METHOD}) == {"OK": 1, "CANCELLED": 1}
    assert log.codes(mark).total() == 2
    assert log.settle(mark, {METHOD}, expected=1, timeout=3) == {"CANCELLED": 1}


def test_a_death_by_signal_is_named() -> None:
    assert exit_description(-11) == "killed by SIGSEGV (-11)"
    assert exit_description(1) == "exit 1"


def test_the_open_file_limit_is_raised_for_thousands_of_sockets() -> None:
    assert raise_open_file_limit() >= 4096


def test_the_summary_fails_on_a_death_or_a_missing_write() -> None:
    killed = ScenarioResult("hostile: killed export clients", "sqlite")
    killed.figures.update(server_deaths=1, abandoned_mid_stream=4, peak_rss_mb=120.0)
    killed.check(False, "the server died")
    flood = ScenarioResult("hostile: write flood", "sqlite", acknowledged=10, missing=0)
    flood.figures.update(server_deaths=0, codes={"OK": 10, "RESOURCE_EXHAUSTED": 3})

    summary = summarize([killed, flood])

    assert summary.scenario == SUMMARY
    assert summary.verdict == FAIL
    assert summary.figures["server_deaths"] == 1
    assert summary.figures["resource_exhausted"] == 3
    assert summary.figures["abandoned_mid_stream"] == {"killed export clients": 4}
    assert summarize([flood]).verdict == PASS


def test_the_hostile_scenario_is_registered_and_runs_on_sqlite_only(tmp_path: Path) -> None:
    results = Suite(QUICK, tmp_path, lambda _: None).run(["hostile"], ["postgresql"])

    assert "hostile" in SCENARIOS
    assert [result.verdict for result in results] == [SKIP]
