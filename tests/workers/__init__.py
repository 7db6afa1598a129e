"""Tests of the kiwipy half: the launcher and bridge, task bodies, messages, fencing."""
