"""Loading: re-linking a loaded WorkChain's awaited futures to what completes them.

See ``_awaiting.py`` for what is saved and the rules of re-linking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import attrs
import plumpy
from plumpy import workchains

from ._arguments import check_instance, check_process, describe
from ._errors import (
    ArgumentTypeError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
    UnlinkedAwaitableError,
)
from ._outcome import _FUTURES, _chain, _running_loop
from ._owners import _LIVE, _LOCK, _PRUNE_AT, _WANTED

if TYPE_CHECKING:
    from ._persister import LoopAwarePersister

__all__ = ("RelinkHook", "relink_awaited")

#: ``relink(process, key, owner)``: a future to wait for instead, or ``None`` to give up.
RelinkHook = Callable[
    [plumpy.Process, Any, Hashable | None],
    "asyncio.Future[Any] | concurrent.futures.Future[Any] | None",
]

_LOGGER = logging.getLogger(__name__)

# Header states (plumpy's ProcessState values) of a terminated process.
_TERMINAL = frozenset({"finished", "excepted", "killed"})


def _mirror(process: plumpy.Process, same_as: Any) -> dict[Any, Any]:
    """An equal copy of ``process``'s restored ``_awaiting``, now or once it is loaded."""
    if same_as != "_awaiting":
        msg = f"Awaited futures stored as the same as {same_as!r:.100}: damaged or crafted."
        raise CorruptCheckpointError(msg)
    with _LOCK:
        source = _SOURCES.get(process)
        if source is None:
            mirror: dict[Any, Any] = {}
            _MIRRORS.setdefault(process, []).append(mirror)
            return mirror
    return dict(source)


