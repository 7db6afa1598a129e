"""The cyclic garbage collector paused around a decode.

A decode allocates a tree of fresh containers, and none of them becomes garbage while it
runs; yet each 700 allocations the collector scans the young generation (the tree
itself), every tenth scan the middle one, and now and then the whole heap, which in a
long-running process (a daemon worker holding many processes) is large. On a 100 KB
WorkChain context with a live heap of 200,000 containers that is about a sixth of the
decode. Paused for the decode, the collector makes up with one young collection at the
next allocation after it: it scans the decoded containers once (about 40,000 for a
1 MB context, 4 to 13 ms, as the tree is no longer in the CPU's cache), and counts as
one young collection where the decode would have made sixty, so the middle and full
collections they would have triggered do not happen. Loading twenty 1 MB contexts in a
row with the collector on took 17 to 21 ms a load paused and 39 to 48 ms unpaused
(``PicklePersister``: 31 to 45 ms); a single load right after a full collection pays
the one cold scan (see ``benchmarks/README.md``).

Pauses nest and overlap across threads: the collector is switched off by the first and
back on by the last, and only if it was on before the first (a process that runs with
it off keeps it off). A thread that switches it off itself *during* a decode finds it
on again when the decode ends.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

__all__ = ("MAX_BYTES", "MIN_BYTES", "pause", "resume")

#: Payloads smaller than this are decoded with the collector as it is: they allocate too
#: little to trigger a collection, and the pause would cost more than it saves.
MIN_BYTES: Final = 16 * 1024
#: Nor larger ones: the pause is for a bounded decode.
MAX_BYTES: Final = 64 * 1024 * 1024

_lock = threading.Lock()
_active = 0
_ours = False  # whether the first pause switched the collector off


def pause() -> None:
    """Switch the collector off for a decode (call :func:`resume` after it, always)."""
    global _active, _ours
    with _lock:
        if _active == 0:
            _ours = gc.isenabled()
            if _ours:
                gc.disable()
        _active += 1


def resume() -> None:
    """End a :func:`pause`: the last one switches the collector back on, if it was on."""
    global _active
    with _lock:
        _active -= 1
        if _active == 0 and _ours:
            gc.enable()
