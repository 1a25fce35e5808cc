"""Column types that behave alike on SQLite and PostgreSQL, so records never see the difference."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

JSON_OBJECT: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
"""A JSON document; binary JSONB on PostgreSQL so it can later be indexed and queried."""


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time stored as UTC and always read back as a timezone-aware UTC datetime.

    SQLite has no time zone type and hands back naive datetimes; PostgreSQL hands back the
    session's zone. Both are normalised here so comparisons and equality never depend on the
    database behind them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Reject naive datetimes (their zone is a guess) and store the instant in UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no time zone; pass UTC")
        as_utc = value.astimezone(UTC)
        # SQLite stores the text of the datetime and compares it as text: dropping the (always
        # UTC) offset keeps one fixed-width format, so text order is time order.
        return as_utc.replace(tzinfo=None) if dialect.name == "sqlite" else as_utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to SQLite's naive values and convert PostgreSQL's to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
