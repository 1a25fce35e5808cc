"""The raw tables, row by row: a unit of work's inserts, lookups, lists and API keys."""
