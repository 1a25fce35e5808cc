"""Alembic environment: migrates the connection Storage.migrate() passes, or a configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from storage.schema.models import Base

TARGET_METADATA = Base.metadata


def _configure(connection: Connection) -> None:
    """Point Alembic at a live connection, comparing types so autogenerate sees column changes."""
    context.configure(
        connection=connection,
        target_metadata=TARGET_METADATA,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_online() -> None:
    """Migrate through the caller's connection (inside its transaction) or a fresh one."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection was passed and sqlalchemy.url is not set")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as fresh_connection:
        _configure(fresh_connection)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the migration as SQL text, for review or for a DBA to run."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=TARGET_METADATA,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
