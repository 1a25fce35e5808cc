"""Request ids (AIP-155), client event ids, and one current vote per user per message.

Votes stored before this revision may hold several ratings of one user on one message. The
newest stays; the older ones move to feedback_history, chained as if each had replaced the one
before, and the rollups are rebuilt so stats count only current votes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import JSON_OBJECT, UTCDateTime

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STORED_REQUEST = sa.text("request_id IS NOT NULL")
STORED_EVENT_ID = sa.text("event_id IS NOT NULL")

_FEEDBACK_COLUMNS = (
    "id, conversation_id, message_id, user_id, interaction_id, model, rating_kind, score,"
    " thumb_up, label, text, latency_ms, tokens_used, input_hash, output_hash, metadata,"
    " create_time, request_id, request_digest, replaces_id"
)


def _request_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column("request_digest", sa.String(32), nullable=True),
    ]


def _request_index(table: str) -> None:
    op.create_index(
        f"uq_{table}_request_id",
        table,
        ["request_id"],
        unique=True,
        sqlite_where=STORED_REQUEST,
        postgresql_where=STORED_REQUEST,
    )


def upgrade() -> None:
    """Add the id columns and their indexes, the history table, and retire duplicate votes."""
    with op.batch_alter_table("interactions") as batch:
        for column in _request_columns():
            batch.add_column(column)
    with op.batch_alter_table("feedback") as batch:
        for column in _request_columns():
            batch.add_column(column)
        batch.add_column(sa.Column("replaces_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("event_id", sa.String(128), nullable=True))
        for column in _request_columns():
            batch.add_column(column)
    for table in ("interactions", "feedback", "events"):
        _request_index(table)
    op.create_index(
        "uq_events_event_id",
        "events",
        ["event_id"],
        unique=True,
        sqlite_where=STORED_EVENT_ID,
        postgresql_where=STORED_EVENT_ID,
    )
    _create_history()
    if _retire_duplicate_votes():
        # Imported here: the rebuild reads only the raw tables, which this revision has finished.
        from storage.database import rebuild_rollups_on

        rebuild_rollups_on(op.get_bind(), id_bounds=True, extremes=False)  # extremes: 0008
    op.create_index(
        "uq_feedback_message_id_user_id", "feedback", ["message_id", "user_id"], unique=True
    )
    op.drop_index("ix_feedback_message_id", table_name="feedback")


def _create_history() -> None:
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "feedback_history",
        sa.Column("history_id", row_id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("message_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("rating_kind", sa.String(8), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=True),
        sa.Column("thumb_up", sa.Boolean(), nullable=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("text", sa.String(2000), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        sa.Column("input_hash", sa.String(64), nullable=True),
        sa.Column("output_hash", sa.String(64), nullable=True),
        sa.Column("metadata", JSON_OBJECT, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        *_request_columns(),
        sa.Column("replaces_id", sa.BigInteger(), nullable=True),
        sa.Column("replace_time", UTCDateTime(), nullable=False),
        sa.Column("replaced_by_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("history_id", name="pk_feedback_history"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_feedback_history_message_id_user_id", "feedback_history", ["message_id", "user_id"]
    )
    op.create_index(
        "ix_feedback_history_request_id",
        "feedback_history",
        ["request_id"],
        sqlite_where=STORED_REQUEST,
        postgresql_where=STORED_REQUEST,
    )


def _retire_duplicate_votes() -> bool:
    """Move every vote but the newest of each (message, user) to the history; True if any."""
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT f.id, f.message_id, f.user_id, f.create_time FROM feedback AS f"
            " JOIN (SELECT message_id, user_id FROM feedback"
            " WHERE message_id IS NOT NULL AND user_id IS NOT NULL"
            " GROUP BY message_id, user_id HAVING count(*) > 1) AS d"
            " ON f.message_id = d.message_id AND f.user_id = d.user_id"
            " ORDER BY f.message_id, f.user_id, f.id"
        )
    ).all()
    if not rows:
        return False
    moves: list[tuple[int, int, object]] = []  # (replaced id, replacing id, replacing time)
    chain: list[tuple[int, int | None]] = []  # (vote id, the id it replaces)
    for earlier, later in pairwise(rows):
        if (earlier.message_id, earlier.user_id) == (later.message_id, later.user_id):
            moves.append((earlier.id, later.id, later.create_time))
            chain.append((later.id, earlier.id))
    for vote_id, replaced_id in chain:
        connection.execute(
            sa.text("UPDATE feedback SET replaces_id = :replaced WHERE id = :id"),
            {"replaced": replaced_id, "id": vote_id},
        )
    for replaced_id, replacing_id, replace_time in moves:
        connection.execute(
            sa.text(
                f"INSERT INTO feedback_history ({_FEEDBACK_COLUMNS}, replace_time, replaced_by_id)"
                f" SELECT {_FEEDBACK_COLUMNS}, :replace_time, :replacing FROM feedback"
                " WHERE id = :id"
            ),
            {"replace_time": replace_time, "replacing": replacing_id, "id": replaced_id},
        )
        connection.execute(sa.text("DELETE FROM feedback WHERE id = :id"), {"id": replaced_id})
    return True


def downgrade() -> None:
    """Drop the new columns, indexes and the history (replaced votes are not restored)."""
    op.create_index("ix_feedback_message_id", "feedback", ["message_id"])
    op.drop_index("uq_feedback_message_id_user_id", table_name="feedback")
    op.drop_table("feedback_history")
    op.drop_index("uq_events_event_id", table_name="events")
    for table in ("events", "feedback", "interactions"):
        op.drop_index(f"uq_{table}_request_id", table_name=table)
    with op.batch_alter_table("events") as batch:
        for name in ("request_digest", "request_id", "event_id"):
            batch.drop_column(name)
    with op.batch_alter_table("feedback") as batch:
        for name in ("replaces_id", "request_digest", "request_id"):
            batch.drop_column(name)
    with op.batch_alter_table("interactions") as batch:
        for name in ("request_digest", "request_id"):
            batch.drop_column(name)
