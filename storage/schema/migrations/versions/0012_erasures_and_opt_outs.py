"""The erasure log, the indexes an erasure needs to find a user's or a conversation's replaced
votes and retention their old ones, the users who opted out and the record of their choices; on
SQLite, AUTOINCREMENT back on the raw tables.

Revision 0011 as first released copied the raw tables on SQLite (Alembic's batch mode), and
the copies lost AUTOINCREMENT: SQLite then hands the id of the newest row out again once that
row is deleted (a replaced vote, an erasure), so a vote's id could name two votes. Tables
without it are copied once more, with it.

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
_RAW_TABLES = ("interactions", "feedback", "feedback_history", "events")


def _restore_autoincrement() -> None:
    bind = op.get_bind()
    for table in _RAW_TABLES:
        created = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        if "AUTOINCREMENT" not in created.upper():
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass


def upgrade() -> None:
    """Create erasures and the two feedback_history indexes; repair AUTOINCREMENT on SQLite."""
    if op.get_bind().dialect.name == "sqlite":
        _restore_autoincrement()
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
    op.create_index("ix_feedback_history_create_time", "feedback_history", ["create_time"])
    op.create_table(
        "opt_outs",
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.Column("hash_kind", sa.String(16), nullable=False),
        sa.Column("opt_out_time", UTCDateTime(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("user_hash", name="pk_opt_outs"),
    )
    op.create_table(
        "opt_out_events",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.Column("hash_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("event_time", UTCDateTime(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("erase_requested", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_opt_out_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_opt_out_events_user_hash_id", "opt_out_events", ["user_hash", "id"])


def downgrade() -> None:
    """Drop the logs, the opt-outs and the indexes (the erasures done stay done; opted-out
    users' writes are stored again)."""
    op.drop_table("opt_out_events")
    op.drop_table("opt_outs")
    op.drop_index("ix_feedback_history_create_time", "feedback_history")
    for column in ("user_id", "conversation_id"):
        op.drop_index(f"ix_feedback_history_{column}_id", "feedback_history")
    op.drop_table("erasures")
