"""Whole-graph loading: audit a bundle, load it where the target loop is current, audit the result.

:func:`unbundle` is the one road from a stored bundle to live objects:

1. **Audit** the bundle as data, before plumpy sees it: every ``!!meta``
   class name, object loader and method name, and the YAML that plumpy's
   ``Excepted`` state reads with the *unsafe* ``yaml.Loader``, must name only
   what the allow-list permits. Nothing is imported that is not allowed.
2. **Load** through :meth:`LoopContext.run`, so plumpy's own loop-less futures
   (``Process._future``, ``Waiting._waiting_future``...) land on the target
   loop; every :class:`FutureSnapshot` in the tree becomes a future there too.
3. **Check** the resulting object graph with :func:`check_loop_bound`: a future
   on any other loop is a :class:`LoopBoundaryError`, never a hang later.

The audit, the copy and the snapshots' rebinding are one walk of the bundle
(:class:`_Rebind`), done where the target loop is current and before plumpy
loads anything; the check then skips the plain-data containers that walk built
and found free of futures, and walks everything plumpy made.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy as pycopy
import datetime as dt
import decimal
import inspect
import logging
import sys
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

import kiwipy
import plumpy
import yaml
from plumpy import loaders
from plumpy.persistence import META, META__CLASS_NAME, META__OBJECT_LOADER, META__TYPES
from plumpy.utils import Frozendict

from ._arguments import check_flag, check_instance, check_loop
from ._errors import (
    CorruptCheckpointError,
    LoopAwarePersistError,
    LoopBoundaryError,
    UnsafeCheckpointError,
)
from ._hooks import default_registry
from ._loop import LoopContext
from ._registry import HookRegistry
from ._snapshot import FutureSnapshot, FutureStatus, _materialise

__all__ = ("LoopAwareBundle", "SafeObjectLoader", "audit_bundle", "check_loop_bound", "unbundle")

# Values that can neither be nor hold a future (immutable, no references out): the
# walks below never descend into them. Checked by exact type on the hot paths.
_ATOMS = (
    type(None), bool, int, float, complex, str, bytes, bytearray,
    uuid.UUID, dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal,
)  # fmt: skip


class SafeObjectLoader(loaders.ObjectLoader):
    """A plumpy ``ObjectLoader`` that imports only what the allow-list permits.

    :param registry: the registry whose allow-list decides
    """

    def __init__(self, registry: HookRegistry) -> None:
        self._registry = registry

    def load_object(self, identifier: str) -> Any:
        """:raises UnsafeCheckpointError: if ``identifier`` is not allowed"""
        return self._registry.resolve(identifier, "class")

    def identify_object(self, obj: Any) -> str:
        """:return: the ``module:Name`` plumpy stores for ``obj``"""
        return f"{obj.__module__}:{obj.__name__}"


# region audit


def _yaml_python_name(tag: str) -> str | None:
    for prefix in ("python/object/apply:", "python/object/new:", "python/object:", "python/name:"):
        if tag.startswith("tag:yaml.org,2002:" + prefix):
            return tag[len("tag:yaml.org,2002:" + prefix) :]
    return None


_YAML_PLAIN = {
    "tag:yaml.org,2002:" + t
    for t in (
        "str", "int", "float", "bool", "null", "seq", "map", "binary", "timestamp", "set",
        "omap", "pairs", "merge", "value", "python/none", "python/bool", "python/str",
        "python/unicode", "python/bytes", "python/int", "python/long", "python/float",
        "python/complex", "python/list", "python/tuple", "python/dict",
    )
} | {"!uuid", "!plumpy:Bundle"}  # fmt: skip


def _audit_yaml(text: Any, registry: HookRegistry, path: str) -> None:
    """Refuse YAML that would make ``yaml.Loader`` import or call anything not allowed."""
    if not isinstance(text, str):
        msg = f"Excepted state at {path} stores {type(text).__name__}, not YAML text."
        raise CorruptCheckpointError(msg)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        msg = f"Excepted state at {path} holds unreadable YAML ({error})."
        raise CorruptCheckpointError(msg) from error
    # Aliases make the node graph a DAG (or a cycle, "&a [*a]"): visit each node once,
    # so neither a self-reference nor "billion laughs" can stall the audit.
    stack = [root] if root is not None else []
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        tag = node.tag
        if tag not in _YAML_PLAIN:
            name = _yaml_python_name(tag)
            if name is None or "." not in name:
                msg = (
                    f"Excepted state at {path} holds YAML tag {tag!r}, which plumpy's unsafe "
                    "YAML loader would act on. Refused; nothing was run."
                )
                raise UnsafeCheckpointError(msg, name=tag)
            module, _, qualname = name.rpartition(".")
            registry.resolve(f"{module}:{qualname}", "pickle")
        if isinstance(node.value, list):
            for item in node.value:
                stack.extend(item if isinstance(item, tuple) else (item,))


def _check_method(value: Any, owner: type | None, path: str, what: str) -> None:
    """A name plumpy ``getattr``s (or even imports) on load must be a method of ``owner``."""
    if (
        not isinstance(value, str)
        or not value.isidentifier()
        or value.startswith("__")
        or (owner is not None and not callable(getattr(owner, value, None)))
    ):
        where = f" of {owner.__qualname__}" if owner is not None else ""
        msg = f"{what} at {path} is {value!r}, not a plain method name{where}. Refused."
        raise UnsafeCheckpointError(msg, name=str(value))


# Fields in which plumpy stores a *method* by name and getattr()s it back on load:
# (state class, key, owner) where owner "process" is the root process class and
# "self" the class of the savable holding the field. Continue.continue_fn is worse:
# plumpy first tries utils.load_function(name), which imports any dotted name.
_METHOD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("plumpy.process_states:Created", "run_fn", "process"),
    ("plumpy.process_states:Running", "run_fn", "process"),
    ("plumpy.process_states:Waiting", "DONE_CALLBACK", "process"),
    ("plumpy.process_states:Continue", "continue_fn", "process"),
    ("plumpy.workchains:_FunctionStepper", "_fn", "process"),
)


def _method_fields(cls: type) -> list[tuple[str, str]]:
    found = []
    for owner_name, key, owner in _METHOD_FIELDS:
        module, _, qualname = owner_name.partition(":")
        base = getattr(sys.modules.get(module), qualname, None)
        if isinstance(base, type) and issubclass(cls, base):
            found.append((key, owner))
    return found


def _audit_savable(
    state: dict[Any, Any], registry: HookRegistry, path: str, root: list[type]
) -> None:
    meta = state[META]
    if not isinstance(meta, dict):
        msg = f"'!!meta' at {path} is {type(meta).__name__}, not a mapping."
        raise CorruptCheckpointError(msg)
    if META__OBJECT_LOADER in meta:
        registry.resolve(str(meta[META__OBJECT_LOADER]), "class")
    if META__CLASS_NAME not in meta:
        return
    cls = registry.resolve(str(meta[META__CLASS_NAME]), "savable")
    if not root:
        root.append(cls)  # the first savable met is the process being loaded
    process_cls = root[0]
    for member, kind in (meta.get(META__TYPES) or {}).items():
        if kind == "m":  # plumpy stores bound methods by name and getattr()s them back
            _check_method(state.get(member), cls, f"{path}[{member!r}]", "Method name")
    for key, owner in _method_fields(cls):
        if key in state or key == "run_fn":
            target = process_cls if owner == "process" else cls
            _check_method(state.get(key), target, f"{path}.{key}", f"{cls.__name__}.{key}")
    if issubclass(cls, plumpy.process_states.Excepted):
        _audit_yaml(state.get(plumpy.process_states.Excepted.EXC_VALUE), registry, path)


def audit_bundle(bundle: Any, registry: HookRegistry = default_registry) -> None:
    """Check, as data, that loading ``bundle`` imports and runs only allowed code.

    :param bundle: a decoded bundle
    :param registry: whose allow-list decides
    :raises UnsafeCheckpointError: naming the first class, loader, method or YAML tag refused
    :raises CorruptCheckpointError: if plumpy's metadata is malformed
    """
    # Entries are (value, parent entry, key); a path string is built only for the
    # savables audited, and atoms are filtered by exact type before being pushed.
    atoms = _ATOM_TYPES
    stack: list[tuple[Any, Any, Any]] = [(bundle, None, None)]
    seen: set[int] = set()  # pickle keeps shared references and cycles
    root: list[type] = []
    while stack:
        entry = stack.pop()
        value = entry[0]
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            if META in value:
                _audit_savable(value, registry, _bundle_path(entry) or "<root>", root)
            children = [
                (child, entry, key) for key, child in value.items() if type(child) not in atoms
            ]
            # Depth-first in key order, so the root's own '!!meta' is met first.
            stack.extend(reversed(children))
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(
                (child, entry, i) for i, child in enumerate(value) if type(child) not in atoms
            )


def _bundle_path(entry: tuple[Any, Any, Any]) -> str:
    parts = []
    while entry[1] is not None:
        key = entry[2]
        parts.append(
            f".{key}" if isinstance(key, str) and isinstance(entry[1][0], dict) else f"[{key!r}]"
        )
        entry = entry[1]
    return "".join(reversed(parts)).lstrip(".")


# endregion

# region rebinding and the graph check


class _Rebind:
    """One walk of a bundle: audit it, copy it (or not), and make its snapshots futures.

    :attr:`run` returns the tree with every :class:`FutureSnapshot` replaced by a
    future on ``loop``. With ``copy`` every container is copied, so two loads of one
    bundle share no mutable state (plumpy assigns loaded values by reference); without
    it the tree (private and fresh from a decode) is updated in place. Either way the
    memo keeps shared references shared (one snapshot stored twice becomes one future)
    and makes cycles safe.

    With a ``registry``, each savable's ``!!meta`` is audited as the walk meets it,
    depth-first in key order as :func:`audit_bundle` does, so the bundle is walked once
    rather than twice. The walk records in :attr:`verified` the ids of the futures it
    made (on ``loop``, by construction) and of the containers it built or kept whose
    whole subtree it walked and found to hold nothing else but atoms: what
    :func:`check_loop_bound` need not walk again. The memo keeps all of them alive, so
    their ids stay theirs while this object lives.

    :param loop: the loop futures are created on
    :param copy: copy every container
    :param registry: audit against this allow-list (``None``: trusted, no audit)
    """

    __slots__ = ("memo", "run", "verified")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, copy: bool, registry: HookRegistry | None
    ) -> None:
        self.memo: dict[int, Any] = {}
        self.verified: set[int] = set()
        #: ``run(tree)``: the tree, rebound
        self.run = self._walker(loop, copy, registry)

    def _walker(  # one closure, so the recursion pays no attribute lookups
        self, loop: asyncio.AbstractEventLoop, copy: bool, registry: HookRegistry | None
    ) -> Callable[[Any], Any]:
        memo, verified = self.memo, self.verified
        atoms, atom_types = _ATOM_TYPES, _ATOMS
        create, finished = loop.create_future, FutureStatus.FINISHED
        root: list[type] = []

        def ok(item: Any) -> bool:
            return type(item) in atoms or id(item) in verified

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
                if registry is not None and META in value:
                    _audit_savable(value, registry, "<bundle>", root)
                target = value
                if copy:
                    target = value.__class__.__new__(value.__class__)
                    dict.update(target, value)
                memo[key] = target
                for k, child in value.items():
                    if type(child) in atoms:
                        continue
                    new = walk(child)
                    if plain and id(new) not in verified:
                        plain = False
                    if new is not child or copy:
                        dict.__setitem__(target, k, new)
                if plain:
                    verified.add(id(target))
                return target
            if type(value) is list:
                target_list = list(value) if copy else value
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
            if copy:
                try:
                    memo[key] = duplicate = pycopy.deepcopy(value, memo)
                except Exception:
                    memo[key] = value
                    return value
                return duplicate
            return value

        return walk


_SKIP = (
    asyncio.AbstractEventLoop,
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    logging.Logger,
    logging.LoggerAdapter,
    threading.Thread,
    kiwipy.Communicator,
    weakref.ref,
    weakref.WeakKeyDictionary,
    weakref.WeakValueDictionary,
    asyncio.Handle,
)


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    with contextlib.suppress(TypeError):  # no __dict__
        yield from vars(obj).items()
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                yield slot, object.__getattribute__(obj, slot)
            except AttributeError:
                continue


_ATOM_TYPES = frozenset(_ATOMS)


def _path_of(entry: tuple[Any, Any, Any]) -> str:
    parts = []
    while entry[1] is not None:
        kind, key = entry[2]
        parts.append(
            f".{key}" if kind == "attr" else f"<key {key!r}>" if kind == "key" else f"[{key!r}]"
        )
        entry = entry[1]
    return "".join(reversed(parts)).lstrip(".")


def check_loop_bound(obj: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Audit an object graph: every ``asyncio.Future``/``Task`` in it must belong to ``loop``.

    Walks containers, instance ``__dict__`` and ``__slots__``; it does not descend
    into loops, modules, classes, functions, loggers, threads or communicators
    (which a loader supplies, rather than restores).

    :param obj: the root of the graph (a process, usually)
    :param loop: the loop every future must belong to
    :raises LoopBoundaryError: naming the path of each foreign future
    :raises ArgumentTypeError: if ``loop`` is not an event loop
    """
    check_loop(loop, call="check_loop_bound()")
    _check_loop_bound(obj, loop, set())


