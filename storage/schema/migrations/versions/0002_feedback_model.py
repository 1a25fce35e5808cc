"""Give feedback the model of the answer it rates, so lists and stats can filter and group by it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add feedback.model, copied from each linked interaction, and index it."""
    op.add_column("feedback", sa.Column("model", sa.String(128), nullable=True))
    op.execute(
        "UPDATE feedback SET model = ("
        "SELECT interactions.model FROM interactions"
        " WHERE interactions.id = feedback.interaction_id"
        ") WHERE interaction_id IS NOT NULL"
    )
    op.create_index("ix_feedback_model", "feedback", ["model"])


def downgrade() -> None:
    """Drop feedback.model and its index."""
    op.drop_index("ix_feedback_model", table_name="feedback")
    op.drop_column("feedback", "model")
