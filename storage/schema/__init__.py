"""The database schema: typed models, and the Alembic migrations that must produce exactly them."""
