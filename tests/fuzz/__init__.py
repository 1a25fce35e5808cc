"""Fuzz and property tests of the request contract against a real server on SQLite and PostgreSQL.

Hypothesis builds every FeedbackService request from the protobuf descriptors and sends it, or
bytes that are not a valid request at all, over a real channel. Every answer must be a status a
client can act on (never UNKNOWN or INTERNAL), rows must match the answer exactly (no partial
writes) and the server must stay SERVING.

Example counts: the defaults (100 to 800 per property test) keep `pytest tests/fuzz` under a
minute on both databases (about 40 s on two cores), derandomized so CI runs are reproducible.
Set FUZZ_EXAMPLES=N to run N examples per property test instead, with fresh random inputs on
every run (for `make reliability`); the time grows about linearly, roughly 10 s per 1000
examples per property test and database:

    FUZZ_EXAMPLES=2000 pytest tests/fuzz

A failure prints the @reproduce_failure blob that replays it. No example database is kept.
"""
