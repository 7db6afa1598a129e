"""Event loops for the tests: fresh, closed, current, or running in a thread of their own.

The one place that starts "a loop running forever in its own thread"
(:func:`loop_in_thread`); the ``running_loop`` fixture and the launcher's loops use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

LoopPair = tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]
"""Loop A, where a test makes processes, and loop B, where it restores them."""


@contextlib.contextmanager
def new_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop, neither running nor current, closed afterwards."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        close_loop(loop)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop`` (plumpy leaves nothing when driven here) and close it."""
    if loop.is_closed():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@contextlib.contextmanager
def running_in_thread(
    loop: asyncio.AbstractEventLoop, name: str = "target-loop"
) -> Iterator[asyncio.AbstractEventLoop]:
    """Run ``loop`` forever in a thread of its own for the block; stop it and join the
    thread afterwards, leaving the loop open for its owner.

    :param name: the thread's name (some tests assert where code ran by it)
    """
    started = threading.Event()
    loop.call_soon(started.set)
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    assert started.wait(30), "the loop thread did not start"
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        assert not thread.is_alive(), "the loop thread did not stop"


@contextlib.contextmanager
def loop_in_thread(
    name: str = "target-loop", *, debug: bool = False
) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop running forever in its own thread; stopped, joined and closed after.

    :param name: the thread's name (some tests assert where code ran by it)
    :param debug: asyncio debug mode, which makes a non-thread-safe call on the loop from
        another thread raise (asyncio's ``_check_thread``) instead of losing a wake-up
    """
    loop = asyncio.new_event_loop()
    loop.set_debug(debug)
    try:
        with running_in_thread(loop, name):
            yield loop
    finally:
        close_loop(loop)


@contextlib.contextmanager
def current_loop(loop: asyncio.AbstractEventLoop | None) -> Iterator[None]:
    """Make ``loop`` this thread's current loop for the block, then unset it."""
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)


def run_on(loop: asyncio.AbstractEventLoop, coro: Awaitable[T], timeout: float = 30) -> T:
    """Run ``coro`` on ``loop``: in place if it is idle, through its thread if it is running.

    :param timeout: how long to wait for a loop running in another thread
    :return: what the coroutine returned
    """
    if loop.is_running():
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)  # type: ignore[arg-type]
    return loop.run_until_complete(coro)


def in_thread(fn: Callable[[], T], name: str = "worker", timeout: float = 30) -> T:
    """Call ``fn`` in a new thread that has no event loop; re-raise what it raised.

    :return: what ``fn`` returned
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as error:  # handed back to the caller below
            failure.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"thread {name!r} did not finish within {timeout}s"
    if failure:
        raise failure[0]
    return outcome[0]
