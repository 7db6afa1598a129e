"""The loop check: every future of an object graph must belong to the target loop.

:func:`check_loop_bound` is the explicit, whole-graph audit a user can run on any
object; a load (:func:`~loopaware_persist.unbundle`) runs the same walk after plumpy has
loaded, skipping what its own walk of the bundle already verified. Neither walks into
what a loader supplies rather than restores (loops, modules, classes, functions,
loggers, threads, communicators) nor into the types a registry declares *opaque*
(:meth:`HookRegistry.declare_opaque`: AiiDA's ORM and runners). A foreign future is a
:class:`LoopBoundaryError` naming its path, never a hang later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import kiwipy
import plumpy

from ._arguments import check_loop
from ._audit import _ATOM_TYPES, _ATOMS
from ._errors import LoopBoundaryError
from ._hooks import default_registry
from ._registry import HookRegistry, check_registry

__all__ = ("check_loop_bound",)


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


def _attributes_of(value: Any) -> dict[str, Any] | None:
    """:return: the instance ``__dict__`` of an object the load walks into, else ``None``
    (no ``__dict__``, or one of the types a loader supplies rather than restores)"""
    if isinstance(value, (*_SKIP, asyncio.Future)):
        return None
    try:
        attrs = object.__getattribute__(value, "__dict__")  # no __getattr__ of theirs runs
    except AttributeError:
        return None
    return attrs if type(attrs) is dict else None


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


def _path_of(entry: tuple[Any, Any, Any]) -> str:
    parts = []
    while entry[1] is not None:
        kind, key = entry[2]
        parts.append(
            f".{key}" if kind == "attr" else f"<key {key!r}>" if kind == "key" else f"[{key!r}]"
        )
        entry = entry[1]
    return "".join(reversed(parts)).lstrip(".")


def check_loop_bound(
    obj: Any, loop: asyncio.AbstractEventLoop, *, registry: HookRegistry | None = None
) -> None:
    """Audit an object graph: every ``asyncio.Future``/``Task`` in it must belong to ``loop``.

    Walks containers, instance ``__dict__`` and ``__slots__``; it does not descend
    into loops, modules, classes, functions, loggers, threads or communicators
    (which a loader supplies, rather than restores), nor into the types ``registry``
    declares opaque (:meth:`HookRegistry.declare_opaque`: AiiDA's ORM and runners).

    :param obj: the root of the graph (a process, usually)
    :param loop: the loop every future must belong to
    :param registry: whose opaque types to skip (default: ``default_registry``'s)
    :raises LoopBoundaryError: naming the path of each foreign future
    :raises ArgumentTypeError: if ``loop`` is not an event loop or ``registry`` not a
        HookRegistry
    """
    check_loop(loop, call="check_loop_bound()")
    check_registry(registry, call="check_loop_bound()")
    opaque = (registry if registry is not None else default_registry).opaque
    _check_loop_bound(obj, loop, set(), opaque)


_SEQUENCES = frozenset({list, tuple, set, frozenset, collections.deque})


def _attribute_entries(value: Any, entry: Any) -> list[tuple[Any, Any, Any]]:
    """The stack entries of ``value``'s attributes that are not atoms."""
    return [
        (child, entry, ("attr", name))
        for name, child in _attributes(value)
        if type(child) not in _ATOM_TYPES
    ]


def _check_loop_bound(
    obj: Any, loop: asyncio.AbstractEventLoop, seen: set[int], opaque: tuple[type, ...] = ()
) -> None:
    """:func:`check_loop_bound`, not entering any value whose id is in ``seen`` (which it
    extends): what a :class:`_Rebind` walk made or verified; nor any ``opaque`` one."""
    skip = _ATOMS + _SKIP + opaque
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
            if type(value) is not dict and not isinstance(value, plumpy.Bundle):
                stack.extend(_attribute_entries(value, entry))  # a user's subclass
        elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(
                (child, entry, ("item", i))
                for i, child in enumerate(value)
                if type(child) not in atoms
            )
            if type(value) not in _SEQUENCES:  # a user's subclass, a namedtuple
                stack.extend(_attribute_entries(value, entry))
        elif not isinstance(value, skip) and not inspect.isroutine(value):
            stack.extend(
                (child, entry, ("attr", name))
                for name, child in _attributes(value)
                if type(child) not in atoms
            )
    _refuse_foreign(foreign, loop)


def _check_built(obj: Any, loop: asyncio.AbstractEventLoop, opaque: tuple[type, ...] = ()) -> None:
    """The check after a load whose decode made every snapshot a future on ``loop``: the
    futures plumpy created while loading, without a loop (``Process._future``,
    ``_paused``, ``Waiting._waiting_future``...), all sit in attributes of the savables
    it built (the process, its states, their commands and steppers). Those are walked,
    attribute by attribute, into nested savables only: not the plain data they hold.

    :raises LoopBoundaryError: naming the path of each foreign future
    """
    foreign: list[str] = []
    atoms = _ATOM_TYPES
    stack: list[tuple[Any, Any, Any]] = [(obj, None, None)]
    seen: set[int] = set()
    while stack:
        entry = stack.pop()
        value = entry[0]
        if id(value) in seen:
            continue
        seen.add(id(value))
        for name, child in _own_attributes(value):
            if type(child) in atoms:
                continue
            if isinstance(child, asyncio.Future):
                if child.get_loop() is not loop:
                    foreign.append(_path_of((child, entry, ("attr", name))))
            elif isinstance(child, _BUILT) and not isinstance(child, opaque):
                stack.append((child, entry, ("attr", name)))
    _refuse_foreign(foreign, loop)


def _own_attributes(value: Any) -> Iterable[tuple[str, Any]]:
    """``value``'s attributes as :func:`_attributes` lists them; for a class whose
    instances keep them all in ``__dict__`` (plumpy's), that dict's items, no walk of the
    class's bases for ``__slots__``."""
    cls = type(value)
    if cls not in _DICT_ONLY:
        if _has_slots(cls):
            return _attributes(value)
        _DICT_ONLY.add(cls)
    try:
        attrs = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return ()
    return attrs.items() if type(attrs) is dict else _attributes(value)


# Classes none of whose bases declares __slots__ (beyond __dict__/__weakref__): their
# instances keep every attribute in __dict__. Weak: AiiDA makes process classes on the fly.
_DICT_ONLY: weakref.WeakSet[type] = weakref.WeakSet()


def _has_slots(cls: type) -> bool:
    for klass in cls.__mro__:
        slots = getattr(klass, "__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__"):
                return True
    return False


#: What plumpy builds while loading, and holds its loop-less futures: savables and states.
_BUILT = (plumpy.persistence.Savable, plumpy.base.state_machine.State)


def _refuse_foreign(foreign: list[str], loop: asyncio.AbstractEventLoop) -> None:
    if foreign:
        where = ", ".join(sorted(foreign)[:10]) + (" ..." if len(foreign) > 10 else "")
        msg = (
            f"{len(foreign)} future(s) in the restored graph belong to another event loop than "
            f"{loop!r}: {where}. Awaiting them from the target loop would fail or hang. Restore "
            "through loopaware_persist.unbundle(bundle, LoopContext(loop=...)) so every future "
            "is created on the target loop."
        )
        raise LoopBoundaryError(msg, paths=sorted(foreign))
