"""Drop the id bounds of rollup cells: time-bounded lists read list_id_blocks since 0009.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("feedback_rollups", "interaction_rollups", "event_rollups")


def upgrade() -> None:
    """Drop min_id and max_id: no reader uses them, and every write paid for them."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("max_id")
            batch.drop_column("min_id")


def downgrade() -> None:
    """Add the bounds back and fill them with a rebuild of the schema of revision 0009."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("min_id", sa.BigInteger(), nullable=True))
            batch.add_column(sa.Column("max_id", sa.BigInteger(), nullable=True))
    # Imported here: the rebuild reads only the raw tables' rated columns, which no later revision
    # changes (0011 adds columns it does not read).
    from storage.database import rebuild_rollups_on

    rebuild_rollups_on(op.get_bind(), id_bounds=True)
