"""The loop a restore lands on, and running code where that loop is current.

:class:`LoopContext` names the target loop once; every future that a load
creates, ours or plumpy's, must end up on it. plumpy creates some futures
without a loop (``Process._future`` on load, ``Waiting._waiting_future``,
``on_paused``): they take ``asyncio.get_running_loop()``, else the current
loop, of the thread doing the load (plumpy's ``get_or_create_event_loop``).
Instead of patching plumpy, :meth:`LoopContext.run` runs the load where the
target loop is the one asyncio reports:

* inline, when the target loop is the one running in the calling thread;
* on the loop's own thread (``call_soon_threadsafe``, in a copy of the
  caller's context variables), when it runs in another thread;
* otherwise on the **calling thread**, with the target installed as the
  thread's running loop for the synchronous stretch of the call (displacing
  the loop of the coroutine that calls, if any) and the previous one put back
  afterwards, whatever happens. No helper threads: the load sees the caller's
  thread-locals, database sessions (AiiDA's SQLAlchemy session is per thread)
  and context variables.

It never creates a loop, and never sets one: the event-loop policy's
"current loop" is not touched at all (the comment on ``_set_running_loop`` says why).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import plumpy

from ._arguments import check_optional_loop, describe
from ._errors import ArgumentTypeError, NoEventLoopError

__all__ = ("LoopContext",)

R = TypeVar("R")

# asyncio's per-thread running-loop slot. These two are exported by asyncio (in
# asyncio.events.__all__, re-exported as asyncio._get_running_loop/_set_running_loop)
# for event-loop implementations (uvloop, nest_asyncio use them), have kept their
# meaning since Python 3.7 and exist on 3.11-3.14. We use them rather than
# asyncio.set_event_loop(), because setting the *current* loop cannot be undone
# exactly with public API: on 3.11-3.13 the policy remembers that set_event_loop was
# called in the main thread (a later asyncio.get_event_loop() there then raises
# instead of creating a loop), reading the current loop back may create one, and the
# policy accessors are deprecated in 3.14. Every asyncio and plumpy lookup of "the
# loop" (get_running_loop, get_event_loop, Future() without a loop, plumpy's
# get_or_create_event_loop) asks the running-loop slot first, so installing the
# target there makes it current for exactly the synchronous stretch we need.
_get_running_loop = asyncio._get_running_loop
_set_running_loop = asyncio._set_running_loop

# The loops this thread displaced with _as_running() and has not put back yet. A
# loop in it is running on *this* thread, further up the stack, so it cannot be
# reached with call_soon_threadsafe (we would wait for ourselves): it is installed
# again instead.
_displaced = threading.local()


def _check_open(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed():
        msg = (
            f"The target event loop {loop!r} is closed: nothing can be restored onto it. "
            "Pass an open loop: LoopContext(loop=...)."
        )
        raise NoEventLoopError(msg)


def _as_running(loop: asyncio.AbstractEventLoop, fn: Callable[..., R], *args: Any) -> R:
    """Call ``fn(*args)`` on this thread with ``loop`` installed as its running loop.

    What was installed before (a coroutine's loop, or none) is put back exactly,
    even if ``fn`` raises. ``fn`` is synchronous, so no task of the displaced loop
    can run meanwhile.
    """
    previous = _get_running_loop()
    stack: list[asyncio.AbstractEventLoop | None] | None = getattr(_displaced, "stack", None)
    if stack is None:
        stack = _displaced.stack = []
    stack.append(previous)
    _set_running_loop(loop)
    try:
        return fn(*args)
    finally:
        _set_running_loop(previous)
        stack.pop()


def _runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    """:return: whether ``loop`` runs on this thread, displaced by :func:`_as_running`"""
    return loop in getattr(_displaced, "stack", ())


class _Hop:
    """``fn(*args)`` queued on the thread of a loop that runs elsewhere.

    If that loop stops before it gets to the call, the caller takes the work back
    (once: a lock decides who runs it) and runs it on its own thread.
    """

    __slots__ = ("args", "claim", "fn", "loop", "result")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: Any) -> None:
        self.loop, self.fn, self.args = loop, fn, args
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.claim = threading.Lock()
        # The caller's context variables go along (a copy, as asyncio does for callbacks).
        loop.call_soon_threadsafe(self._call, context=contextvars.copy_context())

    def _call(self) -> None:
        if not self.claim.acquire(blocking=False):
            return  # the caller gave up waiting for the loop and ran it itself
        if self.result.set_running_or_notify_cancel():
            try:
                self.result.set_result(self.fn(*self.args))
            except BaseException as error:
                self.result.set_exception(error)

    def take_back(self) -> bool:
        """:return: whether the loop stopped with the call still queued (now ours to run)"""
        # The loop may have stopped after is_running() said yes; then the call waits
        # in its queue forever.
        return not self.loop.is_running() and self.claim.acquire(blocking=False)

    def run_here(self) -> Any:
        _check_open(self.loop)
        return _as_running(self.loop, self.fn, *self.args)

    def wait(self) -> Any:
        while True:
            try:
                return self.result.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if self.take_back():
                    return self.run_here()

    async def await_(self) -> Any:
        waiting = asyncio.wrap_future(self.result)
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), 0.05)
            except TimeoutError:
                if self.take_back():
                    return self.run_here()


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
        running = _get_running_loop()
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
        return _get_running_loop() is self.loop

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Call ``fn(*args)`` where the target loop is the running loop, and return its result.

        On the loop's own thread if it runs in another one, else on the calling thread
        (with the target installed as its running loop for the call, then the previous
        one put back). Blocks until done: from a coroutine on another loop it blocks
        that loop for the call; use :meth:`arun` there when the target runs elsewhere.
        As in any code a coroutine calls, ``fn`` must not start an event loop itself
        (``asyncio.run``, ``loop.run_until_complete``): a loop is running while it runs.

        :param fn: what to call; any loop-less future it creates lands on the target loop
        :param args: positional arguments for ``fn``
        :raises NoEventLoopError: if the target loop is closed
        :raises ArgumentTypeError: if ``fn`` is not callable
        :return: what ``fn`` returned
        """
        _check_callable(fn, "LoopContext.run()")
        loop = self.loop
        _check_open(loop)
        if _get_running_loop() is loop:
            return fn(*args)
        if loop.is_running() and not _runs_here(loop):
            return _Hop(loop, fn, args).wait()  # type: ignore[no-any-return]
        return _as_running(loop, fn, *args)

    async def arun(self, fn: Callable[..., R], *args: Any) -> R:
        """Like :meth:`run`, from a coroutine on any loop.

        When the target loop runs in another thread, the calling loop keeps running
        while ``fn`` runs there; otherwise ``fn`` runs inline on the calling thread
        (as :meth:`run` does: no helper thread, so it sees this thread's state).

        :param fn: what to call
        :param args: positional arguments for ``fn``
        :raises NoEventLoopError: if the target loop is closed
        :raises ArgumentTypeError: if ``fn`` is not callable
        :return: what ``fn`` returned
        """
        _check_callable(fn, "LoopContext.arun()")
        loop = self.loop
        _check_open(loop)
        if _get_running_loop() is loop:
            return fn(*args)
        if loop.is_running() and not _runs_here(loop):
            return await _Hop(loop, fn, args).await_()  # type: ignore[no-any-return]
        return _as_running(loop, fn, *args)
