"""Tests of loopaware_persist.codecs: round trips, byte layout, crafted and bounded decoding."""
