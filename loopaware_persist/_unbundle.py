"""Whole-graph loading: audit a bundle, load it where the target loop is current, audit the result.

:func:`unbundle` is the one road from a stored bundle to live objects:

1. **Audit** the bundle as data, before plumpy sees it (:mod:`._audit`): every
   ``!!meta`` class name, object loader and method name, and the YAML that plumpy's
   ``Excepted`` state reads with the *unsafe* ``yaml.Loader``, must name only
   what the allow-list permits. Nothing is imported that is not allowed. The
   allow-list is the one the bundle was decoded with (a :class:`LoopAwareBundle`
   carries its persister's registry); class names go through the caller's plumpy
   ``ObjectLoader`` if the load context has one, and what it returns is checked.
2. **Load** through :meth:`LoopContext.run`, on the caller's thread, so plumpy's
   own loop-less futures (``Process._future``, ``Waiting._waiting_future``...)
   land on the target loop; every :class:`FutureSnapshot` in the tree becomes a
   future there too. Values a hook decoded are handed to plumpy as decoded.
3. **Check** the resulting object graph with :func:`check_loop_bound`: a future
   on any other loop is a :class:`LoopBoundaryError`, never a hang later.

The audit, the copy and the snapshots' rebinding are one walk of the bundle
(:class:`_Rebind`), done where the target loop is current and before plumpy
loads anything; the check then skips the plain-data containers that walk built
and found free of futures, and walks everything plumpy made. The walk recurses
for speed and starts over iteratively when a bundle is deeper than the stack, so
any depth a codec decodes loads; ``save_checkpoint(verify=True)`` runs the same
walk on the record it stores.

``load_process`` takes the other road, :func:`load_bound`: its decode audited the
names and bound the snapshots as it went (:mod:`._bound`), so no walk of the tree is
needed, and only the futures plumpy made itself are checked after the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy as pycopy
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

import kiwipy
import plumpy
from plumpy import loaders
from plumpy.persistence import META, META__CLASS_NAME
from plumpy.utils import Frozendict

from ._arguments import check_flag, check_instance
from ._audit import _ATOM_TYPES, _ATOMS, SafeObjectLoader, _audit_savable, _resolver, audit_bundle
from ._awaiting import note_process, relink_awaited
from ._errors import (
    CorruptCheckpointError,
    LoopAwarePersistError,
)
from ._hooks import default_registry
from ._loop import LoopContext
from ._loop_check import _attributes_of, _check_built, _check_loop_bound
from ._registry import HookRegistry, check_registry
from ._snapshot import FutureSnapshot, FutureStatus, _materialise

__all__ = ("LoopAwareBundle", "unbundle")


def _copy_kept(value: Any) -> Any:
    """A shallow copy of a container a hook decoded (a ``dict``/``list`` subclass), with
    its class, items and attributes; ``value`` itself if it cannot be copied."""
    try:
        return pycopy.copy(value)
    except RecursionError:
        raise  # the walk's cue to go iterative, not a copy failure
    except Exception:
        return value


def _rebuilt(value: Any, items: list[Any], copy: bool) -> Any:
    """``value``, a ``tuple``/``set``/``frozenset`` subclass (a namedtuple, a user's set),
    holding ``items`` instead: a new one of its class with its attributes (shallowly), or,
    for a mutable set without ``copy``, ``value`` itself updated in place."""
    if isinstance(value, set):
        if not copy:
            set.clear(value)
            set.update(value, items)
            return value
        new: Any = set.__new__(type(value))
        set.update(new, items)
    elif isinstance(value, frozenset):
        new = frozenset.__new__(type(value), items)
    else:  # tuple.__new__, not the class's: a namedtuple's takes its fields by name
        new = tuple.__new__(type(value), items)
    attrs = _attributes_of(value)
    if attrs:
        new.__dict__.update(attrs)
    return new


def _copy_of(value: Any) -> Any:
    """A shallow copy of a builtin container's subclass, class and attributes included
    (``value`` itself if it cannot be copied)."""
    if isinstance(value, (tuple, set, frozenset)):
        return _rebuilt(value, list(value), copy=True)
    return _copy_kept(value)


class _Rebind:
    """One walk of a bundle: audit it, copy it (or not), and make its snapshots futures.

    :attr:`run` returns the tree with every :class:`FutureSnapshot` replaced by a
    future on ``loop``. With ``copy`` every container of plain data (``dict``,
    ``list``, ``set``, plumpy's bundles and frozendicts) is copied, so two loads of one
    bundle share no such mutable state (plumpy assigns loaded values by reference);
    without it the tree (private and fresh from a decode) is updated in place. What a
    hook decoded is handed over as decoded, never copied: an ORM node stays the stored
    node. A ``dict``/``list`` subclass (a hook's) is walked for snapshots and kept as
    is, unless one of its items must change under ``copy``: then that container is
    copied shallowly, class and attributes included, so the bundle stays reusable.
    Any other object (one a hook built) is walked into through its instance
    ``__dict__``, in place and without copying anything inside it: a snapshot it holds
    becomes a future, the rest stays its own. Either way the memo keeps shared
    references shared (one snapshot stored twice becomes one future) and makes cycles
    safe.

    The walk recurses, the fast path: a depth counter would cost loads of ordinary
    bundles ~8 %. A bundle deeper than the stack allows raises ``RecursionError``
    somewhere down; the walk then starts over iteratively, from the top of the stack
    and with the same rules, so any depth a codec decodes loads, never a bare
    ``RecursionError``.

    With a ``registry``, each savable's ``!!meta`` is audited as the walk meets it,
    depth-first in key order as :func:`audit_bundle` does, so the bundle is walked once
    rather than twice. The walk records in :attr:`verified` the ids of the futures it
    made (on ``loop``, by construction) and of the containers it built or kept whose
    whole subtree it walked and found to hold nothing else but atoms: what
    :func:`check_loop_bound` need not walk again. The memo keeps all of them alive, so
    their ids stay theirs while this object lives.

    :param loop: the loop futures are created on
    :param copy: copy every container of plain data
    :param registry: audit against this allow-list (``None``: trusted, no audit)
    :param resolve: how the audit turns a stored class name into a class (default:
        ``registry.resolve``; an object loader's, checked against the allow-list)
    :param opaque: types whose instances are handed over without walking into them
    """

    __slots__ = ("memo", "run", "verified")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        copy: bool,
        registry: HookRegistry | None,
        resolve: Callable[[str, Any], type] | None = None,
        opaque: tuple[type, ...] = (),
    ) -> None:
        self.memo: dict[int, Any] = {}
        self.verified: set[int] = set()
        audit: Callable[[dict[Any, Any]], None] | None = None
        if registry is not None:
            root: list[type] = []
            resolver = resolve if resolve is not None else registry.resolve

            def audit(state: dict[Any, Any]) -> None:
                _audit_savable(state, registry, "<bundle>", root, resolver)

        #: ``run(tree)``: the tree, rebound
        self.run = self._walker(loop, copy, audit, opaque)

    def _walker(  # one closure, so the recursion pays no attribute lookups
        self,
        loop: asyncio.AbstractEventLoop,
        copy: bool,
        audit: Callable[[dict[Any, Any]], None] | None,
        opaque: tuple[type, ...],
    ) -> Callable[[Any], Any]:
        memo, verified = self.memo, self.verified
        atoms, atom_types = _ATOM_TYPES, _ATOMS
        issuperset = atoms.issuperset  # are a dict's keys all atoms? (in C)
        create, finished = loop.create_future, FutureStatus.FINISHED
        plain_dicts = (dict, plumpy.Bundle, LoopAwareBundle)

        def ok(item: Any) -> bool:
            return type(item) in atoms or id(item) in verified

        def future_of(value: FutureSnapshot) -> asyncio.Future[Any]:
            if value.status is finished:  # the common case, inline
                future = create()
                future.set_result(value.result)
            else:
                future = _materialise(value, loop)
            memo[id(value)] = future
            verified.add(id(future))
            return future

        def make_walk(
            copy: bool,
        ) -> tuple[Callable[[Any], Any], Callable[[Any, Any], tuple[Any, bool]]]:
            def attributes(value: Any, target: Any) -> Any:
                """``target`` (``value``, a builtin container's subclass, or its copy) with
                the snapshots among its attributes made futures: under ``copy`` one still
                shared with the input is copied first, as for a changed item."""
                attrs = _attributes_of(target)
                if not attrs:
                    return target
                changes = {}
                for name, child in attrs.items():
                    if type(child) not in atoms:
                        new = walk(child)
                        if new is not child:
                            changes[name] = new
                if changes:
                    if copy and target is value:
                        target = memo[id(value)] = _copy_of(value)
                    target.__dict__.update(changes)
                return target

            def rekey(value: Any, target: Any) -> tuple[Any, bool]:
                """``target`` (``value`` or its copy) with snapshots among its keys made
                futures (a dict keyed by futures), and whether its keys are all atoms or
                verified. Keys nest shallowly (they are hashable): this recursion is safe."""
                if atoms.issuperset(map(type, target)):
                    return target, True
                pairs = [(k if type(k) in atoms else walk(k), v) for k, v in target.items()]
                plain_keys = all(type(k) in atoms or id(k) in verified for k, _ in pairs)
                if all(new is old for (new, _), old in zip(pairs, target, strict=True)):
                    return target, plain_keys
                if copy and target is value:
                    target = memo[id(value)] = _copy_kept(value)
                dict.clear(target)
                dict.update(target, pairs)
                return target, plain_keys

            def walk(value: Any) -> Any:
                if isinstance(value, atom_types):
                    return value
                key = id(value)
                if key in memo:
                    return memo[key]
                if isinstance(value, FutureSnapshot):
                    if value.status is finished:  # the common case, inline
                        future = create()
                        future.set_result(value.result)
                    else:
                        future = _materialise(value, loop)
                    memo[key] = future
                    verified.add(id(future))
                    return future
                plain = True
                if isinstance(value, dict):
                    if audit is not None and META in value:
                        audit(value)
                    target = value
                    kept = False  # a hook's dict subclass, kept as is unless an item changes
                    if copy:
                        cls = value.__class__
                        if cls is dict:
                            target = value.copy()
                        elif cls in plain_dicts:
                            target = cls.__new__(cls)
                            dict.update(target, value)
                        else:
                            kept = True
                    memo[key] = target
                    for k, child in value.items():
                        if type(child) in atoms:
                            continue
                        new = walk(child)
                        if plain and id(new) not in verified:
                            plain = False
                        if new is not child:
                            if kept and target is value:
                                target = memo[key] = _copy_kept(value)
                            dict.__setitem__(target, k, new)
                    if not issuperset(map(type, value)):  # a key that is not an atom: rare
                        target, plain_keys = rekey(value, target)
                        plain = plain and plain_keys
                    if value.__class__ not in plain_dicts:
                        plain = plain and not _attributes_of(target)
                        target = attributes(value, target)
                    if plain:
                        verified.add(id(target))
                    return target
                if type(value) is list:
                    target_list = value.copy() if copy else value
                    memo[key] = target_list
                    for i, child in enumerate(value):
                        if type(child) in atoms:
                            continue
                        new = target_list[i] = walk(child)
                        if plain and id(new) not in verified:
                            plain = False
                    if plain:
                        verified.add(id(target_list))
                    return target_list
                if isinstance(value, list):  # a hook's list subclass: kept unless an item changes
                    sub = value
                    memo[key] = sub
                    for i, child in enumerate(value):
                        if type(child) in atoms:
                            continue
                        new = walk(child)
                        if plain and id(new) not in verified:
                            plain = False
                        if new is not child:
                            if copy and sub is value:
                                sub = memo[key] = _copy_kept(value)
                            list.__setitem__(sub, i, new)
                    plain = plain and not _attributes_of(sub)
                    sub = attributes(value, sub)
                    if plain:
                        verified.add(id(sub))
                    return sub
                if type(value) is set:
                    target_set: set[Any] = set() if copy else value
                    memo[key] = target_set
                    items = [walk(child) for child in value]
                    if copy or any(a is not b for a, b in zip(items, value, strict=True)):
                        target_set.clear()
                        target_set.update(items)
                    if all(map(ok, items)):
                        verified.add(id(target_set))
                    return target_set
                if type(value) in (tuple, frozenset):
                    items = [walk(child) for child in value]
                    rebuilt = value
                    if any(a is not b for a, b in zip(items, value, strict=True)):
                        rebuilt = type(value)(items)
                    memo[key] = rebuilt
                    if all(map(ok, items)):
                        verified.add(id(rebuilt))
                    return rebuilt
                if isinstance(value, Frozendict):
                    # Its items, not a temporary dict, go through the walk: the memo is keyed
                    # by id(), and a temporary freed meanwhile could lend its id to another.
                    walked = {k: walk(child) for k, child in value.items()}
                    memo[key] = frozen = type(value)(walked)
                    if all(map(ok, walked.values())):
                        verified.add(id(frozen))
                    return frozen
                if isinstance(value, (tuple, set, frozenset)):  # a subclass: a namedtuple...
                    memo[key] = value
                    items = [walk(child) for child in value]
                    result = value
                    if any(a is not b for a, b in zip(items, value, strict=True)):
                        result = memo[key] = _rebuilt(value, items, copy)
                    return attributes(value, result)  # never marked verified
                # Anything else is a value a hook decoded: handed over as decoded.
                return into(value)

            return walk, rekey  # rekey: for the iterative twin too

        def into(value: Any) -> Any:
            """Walk the attributes of an object a hook decoded, in place: a snapshot it
            holds becomes a future, and nothing of it is copied (an ORM node stays that
            node, and containers inside it stay its own). An opaque one is not entered."""
            if opaque and isinstance(value, opaque):
                return value
            attrs = _attributes_of(value)
            if attrs is None:
                return value
            memo[id(value)] = value
            for name, child in list(attrs.items()):
                if type(child) in atoms:
                    continue
                new = keep(child)
                if new is not child:
                    attrs[name] = new
            # Never marked verified: slots are not walked, so the loop check still looks.
            return value

        keep, rekey_keep = make_walk(False)
        walk, rekey_copy = make_walk(True) if copy else (keep, rekey_keep)

        # The iterative twin, for what lies deeper than the stack allows; it stays in this
        # closure beside walk() for the same fast lookups. Each container is a generator
        # that yields its children one by one and is sent back what each became, so the
        # walk keeps its own stack on the heap. The rules are walk()'s, line for line;
        # only the recursion is replaced.

        def leaf(value: Any) -> tuple[bool, Any]:
            """:return: (True, what ``value`` becomes) unless it is a container to enter"""
            if isinstance(value, atom_types):
                return True, value
            key = id(value)
            if key in memo:
                return True, memo[key]
            if isinstance(value, FutureSnapshot):
                future = made.get(key)
                if future is not None:  # made by the recursive attempt: stays shared
                    memo[key] = future
                    return True, future
                return True, future_of(value)
            if isinstance(value, (dict, list, Frozendict, tuple, set, frozenset)):
                return False, None
            if _attributes_of(value) is not None and not (opaque and isinstance(value, opaque)):
                return False, None
            return True, value

        def visit_attributes(value: Any, target: Any, copy: bool) -> Any:  # attributes()'s twin
            attrs = _attributes_of(target)
            if not attrs:
                return target
            changes = {}
            for name, child in list(attrs.items()):
                if type(child) not in atoms:
                    new = yield child, copy
                    if new is not child:
                        changes[name] = new
            if changes:
                if copy and target is value:
                    target = memo[id(value)] = _copy_of(value)
                target.__dict__.update(changes)
            return target

        def visit(value: Any, copy: bool) -> Any:  # a generator: yields (child, copy), is
            key = id(value)  # sent back what each child became
            plain = True
            if isinstance(value, (tuple, set, frozenset)) and type(value) not in (
                tuple,
                set,
                frozenset,
            ):  # a subclass (a namedtuple...): its items, then its attributes
                memo[key] = value
                items = []
                for child in list(value):
                    items.append((yield child, copy))
                result = value
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    result = memo[key] = _rebuilt(value, items, copy)
                return (yield from visit_attributes(value, result, copy))
            if not (
                isinstance(value, (dict, list, Frozendict))
                or type(value) in (set, tuple, frozenset)
            ):
                attrs = _attributes_of(value)
                assert attrs is not None  # leaf() let only such objects in
                memo[key] = value
                for name, child in list(attrs.items()):
                    if type(child) in atoms:
                        continue
                    new = yield child, False  # an object's insides are never copied
                    if new is not child:
                        attrs[name] = new
                return value
            if isinstance(value, dict):
                if audit is not None and META in value:
                    audit(value)
                target = value
                kept = copy and value.__class__ not in plain_dicts
                if copy and not kept:
                    target = value.__class__.__new__(value.__class__)
                    dict.update(target, value)
                memo[key] = target
                for k, child in list(value.items()):
                    if type(child) in atoms:
                        continue
                    new = yield child, copy
                    if plain and id(new) not in verified:
                        plain = False
                    if new is not child:
                        if kept and target is value:
                            target = memo[key] = _copy_kept(value)
                        dict.__setitem__(target, k, new)
                target, plain_keys = (rekey_copy if copy else rekey_keep)(value, target)
                plain = plain and plain_keys
                if value.__class__ not in plain_dicts:
                    plain = plain and not _attributes_of(target)
                    target = yield from visit_attributes(value, target, copy)
                if plain:
                    verified.add(id(target))
                return target
            if isinstance(value, list):
                exact = value.__class__ is list
                target_list = list(value) if copy and exact else value
                kept = copy and not exact
                memo[key] = target_list
                for i, child in enumerate(list(value)):
                    if type(child) in atoms:
                        continue
                    new = yield child, copy
                    if plain and id(new) not in verified:
                        plain = False
                    if new is not child:
                        if kept and target_list is value:
                            target_list = memo[key] = _copy_kept(value)
                        list.__setitem__(target_list, i, new)
                if not exact:
                    plain = plain and not _attributes_of(target_list)
                    target_list = yield from visit_attributes(value, target_list, copy)
                if plain:
                    verified.add(id(target_list))
                return target_list
            if type(value) is set:
                target_set: set[Any] = set() if copy else value
                memo[key] = target_set
                items = []
                for child in list(value):
                    items.append((yield child, copy))
                if copy or any(a is not b for a, b in zip(items, value, strict=True)):
                    target_set.clear()
                    target_set.update(items)
                if all(map(ok, items)):
                    verified.add(id(target_set))
                return target_set
            if type(value) in (tuple, frozenset):
                items = []
                for child in value:
                    items.append((yield child, copy))
                rebuilt = value
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    rebuilt = type(value)(items)
                memo[key] = rebuilt
                if all(map(ok, items)):
                    verified.add(id(rebuilt))
                return rebuilt
            walked = {}
            for k, child in cast(Frozendict, value).items():
                walked[k] = yield child, copy
            memo[key] = frozen = type(value)(walked)
            if all(map(ok, walked.values())):
                verified.add(id(frozen))
            return frozen

        made: dict[int, asyncio.Future[Any]] = {}

        def run(tree: Any) -> Any:
            try:
                return walk(tree)
            except RecursionError:
                pass  # deeper than this thread's stack: start over, iteratively
            # What the recursive attempt left is unreliable: containers half done, and
            # (without copy) objects it replaced in place freed, their ids free for reuse.
            # Only its futures are kept, by snapshot: a snapshot still in the tree was
            # alive all along, so its id is its own; the others are never met again.
            made.update(
                (key, done)
                for key, done in memo.items()
                if isinstance(done, asyncio.Future) and id(done) in verified
            )
            memo.clear()
            verified.clear()
            if isinstance(tree, (*atom_types, FutureSnapshot)):
                return walk(tree)
            return deep(tree)

        def deep(root: Any) -> Any:
            stack: list[Any] = []
            current = visit(root, copy)
            sent: Any = None
            while True:
                try:
                    child, copying = current.send(sent)
                except StopIteration as stop:
                    if not stack:
                        return stop.value
                    current, sent = stack.pop(), stop.value
                    continue
                done, sent = leaf(child)
                if not done:
                    stack.append(current)
                    current = visit(child, copying)

        return run


def _rebind(
    bundle: Any,
    loop: asyncio.AbstractEventLoop,
    *,
    copy: bool,
    registry: HookRegistry | None,
    loader: loaders.ObjectLoader | None = None,
    opaque: tuple[type, ...] = (),
) -> tuple[Any, _Rebind]:
    """Audit ``bundle`` and make its snapshots futures on ``loop``: the first half of a load.

    :param registry: audit against this allow-list (``None``: trusted, no audit)
    :param loader: the ``ObjectLoader`` the load resolves class names with
    :param opaque: types the walk hands over without entering them
    :raises UnsafeCheckpointError: naming the path of the first name refused
    :return: the rebound tree and the walk (whose memo keeps what it verified alive)
    """
    resolve = _resolver(registry, loader) if registry is not None else None
    walk = _Rebind(loop, copy, registry, resolve, opaque)
    try:
        return walk.run(bundle), walk
    except LoopAwarePersistError:
        # Futures made so far are dropped: restored failures count as observed, so
        # asyncio logs nothing for them.
        if registry is not None:
            audit_bundle(bundle, registry, loader=loader)  # the same refusal, naming its path
        raise


def _check_unbundle_arguments(bundle: Any, ctx: Any, registry: Any, trusted: Any) -> None:
    call = "unbundle()"
    check_flag(trusted, call=call, argument="trusted")
    check_instance(
        bundle,
        dict,
        call=call,
        argument="bundle",
        wanted="a plumpy Bundle (a dict)",
        hint="Pass what load_checkpoint() or plumpy.Bundle(process) returned.",
    )
    if ctx is not None:
        check_instance(
            ctx,
            LoopContext,
            call=call,
            argument="ctx",
            wanted="a LoopContext or None",
            hint="Wrap the target loop: LoopContext(loop=my_loop).",
        )
    check_registry(registry, call=call)


#: What a load raises that says nothing of the bundle, passed on unchanged for callers that
#: catch it by type: a process's ``init`` subscribes it to the communicator, and kiwipy
#: refuses a second subscriber for a pid this worker already runs. AiiDA's
#: ``ProcessLauncher._continue`` catches ``DuplicateSubscriberIdentifier`` to drop such a
#: duplicate task (one RabbitMQ redelivered); as a ``CorruptCheckpointError`` it would mark
#: the running process excepted instead.
_NOT_THE_BUNDLE: tuple[type[BaseException], ...] = (
    kiwipy.DuplicateSubscriberIdentifier,
    kiwipy.CommunicatorClosed,
)


def unbundle(
    bundle: Any,
    ctx: LoopContext | None = None,
    *,
    registry: HookRegistry | None = None,
    trusted: bool = False,
    copy: bool = True,
    **extra: Any,
) -> plumpy.Savable:
    """Re-materialise a bundle on ``ctx.loop``, whole graph, then audit it.

    Works from any caller position: a thread with another loop current, a worker
    thread with no loop, a coroutine running on another loop, or the target loop.

    :param bundle: a decoded plumpy bundle (``FutureSnapshot`` values become futures)
    :param ctx: the target loop (default: the loop running in this thread)
    :param registry: whose allow-list decides what may be revived (default: the one a
        :class:`LoopAwareBundle` was decoded with, else ``default_registry``)
    :param trusted: skip the allow-list audit and use plumpy's own loader (runs what the
        bundle names: only for bundles you wrote yourself)
    :param copy: load from a copy, leaving ``bundle`` untouched and reusable (``False``
        only for a bundle nobody else holds, e.g. one just decoded). Values a hook
        decoded are never copied: an object's attributes are walked in place (a
        snapshot it holds becomes a future), so a plain bundle holding such an object
        loads once; a :class:`LoopAwareBundle` decodes its record afresh instead.
    :param extra: more entries for plumpy's ``LoadSaveContext`` (``communicator``,
        ``logger``, ``loader``: a plumpy ``ObjectLoader`` that resolves the stored class
        identifiers; what it resolves is still checked against the allow-list)
    :raises NoEventLoopError: if there is no target loop or it is closed
    :raises UnsafeCheckpointError: if the bundle names anything outside the allow-list
    :raises LoopBoundaryError: if a future of the result belongs to another loop
    :raises DecodeError: if plumpy cannot load the bundle
    :raises ArgumentTypeError: if ``bundle`` is not a dict, ``ctx`` not a LoopContext,
        ``registry`` not a HookRegistry or ``trusted`` not a bool
    :return: the loaded object, usually a ``plumpy.Process``
    """
    _check_unbundle_arguments(bundle, ctx, registry, trusted)
    ctx = ctx if ctx is not None else LoopContext()
    if isinstance(bundle, LoopAwareBundle):
        if registry is None:
            registry = bundle._registry
        if copy:
            bundle, copy = bundle._tree_for_load()
    elif registry is None:
        registry = default_registry
    loader = extra.get("loader")
    extra = _safe_extra(extra, registry, trusted)
    loop = ctx.loop
    walks: list[_Rebind] = []

    def load() -> plumpy.Savable:
        # One walk audits, copies and rebinds; it runs where the loop is current, before
        # plumpy sees anything, and whatever it refuses fails the load before any import.
        tree, walk = _rebind(
            bundle,
            loop,
            copy=copy,
            registry=None if trusted else registry,
            loader=loader,
            opaque=registry.opaque,
        )
        walks.append(walk)
        return _plumpy_load(tree, ctx, extra)

    obj = ctx.run(load)
    # What the walk built and found free of futures is not walked again (its memo keeps
    # those containers, and so their ids, alive until this check is done).
    _check_loop_bound(obj, loop, set(walks[0].verified), registry.opaque)
    _note_verified(obj, loop)
    return obj


def load_bound(
    tree: dict[str, Any], ctx: LoopContext, *, registry: HookRegistry, trusted: bool, **extra: Any
) -> plumpy.Savable:
    """Load a tree a decode already audited and bound: the second half of a load, no walk.

    The decode that made ``tree`` (see :mod:`._bound`) checked every name it holds
    against the allow-list and made every snapshot a future on ``ctx.loop``; plumpy
    loads it where that loop is current, and then the futures plumpy itself creates
    without a loop (``_future``, ``_paused``, a ``Waiting`` future, in nested states
    too) are checked, not the tree's plain data again.

    :param tree: the bound tree
    :param ctx: the target loop
    :param registry: whose allow-list plumpy's object loader checks names against
    :param trusted: use plumpy's own loader
    :param extra: more entries for plumpy's ``LoadSaveContext``
    :raises LoopBoundaryError: if a future plumpy made belongs to another loop
    :raises DecodeError: if plumpy cannot load the tree
    :return: the loaded object
    """
    extra = _safe_extra(extra, registry, trusted)
    obj = ctx.run(_plumpy_load, tree, ctx, extra)
    _check_built(obj, ctx.loop, registry.opaque)
    _note_verified(obj, ctx.loop)
    return obj


def _safe_extra(extra: dict[str, Any], registry: HookRegistry, trusted: bool) -> dict[str, Any]:
    """``extra`` with the object loader a load resolves names with: one checking them
    against ``registry``'s allow-list, unless ``trusted``."""
    if not trusted:
        # A loader of the caller's (AiiDA's, say) resolves identifiers; ours checks what
        # it resolves, in the audit and again when plumpy asks.
        loader = extra.get("loader")
        given = None if isinstance(loader, loaders.DefaultObjectLoader) else loader
        if not isinstance(given, SafeObjectLoader):
            extra["loader"] = SafeObjectLoader(registry, loader=given)
    return extra


def _plumpy_load(tree: Any, ctx: LoopContext, extra: dict[str, Any]) -> plumpy.Savable:
    try:
        return plumpy.Savable.load(tree, ctx.load_context(**extra))
    except LoopAwarePersistError:
        raise
    except _NOT_THE_BUNDLE:
        raise
    except Exception as error:
        what = tree.get(META, {}).get(META__CLASS_NAME, "?") if isinstance(tree, dict) else "?"
        msg = (
            f"plumpy could not load the checkpoint of {what!r} "
            f"({type(error).__name__}: {error}). The bundle does not match the code "
            "installed here, or it is damaged."
        )
        raise CorruptCheckpointError(msg) from error


def _note_verified(obj: Any, loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(TypeError):  # not weak-referenceable or not hashable
        _VERIFIED[obj] = loop


#: What :func:`unbundle` returned, with the loop it checked the whole graph against.
_VERIFIED: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def verified_on(obj: Any, loop: asyncio.AbstractEventLoop) -> bool:
    """:param obj: a loaded object (a process, usually)
    :param loop: a loop
    :return: whether ``obj`` came out of :func:`unbundle` onto ``loop``, which checked its
        graph then (so a caller that loaded it through a persister need not walk it again)
    """
    try:
        return _VERIFIED.get(obj) is loop
    except TypeError:
        return False


_FIRST_LOAD = threading.Lock()


class LoopAwareBundle(plumpy.Bundle):
    """A ``plumpy.Bundle`` whose own :meth:`unbundle` is loop-safe and allow-list checked.

    plumpy's ``ProcessLauncher`` and AiiDA call ``bundle.unbundle(load_context)``
    themselves; this routes that call through :func:`unbundle`, taking the target
    loop from ``load_context.loop`` (else ``load_context.runner.loop``, else the running
    loop; never a new one).

    It carries the registry it was decoded with (the allow-list and hooks of the
    persister that read it), which :func:`unbundle` uses unless given another, and a
    way to decode its record again: the first load hands plumpy the values the hooks
    decoded (an ORM node stays the stored node), and every later load decodes afresh,
    so two loads never share a mutable value.
    """

    _registry: HookRegistry = default_registry
    _trusted: bool = False
    _redecode: Callable[[], dict[str, Any]] | None = None
    _loaded: bool = False

    @classmethod
    def wrap(
        cls,
        tree: dict[str, Any],
        *,
        registry: HookRegistry,
        trusted: bool,
        redecode: Callable[[], dict[str, Any]] | None = None,
    ) -> LoopAwareBundle:
        """:param tree: a decoded bundle
        :param registry: the allow-list to load with
        :param trusted: whether to skip the allow-list audit
        :param redecode: decodes the same record again, for a second load of this bundle
        :return: the same content as a :class:`LoopAwareBundle`
        """
        bundle = cls.__new__(cls)
        dict.update(bundle, tree)
        bundle._registry = registry
        bundle._trusted = trusted
        bundle._redecode = redecode
        return bundle

    def _tree_for_load(self) -> tuple[Any, bool]:
        """:return: what a load that must leave this bundle reusable walks, and whether
        it must copy it: this bundle the first time, a fresh decode of its record after"""
        if self._redecode is None:
            return self, True
        with _FIRST_LOAD:  # concurrent loads of one bundle cannot both be first
            first, self._loaded = not self._loaded, True
        if first:
            return self, True
        return self._redecode(), False

    def unbundle(self, load_context: plumpy.LoadSaveContext | None = None) -> plumpy.Savable:
        """Load the bundle onto ``load_context.loop`` (else ``load_context.runner.loop``,
        else the running loop).

        :param load_context: plumpy's context; ``loop``, ``runner``, ``communicator``,
            ``logger`` and ``loader`` entries are honoured
        :raises NoEventLoopError: if the context has no loop and none is running
        :raises UnlinkedAwaitableError: if a loaded WorkChain awaits a pending future that
            belongs to no process (see :func:`relink_awaited`)
        :raises ArgumentTypeError: if ``load_context`` is not a ``plumpy.LoadSaveContext``
        :return: the loaded object, every future on the target loop
        """
        if load_context is not None:
            check_instance(
                load_context,
                plumpy.LoadSaveContext,
                call="LoopAwareBundle.unbundle()",
                argument="load_context",
                wanted="a plumpy.LoadSaveContext or None",
                hint="Pass plumpy.LoadSaveContext(loop=loop) to load onto a loop.",
            )
        extra: dict[str, Any] = {}
        loop = None
        if load_context is not None:
            extra = dict(cast(Any, load_context)._values)
            loop = extra.pop("loop", None)
            if loop is None:  # AiiDA's contexts carry a runner, which owns a loop
                loop = getattr(extra.get("runner"), "loop", None)
            if load_context.loader is not None:
                extra["loader"] = load_context.loader
        obj = unbundle(
            self, LoopContext(loop=loop), registry=self._registry, trusted=self._trusted, **extra
        )
        if isinstance(obj, plumpy.Process):
            # ToContext futures: a parent loaded earlier may wait for this one, and a
            # pending future nothing here owns is an error, not a hang.
            note_process(obj)
            try:
                relink_awaited(obj)
            except BaseException:
                obj.close()  # its RPC/broadcast subscriptions, keyed by pid
                raise
        return obj
