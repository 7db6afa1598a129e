"""Tests of the safety core: the type registry and allow-list, the load audit, hostile input."""
