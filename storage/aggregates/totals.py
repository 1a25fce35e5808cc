"""How many records of each kind are stored, from the rollups' total cells.

Counting the raw tables is a scan (seconds on 10M rows); every write, erasure and expiry keeps
each kind's one "all" cell at level TOTAL exact in its own transaction, so the counts of all
kinds are three primary-key lookups, the same on every replica of a database. Rows loaded past
the service count once `feedback-server rebuild-rollups` has run.
"""

from __future__ import annotations

from storage.aggregates.kinds import ALL, KINDS
from storage.calendar import TOTAL

TOTALS_SQL = " UNION ALL ".join(
    f"SELECT '{kind.name}', total_count FROM {kind.counters_table}"
    f" WHERE level = {TOTAL} AND bucket_start = 0 AND dimension = {ALL} AND dimension_key = ''"
    for kind in KINDS
)
"""One row per kind that has records: its name and how many are stored."""

KIND_NAMES = tuple(kind.name for kind in KINDS)
"""The record kinds, as row_totals() names them."""
