"""Fuzz and property tests of the request contract against a real server on SQLite and PostgreSQL.

Hypothesis builds every FeedbackService request from the protobuf descriptors and sends it, or
bytes that are not a valid request at all, over a real channel. Every answer must be a status a
client can act on (never UNKNOWN or INTERNAL), rows must match the answer exactly (no partial
writes) and the server must stay SERVING.

Example counts: the defaults keep `pytest tests/fuzz` near a minute on both databases, derandomized
so CI runs are reproducible. Set FUZZ_EXAMPLES=N to run N examples per property test, with fresh
random inputs each run (what `make reliability` does), for example:

    FUZZ_EXAMPLES=2000 pytest tests/fuzz

A failure prints the @reproduce_failure blob that replays it. No example database is kept.
"""
