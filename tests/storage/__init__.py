"""Tests of the storage layer against real SQLite files and a real PostgreSQL server."""
