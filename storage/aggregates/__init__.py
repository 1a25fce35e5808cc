"""Rollups: exact aggregates of every write, kept in its transaction, and GetStats from them.

`kinds` declares each record kind once; everything else is written over those declarations.
"""
