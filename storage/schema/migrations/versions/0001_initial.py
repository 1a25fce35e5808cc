"""Create interactions, feedback (FilAgent's interaction_logs) and events.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types as of this revision: later model changes must not alter it.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_OBJECT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
EMPTY_JSON_OBJECT = sa.text("'{}'")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables with their constraints and indexes."""
    op.create_table(
        "interactions",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("input_hash", sa.String(64), nullable=True),
        sa.Column("output_hash", sa.String(64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("metadata", JSON_OBJECT, server_default=EMPTY_JSON_OBJECT, nullable=False),
        sa.Column("occur_time", _time(), nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_interactions"),
        sa.UniqueConstraint("message_id", name="uq_interactions_message_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_interactions_conversation_id_id", "interactions", ["conversation_id", "id"])
    op.create_index("ix_interactions_user_id", "interactions", ["user_id"])
    op.create_index("ix_interactions_occur_time", "interactions", ["occur_time"])

    op.create_table(
        "feedback",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("message_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("rating_kind", sa.String(8), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=True),
        sa.Column("thumb_up", sa.Boolean(), nullable=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("text", sa.String(2000), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        sa.Column("input_hash", sa.String(64), nullable=True),
        sa.Column("output_hash", sa.String(64), nullable=True),
        sa.Column("metadata", JSON_OBJECT, server_default=EMPTY_JSON_OBJECT, nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["interactions.id"],
            name="fk_feedback_interaction_id_interactions",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "rating_kind IN ('score', 'thumb', 'label')", name="ck_feedback_rating_kind"
        ),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name="ck_feedback_score_range"),
        sa.CheckConstraint(
            "(rating_kind = 'score' AND score IS NOT NULL AND thumb_up IS NULL AND label IS NULL)"
            " OR (rating_kind = 'thumb' AND score IS NULL AND thumb_up IS NOT NULL"
            " AND label IS NULL)"
            " OR (rating_kind = 'label' AND score IS NULL AND thumb_up IS NULL"
            " AND label IS NOT NULL)",
            name="ck_feedback_rating_matches_kind",
        ),
        sa.CheckConstraint(
            "conversation_id IS NOT NULL OR message_id IS NOT NULL",
            name="ck_feedback_conversation_or_message",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_feedback_conversation_id", "feedback", ["conversation_id"])
    op.create_index("ix_feedback_score", "feedback", ["score"])
    op.create_index("ix_feedback_create_time", "feedback", ["create_time"])
    op.create_index("ix_feedback_message_id", "feedback", ["message_id"])
    op.create_index("ix_feedback_user_id", "feedback", ["user_id"])
    op.create_index("ix_feedback_interaction_id", "feedback", ["interaction_id"])

    op.create_table(
        "events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("details", JSON_OBJECT, server_default=EMPTY_JSON_OBJECT, nullable=False),
        sa.Column("event_time", _time(), nullable=False),
        sa.Column("receive_time", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_event_type", "events", ["event_type"])
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_event_time", "events", ["event_time"])


def downgrade() -> None:
    """Drop everything upgrade() created (the data goes with it)."""
    op.drop_table("events")
    op.drop_table("feedback")
    op.drop_table("interactions")