def _check_loop_bound(obj: Any, loop: asyncio.AbstractEventLoop, seen: set[int]) -> None:
    """:func:`check_loop_bound`, not entering any value whose id is in ``seen`` (which it
    extends): what a :class:`_Rebind` walk made or verified."""
    # Paths are built only for containers walked into and for culprits: each stack
    # entry holds (value, parent entry, key), and atoms are filtered out by exact type
    # before they are pushed, so a context of a million floats costs one type check each.
    foreign: list[str] = []
    atoms = _ATOM_TYPES
    stack: list[tuple[Any, Any, Any]] = [(obj, None, None)]
    while stack:
        entry = stack.pop()
        value = entry[0]
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, asyncio.Future):
            if value.get_loop() is not loop:
                foreign.append(_path_of(entry) or "<root>")
            continue
        if isinstance(value, dict):
            for key, child in value.items():
                if type(key) not in atoms:
                    stack.append((key, entry, ("key", key)))
                if type(child) not in atoms:
                    stack.append((child, entry, ("item", key)))
        elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(
                (child, entry, ("item", i))
                for i, child in enumerate(value)
                if type(child) not in atoms
            )
        elif not isinstance(value, _ATOMS + _SKIP) and not inspect.isroutine(value):
            stack.extend(
                (child, entry, ("attr", name))
                for name, child in _attributes(value)
                if type(child) not in atoms
            )
    if foreign:
        where = ", ".join(sorted(foreign)[:10]) + (" ..." if len(foreign) > 10 else "")
        msg = (
            f"{len(foreign)} future(s) in the restored graph belong to another event loop than "
            f"{loop!r}: {where}. Awaiting them from the target loop would fail or hang. Restore "
            "through loopaware_persist.unbundle(bundle, LoopContext(loop=...)) so every future "
            "is created on the target loop."
        )
        raise LoopBoundaryError(msg, paths=sorted(foreign))


