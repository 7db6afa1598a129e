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
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import plumpy
from plumpy import process_states, workchains

from ._arguments import check_instance
from ._errors import CorruptCheckpointError, EncodeError
from ._outcome import _FUTURES
from ._owners import _LOCK, _OWNERS, _owner_of, note_process
from ._relink import (
    _MIRRORS,
    _RESTORED,
    _SOURCES,
    RelinkHook,
    _link_in_memory,
    _mirror,
    _notify,
    _Restored,
    relink_awaited,
)
from ._snapshot import FutureSnapshot, _materialise, snapshot_future

# note_process and relink_awaited live in _owners.py and _relink.py; named here too
# for the modules that import them from here.
__all__ = (
    "AwaitedFutures",
    "RelinkHook",
    "awaiting_snapshots",
    "check_relinkable",
    "note_process",
    "put_back",
    "relink_awaited",
    "stand_ins",
)


# The members of plumpy's Waiting states that hold {future: ctx key} dicts
# (process_states.Waiting: 'data'; workchains.Waiting adds '_awaiting').
_MEMBERS = ("_awaiting", "data")


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


def stand_ins(process: plumpy.Process) -> tuple[Any, list[tuple[str, Any]]]:
    """Put :class:`AwaitedFutures` stand-ins in ``process``'s awaited-futures members.

    What :func:`awaiting_snapshots` does on entry, for a caller (a save) that puts the
    members back itself with :func:`put_back`, whatever happens.

    :param process: the process about to be bundled
    :return: its state and the ``(member, value)`` pairs replaced, for :func:`put_back`
    """
    state = getattr(process, "_state", None)
    swapped: list[tuple[str, Any]] = []
    if isinstance(state, process_states.Waiting):
        tokens: dict[int, int] = {}
        persisted = type(state)._auto_persist or set()
        members = vars(state)
        for member in _MEMBERS:  # '_awaiting' first: 'data' may be stored as the same
            value = members.get(member)
            if (
                type(value) is dict
                and value
                and member in persisted
                and all(isinstance(key, _FUTURES) for key in value)
            ):
                same_as = next((name for name, done in swapped if done == value), None)
                swapped.append((member, value))
                stand_in = AwaitedFutures(value, member=member, tokens=tokens, same_as=same_as)
                setattr(state, member, stand_in)
    return state, swapped


def put_back(state: Any, swapped: list[tuple[str, Any]]) -> None:
    """Undo :func:`stand_ins`.

    :param state: the state it returned
    :param swapped: the pairs it returned
    """
    for member, value in swapped:
        setattr(state, member, value)


@contextlib.contextmanager
def awaiting_snapshots(process: plumpy.Process) -> Iterator[None]:
    """For the duration of a save, let plumpy save ``process``'s awaited futures.

    Puts an :class:`AwaitedFutures` stand-in in each member of a ``Waiting`` state
    that is a dict keyed by futures (``to_context``'s awaitables), and puts the
    dicts back afterwards, whatever happens. Call on the process's loop thread,
    as every save must be.

    :param process: the process about to be bundled
    """
    state, swapped = stand_ins(process)
    try:
        yield
    finally:
        put_back(state, swapped)


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
