"""Completing one future like another: the guarded outcome copy and the cross-loop chain.

``asyncio`` futures are not thread-safe, and a ``concurrent.futures`` future may be
resolved from any thread: every copy here happens on the target's own loop and
gives way to whoever completed the target first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Any

__all__ = ("copy_outcome",)

# What a Waiting state's member may be keyed by for the stand-in to take its place.
_FUTURES = (asyncio.Future, concurrent.futures.Future)


def copy_outcome(source: Any, target: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
    """Copy a finished future's outcome into ``target``, an asyncio or concurrent
    future (unless it is done already: a cancel may have got there first)."""
    if target.done():
        return
    # A concurrent future can also be cancelled or resolved from another thread between
    # the check above and the set below; then whoever did so wins and nobody waits here.
    with contextlib.suppress(asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
        if source.cancelled():
            target.cancel()
        elif (error := source.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(source.result())


def _chain(source: Any, target: asyncio.Future[Any]) -> None:
    """Complete ``target`` (an asyncio future) like ``source`` once ``source`` is done.

    ``source`` may be an ``asyncio`` future of any loop or a ``concurrent.futures``
    future; ``target`` is only ever touched on its own loop's thread.
    """
    loop = target.get_loop()

    def done(finished: Any) -> None:
        if isinstance(finished, asyncio.Future) and finished.get_loop() is loop:
            copy_outcome(finished, target)  # already on the target loop's thread
            return
        with contextlib.suppress(RuntimeError):  # the target loop closed: nobody waits
            loop.call_soon_threadsafe(copy_outcome, finished, target)

    if isinstance(source, asyncio.Future):
        source_loop = source.get_loop()
        if source_loop.is_running() and _running_loop() is not source_loop:
            # asyncio futures are not thread-safe: a child running on another thread's
            # loop gets the callback added on that thread.
            with contextlib.suppress(RuntimeError):
                source_loop.call_soon_threadsafe(source.add_done_callback, done)
            return
    source.add_done_callback(done)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
