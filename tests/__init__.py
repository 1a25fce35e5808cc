"""Tests of the feedback service: storage contract, servicers and end-to-end runs."""
