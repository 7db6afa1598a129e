"""Tests of loopaware_persist.storage: the conformance kit on every backend, faults, PostgreSQL."""