# endregion


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
    if registry is not None:
        check_instance(
            registry,
            HookRegistry,
            call=call,
            argument="registry",
            wanted="a HookRegistry or None",
            hint="Pass default_registry.copy() with your hooks, or None.",
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
    :param registry: whose allow-list decides what may be revived (default registry)
    :param trusted: skip the allow-list audit and use plumpy's own loader (runs what the
        bundle names: only for bundles you wrote yourself)
    :param copy: load from a copy, leaving ``bundle`` untouched and reusable (``False``
        only for a bundle nobody else holds, e.g. one just decoded)
    :param extra: more entries for plumpy's ``LoadSaveContext`` (``communicator``, ``logger``)
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
    registry = registry if registry is not None else default_registry
    if not trusted:
        extra.setdefault("loader", SafeObjectLoader(registry))
    loop = ctx.loop
    # One walk audits, copies and rebinds; it runs where the loop is current, before
    # plumpy sees anything, and whatever it refuses fails the load before any import.
    walk = _Rebind(loop, copy, None if trusted else registry)

    def load() -> plumpy.Savable:
        try:
            tree = walk.run(bundle)
        except LoopAwarePersistError:
            # Futures made so far are dropped: restored failures count as observed, so
            # asyncio logs nothing for them.
            if not trusted:
                audit_bundle(bundle, registry)  # the same refusal, naming its path
            raise
        try:
            return plumpy.Savable.load(tree, ctx.load_context(**extra))
        except LoopAwarePersistError:
            raise
        except Exception as error:
            what = tree.get(META, {}).get(META__CLASS_NAME, "?") if isinstance(tree, dict) else "?"
            msg = (
                f"plumpy could not load the checkpoint of {what!r} "
                f"({type(error).__name__}: {error}). The bundle does not match the code "
                "installed here, or it is damaged."
            )
            raise CorruptCheckpointError(msg) from error

    obj = ctx.run(load)
    # What the walk built and found free of futures is not walked again (its memo keeps
    # those containers, and so their ids, alive until this check is done).
    _check_loop_bound(obj, loop, set(walk.verified))
    with contextlib.suppress(TypeError):  # not weak-referenceable or not hashable
        _VERIFIED[obj] = loop
    return obj


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


