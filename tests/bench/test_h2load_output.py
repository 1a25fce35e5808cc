"""Reading h2load's summary and per-request log, and the percentiles computed from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.h2load import H2loadError, parse_summary, read_request_log
from bench.percentiles import percentile

H2LOAD_OUTPUT = """\
finished in 2.02s, 1483.78 req/s, 217.60KB/s
requests: 3000 total, 3000 started, 3000 done, 2990 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 2990 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 439.96KB (450520) total, 13.48KB (13800) headers (space savings 94.32%), \
251.15KB (257181) data
"""


def test_summary_counts() -> None:
    summary = parse_summary(H2LOAD_OUTPUT)
    assert summary.requests == 3000
    assert summary.succeeded == 2990
    assert summary.errored == 10
    assert summary.status_2xx == 2990
    assert summary.data_bytes == 257181
    assert summary.requests_per_second == pytest.approx(1483.78)


def test_unreadable_output_is_an_error() -> None:
    with pytest.raises(H2loadError):
        parse_summary("connect: Connection refused")


def test_request_log_keeps_2xx_only(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("1000\t200\t50\n1010\t200\t70\n1020\t-1\t5\n1030\t503\t9\n")
    starts, ends, latencies = read_request_log(log)
    assert starts == [1000, 1010]
    assert ends == [1050, 1080]
    assert latencies == [50.0, 70.0]


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
