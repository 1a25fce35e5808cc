"""Privacy columns: how each hash was made, and what redaction replaced in each record; feedback
text unbounded on PostgreSQL, since placeholders may lengthen a text of the maximum length.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import JSON_OBJECT

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HASHED = ("interactions", "feedback", "feedback_history")
_REDACTED = (*_HASHED, "events")


def upgrade() -> None:
    """Add the columns; every hash stored so far is a plain SHA-256, and nothing was redacted.

    Plain ADD COLUMN, which SQLite does in place: a batch operation copied each table into one
    made from its reflection, which loses AUTOINCREMENT (0012 repairs databases it did that to).
    """
    for table in _HASHED:
        op.add_column(table, sa.Column("input_hash_kind", sa.String(16), nullable=True))
        op.add_column(table, sa.Column("output_hash_kind", sa.String(16), nullable=True))
        for column in ("input_hash", "output_hash"):
            op.execute(f"UPDATE {table} SET {column}_kind = 'sha256' WHERE {column} IS NOT NULL")
    for table in _REDACTED:
        op.add_column(
            table,
            sa.Column("redactions", JSON_OBJECT, nullable=False, server_default=sa.text("'{}'")),
        )
    if op.get_bind().dialect.name == "postgresql":  # SQLite never enforced the length
        for table in ("feedback", "feedback_history"):
            op.alter_column(table, "text", type_=sa.Text(), existing_type=sa.String(2000))


def downgrade() -> None:
    """Drop the columns (what they said is lost; the rows are kept). Texts that redaction made
    longer than 2000 characters are cut to that length."""
    if op.get_bind().dialect.name == "postgresql":
        for table in ("feedback", "feedback_history"):
            op.execute(f"UPDATE {table} SET text = left(text, 2000) WHERE length(text) > 2000")
            op.alter_column(table, "text", type_=sa.String(2000), existing_type=sa.Text())
    for table in _REDACTED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("redactions")
    for table in _HASHED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("output_hash_kind")
            batch.drop_column("input_hash_kind")