# A load of a state sets its members in no fixed order (plumpy iterates a set).
#: process -> its restored ``_awaiting`` dict
_SOURCES: weakref.WeakKeyDictionary[plumpy.Process, dict[Any, Any]] = weakref.WeakKeyDictionary()
#: process -> members stored as ``same_as='_awaiting'`` loaded before it
_MIRRORS: weakref.WeakKeyDictionary[plumpy.Process, list[dict[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


@attrs.define
class _Restored:
    """One awaited future of a loaded process, until it is re-linked."""

    key: Any
    future: asyncio.Future[Any]
    owner: Hashable | None
    linked: bool = False


#: process -> token -> restored awaited future, from the load until relink_awaited
_RESTORED: weakref.WeakKeyDictionary[plumpy.Process, dict[int, _Restored]] = (
    weakref.WeakKeyDictionary()
)


def _notify(process: plumpy.Process, future: asyncio.Future[Any]) -> None:
    # What workchains.Waiting.enter() would have registered: plumpy's own callback,
    # if the process still waits on this future in a WorkChain Waiting state.
    state = process._state  # plumpy has no public accessor for the state object
    if isinstance(state, workchains.Waiting) and future in state._awaiting:
        state._awaitable_done(future)


def _link_in_memory(entry: _Restored) -> None:
    """Link what needs no store: done already, or a child live in this Python process."""
    if entry.future.done() or entry.owner is None:
        entry.linked = entry.future.done()
        return
    with _LOCK:
        try:
            child = _LIVE.get(entry.owner)
        except TypeError:  # an unhashable pid from a crafted record
            return
        if child is None:
            if len(_WANTED) > _PRUNE_AT:
                for pid in [pid for pid, futures in _WANTED.items() if not futures]:
                    del _WANTED[pid]  # their parents are gone
            _WANTED.setdefault(entry.owner, weakref.WeakSet()).add(entry.future)
    if child is not None:
        _chain(child.future(), entry.future)
        entry.linked = True


def _stored_state(persister: LoopAwarePersister, pid: Hashable) -> str | None:
    """:return: the state the untagged checkpoint of ``pid`` was saved in, from its header
    only ('' if the header does not say), or ``None`` if there is no such checkpoint"""
    for info in persister.list_info(pid):  # type: ignore[arg-type] # plumpy pids: Hashable
        if info.tag is None:
            return str(info.as_dict().get("state") or "")
    return None


#: Watchers of children's checkpoints; asyncio keeps only weak references to tasks.
_WATCHERS: set[asyncio.Task[None]] = set()


def _watch_store(persister: LoopAwarePersister, entry: _Restored) -> None:
    """Poll the store for a child continued elsewhere (another worker), on the future's loop."""
    interval = getattr(persister, "child_poll_interval", None)
    if interval is None:
        return
    loop, owner = entry.future.get_loop(), entry.owner
    future_ref = weakref.ref(entry.future)

    def start() -> None:
        task = loop.create_task(
            _follow_child(persister, future_ref, owner, interval), name=f"follow child {owner}"
        )
        _WATCHERS.add(task)
        task.add_done_callback(_WATCHERS.discard)

    if loop.is_running() and _running_loop() is not loop:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody waits
            loop.call_soon_threadsafe(start)
    else:
        start()


async def _follow_child(
    persister: LoopAwarePersister,
    future_ref: weakref.ref[asyncio.Future[Any]],
    owner: Hashable,
    interval: float,
) -> None:
    """Until the future is done or gone: read the child's stored state every ``interval``
    seconds; a terminated child's stored outcome completes the future.

    Only a weak reference to the future is held, so a parent nobody runs any more is
    not kept alive by its watcher. A store that fails is retried; a child checkpoint
    that disappears or cannot be loaded fails the future with the typed error.
    """
    from ._persister import LoopAwarePersister

    woken = asyncio.Event()
    future = future_ref()
    if future is None:
        return
    future.add_done_callback(lambda _: woken.set())  # linked here meanwhile: stop at once
    del future
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), interval)
        future = future_ref()
        if future is None or future.done():
            return
        del future
        try:
            state = await asyncio.to_thread(_stored_state, persister, owner)
            if state is None:
                msg = (
                    f"The checkpoint of child process {owner}, which a loaded WorkChain "
                    f"awaits, disappeared from {persister!r}."
                )
                raise UnlinkedAwaitableError(msg, owner=owner)
            if state not in _TERMINAL:
                continue
            child = await LoopAwarePersister.aload_process(persister, owner)
        except StorageError as error:
            if isinstance(error, CheckpointNotFoundError):
                _fail(future_ref, error)
                return
            _LOGGER.warning("Reading the checkpoint of %s failed; retrying: %s", owner, error)
            continue
        except Exception as error:  # the parent fails with it, rather than wait forever
            _fail(future_ref, error)
            return
        future = future_ref()
        if future is not None:
            _chain(child.future(), future)
        return


def _fail(future_ref: weakref.ref[asyncio.Future[Any]], error: BaseException) -> None:
    future = future_ref()
    if future is not None and not future.done():
        future.set_exception(error)


def relink_awaited(
    process: plumpy.Process,
    persister: LoopAwarePersister | None = None,
    *,
    relink: RelinkHook | None = None,
) -> None:
    """Make sure every pending future a loaded WorkChain awaits will complete.

    ``load_process`` calls this; call it yourself after ``bundle.unbundle()``. A
    future of a child process not live here is looked up in ``persister``'s store:
    a terminated child is loaded and its stored outcome completes the future; a
    child not yet terminated is waited for. It completes the future when a
    persister loads it here (e.g. a ``LoopAwareLauncher`` continue task), and,
    continued anywhere else (another worker), when its checkpoint is found
    terminated: the store is read every ``persister.child_poll_interval`` seconds
    (``None``: never) until then, from a task on the future's loop.

    :param process: a process just loaded
    :param persister: the store children's checkpoints are in (``None``: in memory only;
        children's futures are then kept for a later call that names the store, as
        ``LoopAwareBundle.unbundle`` leaves them)
    :param relink: ``relink(process, key, owner)`` returns a future to wait for in
        place of one that cannot be re-linked, or ``None``
    :raises UnlinkedAwaitableError: for a pending future that nothing can complete
    :raises ArgumentTypeError: if an argument has the wrong type
    """
    from ._persister import LoopAwarePersister

    check_process(process, call="relink_awaited()")
    if persister is not None:
        check_instance(
            persister,
            LoopAwarePersister,
            call="relink_awaited()",
            argument="persister",
            wanted="a LoopAwarePersister or None",
            hint="Pass the persister the process was loaded from.",
        )
    if relink is not None and not callable(relink):
        msg = (
            f"relink_awaited() takes a callable or None as relink, got {describe(relink)}. "
            "Pass fn(process, key, owner) returning a future to wait for, or None."
        )
        raise ArgumentTypeError(msg, argument="relink")
    with _LOCK:
        entries = _RESTORED.pop(process, {})
        _SOURCES.pop(process, None)
        _MIRRORS.pop(process, None)
    unchecked: dict[int, _Restored] = {}
    for token, entry in entries.items():
        if entry.linked or entry.future.done():
            continue
        reason = None
        if entry.owner is None:
            reason = (
                "it belongs to no process known here (a plain future, or a child that was "
                "not saved or loaded through a persister before the parent was saved)"
            )
        elif persister is None:
            unchecked[token] = entry  # for a later call that names the store
        else:
            state = _stored_state(persister, entry.owner)
            if state is None:
                reason = f"its child process {entry.owner} has no checkpoint in {persister!r}"
            elif state in _TERMINAL:
                # The base class's load: a terminated child is read, not claimed (a
                # FencingPersister's load_process would save it again).
                from ._persister import LoopAwarePersister

                loop = entry.future.get_loop()
                child = LoopAwarePersister.load_process(persister, entry.owner, loop=loop)
                _chain(child.future(), entry.future)
            else:
                _watch_store(persister, entry)
        if reason is None:
            continue
        source = relink(process, entry.key, entry.owner) if relink is not None else None
        if not isinstance(source, _FUTURES):
            got = "" if source is None else f" (the relink hook returned {source!r:.100})"
            msg = (
                f"Process {process.pid} awaits a pending future for {entry.key!r} that cannot "
                f"be re-linked: {reason}{got}. It would wait forever. Pass "
                "load_process(..., relink=fn) with fn(process, key, owner) returning an "
                "asyncio or concurrent.futures future to wait for, or checkpoint children "
                "before their parent waits."
            )
            raise UnlinkedAwaitableError(msg, pid=process.pid, key=entry.key, owner=entry.owner)
        _chain(source, entry.future)
    if unchecked:
        with _LOCK:
            _RESTORED[process] = unchecked
