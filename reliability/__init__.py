"""Reliability suite: real damage (kill -9, SIGTERM, a stopped PostgreSQL, retry storms) to real
server processes, then a direct look at the database for acknowledged writes that went missing."""
