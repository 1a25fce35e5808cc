"""Field rules shared by every request, collecting all violations before anything is stored."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from server.service.errors import FieldViolation, InvalidArgument

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""FilAgent's conversation id rule."""
IDENTIFIER = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
"""Message and user ids: wide enough for UUIDs, e-mail-like and namespaced ids."""
MODEL_NAME = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")
EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{0,63}")
LABEL = re.compile(r"[a-z0-9_-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

MAX_TEXT_CHARS = 2000
MAX_LATENCY_MS = 86_400_000.0
MAX_TOKENS = 2**31 - 1
MAX_METADATA_BYTES = 16 * 1024
MAX_DETAILS_BYTES = 32 * 1024
MAX_JSON_DEPTH = 10
"""Objects and lists nested in one another; the top-level object is the first."""
MAX_JSON_ENTRIES = 1000
"""Keys of every object plus items of every list, through all nesting levels."""
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CLOCK_AHEAD = timedelta(days=1)
"""How far ahead of the server clock a client time may be before it is treated as an error."""


class Violations:
    """Collects field violations so one response can name every bad field."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that `field` breaks a rule."""
        self._items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Fail the request with every recorded violation."""
        if self._items:
            raise InvalidArgument(list(self._items))

    def optional_match(
        self, field: str, value: str, pattern: re.Pattern[str], rule: str
    ) -> str | None:
        """Check a string that may be empty ("not given"); returns it, or None when empty."""
        if not value:
            return None
        if pattern.fullmatch(value) is None:
            self.add(field, f"must be {rule}")
        return value

    def required_match(self, field: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
        """Check a string that must be given."""
        if not value:
            self.add(field, "is required")
        elif pattern.fullmatch(value) is None:
            self.add(field, f"must be {rule}")
        return value

    def sha256(self, field: str, value: str | None) -> str | None:
        """Check a SHA-256 hex digest; returns it lower-cased, or None when empty."""
        if not value:
            return None
        if SHA256_HEX.fullmatch(value) is None:
            self.add(field, "must be a SHA-256 digest: exactly 64 hexadecimal digits")
        return value.lower()

    def latency(self, field: str, value: float | None) -> float | None:
        """Check a latency in milliseconds: finite and within one day."""
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_LATENCY_MS):
            self.add(field, f"must be a finite number from 0 to {MAX_LATENCY_MS:.0f}")
        return value

    def tokens(self, field: str, value: int | None) -> int | None:
        """Check a token count."""
        if value is not None and not 0 <= value <= MAX_TOKENS:
            self.add(field, f"must be from 0 to {MAX_TOKENS}")
        return value

    def text(self, field: str, value: str, max_chars: int) -> str | None:
        """Check free text; returns None when empty."""
        if len(value) > max_chars:
            self.add(field, f"must be at most {max_chars} characters, got {len(value)}")
        if "\x00" in value:
            self.add(field, "must not contain NUL characters")
        return value or None

    def json_object(
        self, field: str, value: dict[str, Any], size: int, max_bytes: int
    ) -> dict[str, Any]:
        """Check a JSON object: finite numbers, no NUL, bounded depth, entries and size as received.

        The size is the serialized protobuf Struct the client sent, measured by the servicer for
        free; encoding JSON just to measure it cost more than the rest of a small event.
        """
        if not value:
            return value
        if size > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes serialized, got {size}")
            return value
        problem = _json_problem(value)
        if problem:
            self.add(field, problem)
        return value

    def time_range(
        self, start: datetime | None, end: datetime | None
    ) -> tuple[datetime | None, datetime | None]:
        """A half-open [start, end) filter; invalid Timestamps arrive as times before 1970."""
        for field, value in (("start_time", start), ("end_time", end)):
            if value is not None and value < MIN_TIME:
                self.add(field, "must be a valid time after 1970-01-01T00:00:00Z")
        if start is not None and end is not None and MIN_TIME <= end < start:
            self.add("end_time", "must not be before start_time")
        return start, end

    def client_time(self, field: str, value: datetime | None, now: datetime) -> datetime:
        """Check a client-reported time; returns `now` when not given."""
        if value is None:
            return now
        if not MIN_TIME <= value <= now + MAX_CLOCK_AHEAD:
            self.add(
                field, "must be after 1970-01-01T00:00:00Z and at most one day ahead of server time"
            )
        return value


def _json_problem(value: dict[str, Any]) -> str | None:
    """Describe the first reason a JSON object cannot be stored portably, or None."""
    return _JsonCheck().problem(value, depth=1)


class _JsonCheck:
    """One walk through a JSON value, counting keys and list items as it goes.

    Objects and lists count as levels, scalars do not: ten nested objects may hold a number.
    The walk stops at the first problem, so an object with a million keys costs one len().
    """

    def __init__(self) -> None:
        self.entries = 0

    def problem(self, value: Any, depth: int) -> str | None:
        """The first problem of `value`, found `depth` levels deep, or None."""
        if isinstance(value, dict):
            if problem := self._container(len(value), depth):
                return problem
            for key, item in value.items():
                if "\x00" in key:
                    return "must not contain NUL characters in keys"
                if problem := self.problem(item, depth + 1):
                    return problem
        elif isinstance(value, list):
            if problem := self._container(len(value), depth):
                return problem
            for item in value:
                if problem := self.problem(item, depth + 1):
                    return problem
        elif isinstance(value, float) and not math.isfinite(value):
            return "must not contain NaN or infinite numbers"
        elif isinstance(value, str) and "\x00" in value:
            return "must not contain NUL characters in strings"
        return None

    def _container(self, size: int, depth: int) -> str | None:
        if depth > MAX_JSON_DEPTH:
            return f"must be nested at most {MAX_JSON_DEPTH} levels deep"
        self.entries += size
        if self.entries > MAX_JSON_ENTRIES:
            return (
                f"must have at most {MAX_JSON_ENTRIES} keys and list items in all, "
                "counting every nested object and list"
            )
        return None
