"""Futures at rest: a future's state, with nothing tied to a loop or a thread.

A :class:`FutureSnapshot` holds what a future *is* (pending, finished with a
result, failed with an exception, cancelled with an optional message) and
nothing of what it is *attached to*: no loop, no callbacks, no lock. Saving
takes a snapshot of any ``asyncio.Future`` (plumpy's ``SavableFuture`` and
``CancellableAction`` included) or ``concurrent.futures.Future`` (what kiwipy
hands back); loading turns the snapshot into a fresh ``asyncio.Future`` on the
loop the loader names (see :func:`restore_future`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ._arguments import check_instance, describe
from ._errors import ArgumentTypeError, EncodeError
from ._loop import LoopContext

__all__ = ("FutureSnapshot", "FutureStatus", "restore_future", "restore_futures", "snapshot_future")


class FutureStatus(enum.StrEnum):
    """The state a future was in when it was snapshotted.

    String-valued so that stored checkpoints do not depend on asyncio's
    private ``_PENDING``/``_FINISHED`` constants (which plumpy compares against).
    A ``StrEnum``: ``str()`` and ``format()`` give the value on every supported
    Python (a ``(str, Enum)`` mixin formats differently on 3.11 and 3.12+).
    """

    PENDING = "pending"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _to_status(value: object) -> FutureStatus:
    # A wrong type is an ArgumentTypeError (FutureStatus(3) would be a bare
    # ValueError); an unknown name stays the ValueError an invalid snapshot is.
    if isinstance(value, str):
        return FutureStatus(value)
    if isinstance(value, FutureStatus):
        return value
    names = ", ".join(repr(s.value) for s in FutureStatus)
    msg = (
        f"FutureSnapshot() takes a FutureStatus (or one of {names}) as status, got "
        f"{describe(value)}. Use FutureSnapshot.pending(), .finished(...), .failed(...) "
        "or .cancelled(...)."
    )
    raise ArgumentTypeError(msg, argument="status")


def _check_consistent(instance: FutureSnapshot, _attr: Any, _value: Any) -> None:
    status = instance.status
    if status is not FutureStatus.FINISHED and instance.result is not None:
        msg = f"A {status.value} future snapshot cannot carry a result ({instance.result!r})."
        raise ValueError(msg)
    if instance.exception is not None and not isinstance(instance.exception, BaseException):
        msg = f"A future snapshot's exception must be an exception, not {instance.exception!r}."
        raise ValueError(msg)
    if (status is FutureStatus.FAILED) != (instance.exception is not None):
        msg = (
            "A future snapshot carries an exception exactly when its status is 'failed'; "
            f"got status {status.value!r} with exception {instance.exception!r}."
        )
        raise ValueError(msg)
    if status is not FutureStatus.CANCELLED and instance.cancel_message is not None:
        msg = f"Only a cancelled future snapshot has a cancel message (status {status.value!r})."
        raise ValueError(msg)


@attrs.frozen
class FutureSnapshot:
    """The state of a future, and only its state.

    :param status: which of the four states the future was in
    :param result: the result of a ``finished`` future, else ``None``
    :param exception: the exception of a ``failed`` future, else ``None``
    :param cancel_message: the message a ``cancelled`` future was cancelled with, if any
    """

    status: FutureStatus = attrs.field(converter=_to_status, validator=_check_consistent)
    result: Any = None
    exception: BaseException | None = None
    cancel_message: str | None = None

    @classmethod
    def pending(cls) -> FutureSnapshot:
        """:return: a snapshot of a future that has not completed yet"""
        return cls(status=FutureStatus.PENDING)

    @classmethod
    def finished(cls, result: Any) -> FutureSnapshot:
        """:return: a snapshot of a future that completed with ``result``"""
        return cls(status=FutureStatus.FINISHED, result=result)

    @classmethod
    def failed(cls, exception: BaseException) -> FutureSnapshot:
        """:return: a snapshot of a future that completed with ``exception``"""
        return cls(status=FutureStatus.FAILED, exception=exception)

    @classmethod
    def cancelled(cls, message: str | None = None) -> FutureSnapshot:
        """:return: a snapshot of a cancelled future, keeping its cancel message"""
        return cls(status=FutureStatus.CANCELLED, cancel_message=message)


def _cancel_message(error: BaseException) -> str | None:
    # asyncio puts the message given to cancel(msg) in the CancelledError's args;
    # reading it there avoids the private Future._cancel_message.
    if error.args and isinstance(error.args[0], str):
        return error.args[0]
    return None


def snapshot_future(future: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> FutureSnapshot:
    """Take the state of ``future``, leaving the future untouched.

    Works for ``asyncio.Future`` and its subclasses (plumpy's ``SavableFuture``,
    ``CancellableAction``, ``asyncio.Task``) and for ``concurrent.futures.Future``.
    It may be called from any thread: it only reads the future's state.

    :param future: the future to snapshot
    :raises EncodeError: if ``future`` is not a future
    :return: the future's state as a :class:`FutureSnapshot`
    """
    if isinstance(future, asyncio.Future):
        if future.cancelled():
            try:
                future.result()
            except asyncio.CancelledError as error:
                return FutureSnapshot.cancelled(_cancel_message(error))
        if not future.done():
            return FutureSnapshot.pending()
        exception = future.exception()
        if exception is not None:
            return FutureSnapshot.failed(exception)
        return FutureSnapshot.finished(future.result())
    if isinstance(future, concurrent.futures.Future):
        if future.cancelled():
            return FutureSnapshot.cancelled()
        if not future.done():
            return FutureSnapshot.pending()
        # done() was true, so neither call can block or time out.
        cexception = future.exception(timeout=0)
        if cexception is not None:
            return FutureSnapshot.failed(cexception)
        return FutureSnapshot.finished(future.result(timeout=0))
    msg = (
        f"snapshot_future() takes an asyncio.Future or a concurrent.futures.Future, "
        f"not {type(future).__module__}.{type(future).__qualname__}."
    )
    raise EncodeError(msg)


def _materialise(snapshot: FutureSnapshot, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """Create and resolve a future on ``loop``; call where ``loop`` may be touched.

    :param snapshot: the state to give the new future
    :param loop: the loop the new future belongs to
    :return: a new future in the snapshot's state
    """
    future = loop.create_future()
    status = snapshot.status
    if status is FutureStatus.FINISHED:
        future.set_result(snapshot.result)
    elif status is FutureStatus.FAILED:
        exception = snapshot.exception
        assert exception is not None  # guaranteed by the validator
        if isinstance(exception, StopIteration):
            # A concurrent.futures.Future may hold one; an asyncio future may not
            # (it would end the awaiting generator). Wrap it as asyncio.Task does.
            wrapped = RuntimeError(f"future failed with StopIteration: {exception!r}")
            wrapped.__cause__ = exception
            exception = wrapped
        future.set_exception(exception)
        # A restored failure was observed before the checkpoint was taken;
        # asyncio must not log "exception was never retrieved" for it again.
        future.exception()
    elif status is FutureStatus.CANCELLED:
        future.cancel(snapshot.cancel_message)
    return future


def _check_snapshot(snapshot: object, call: str, argument: str) -> None:
    check_instance(
        snapshot,
        FutureSnapshot,
        call=call,
        argument=argument,
        wanted="a FutureSnapshot",
        hint="Pass what snapshot_future() returned.",
    )


def _check_context(ctx: object, call: str) -> None:
    check_instance(
        ctx,
        LoopContext,
        call=call,
        argument="ctx",
        wanted="a LoopContext",
        hint="Wrap the target loop: LoopContext(loop=my_loop), or LoopContext.current().",
    )


def restore_future(snapshot: FutureSnapshot, ctx: LoopContext) -> asyncio.Future[Any]:
    """Turn ``snapshot`` into a new ``asyncio.Future`` bound to ``ctx.loop``.

    Safe from any thread: when the target loop is running in another thread the
    future is created and resolved on that loop's own thread, and this call
    waits for it.

    :param snapshot: the state to restore
    :param ctx: the loop context naming the target loop
    :raises NoEventLoopError: if the target loop is closed
    :raises ArgumentTypeError: if ``snapshot`` is not a FutureSnapshot or ``ctx`` not a
        LoopContext
    :return: a future whose ``get_loop()`` is ``ctx.loop``, in the snapshot's state
    """
    if not (isinstance(snapshot, FutureSnapshot) and isinstance(ctx, LoopContext)):
        # Only on the way to an error: a restore is often one future, and cheap.
        _check_snapshot(snapshot, "restore_future()", "snapshot")
        _check_context(ctx, "restore_future()")
    loop = ctx.loop
    # On the loop's own thread, while it runs (so it is open), there is nothing to hop.
    if asyncio._get_running_loop() is loop:
        return _materialise(snapshot, loop)
    return ctx.run(_materialise, snapshot, loop)


def restore_futures(
    snapshots: Iterable[FutureSnapshot], ctx: LoopContext
) -> list[asyncio.Future[Any]]:
    """Restore many snapshots at once: one hop to the loop's thread for all of them.

    :param snapshots: the states to restore, in order
    :param ctx: the loop context naming the target loop
    :raises NoEventLoopError: if the target loop is closed
    :raises ArgumentTypeError: if ``snapshots`` is not an iterable of FutureSnapshot or
        ``ctx`` not a LoopContext
    :return: new futures on ``ctx.loop``, one per snapshot, in order
    """
    check_instance(
        snapshots,
        Iterable,
        call="restore_futures()",
        argument="snapshots",
        wanted="an iterable of FutureSnapshot",
        hint="Pass a list of snapshots, e.g. [snapshot_future(f) for f in futures].",
    )
    _check_context(ctx, "restore_futures()")
    loop = ctx.loop
    snaps = list(snapshots)
    # One pass in C over the types (~2 % of restoring them); the per-item check only
    # runs to name the first offender.
    if not all(issubclass(kind, FutureSnapshot) for kind in set(map(type, snaps))):
        for index, snap in enumerate(snaps):
            _check_snapshot(snap, "restore_futures()", f"snapshots[{index}]")

    def make() -> list[asyncio.Future[Any]]:
        # Finished snapshots (the common case) inline, the rest through _materialise.
        create, finished = loop.create_future, FutureStatus.FINISHED
        futures: list[asyncio.Future[Any]] = []
        append = futures.append
        for snap in snaps:
            if snap.status is finished:
                future = create()
                future.set_result(snap.result)
                append(future)
            else:
                append(_materialise(snap, loop))
        return futures

    return ctx.run(make)
