"""The erasure log, and the indexes an erasure needs to find a user's or a conversation's
replaced votes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import UTCDateTime

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RUNNING = sa.text("finish_time IS NULL")


def upgrade() -> None:
    """Create erasures and the two feedback_history indexes."""
    op.create_table(
        "erasures",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("subject_hash_kind", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("finish_time", UTCDateTime(), nullable=True),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))
            for name in (
                "interactions_erased",
                "feedback_erased",
                "history_erased",
                "events_erased",
                "batches",
            )
        ),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_erasures_running_subject",
        "erasures",
        ["subject_kind", "subject_hash"],
        unique=True,
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    )
    for column in ("user_id", "conversation_id"):
        op.create_index(f"ix_feedback_history_{column}_id", "feedback_history", [column, "id"])


def downgrade() -> None:
    """Drop the log and the indexes (the erasures done stay done)."""
    for column in ("user_id", "conversation_id"):
        op.drop_index(f"ix_feedback_history_{column}_id", "feedback_history")
    op.drop_table("erasures")
