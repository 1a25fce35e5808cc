"""Rollups: exact aggregates of every write, kept in its transaction, and GetStats from them."""
