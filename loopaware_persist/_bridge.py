"""Run kiwipy subscribers on *their* event loop, from any thread.

kiwipy calls subscribers on whatever thread receives a message: the
communication thread of ``RmqThreadCommunicator``, or the sender's own thread
with the embedded ``LocalCommunicator``. A plumpy process, however, belongs to
one event loop, which runs in some worker thread. :class:`LoopBridge` closes
that gap: it wraps a kiwipy communicator so that every task, RPC and broadcast
subscriber handed to it runs on its loop, awaited if it returns an awaitable,
with the outcome handed back to kiwipy as a :class:`concurrent.futures.Future`
resolved on the loop thread. (:class:`~loopaware_persist.LoopAwareLauncher`, in
``_launcher.py``, runs plumpy's process tasks on a loop the same way.)

Why not plumpy's own (measured on plumpy 0.26.1, kiwipy 0.9.0):

* ``wrap_communicator`` (``convert_to_comm``/``plum_to_kiwi_future``) creates an
  ``asyncio`` future of the worker loop and attaches its done-callback from
  kiwipy's thread. ``asyncio.Future`` is not thread-safe: if the task finishes
  between the future's state check and the append, the callback is never
  called, and if it finished before, the callback is queued with a plain
  ``call_soon`` that does not wake the loop. Either way the reply is lost
  (40 of 40 replies to fast tasks over RabbitMQ). kiwipy fixed the same class
  of bug in its own ``_wrap_future`` (aiidateam/kiwipy#70, PR #71); here only
  ``concurrent.futures.Future`` objects, which are thread-safe, cross threads.
* ``convert_to_comm`` evaluates ``kwargs.get('sender', args[1])`` for a
  ``BroadcastFilter``; ``LocalCommunicator.fire_broadcast`` passes keywords
  only, so the eager ``args[1]`` raises ``IndexError`` on every broadcast,
  e.g. the state-change broadcast of a continued process.
* ``plumpy.utils.ensure_coroutine`` wraps a plain callable in a coroutine that
  returns its result without awaiting it, so a sync callable (or
  ``functools.partial``) that returns a coroutine hands kiwipy an un-awaited
  coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Literal

import kiwipy
from plumpy.communications import LoopCommunicator

from ._arguments import check_loop
from ._errors import ArgumentTypeError, NoEventLoopError
from ._outcome import copy_outcome

__all__ = ("LoopBridge",)

_LOGGER = logging.getLogger(__name__)

SubscriberKind = Literal["task", "rpc", "broadcast"]

#: A task subscriber whose class sets this to ``True`` already runs its work on its
#: own loop and raises ``TaskRejected`` synchronously (a LoopAwareLauncher): the bridge
#: registers it without the extra hop. An attribute, not an isinstance check, so the
#: bridge does not import the launcher that is built on it.
DIRECT_TASK_SUBSCRIBER = "_loopaware_direct_task_subscriber"


async def _settle(value: Any) -> Any:
    """Await ``value`` until it is a plain result.

    Handles coroutines, ``asyncio`` futures and tasks, any other awaitable, and
    ``concurrent.futures.Future`` (what plumpy's ``Process.message_receive``
    returns for play/pause/kill), each possibly resolving to another one: kiwipy
    unwraps such chains too, so the reply is the final value.
    """
    while True:
        if isinstance(value, concurrent.futures.Future):
            value = await asyncio.wrap_future(value)
        elif inspect.isawaitable(value):
            value = await value
        else:
            return value


class _LoopRunner:
    """Runs callables as tasks on one loop; outcomes come back in ``concurrent`` futures.

    The callable itself is called on the loop thread, inside a task, so a coroutine
    is only ever created where it will be awaited (never left un-awaited on a
    closed loop) and sync code sees the loop as running and current. The future is
    resolved on the loop thread, so its done-callbacks (kiwipy's included) run
    there, not in the thread that added them (python/cpython#122676).

    :param loop: the loop everything runs on
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # asyncio keeps only weak references to tasks; these are the strong ones.
        # Touched on the loop thread only.
        self._tasks: set[asyncio.Task[Any]] = set()

    def submit(self, fn: Callable[[], object], *, name: str) -> concurrent.futures.Future[Any]:
        """Call ``fn()`` on the loop, await what it returns, and report the outcome.

        Safe from any thread, including the loop's own (the call is queued, never
        run inline, so a caller on the loop thread never re-enters itself).

        :param fn: what to call; its result is awaited while it is awaitable
        :param name: the task's name, for debugging
        :return: a future resolved on the loop thread with the outcome; cancelling it
            cancels the task. If the loop is closed it holds a :class:`NoEventLoopError`;
            if the loop is merely stopped, the call waits in its queue until it runs again
            (stop the communicator before the loop for good, as with any
            ``asyncio.run_coroutine_threadsafe``).
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop = self.loop

        async def drive() -> Any:
            return await _settle(fn())

        def start() -> None:
            if future.cancelled():
                return  # cancelled before it started: do not call fn at all
            task = loop.create_task(drive(), name=name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(copy_outcome, target=future))
            future.add_done_callback(functools.partial(_cancel_from_future, loop, task))

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as error:  # the loop is closed
            msg = (
                f"Cannot run {name!r}: its event loop {loop!r} is closed. Keep the worker's "
                "loop open while its communicator can still deliver messages."
            )
            closed = NoEventLoopError(msg)
            closed.__cause__ = error
            future.set_exception(closed)
        return future

    def spawn(self, coro_fn: Callable[[], Any], *, name: str) -> None:
        """Run a coroutine function detached on the loop (call on the loop thread).

        A strong reference is held until it ends, and a failure is logged: nobody
        awaits it.

        :param coro_fn: the coroutine function to run
        :param name: the task's name, also used in the log
        """
        task = self.loop.create_task(coro_fn(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


def _cancel_from_future(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], future: concurrent.futures.Future[Any]
) -> None:
    if not future.cancelled() or task.done():
        return
    with contextlib.suppress(RuntimeError):  # a closed loop runs the task no more anyway
        loop.call_soon_threadsafe(task.cancel)


def _log_failure(task: asyncio.Task[Any] | concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else "broadcast subscriber"
        _LOGGER.error("%s failed; nobody receives its outcome", name, exc_info=error)


def _broadcast_args(
    body: Any = None, sender: Any = None, subject: Any = None, correlation_id: Any = None
) -> tuple[Any, Any, Any, Any]:
    """Normalise kiwipy's two calling conventions for broadcast subscribers.

    ``LocalCommunicator.fire_broadcast`` passes ``body``, ``sender``... as keywords;
    the RabbitMQ communicator passes them positionally. plumpy's ``convert_to_comm``
    assumes positional and fails with ``IndexError`` on the keyword form.
    """
    return body, sender, subject, correlation_id


def _describe(callback: Callable[..., Any]) -> str:
    name = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None)
    return str(name) if name else repr(callback)


class _OnLoop:
    """A subscriber as registered with the wrapped communicator: schedules the callback.

    :param bridge: the bridge (handed to the callback as its communicator)
    :param callback: the user's subscriber
    :param kind: which kind of subscriber, for the argument convention
    """

    def __init__(self, bridge: LoopBridge, callback: Callable[..., Any], kind: SubscriberKind):
        self._bridge = bridge
        self._callback = callback
        self._kind = kind
        # kiwipy's RabbitMQ communicator functools.wraps subscribers and logs their name.
        self.__name__ = self.__qualname__ = f"on_loop({_describe(callback)})"
        self.__wrapped__ = callback

    def __call__(self, _communicator: Any, *args: Any, **kwargs: Any) -> Any:
        callback = self._callback
        bridge = self._bridge
        if self._kind == "broadcast":
            body, sender, subject, correlation_id = _broadcast_args(*args, **kwargs)
            if isinstance(callback, kiwipy.BroadcastFilter) and callback.is_filtered(
                sender, subject
            ):
                # Filtered out (plumpy processes ignore state_changed.* this way):
                # not worth a trip to the loop.
                done: concurrent.futures.Future[Any] = concurrent.futures.Future()
                done.set_result(None)
                return done
            future = bridge._runner.submit(
                functools.partial(callback, bridge, body, sender, subject, correlation_id),
                name=f"broadcast to {self.__name__}",
            )
            # Nobody receives a broadcast's outcome (kiwipy drops it): log failures.
            future.add_done_callback(_log_failure)
            return future
        # Task and RPC subscribers get the bridge as their communicator, so whatever
        # they subscribe or send from the loop goes through the bridge as well.
        return bridge._runner.submit(
            functools.partial(callback, bridge, *args, **kwargs),
            name=f"{self._kind} to {self.__name__}",
        )


class _Direct:
    """A thread-safe subscriber (a :class:`LoopAwareLauncher`) registered as it is.

    The launcher schedules onto its own loop and raises ``TaskRejected``
    synchronously, which ``LocalCommunicator`` only honours when raised from
    the call itself; routing it through the loop would turn the rejection into
    a failed reply. It still receives the bridge as its communicator.
    """

    def __init__(
        self, bridge: LoopBridge, launcher: Callable[[Any, Any], concurrent.futures.Future[Any]]
    ) -> None:
        self._bridge = bridge
        self._launcher = launcher
        self.__name__ = self.__qualname__ = f"direct({launcher!r})"
        self.__wrapped__ = launcher

    def __call__(self, _communicator: Any, task: Any) -> concurrent.futures.Future[Any]:
        return self._launcher(self._bridge, task)


# One lock per wrapped communicator, shared by every bridge over it: the launcher
# makes a bridge per task, and they must take turns with the senders' bridges.
_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(communicator: Any) -> threading.RLock:
    with _LOCKS_GUARD:
        try:
            return _LOCKS.setdefault(communicator, threading.RLock())
        except TypeError:  # not weak-referenceable: this bridge serialises only itself
            return threading.RLock()


class LoopBridge(kiwipy.Communicator):  # type: ignore[misc]  # kiwipy ships no type hints
    """A kiwipy communicator whose subscribers all run on one event loop.

    Every subscriber added through the bridge — a coroutine function, a function,
    a ``functools.partial`` of either, a lambda, a callable instance, or a sync
    callable returning an awaitable — is called on ``loop``'s thread inside a
    task, whatever thread kiwipy calls from; what it returns is awaited while it
    is awaitable (a ``concurrent.futures.Future`` included); and kiwipy gets a
    :class:`concurrent.futures.Future` resolved on the loop thread with the
    outcome. Only thread-safe futures cross threads, so no reply is lost.

    Task and RPC subscribers receive the bridge itself as their communicator.
    Broadcast subscribers always receive ``(communicator, body, sender, subject,
    correlation_id)`` positionally, whichever convention the wrapped communicator
    uses; a ``kiwipy.BroadcastFilter`` that filters a message out is not scheduled.
    Failures of broadcast subscribers are logged, since kiwipy discards them.

    A :class:`LoopAwareLauncher` is registered without the extra hop (it already
    runs its work on its own loop), so its synchronous ``TaskRejected`` still makes
    ``LocalCommunicator`` try the next subscriber. A ``TaskRejected`` raised by any
    other task subscriber arrives in its future: kiwipy's RabbitMQ communicator
    then tries the next subscriber; ``LocalCommunicator`` reports it to the sender.

    With ``LocalCommunicator`` a sender receives the subscriber's future as the
    *result* of the future ``task_send``/``rpc_send`` return (kiwipy's own
    convention); ``plumpy.futures.unwrap_kiwi_future`` flattens it.

    Calls made through bridges to one wrapped communicator are serialised by a
    lock they share: ``LocalCommunicator`` keeps its subscribers in plain dicts that
    one thread may be iterating while another (the loop, as a process starts or
    ends) adds or removes one. Calls made on the wrapped communicator directly
    bypass the lock. The wrapped communicator may be an ``RmqThreadCommunicator``;
    the bridge itself needs no broker.

    :param communicator: the kiwipy communicator to wrap (a bridge is unwrapped first)
    :param loop: the loop every subscriber runs on (running in some thread, or to be)
    :raises TypeError: if ``communicator`` is plumpy's ``LoopCommunicator``
    :raises NoEventLoopError: if ``loop`` is closed
    """

    def __init__(self, communicator: kiwipy.Communicator, *, loop: asyncio.AbstractEventLoop):
        if isinstance(communicator, LoopBridge):
            communicator = communicator.communicator
        if isinstance(communicator, LoopCommunicator):
            msg = (
                "LoopBridge cannot wrap plumpy's LoopCommunicator: its subscribers would "
                "still go through plumpy's convert_to_comm, which loses replies across "
                "threads. Wrap the kiwipy communicator that you passed to wrap_communicator."
            )
            raise ArgumentTypeError(msg, argument="communicator")
        check_loop(loop, call="LoopBridge()")
        if loop.is_closed():
            msg = f"LoopBridge needs an open event loop; {loop!r} is closed."
            raise NoEventLoopError(msg)
        self._communicator = communicator
        self._runner = _LoopRunner(loop)
        self._lock = _lock_for(communicator)

    def __repr__(self) -> str:
        return f"<LoopBridge {self._communicator!r} on {self._runner.loop!r}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """:return: the loop every subscriber runs on"""
        return self._runner.loop

    @property
    def communicator(self) -> kiwipy.Communicator:
        """:return: the wrapped kiwipy communicator"""
        return self._communicator

    def _wrap(self, subscriber: Callable[..., Any], kind: SubscriberKind) -> Callable[..., Any]:
        if not callable(subscriber):
            msg = f"A {kind} subscriber must be callable, got {subscriber!r}."
            raise TypeError(msg)
        if kind == "task" and getattr(type(subscriber), DIRECT_TASK_SUBSCRIBER, False) is True:
            return _Direct(self, subscriber)
        return _OnLoop(self, subscriber, kind)

    def add_task_subscriber(
        self, subscriber: Callable[..., Any], identifier: Hashable | None = None
    ) -> Hashable:
        """Add a task subscriber that runs on the loop.

        :param subscriber: called as ``subscriber(bridge, task)``
        :param identifier: optional identifier (one is generated otherwise)
        :return: the identifier, for :meth:`remove_task_subscriber`
        """
        wrapped = self._wrap(subscriber, "task")
        with self._lock:
            return self._communicator.add_task_subscriber(wrapped, identifier)  # type: ignore[no-any-return]

    def remove_task_subscriber(self, identifier: Hashable) -> None:
        """:param identifier: what :meth:`add_task_subscriber` returned"""
        with self._lock:
            self._communicator.remove_task_subscriber(identifier)

    def add_rpc_subscriber(
        self, subscriber: Callable[..., Any], identifier: Hashable | None = None
    ) -> Hashable:
        """Add an RPC subscriber that runs on the loop.

        :param subscriber: called as ``subscriber(bridge, msg)``
        :param identifier: the RPC recipient id (one is generated otherwise)
        :return: the identifier
        """
        wrapped = self._wrap(subscriber, "rpc")
        with self._lock:
            return self._communicator.add_rpc_subscriber(wrapped, identifier)  # type: ignore[no-any-return]

    def remove_rpc_subscriber(self, identifier: Hashable) -> None:
        """:param identifier: what :meth:`add_rpc_subscriber` returned"""
        with self._lock:
            self._communicator.remove_rpc_subscriber(identifier)

    def add_broadcast_subscriber(
        self, subscriber: Callable[..., Any], identifier: Hashable | None = None
    ) -> Hashable:
        """Add a broadcast subscriber that runs on the loop.

        :param subscriber: called as ``subscriber(bridge, body, sender, subject, correlation_id)``
        :param identifier: optional identifier
        :return: the identifier
        """
        wrapped = self._wrap(subscriber, "broadcast")
        with self._lock:
            return self._communicator.add_broadcast_subscriber(wrapped, identifier)  # type: ignore[no-any-return]

    def remove_broadcast_subscriber(self, identifier: Hashable) -> None:
        """:param identifier: what :meth:`add_broadcast_subscriber` returned"""
        with self._lock:
            self._communicator.remove_broadcast_subscriber(identifier)

    def task_send(self, task: Any, no_reply: bool = False) -> Any:
        """Send a task through the wrapped communicator.

        :param task: the task body
        :param no_reply: fire and forget
        :return: what the wrapped communicator returns (a future, or ``None``)
        """
        with self._lock:
            return self._communicator.task_send(task, no_reply)

    def rpc_send(self, recipient_id: Hashable, msg: Any) -> Any:
        """Send an RPC message through the wrapped communicator.

        :param recipient_id: the recipient's identifier
        :param msg: the message
        :return: a future of the reply
        """
        with self._lock:
            return self._communicator.rpc_send(recipient_id, msg)

    def broadcast_send(
        self,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Hashable | None = None,
    ) -> Any:
        """Broadcast through the wrapped communicator.

        :param body: the message body
        :param sender: the sender
        :param subject: the subject
        :param correlation_id: the correlation id
        :return: what the wrapped communicator returns
        """
        with self._lock:
            return self._communicator.broadcast_send(
                body, sender=sender, subject=subject, correlation_id=correlation_id
            )

    def is_closed(self) -> bool:
        """:return: whether the wrapped communicator is closed"""
        return bool(self._communicator.is_closed())

    def close(self) -> None:
        """Close the wrapped communicator (the loop is not the bridge's to close)."""
        with self._lock:
            self._communicator.close()
