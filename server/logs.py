"""Structured logging: one JSON object per line, so log pipelines need no parsing rules.

The per-call "rpc" line is the one written thousands of times a second. Through the logging
module it cost about 140 µs of server CPU per call (a LogRecord, a dict, json.dumps, a locked
write to stderr per line), a quarter of a durable write; `AccessLog` writes the same line from
precomputed parts into the handler's buffer instead, flushed in batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
ACCESS_LOGGER = "server.rpc"
"""The logger of the per-call lines, as filters and level settings name it."""
FLUSH_SECONDS = 0.05
"""How long an access line may wait in the buffer: a log tailer sees it within this."""
FLUSH_LINES = 512
"""A buffer this full is written at once, whatever the time."""
_MAX_CACHED_PEERS = 4096


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields a log call attached to the record."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """Formats a record and its `extra` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the `extra` fields as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = super().format(record)
        return f"{line} {pairs}" if pairs else line


class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """JSON lines to a stream, with a buffer of ready-made access lines in front of it.

    Buffered lines go out before any other record and on every flush (logging flushes its
    handlers at exit), so they keep their order and none is lost when the server stops.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._pending: list[str] = []

    def add_line(self, line: str) -> None:
        """Queue one finished line (with its newline); written within FLUSH_SECONDS."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            pending = self._pending
            pending.append(line)
            if len(pending) >= FLUSH_LINES:
                self._write_pending()
            elif len(pending) == 1:  # the first since the last write: a timer will write it
                self._schedule_flush()

    def emit(self, record: logging.LogRecord) -> None:
        """Write the queued lines, then the record (the caller holds the lock)."""
        self._write_pending()
        super().emit(record)

    def flush(self) -> None:
        """Write the queued lines and flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: write at once
            self._write_pending()
            return
        loop.call_later(FLUSH_SECONDS, self.flush)

    def _write_pending(self) -> None:
        """Write what is queued (the caller holds the lock)."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:  # as logging does: a broken stream must not break the calls
            self.handleError(logging.makeLogRecord({"msg": "rpc", "name": ACCESS_LOGGER}))


class AccessLog:
    """Writes the one "rpc" line each call ends with: its method, status code, duration, peer.

    When `configure_logging` has put a JsonLinesHandler alone on the root logger, the line is
    built from precomputed parts and queued on it directly, exactly as JsonFormatter would have
    written it; under any other set-up (text format, a test's capture handler) it goes through
    the logging module as an ordinary record.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._root = logging.getLogger()
        self._methods: dict[str, str] = {}
        self._peers: dict[str, str] = {}
        self._second = -1
        self._second_text = ""

    def enabled(self) -> bool:
        """Whether lines are written at all (the logger's level lets INFO through)."""
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, method: str, code: str, duration_ms: float, peer: str) -> None:
        """Log the end of one call (when enabled)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct_handler()
        if handler is None:
            self._logger.info(
                "rpc",
                extra={"method": method, "code": code, "duration_ms": duration_ms, "peer": peer},
            )
            return
        handler.add_line(
            f'{{"time": "{self._time()}", "level": "info", "logger": "{ACCESS_LOGGER}", '
            f'"message": "rpc", "method": {self._method_json(method)}, "code": "{code}", '
            f'"duration_ms": {duration_ms!r}, "peer": {self._peer_json(peer)}}}\n'
        )

    def _direct_handler(self) -> JsonLinesHandler | None:
        """The handler to queue lines on, when nothing else would see the record."""
        handlers = self._root.handlers
        if len(handlers) != 1 or self._logger.handlers or self._logger.filters:
            return None
        handler = handlers[0]
        if type(handler) is not JsonLinesHandler or handler.filters:
            return None
        if handler.level > logging.INFO or not self._logger.propagate:
            return None
        return handler

    def _time(self) -> str:
        """Now as JsonFormatter writes a record's time: ISO 8601 UTC with milliseconds."""
        now = time.time()
        second = int(now)
        if second != self._second:
            start = datetime.fromtimestamp(second, UTC)
            self._second, self._second_text = second, start.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def _method_json(self, method: str) -> str:
        encoded = self._methods.get(method)
        if encoded is None:
            encoded = self._methods[method] = json.dumps(method, ensure_ascii=False)
        return encoded

    def _peer_json(self, peer: str) -> str:
        encoded = self._peers.get(peer)
        if encoded is None:
            if len(self._peers) >= _MAX_CACHED_PEERS:
                self._peers.clear()
            encoded = self._peers[peer] = json.dumps(peer, ensure_ascii=False)
        return encoded


def configure_logging(level: str, log_format: str) -> None:
    """Send all logs to stderr in the chosen format."""
    handler: logging.Handler
    if log_format == "json":
        handler = JsonLinesHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
