"""The loop a restore lands on, and running code where that loop is current.

:class:`LoopContext` names the target loop once; every future that a load
creates, ours or plumpy's, must end up on it. plumpy creates some futures
without a loop (``Process._future`` on load, ``Waiting._waiting_future``,
``on_paused``), so they take whatever loop is *current* in the thread doing the
load. Instead of patching plumpy, :meth:`LoopContext.run` runs the load where
the target loop is current:

* on the calling thread, when the target loop is the one running there;
* on the loop's own thread (``call_soon_threadsafe``), when it runs elsewhere;
* on a short-lived binder thread whose current loop is set to the target,
  when the target is not running at all — the caller's thread is never touched.

It never creates or sets a loop in the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs
import plumpy

from ._arguments import check_optional_loop, describe
from ._errors import ArgumentTypeError, NoEventLoopError

__all__ = ("LoopContext",)

R = TypeVar("R")

# Which loop our binder made current in this thread, so that a nested run()
# inside a binder call runs inline instead of queueing behind itself.
_bound = threading.local()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_open(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed():
        msg = (
            f"The target event loop {loop!r} is closed: nothing can be restored onto it. "
            "Pass an open loop: LoopContext(loop=...)."
        )
        raise NoEventLoopError(msg)


@contextlib.contextmanager
def _current(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Make ``loop`` the current loop of this (binder) thread for the block."""
    asyncio.set_event_loop(loop)
    _bound.loop = loop
    try:
        yield
    finally:
        _bound.loop = None
        asyncio.set_event_loop(None)


def _on_binder_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., R], *args: Any) -> R:
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            with _current(loop):
                outcome.append(fn(*args))
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name="loopaware-bind", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]  # type: ignore[no-any-return]


def _on_loop_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., R], *args: Any) -> R:
    result: concurrent.futures.Future[R] = concurrent.futures.Future()
    claim = threading.Lock()

    def call() -> None:
        if not claim.acquire(blocking=False):
            return  # the caller gave up waiting for the loop and ran it elsewhere
        if result.set_running_or_notify_cancel():
            try:
                result.set_result(fn(*args))
            except BaseException as error:
                result.set_exception(error)

    loop.call_soon_threadsafe(call)
    while True:
        try:
            return result.result(timeout=0.05)
        except concurrent.futures.TimeoutError:
            # The loop may have stopped after is_running() said yes; then our
            # callback waits in its queue forever. Take the work back (once).
            if not loop.is_running() and claim.acquire(blocking=False):
                _check_open(loop)
                return _on_binder_thread(loop, fn, *args)


def _check_callable(fn: object, call: str) -> None:
    if not callable(fn):
        msg = f"{call} takes a callable as fn, got {describe(fn)}. Pass the function to run."
        raise ArgumentTypeError(msg, argument="fn")


@attrs.frozen(init=False)
class LoopContext:
    """The event loop that a restore binds every future to.

    :param loop: the target loop; ``None`` means the loop running in the calling
        thread (and no running loop is a :class:`NoEventLoopError`). A loop is
        never created or set silently.
    :raises NoEventLoopError: if no loop is given and none is running, or the loop is closed
    :raises ArgumentTypeError: if ``loop`` is neither an event loop nor ``None``
    """

    loop: asyncio.AbstractEventLoop

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        check_optional_loop(loop, call="LoopContext()")
        target = loop if loop is not None else self._running_or_raise()
        _check_open(target)
        self.__attrs_init__(target)

    @staticmethod
    def _running_or_raise() -> asyncio.AbstractEventLoop:
        running = _running_loop()
        if running is None:
            thread = threading.current_thread().name
            msg = (
                f"No event loop to restore onto: none was given and none is running in thread "
                f"{thread!r} (tried: the explicit loop= argument, asyncio.get_running_loop()). "
                "loopaware_persist never creates or sets a loop for you; pass the loop that "
                "should own the restored futures: LoopContext(loop=my_loop)."
            )
            raise NoEventLoopError(msg)
        return running

    @classmethod
    def current(cls) -> LoopContext:
        """:return: a context for the loop running in the calling thread
        :raises NoEventLoopError: if no loop is running in this thread
        """
        return cls(cls._running_or_raise())

    def load_context(self, **extra: Any) -> plumpy.LoadSaveContext:
        """Build a plumpy ``LoadSaveContext`` that carries this loop.

        :param extra: further entries for the context (``communicator``, ``logger``, ``loader``...)
        :return: a ``LoadSaveContext`` with ``loop`` set to this context's loop
        """
        given = extra.setdefault("loop", self.loop)
        if given is not self.loop:
            msg = (
                f"load_context(loop={given!r}) contradicts this LoopContext's loop {self.loop!r}; "
                "build a LoopContext for the loop you want instead."
            )
            raise ValueError(msg)
        return plumpy.LoadSaveContext(**extra)

    def is_current_thread(self) -> bool:
        """:return: whether the target loop may be touched directly from this thread"""
        return _running_loop() is self.loop or getattr(_bound, "loop", None) is self.loop

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Call ``fn(*args)`` where the target loop is the current loop, and return its result.

        Blocks until done. From a coroutine on another loop this blocks that loop for
        the duration of the call; use :meth:`arun` there to keep it responsive.

        :param fn: what to call; any loop-less future it creates lands on the target loop
        :param args: positional arguments for ``fn``
        :raises NoEventLoopError: if the target loop is closed
        :raises ArgumentTypeError: if ``fn`` is not callable
        :return: what ``fn`` returned
        """
        _check_callable(fn, "LoopContext.run()")
        loop = self.loop
        _check_open(loop)
        if self.is_current_thread():
            return fn(*args)
        if loop.is_running():
            return _on_loop_thread(loop, fn, *args)
        return _on_binder_thread(loop, fn, *args)

    async def arun(self, fn: Callable[..., R], *args: Any) -> R:
        """Like :meth:`run`, awaited from a coroutine on any loop without blocking it.

        :param fn: what to call
        :param args: positional arguments for ``fn``
        :raises NoEventLoopError: if the target loop is closed
        :raises ArgumentTypeError: if ``fn`` is not callable
        :return: what ``fn`` returned
        """
        _check_callable(fn, "LoopContext.arun()")
        if self.is_current_thread():
            _check_open(self.loop)
            return fn(*args)
        return await asyncio.to_thread(self.run, fn, *args)
