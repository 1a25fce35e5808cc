"""Indexes that keep every list filter a keyset search: filter columns followed by id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_TEXT = sa.text("text IS NOT NULL AND text != ''")

REPLACED = (
    ("interactions", "ix_interactions_user_id", "ix_interactions_user_id_id", "user_id"),
    ("feedback", "ix_feedback_user_id", "ix_feedback_user_id_id", "user_id"),
    ("feedback", "ix_feedback_model", "ix_feedback_model_id", "model"),
    ("events", "ix_events_event_type", "ix_events_event_type_id", "event_type"),
    ("events", "ix_events_user_id", "ix_events_user_id_id", "user_id"),
)
"""(table, old single-column index, new index, column): PostgreSQL needs id in the index to
read a filtered page in id order; on SQLite the rowid was implicit, so nothing is lost."""


def upgrade() -> None:
    """Replace single-column filter indexes with (column, id) ones and add three for lists."""
    for table, old, new, column in REPLACED:
        op.create_index(new, table, [column, "id"])
        op.drop_index(old, table_name=table)
    op.create_index("ix_interactions_model_id", "interactions", ["model", "id"])
    op.create_index("ix_feedback_label_id", "feedback", ["label", "id"])
    op.create_index(
        "ix_feedback_id_with_text",
        "feedback",
        ["id"],
        sqlite_where=WITH_TEXT,
        postgresql_where=WITH_TEXT,
    )


def downgrade() -> None:
    """Restore the single-column indexes of revision 0002."""
    op.drop_index("ix_feedback_id_with_text", table_name="feedback")
    op.drop_index("ix_feedback_label_id", table_name="feedback")
    op.drop_index("ix_interactions_model_id", table_name="interactions")
    for table, old, new, column in REPLACED:
        op.create_index(old, table, [column])
        op.drop_index(new, table_name=table)
