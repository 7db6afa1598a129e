"""Who owns which future, in this Python process: the processes persisters saved or loaded.

A child is known as the owner of its future once a persister has saved or loaded
it (:func:`note_process`); a parent saved later names it as the owner of the future
it awaits, and a parent loaded earlier is chained to it then (see ``_awaiting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Hashable
from typing import Any

import plumpy

from ._outcome import _chain

__all__ = ("note_process",)

_LOCK = threading.Lock()
#: future -> pid of the process whose ``future()`` it is
_OWNERS: weakref.WeakKeyDictionary[Any, Hashable] = weakref.WeakKeyDictionary()
#: pid -> the latest process object with that pid a persister saved or loaded
_LIVE: weakref.WeakValueDictionary[Hashable, plumpy.Process] = weakref.WeakValueDictionary()
#: pid -> restored futures waiting for that process to be loaded
_WANTED: dict[Hashable, weakref.WeakSet[asyncio.Future[Any]]] = {}
_PRUNE_AT = 1024


def note_process(process: plumpy.Process) -> None:
    """Record ``process`` as the owner of its future, and complete what waits for it.

    Persisters call this for every process they save or load, so that a parent
    saved later names this process as the owner of the future it awaits, and a
    parent loaded earlier is chained to it now.

    :param process: a process being saved or just loaded
    """
    future = process.future()
    pid = process.pid
    with _LOCK:
        # Saved again (every step of a process is): noted already, nothing waits for it.
        # Reading the two weak maps costs half of writing them (a new weak reference each).
        with contextlib.suppress(TypeError):
            if _LIVE.get(pid) is process and _OWNERS.get(future) is pid and pid not in _WANTED:
                return
        with contextlib.suppress(TypeError):  # an unhashable or non-weakrefable future
            _OWNERS[future] = pid
        with contextlib.suppress(TypeError):
            _LIVE[pid] = process
        waiting = _WANTED.pop(pid, None)
    for target in list(waiting or ()):
        _chain(future, target)


def _owner_of(future: Any) -> Hashable | None:
    with _LOCK:
        try:
            return _OWNERS.get(future)
        except TypeError:
            return None
