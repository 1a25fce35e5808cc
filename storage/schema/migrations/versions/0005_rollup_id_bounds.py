"""Id bounds on the "all" cells of the counter rollups, for lists with a time range.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HOUR, _DAY, _MONTH, _TOTAL = 0, 1, 2, 3
_ALL = 0

_SOURCES = (
    ("feedback_rollups", "feedback", "create_time"),
    ("interaction_rollups", "interactions", "occur_time"),
    ("event_rollups", "events", "event_time"),
)
"""(counter rollup table, raw table, the raw time column its buckets follow)."""


def upgrade() -> None:
    """Add min_id and max_id and fill them on every "all" cell from the raw rows."""
    dialect = op.get_bind().dialect.name
    for table, raw_table, time_column in _SOURCES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("min_id", sa.BigInteger(), nullable=True))
            batch.add_column(sa.Column("max_id", sa.BigInteger(), nullable=True))
        # Statements frozen here rather than shared with storage.aggregates.rebuild, so later
        # changes to the rebuild cannot change what this revision does.
        hour = _hour_sql(dialect, time_column)
        _fill(
            table,
            _HOUR,
            f"SELECT {hour} AS start, min(id) AS low, max(id) AS high FROM {raw_table} GROUP BY 1",
        )
        for level, parent in ((_DAY, _HOUR), (_MONTH, _DAY), (_TOTAL, _MONTH)):
            _fill(
                table,
                level,
                f"SELECT {_bucket_sql(dialect, level)} AS start, min(min_id) AS low,"
                f" max(max_id) AS high FROM {table}"
                f" WHERE level = {parent} AND dimension = {_ALL} AND dimension_key = ''"
                " GROUP BY 1",
            )


def _fill(table: str, level: int, bounds: str) -> None:
    """Set the bounds of the "all" cells of `level` from `bounds` (start, low, high)."""
    op.execute(
        f"UPDATE {table} SET min_id = bounds.low, max_id = bounds.high FROM ({bounds}) AS bounds"
        f" WHERE {table}.level = {level} AND {table}.dimension = {_ALL}"
        f" AND {table}.dimension_key = '' AND {table}.bucket_start = bounds.start"
    )


def _hour_sql(dialect: str, column: str) -> str:
    """Epoch seconds of the UTC hour of a raw time column."""
    if dialect == "sqlite":
        # Stored as fixed-width text "YYYY-MM-DD HH:MM:SS.ffffff" (UTC).
        return f"CAST(strftime('%s', substr({column}, 1, 13) || ':00:00') AS INTEGER)"
    return f"CAST(extract(epoch FROM date_trunc('hour', {column} AT TIME ZONE 'UTC')) AS BIGINT)"


def _bucket_sql(dialect: str, level: int) -> str:
    """Epoch seconds of the day, month or total bucket holding bucket_start."""
    if level == _DAY:
        return "bucket_start - ((bucket_start % 86400) + 86400) % 86400"
    if level == _MONTH:
        if dialect == "sqlite":
            return "CAST(strftime('%s', bucket_start, 'unixepoch', 'start of month') AS INTEGER)"
        return (
            "CAST(extract(epoch FROM date_trunc('month',"
            " to_timestamp(bucket_start) AT TIME ZONE 'UTC')) AS BIGINT)"
        )
    return "0"


def downgrade() -> None:
    """Drop the bounds."""
    for table, _, _ in reversed(_SOURCES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("max_id")
            batch.drop_column("min_id")
