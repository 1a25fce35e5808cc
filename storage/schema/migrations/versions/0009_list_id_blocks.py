"""Time bounds per block of 1024 ids of each listed table, for lists with a time range.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import UTCDateTime

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BLOCK_IDS = 1024
_SOURCES = (("feedback", "create_time"), ("interactions", "occur_time"), ("events", "event_time"))
"""(raw table, the time column its lists filter on)."""


def upgrade() -> None:
    """Create list_id_blocks and fill it from the raw rows."""
    op.create_table(
        "list_id_blocks",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("min_time", UTCDateTime(), nullable=False),
        sa.Column("max_time", UTCDateTime(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "block", name="pk_list_id_blocks"),
        sqlite_with_rowid=False,
    )
    # Frozen here rather than shared with storage.rows.id_blocks, so later changes there cannot
    # change what this revision does.
    for table, column in _SOURCES:
        op.execute(
            "INSERT INTO list_id_blocks (kind, block, min_time, max_time, row_count)"
            f" SELECT '{table}', id / {_BLOCK_IDS}, min({column}), max({column}), count(*)"
            f" FROM {table} GROUP BY id / {_BLOCK_IDS}"
        )


def downgrade() -> None:
    """Drop the blocks (lists with a time range then fail)."""
    op.drop_table("list_id_blocks")
