"""API keys (only their hashes) and the audit log of their creation and revocation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from storage.schema.column_types import UTCDateTime

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create api_keys and api_key_events."""
    op.create_table(
        "api_keys",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("client_identity", sa.String(253), nullable=True),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("last_use_time", UTCDateTime(), nullable=True),
        sa.Column("revoke_time", UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "api_key_events",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("event_time", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_key_events"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop the key tables (every key stops working)."""
    op.drop_table("api_key_events")
    op.drop_table("api_keys")
