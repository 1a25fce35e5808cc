"""Exact least and greatest latency and tokens per rollup cell, so percentiles stay within them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("feedback_rollups", "interaction_rollups")
_COLUMNS = (
    ("latency_min", sa.Float),
    ("latency_max", sa.Float),
    ("tokens_min", sa.BigInteger),
    ("tokens_max", sa.BigInteger),
)


def upgrade() -> None:
    """Add the extremes' columns and fill them (and everything else) with a rebuild."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name, column_type in _COLUMNS:
                batch.add_column(sa.Column(name, column_type(), nullable=True))
    _backfill()


def _backfill() -> None:
    """Rebuild every rollup from the raw rows with the rebuild the service ships.

    The rebuild targets the rollup tables as the code defines them, which is their shape from
    this revision on; a later revision that changes them must pass the rebuild what it lacks
    here, as revisions 0004 and 0006 do.
    """
    # Imported here: the rebuild reads only the raw tables, which no revision changes after 0007.
    from storage.database import rebuild_rollups_on

    rebuild_rollups_on(op.get_bind(), id_bounds=True)  # dropped by 0010


def downgrade() -> None:
    """Drop the extremes."""
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(_COLUMNS):
                batch.drop_column(name)
