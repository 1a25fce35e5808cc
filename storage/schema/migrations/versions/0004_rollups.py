"""Rollups for GetStats: exact per-bucket aggregates kept by every write, backfilled here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "feedback_rollups",
    "feedback_label_rollups",
    "feedback_histogram_rollups",
    "interaction_rollups",
    "interaction_histogram_rollups",
    "event_rollups",
    "event_type_rollups",
    "rollup_key_spans",
)


def _cell() -> list[sa.Column[object]]:
    return [
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("dimension", sa.SmallInteger(), nullable=False),
        sa.Column("dimension_key", sa.String(128), nullable=False),
    ]


def _counter(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def _key(table: str, *extra: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(
        "level", "bucket_start", "dimension", "dimension_key", *extra, name=f"pk_{table}"
    )


def upgrade() -> None:
    """Create the rollup tables and fill them from the rows already stored."""
    op.create_table(
        "feedback_rollups",
        *_cell(),
        _counter("stamp"),
        _counter("total_count"),
        *(_counter(f"score{value}_count") for value in range(1, 6)),
        _counter("thumbs_up_count"),
        _counter("thumbs_down_count"),
        _counter("with_text_count"),
        _counter("latency_count"),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        _counter("tokens_count"),
        _counter("tokens_sum"),
        _key("feedback_rollups"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "feedback_label_rollups",
        *_cell(),
        sa.Column("label", sa.String(64), nullable=False),
        _counter("record_count"),
        _key("feedback_label_rollups", "label"),
        sqlite_with_rowid=False,
    )
    for table in ("feedback_histogram_rollups", "interaction_histogram_rollups"):
        op.create_table(
            table,
            *_cell(),
            sa.Column("metric", sa.SmallInteger(), nullable=False),
            sa.Column("bin", sa.Integer(), nullable=False),
            _counter("record_count"),
            _key(table, "metric", "bin"),
            sqlite_with_rowid=False,
        )
    op.create_table(
        "interaction_rollups",
        *_cell(),
        _counter("stamp"),
        _counter("total_count"),
        _counter("latency_count"),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        _counter("tokens_count"),
        _counter("tokens_sum"),
        _key("interaction_rollups"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "event_rollups",
        *_cell(),
        _counter("stamp"),
        _counter("total_count"),
        _key("event_rollups"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "event_type_rollups",
        *_cell(),
        sa.Column("event_type", sa.String(64), nullable=False),
        _counter("record_count"),
        _key("event_type_rollups", "event_type"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollup_key_spans",
        sa.Column("dimension", sa.SmallInteger(), nullable=False),
        sa.Column("dimension_key", sa.String(128), nullable=False),
        sa.Column("first_day", sa.BigInteger(), nullable=False),
        sa.Column("last_day", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dimension", "dimension_key", name="pk_rollup_key_spans"),
        sqlite_with_rowid=False,
    )
    _backfill()


def _backfill() -> None:
    """Aggregate the existing rows with the rebuild the service ships.

    The rebuild targets the rollup tables as the code defines them, less the id bounds that
    revision 0005 adds and the extremes of 0008; a later revision that changes these tables
    otherwise must freeze a copy of the statements it needs here.
    """
    from storage.database import rebuild_rollups_on

    rebuild_rollups_on(op.get_bind(), id_bounds=False, extremes=False)


def downgrade() -> None:
    """Drop the rollup tables."""
    for table in reversed(_TABLES):
        op.drop_table(table)
