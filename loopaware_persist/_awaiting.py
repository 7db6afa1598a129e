"""WorkChains waiting on futures and child processes: saved as snapshots, re-linked on load.

``return ToContext(child=process)`` (or ``self.to_context(x=future)``) puts the
WorkChain in plumpy's ``workchains.Waiting`` state, whose ``_awaiting`` and
``data`` members are dicts *keyed by futures*. plumpy 0.26.1 saves auto-persisted
members with ``copy.deepcopy`` (``Savable.save_members``, plumpy/persistence.py
line 542), and an ``asyncio.Future`` cannot be deep-copied: the save fails with
"cannot pickle 'SavableFuture'". Nothing is patched here. Instead, for the
synchronous stretch of a save, :func:`awaiting_snapshots` puts an
:class:`AwaitedFutures` stand-in in those members. plumpy saves a ``Savable``
member by calling its ``save()`` (``save_members``, line 540) rather than
copying it, and the stand-in stores each awaited future as
``[key, FutureSnapshot, token, owner]``, ``owner`` being the pid of the process
whose future it is, when known. plumpy loads the member back through
``Savable.load`` (``_get_value``, line 605), which calls
:meth:`AwaitedFutures.recreate_from`; that returns the plain ``{future: key}``
dict plumpy expects, with futures on the target loop (:func:`unbundle` has
already turned every snapshot into one).

A loaded state is not *entered* again (plumpy restores ``in_state``,
process_states.py line 152, and calls no ``enter()``), so
``workchains.Waiting.enter`` (workchains.py line 88), which adds the
done-callbacks, never runs: a restored WorkChain would wait forever even on a finished future. The
stand-in therefore adds, per awaited future, a callback that hands it to the
process's current ``Waiting`` state, as ``enter()`` would have.

Re-linking, after which what a future stands for completes it:

* a finished, failed or cancelled snapshot is restored done, and the WorkChain
  moves on at once;
* a pending future of a child process is chained to that child's future when
  the child is *reachable*: live in this Python process (saved or loaded through
  a :class:`~loopaware_persist.LoopAwarePersister`, which is also how a
  :class:`~loopaware_persist.LoopAwareLauncher` or worker continues it), loaded
  later through one (the parent waits for it, like a live parent waits for its
  child), or terminated with its own checkpoint in the same store, whose stored
  outcome completes it (:meth:`LoopAwarePersister.load_process
  <loopaware_persist.LoopAwarePersister.load_process>` reads it, and, for a child
  still running elsewhere, reads the store every ``child_poll_interval`` seconds
  until it has terminated);
* what cannot be re-linked -- a pending future no process owns, a child whose
  checkpoint is missing -- is an :class:`~loopaware_persist.UnlinkedAwaitableError`, raised by
  ``load_process``, unless its ``relink`` hook supplies a future to wait for.
  ``LoopAwareBundle.unbundle`` (plumpy's ``ProcessLauncher``, AiiDA) raises it for
  a future no process owns; it has no store to look children up in.

A child is known as the owner of its future once a persister has saved or
loaded it, in the Python process that saves the parent, before the parent's
save: checkpoint each child when it is created (as AiiDA checkpoints every
process it creates). ``save_checkpoint(verify=True)`` refuses a parent waiting on
a pending future that no known process owns (:func:`check_relinkable`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import plumpy
from plumpy import process_states, workchains

from ._arguments import check_instance, check_process, describe
from ._errors import (
    ArgumentTypeError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    EncodeError,
    StorageError,
    UnlinkedAwaitableError,
)
from ._snapshot import FutureSnapshot, _materialise, snapshot_future

if TYPE_CHECKING:
    from ._persister import LoopAwarePersister

__all__ = (
    "AwaitedFutures",
    "RelinkHook",
    "awaiting_snapshots",
    "check_relinkable",
    "note_process",
    "relink_awaited",
)

#: ``relink(process, key, owner)``: a future to wait for instead, or ``None`` to give up.
RelinkHook = Callable[
    [plumpy.Process, Any, Hashable | None],
    "asyncio.Future[Any] | concurrent.futures.Future[Any] | None",
]

_LOGGER = logging.getLogger(__name__)

# The members of plumpy's Waiting states that hold {future: ctx key} dicts
# (process_states.Waiting: 'data'; workchains.Waiting adds '_awaiting').
_MEMBERS = ("_awaiting", "data")
# What a Waiting state's member may be keyed by for the stand-in to take its place.
_FUTURES = (asyncio.Future, concurrent.futures.Future)
# Header states (plumpy's ProcessState values) of a terminated process.
_TERMINAL = frozenset({"finished", "excepted", "killed"})


# region who owns which future (this Python process only)

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


# endregion

# region saving


class AwaitedFutures(plumpy.Savable):
    """Stands in for a ``Waiting`` state's ``{future: key}`` member while plumpy saves it.

    Stored as the ``[key, snapshot, token, owner]`` of each awaited future; loaded
    back as the plain dict (see the module docstring). Tokens number the futures of
    one save, so ``_awaiting`` and ``data``, which await the same futures, get the
    same futures back.

    A WorkChain's ``data`` usually equals its ``_awaiting`` (plumpy builds both from
    ``to_context``'s awaitables); it is then stored as ``same_as='_awaiting'``
    instead of a second copy of every snapshot, and loaded as an equal dict.

    :param awaiting: the member's value, ``{future: key}``
    :param member: the member's name
    :param tokens: ``id(future) -> token``, shared by the members of one save
    :param same_as: the member whose equal value is stored instead, if any
    """

    def __init__(
        self,
        awaiting: dict[Any, Any],
        *,
        member: str,
        tokens: dict[int, int],
        same_as: str | None = None,
    ) -> None:
        call = "AwaitedFutures()"
        check_instance(awaiting, dict, call=call, argument="awaiting", wanted="a dict")
        check_instance(member, str, call=call, argument="member", wanted="a str")
        check_instance(tokens, dict, call=call, argument="tokens", wanted="a dict")
        check_instance(
            same_as, (str, type(None)), call=call, argument="same_as", wanted="a str or None"
        )
        self._awaiting = awaiting
        self._member = member
        self._tokens = tokens
        self._same_as = same_as

    def save_instance_state(
        self, out_state: dict[str, Any], save_context: plumpy.LoadSaveContext | None
    ) -> None:
        """Write each awaited future as ``[key, snapshot, token, owner]``.

        :param out_state: the state being saved
        :param save_context: plumpy's save context (unused)
        """
        super().save_instance_state(out_state, save_context)
        entries = []
        if self._same_as is not None:
            out_state["same_as"] = self._same_as
        else:
            for future, key in self._awaiting.items():
                token = self._tokens.setdefault(id(future), len(self._tokens))
                entries.append([key, snapshot_future(future), token, _owner_of(future)])
        out_state["member"] = self._member
        out_state["awaited"] = entries

    # plumpy's Savable.load returns whatever recreate_from returns and plumpy's
    # _get_value assigns it to the member: the dict itself, not a Savable.
    @classmethod
    def recreate_from(  # type: ignore[override]
        cls, saved_state: dict[str, Any], load_context: plumpy.LoadSaveContext | None = None
    ) -> dict[Any, Any]:
        """Rebuild the ``{future: key}`` dict, chaining each future to what it awaits.

        :param saved_state: what :meth:`save_instance_state` wrote, snapshots already
            made futures by :func:`~loopaware_persist.unbundle`
        :param load_context: plumpy's context for the state's members; its ``process``
            is the WorkChain being loaded
        :raises CorruptCheckpointError: if the stored entries are malformed
        :return: the member's value
        """
        process = getattr(load_context, "process", None) if load_context is not None else None
        member, entries = saved_state.get("member"), saved_state.get("awaited")
        if not isinstance(process, plumpy.Process) or not isinstance(entries, list):
            msg = (
                f"Malformed awaited futures in checkpoint (member {member!r}, "
                f"{type(entries).__name__} entries): the record is damaged or crafted."
            )
            raise CorruptCheckpointError(msg)
        same_as = saved_state.get("same_as")
        if same_as is not None:
            return _mirror(process, same_as)
        with _LOCK:  # loads of other processes may run on other threads
            restored = _RESTORED.setdefault(process, {})
        awaiting: dict[Any, Any] = {}
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 4 and type(entry[2]) is int):
                msg = f"Malformed awaited future {entry!r:.200} in checkpoint: damaged or crafted."
                raise CorruptCheckpointError(msg)
            key, future, token, owner = entry
            if isinstance(future, FutureSnapshot):  # loaded by plumpy alone, not unbundle()
                future = _materialise(future, process.loop)
            if not isinstance(future, asyncio.Future):
                msg = f"Awaited future for {key!r} in checkpoint is {future!r:.100}: damaged."
                raise CorruptCheckpointError(msg)
            known = restored.get(token)
            if known is None:
                restored[token] = known = _Restored(key=key, future=future, owner=owner)
                if owner is not None:
                    # The restored future stands for the child's: saving the parent
                    # again must name the same owner.
                    with _LOCK, contextlib.suppress(TypeError):
                        _OWNERS[future] = owner
                _link_in_memory(known)
            awaiting[known.future] = key
            if member == "_awaiting":
                known.future.add_done_callback(functools.partial(_notify, process))
        if member == "_awaiting":
            with _LOCK:
                _SOURCES[process] = awaiting
                mirrors = _MIRRORS.pop(process, [])
            for mirror in mirrors:  # loaded before this member: filled now
                mirror.update(awaiting)
        return awaiting


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


@contextlib.contextmanager
def awaiting_snapshots(process: plumpy.Process) -> Iterator[None]:
    """For the duration of a save, let plumpy save ``process``'s awaited futures.

    Puts an :class:`AwaitedFutures` stand-in in each member of a ``Waiting`` state
    that is a dict keyed by futures (``to_context``'s awaitables), and puts the
    dicts back afterwards, whatever happens. Call on the process's loop thread,
    as every save must be.

    :param process: the process about to be bundled
    """
    state = getattr(process, "_state", None)
    swapped: list[tuple[str, Any]] = []
    if isinstance(state, process_states.Waiting):
        tokens: dict[int, int] = {}
        persisted = type(state)._auto_persist or set()
        for member in _MEMBERS:  # '_awaiting' first: 'data' may be stored as the same
            value = vars(state).get(member)
            if (
                member in persisted
                and type(value) is dict
                and value
                and all(isinstance(key, _FUTURES) for key in value)
            ):
                same_as = next((name for name, done in swapped if done == value), None)
                swapped.append((member, value))
                stand_in = AwaitedFutures(value, member=member, tokens=tokens, same_as=same_as)
                setattr(state, member, stand_in)
    try:
        yield
    finally:
        for member, value in swapped:
            setattr(state, member, value)


def check_relinkable(process: plumpy.Process) -> None:
    """Refuse, at save, what a plain ``load_process`` could not re-link.

    ``save_checkpoint(verify=True)`` promises the checkpoint will reload; a WorkChain
    waiting on a pending future that belongs to no known process would load only
    with a ``relink=`` hook (save without ``verify`` for that).

    :param process: the process being saved
    :raises EncodeError: naming the awaited future's path
    """
    state = getattr(process, "_state", None)
    awaiting = vars(state).get("_awaiting") if state is not None else None
    if not isinstance(state, workchains.Waiting) or type(awaiting) is not dict:
        return
    for future, key in awaiting.items():
        if isinstance(future, _FUTURES) and not future.done() and _owner_of(future) is None:
            path = f"_state._awaiting[{key!r}]"
            msg = (
                f"The checkpoint of {process.pid} would not reload: it awaits a pending future "
                f"for {key!r} ({path}) that belongs to no process a persister has saved or "
                "loaded here, so nothing would complete it after a load. Checkpoint child "
                "processes before their parent waits on them, or save without verify=True "
                "and load with load_process(..., relink=fn)."
            )
            raise EncodeError(msg, path=path)


# endregion

# region loading


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


# endregion
