"""The per-call access line: the same JSON the logging path writes, queued and never lost."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

from server import logs
from server.logs import ACCESS_LOGGER, AccessLog, JsonFormatter, JsonLinesHandler

METHOD = "/feedback.v1.FeedbackService/SubmitFeedback"
PEER = "ipv4:127.0.0.1:1"


@contextmanager
def json_root(level: int = logging.INFO) -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer, as configure_logging sets it up.

    Entered in a test's body, so that pytest's own capture handler, which it adds to the root
    for the call phase, is set aside too (a second handler sends lines through logging).
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    root.handlers[:] = [JsonLinesHandler(buffer)]
    root.setLevel(level)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


async def _write(access: AccessLog, code: str, duration_ms: float, peer: str) -> None:
    """One line written on a running loop, where lines wait for a timer."""
    access.write(METHOD, code, duration_ms, peer)


def _formatted(**fields: object) -> dict[str, object]:
    record = logging.getLogger(ACCESS_LOGGER).makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, "rpc", (), None, extra=fields
    )
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_the_direct_line_is_what_the_json_formatter_writes() -> None:
    peer = 'ipv6:[::1]:5 "quoted" é'
    with json_root() as stream:
        asyncio.run(_write(AccessLog(), "NOT_FOUND", 12.345, peer))
        assert stream.getvalue() == ""  # queued, not written through logging
        logging.getLogger().handlers[0].flush()

    (line,) = _lines(stream.getvalue())
    expected = _formatted(method=METHOD, code="NOT_FOUND", duration_ms=12.345, peer=peer)
    assert list(line) == list(expected)
    assert {key: value for key, value in line.items() if key != "time"} == {
        key: value for key, value in expected.items() if key != "time"
    }
    written = datetime.fromisoformat(str(line["time"]))
    assert abs(written - datetime.fromisoformat(str(expected["time"]))) < timedelta(seconds=5)
    assert str(line["time"]) == written.isoformat(timespec="milliseconds")


def test_queued_lines_go_out_before_any_later_record() -> None:
    async def write_and_log() -> None:
        access = AccessLog()
        access.write(METHOD, "OK", 1.0, PEER)
        access.write(METHOD, "CANCELLED", 2.0, PEER)
        logging.getLogger("server").warning("stopped")

    with json_root() as stream:
        asyncio.run(write_and_log())

    lines = _lines(stream.getvalue())
    assert [line["message"] for line in lines] == ["rpc", "rpc", "stopped"]
    assert [line.get("code") for line in lines] == ["OK", "CANCELLED", None]


def test_lines_wait_at_most_the_flush_interval_on_a_running_loop() -> None:
    async def write_then_wait(stream: io.StringIO) -> tuple[str, str]:
        AccessLog().write(METHOD, "OK", 1.0, PEER)
        queued = stream.getvalue()
        await asyncio.sleep(logs.FLUSH_SECONDS * 4)
        return queued, stream.getvalue()

    with json_root() as stream:
        queued, later = asyncio.run(write_then_wait(stream))

    assert queued == ""
    assert [line["code"] for line in _lines(later)] == ["OK"]


def test_a_full_buffer_is_written_at_once() -> None:
    async def fill(stream: io.StringIO) -> int:
        access = AccessLog()
        for _ in range(logs.FLUSH_LINES):
            access.write(METHOD, "OK", 1.0, PEER)
        return len(stream.getvalue().splitlines())

    with json_root() as stream:
        assert asyncio.run(fill(stream)) == logs.FLUSH_LINES


def test_logging_shutdown_writes_what_is_queued() -> None:
    with json_root() as stream:
        asyncio.run(_write(AccessLog(), "OK", 1.0, PEER))  # the loop ends before its timer
        assert stream.getvalue() == ""
        logging.shutdown()  # what the interpreter runs at exit

    assert [line["code"] for line in _lines(stream.getvalue())] == ["OK"]


def test_other_handlers_get_an_ordinary_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        AccessLog().write(METHOD, "OK", 3.5, PEER)

    (record,) = caplog.records
    assert record.getMessage() == "rpc"
    fields = vars(record)
    assert (fields["method"], fields["code"], fields["duration_ms"], fields["peer"]) == (
        METHOD,
        "OK",
        3.5,
        PEER,
    )


def test_lines_are_written_at_once_off_any_loop() -> None:
    with json_root() as stream:
        AccessLog().write(METHOD, "OK", 1.0, PEER)
        assert [line["code"] for line in _lines(stream.getvalue())] == ["OK"]


def test_nothing_is_written_above_info() -> None:
    access = AccessLog()
    with json_root(logging.WARNING) as stream:
        asyncio.run(_write(access, "OK", 1.0, PEER))
        logging.getLogger().handlers[0].flush()

    assert not access.enabled()
    assert stream.getvalue() == ""
