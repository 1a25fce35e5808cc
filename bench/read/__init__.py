"""`make bench-read`: GetStats, ListFeedback and ExportFeedback on a bulk-loaded SQLite file."""
