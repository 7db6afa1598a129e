"""Loading a record with no walk of its tree: the audit and the binding happen in the decode.

:meth:`LoopAwarePersister.load_process` decodes its record knowing the target loop.
A codec that can (msgpack: :meth:`~loopaware_persist.codecs.msgpack.MsgpackCodec.decode_bound`)
hands each savable's record to a :class:`_Binding` as it meets it, which checks the class
and object loader it names against the allow-list there, so a refused name stops the
decode before anything after it in the record is decoded; and each future snapshot
becomes a future on the target loop where it sits. What needs the whole record (the
method names owned by the process class, plumpy's YAML) is checked over the savables
met, once the decode is done. plumpy then loads the tree (:func:`load_bound`), and only
the futures plumpy itself made are checked.

Whatever the decode cannot vouch for (a hook outside the built-in ones built a value
that is not opaque; plumpy's key elsewhere than in a map's keys; a root that is not a
savable) is loaded the old way, by the walk of :func:`unbundle`, on the same tree. A
refusal is named by its path from the record's structure, decoded again with no hook
run; if that cannot place it, the walk decides.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import plumpy
from plumpy.persistence import META, META__CLASS_NAME, META__OBJECT_LOADER

from ._audit import Resolver, _audit_savable, _resolver, audit_bundle
from ._errors import CorruptCheckpointError, LoopAwarePersistError
from ._loop import LoopContext
from ._registry import HookRegistry
from ._snapshot import FutureSnapshot, FutureStatus, _materialise
from ._unbundle import load_bound, unbundle
from .codecs import Codec
from .codecs.msgpack import MsgpackCodec

__all__ = ("load_record", "tree_of")

_FINISHED = FutureStatus.FINISHED


class _Binding:
    """What one load is told while its record decodes (a :class:`~.codecs._base.Binding`).

    :param loop: the loop snapshots become futures on
    :param resolve: checks a stored name against the allow-list (``None``: trusted)
    """

    __slots__ = ("_create", "_unfinished", "loop", "refused", "resolve", "savables", "unsure")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolve: Resolver | None) -> None:
        self.loop = loop
        self.resolve = resolve
        self._create: Callable[[], asyncio.Future[Any]] = loop.create_future
        if getattr(type(loop), "create_future", None) is asyncio.BaseEventLoop.create_future:
            # What BaseEventLoop.create_future does, without its Python frame per snapshot.
            self._create = functools.partial(asyncio.Future, loop=loop)
        #: the maps holding ``!!meta`` met, in the order their decode finished
        self.savables: list[dict[Any, Any]] = []
        self.unsure = False
        #: whether the decode stopped at a name this binding refused
        self.refused = False
        # futures made of snapshots that did not finish (a failed one, if a decode starts
        # again, must not be reported as an exception never retrieved)
        self._unfinished: list[asyncio.Future[Any]] = []

    def savable(self, state: dict[Any, Any]) -> None:
        resolve = self.resolve
        if resolve is not None:
            meta = state[META]
            try:
                if type(meta) is not dict:
                    msg = f"'!!meta' at <bundle> is {type(meta).__name__}, not a mapping."
                    raise CorruptCheckpointError(msg)
                if META__OBJECT_LOADER in meta:
                    resolve(str(meta[META__OBJECT_LOADER]), "class")
                if META__CLASS_NAME in meta:
                    resolve(str(meta[META__CLASS_NAME]), "savable")
            except LoopAwarePersistError:
                self.refused = True
                raise
        self.savables.append(state)

    def future(self, snapshot: FutureSnapshot) -> asyncio.Future[Any]:
        if snapshot.status is _FINISHED:  # the common case, inline
            future = self._create()
            future.set_result(snapshot.result)
            return future
        future = _materialise(snapshot, self.loop)
        self._unfinished.append(future)
        return future

    def reset(self) -> None:
        for future in self._unfinished:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: dropped without a "never retrieved" log
        self._unfinished.clear()
        self.savables.clear()
        self.unsure = self.refused = False

    def audit(self, tree: Any, registry: HookRegistry) -> bool:
        """Check what needs the whole record: the method names plumpy ``getattr``s (some
        owned by the process class, the root's) and the YAML it parses.

        :return: whether the tree can load without a walk (else the walk must decide)
        :raises UnsafeCheckpointError: naming what it refused
        """
        savables = self.savables
        # The root is the savable whose decode finished last; it must be the tree's own
        # (the bundle hook copies the root map, keeping the values).
        if self.unsure or not savables or tree.get(META) is not savables[-1][META]:
            return False
        if self.resolve is not None:
            root: list[type] = []
            for state in reversed(savables):  # the root first, each before what it holds
                try:
                    _audit_savable(state, registry, "<bundle>", root, self.resolve)
                except LoopAwarePersistError:
                    self.refused = True
                    raise
        return True


def load_record(
    codec: Codec,
    payload: bytes,
    ctx: LoopContext,
    *,
    registry: HookRegistry,
    trusted: bool,
    **extra: Any,
) -> plumpy.Savable:
    """Decode a record's payload for a load onto ``ctx.loop`` and load it, walking its
    tree only if the decode cannot vouch for it.

    :param codec: the codec the record names
    :param payload: the record's payload
    :param ctx: the target loop
    :param registry: whose allow-list decides
    :param trusted: skip the allow-list
    :param extra: more entries for plumpy's ``LoadSaveContext`` (``loader``...)
    :raises UnsafeCheckpointError: naming what it refused, and where
    :raises DecodeError: if the payload is damaged or not a bundle
    :return: the loaded object
    """
    if not isinstance(codec, MsgpackCodec):
        tree = tree_of(codec.decode(payload))
        return unbundle(tree, ctx, registry=registry, trusted=trusted, copy=False, **extra)
    loader = extra.get("loader")
    binding = _Binding(ctx.loop, None if trusted else _resolver(registry, loader))
    try:
        tree = tree_of(codec.decode_bound(payload, binding))
        if binding.audit(tree, registry):
            return load_bound(tree, ctx, registry=registry, trusted=trusted, **extra)
    except LoopAwarePersistError:
        if not binding.refused:
            raise
        # Named by its path in the record's structure, decoded again with no hook run:
        # what the walk's audit says. If that cannot place it, the walk decides.
        audit_bundle(codec.decode_inert(payload), registry, loader=loader)
        tree = tree_of(codec.decode(payload))
    return unbundle(tree, ctx, registry=registry, trusted=trusted, copy=False, **extra)


def tree_of(value: Any) -> dict[str, Any]:
    """:param value: what a codec decoded from a record's payload
    :raises CorruptCheckpointError: if it is not a bundle (a dict)
    :return: ``value``
    """
    if not isinstance(value, dict):
        msg = f"Checkpoint payload is a {type(value).__name__}, not a bundle: damaged or crafted."
        raise CorruptCheckpointError(msg)
    return value