class LoopAwareBundle(plumpy.Bundle):
    """A ``plumpy.Bundle`` whose own :meth:`unbundle` is loop-safe and allow-list checked.

    plumpy's ``ProcessLauncher`` and AiiDA call ``bundle.unbundle(load_context)``
    themselves; this routes that call through :func:`unbundle`, taking the target
    loop from ``load_context.loop`` (or the running loop; never a new one).
    """

    _registry: HookRegistry = default_registry
    _trusted: bool = False

    @classmethod
    def wrap(
        cls, tree: dict[str, Any], *, registry: HookRegistry, trusted: bool
    ) -> LoopAwareBundle:
        """:param tree: a decoded bundle
        :param registry: the allow-list to load with
        :param trusted: whether to skip the allow-list audit
        :return: the same content as a :class:`LoopAwareBundle`
        """
        bundle = cls.__new__(cls)
        dict.update(bundle, tree)
        bundle._registry = registry
        bundle._trusted = trusted
        return bundle

    def unbundle(self, load_context: plumpy.LoadSaveContext | None = None) -> plumpy.Savable:
        """Load the bundle onto ``load_context.loop`` (or the running loop).

        :param load_context: plumpy's context; ``loop``, ``communicator``, ``logger`` and
            ``loader`` entries are honoured
        :raises NoEventLoopError: if the context has no loop and none is running
        :return: the loaded object, every future on the target loop
        """
        extra: dict[str, Any] = {}
        loop = None
        if load_context is not None:
            extra = dict(cast(Any, load_context)._values)
            loop = extra.pop("loop", None)
            if load_context.loader is not None and not isinstance(
                load_context.loader, loaders.DefaultObjectLoader
            ):
                extra["loader"] = load_context.loader
        return unbundle(
            self, LoopContext(loop=loop), registry=self._registry, trusted=self._trusted, **extra
        )
