"""The change log the live tail reads (storage.rows.changes): its clock with a random epoch, its
entries, and each kind's horizon, which starts above every row stored before the log existed
(a watch cannot start before the log).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import UTCDateTime

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = ("feedback", "interactions", "events")


def upgrade() -> None:
    """Create the clock, the entries and the horizons."""
    clock = op.create_table(
        "change_clock",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_change_clock"),
    )
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),
        sa.Column("commit_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", "kind", name="pk_changes"),
    )
    op.create_index("ix_changes_kind_last_id", "changes", ["kind", "last_id"])
    horizons = op.create_table(
        "change_horizons",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", name="pk_change_horizons"),
    )
    assert clock is not None
    assert horizons is not None
    op.bulk_insert(clock, [{"id": 1, "seq": 0, "epoch": secrets.token_hex(8)}])
    bind = op.get_bind()
    op.bulk_insert(
        horizons,
        [
            {
                "kind": kind,
                "seq": 0,
                "last_id": bind.exec_driver_sql(
                    f"SELECT COALESCE(MAX(id), 0) FROM {kind}"
                ).scalar_one(),
            }
            for kind in _KINDS
        ],
    )


def downgrade() -> None:
    """Drop the log (watch positions issued before become unknown)."""
    op.drop_table("change_horizons")
    op.drop_index("ix_changes_kind_last_id", "changes")
    op.drop_table("changes")
    op.drop_table("change_clock")
