"""The ``"pickle"`` codec: fast and general, loaded through a restricted unpickler.

Encoding is ``pickle`` protocol 5 with one addition: every ``asyncio.Future``
and ``concurrent.futures.Future`` is written as the :class:`FutureSnapshot` of
its state, so bundles that hold futures can be saved at all.

Decoding goes through :class:`RestrictedUnpickler`, whose ``find_class`` hands
out only what the registry's allow-list permits for unpickling (value types,
exceptions, enums and what the user allowed) — never a function such as
``os.system`` or ``builtins.exec``. A payload naming anything else raises
:class:`UnsafeCheckpointError` before any of it runs.

``"pickle-unrestricted"`` loads with the plain unpickler. It runs whatever the
checkpoint says: use it only for checkpoints you wrote yourself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copyreg
import datetime as dt
import decimal
import io
import pickle
import sys
import warnings
import zoneinfo
from typing import Any

from plumpy import loaders

from .._allowlist import _stdlib_class
from .._errors import (
    CorruptCheckpointError,
    EncodeError,
    ForeignException,
    LoopAwarePersistError,
    UnsafeCheckpointError,
    UnsafeLoadWarning,
)
from .._hooks import default_registry
from .._named_hooks import _message, exception_slots, set_by_init
from .._registry import HookRegistry
from .._snapshot import FutureSnapshot, snapshot_future
from ._base import check_payload, decode_errors
from ._paths import encode_error, path_nested_deeper
from ._pickle_scan import check_opcodes

__all__ = (
    "ClassRef",
    "PickleCodec",
    "RestrictedUnpickler",
    "UnsafeLoadWarning",
    "configure_registry",
    "make_codec",
    "make_unrestricted_codec",
)

PROTOCOL = 5
# What _resolve_refs never enters (by exact type: a subclass may carry attributes).
_ATOMS = frozenset({str, bytes, int, float, bool, complex, type(None)})
# Value types whose own __reduce__ leaves out the instance dict of a subclass.
_DROPS_STATE = (decimal.Decimal, dt.date, dt.time, dt.timedelta)


def _caller_stacklevel() -> int:
    """:return: the stacklevel of the first frame outside this package (for warnings)"""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("loopaware_persist"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class ClassRef:
    """A class stored as a *value* (``ctx.process_class``, plumpy's listener type).

    Whatever ``find_class`` hands out, a crafted REDUCE can also *call*; so classes
    that are not safe to call (a ``plumpy.Process`` creates and sets an event loop)
    are written as ``ClassRef("module:Name")`` and resolved through the allow-list
    after the payload has been read. A ``ClassRef`` is not callable, so a crafted
    REDUCE on one fails without running anything.

    :param name: ``module:QualName`` of the class
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, *, registry: HookRegistry) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._registry = registry
        self._callable: dict[type, bool] = {}

    # Called only for objects pickle has no fast path for, so plain data costs nothing.
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            # Every class pickle names passes here, the class of each instance included:
            # one a load could not import by that name is refused now, not at the restart.
            if obj is ClassRef or self._callable_on_load(obj):
                self._registry.check_importable(obj, "the class")
                return NotImplemented
            # A class reference (loaded by _resolve_refs): one the allow-list would refuse
            # as a class is refused now too.
            self._registry.check_importable(obj, "the class", "class")
            return ClassRef, (f"{obj.__module__}:{obj.__qualname__}",)
        if isinstance(obj, (asyncio.Future, concurrent.futures.Future)):
            snap = snapshot_future(obj)
            return FutureSnapshot, (snap.status, snap.result, snap.exception, snap.cancel_message)
        if isinstance(obj, BaseException):
            if not self._callable_on_load(type(obj)) or self._registry.unimportable(type(obj)):
                # As msgpack does on load: a class a safe load may not import comes back
                # as the documented stand-in, never by importing it.
                stand_in = ForeignException(
                    f"{type(obj).__module__}:{type(obj).__qualname__}", _message(obj)
                )
                stand_in.__cause__ = obj.__cause__
                stand_in.__context__ = obj.__context__
                stand_in.__suppress_context__ = obj.__suppress_context__
                obj = stand_in
            # pickle's default drops the chain; BaseException.__setstate__ sets these back.
            reduced = obj.__reduce_ex__(PROTOCOL)
            assert isinstance(reduced, tuple)
            state = dict(reduced[2] or {}) if len(reduced) > 2 else {}
            state.update(
                __cause__=obj.__cause__,
                __context__=obj.__context__,
                __suppress_context__=obj.__suppress_context__,
            )
            cls = type(obj)
            if cls.__module__ != "builtins" and reduced[0] is cls and cls is not ForeignException:
                # pickle calls cls(*args) on load, and an __init__ of the user's that takes
                # other arguments than it passed to Exception.__init__ fails there
                # (CPython gh-76877): created as msgpack does, with __new__ and no __init__,
                # args and attributes set back (BaseException.__setstate__ sets each).
                state.update(set_by_init(obj))
                newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # (not in typeshed)
                return (newobj, (cls, *reduced[1]), state, *reduced[3:])
            return (reduced[0], reduced[1], state, *reduced[3:])
        if isinstance(obj, zoneinfo.ZoneInfo):
            # ZoneInfo pickles through getattr(ZoneInfo, "_unpickle"), which a
            # restricted unpickler must refuse; the key alone restores it.
            if obj.key is None or type(obj) is not zoneinfo.ZoneInfo:
                msg = (
                    f"Cannot store {obj!r}: only a ZoneInfo (not a subclass) with a key "
                    "(not read from a file) can be restored. Store its key instead."
                )
                raise EncodeError(msg)
            return zoneinfo.ZoneInfo, (obj.key,)
        if not self._callable_on_load(type(obj)):
            # Its class would be called on load and the restricted unpickler refuses
            # that: fail now, at save time, not at the restart that needs the checkpoint.
            name = f"{type(obj).__module__}:{type(obj).__qualname__}"
            msg = (
                f"The pickle codec cannot store an instance of {name!r}: a safe load would "
                "refuse to construct it. Add its module to allow=[...] or register a hook "
                "and use codec='msgpack'."
            )
            raise EncodeError(msg)
        if type(obj) not in _DROPS_STATE and isinstance(obj, _DROPS_STATE):
            # These types reduce to (cls, args) without the instance dict, so pickle on
            # its own would drop a subclass's attributes; BUILD puts them back.
            reduced = obj.__reduce_ex__(PROTOCOL)
            attributes = obj.__getstate__()
            if attributes and isinstance(reduced, tuple) and len(reduced) == 2:
                return (*reduced, attributes)
        return NotImplemented

    def _callable_on_load(self, cls: type) -> bool:
        known = self._callable.get(cls)
        if known is None:
            try:
                known = self._registry.may_revive(cls, "pickle")
            except Exception:
                known = False
            self._callable[cls] = known
        return known


def _resolve_refs(value: Any, registry: HookRegistry | None, seen: dict[int, Any]) -> Any:
    """Replace every :class:`ClassRef` reachable from a freshly unpickled ``value``.

    Everything here was just created by the unpickler, so mutable containers and
    instance dicts are updated in place; tuples and frozensets are rebuilt.

    :param registry: resolve through this allow-list; ``None`` imports directly (trusted)
    """
    if type(value) is ClassRef:
        if registry is None:
            return loaders.DefaultObjectLoader().load_object(value.name)
        return registry.resolve(value.name, "class")
    if type(value) in _ATOMS or isinstance(value, type):
        return value
    key = id(value)
    if key in seen:
        return seen[key]
    seen[key] = value
    if isinstance(value, dict):
        pairs = [
            (_resolve_refs(k, registry, seen), _resolve_refs(v, registry, seen))
            for k, v in dict.items(value)
        ]
        if any(a is not b for a, b in zip(pairs, dict.items(value), strict=True)):
            # dict's own methods: a subclass's overrides are not ours to call.
            dict.clear(value)
            dict.update(value, pairs)
    elif isinstance(value, list):
        for i, v in enumerate(list.copy(value)):
            list.__setitem__(value, i, _resolve_refs(v, registry, seen))
    elif isinstance(value, (tuple, set, frozenset)):
        items = [_resolve_refs(v, registry, seen) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            if isinstance(value, set):
                set.clear(value)
                set.update(value, items)
            else:
                # The base's __new__, as the 'subclass' layout does: a namedtuple's own
                # __new__ takes its fields one by one.
                base: Any = tuple if isinstance(value, tuple) else frozenset
                rebuilt = base.__new__(type(value), items)
                if getattr(value, "__dict__", None):
                    rebuilt.__dict__.update(value.__dict__)
                seen[key] = value = rebuilt
    elif isinstance(value, FutureSnapshot):
        result = _resolve_refs(value.result, registry, seen)
        # The exception is resolved in place (below); only the result may be rebuilt.
        _resolve_refs(value.exception, registry, seen)
        if result is not value.result:
            rebuilt_snap = FutureSnapshot(
                value.status, result, value.exception, value.cancel_message
            )
            seen[key] = rebuilt_snap
            return rebuilt_snap
    elif isinstance(value, BaseException):
        value.args = _resolve_refs(value.args, registry, seen)
        # Chained exceptions are pickled with the one that holds them.
        for chained in (value.__cause__, value.__context__):
            _resolve_refs(chained, registry, seen)
        # Fields some builtin exceptions keep in C slots, filled from args when created
        # (OSError.strerror...), not in __dict__: resolved where they are.
        for name in exception_slots(value):
            slot = getattr(value, name, None)
            resolved = _resolve_refs(slot, registry, seen)
            if resolved is not slot:
                setattr(value, name, resolved)
    # Instances of subclasses (of dict, str, tuple...) and plain objects: their attributes.
    attributes = getattr(value, "__dict__", None)
    if type(attributes) is dict and attributes:
        _resolve_refs(attributes, registry, seen)
    return value


# Containers protocol 5 builds with opcodes (TUPLE*, EMPTY_SET/ADDITEMS, FROZENSET).
_OPCODE_CONTAINERS = frozenset({"tuple", "set", "frozenset"})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that finds only what the registry's allow-list permits.

    :param file: the file to read from
    :param registry: hooks and allow-list
    """

    def __init__(self, file: io.BytesIO, *, registry: HookRegistry) -> None:
        # No out-of-band buffers: we never write any, and NEXT_BUFFER/READONLY_BUFFER in
        # a crafted payload could otherwise yield memoryviews the registry knows nothing of.
        super().__init__(file, buffers=())
        self._registry = registry
        self.saw_class_refs = False

    def find_class(self, module: str, name: str) -> Any:
        """:raises UnsafeCheckpointError: for anything not allowed; nothing is imported then"""
        if module == ClassRef.__module__ and name == ClassRef.__qualname__:
            self.saw_class_refs = True
            return ClassRef
        if module == "builtins" and name in _OPCODE_CONTAINERS:
            # Protocol 5 writes these with opcodes of their own; called, they would
            # iterate whatever they are given: tuple(range(2**26)) is 40 bytes and 2.5 GiB.
            msg = (
                f"Refusing to load 'builtins:{name}': pickle writes {name}s with opcodes, so "
                "a payload that calls the class is crafted. The record is not loaded."
            )
            raise UnsafeCheckpointError(msg, name=f"builtins:{name}")
        return self._registry.resolve(f"{module}:{name}", "pickle")


class _TrustingUnpickler(pickle.Unpickler):
    """The plain unpickler (it imports whatever a payload names), reading standard-library
    classes under the name another Python version gave them, as the restricted one does.

    pickle names a class by its ``__module__``, which moves between versions
    (``pathlib._local`` on 3.13 only).
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            cls = _stdlib_class(module, name)
            if cls is None:
                raise
            return cls


class PickleCodec:
    """The pickle codec.

    :param registry: the allow-list for loading; ``default_registry`` if not given
    :param restricted: ``False`` loads with the plain unpickler (runs arbitrary code)
    """

    def __init__(self, *, registry: HookRegistry | None = None, restricted: bool = True) -> None:
        self.registry = registry if registry is not None else default_registry
        self.restricted = restricted
        # Both write the same bytes; restriction is a property of loading, so records say "pickle".
        self.name = "pickle"
        if not restricted:
            warnings.warn(
                "codec 'pickle-unrestricted' runs whatever a checkpoint contains when it is "
                "loaded; use it only for checkpoints you wrote yourself.",
                UnsafeLoadWarning,
                stacklevel=_caller_stacklevel(),
            )

    def encode(self, value: Any) -> bytes:
        """:param value: the tree to encode
        :raises EncodeError: naming the path of the first value it cannot store
        :return: the pickle bytes
        """
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, registry=self.registry).dump(value)
        except (
            pickle.PicklingError,
            TypeError,
            AttributeError,
            RecursionError,
            LoopAwarePersistError,
        ) as error:
            if isinstance(error, RecursionError):
                raise _too_deep(value, self.registry) from error
            raise encode_error(value, self.registry, error) from error
        return buffer.getvalue()

    def decode(self, data: bytes) -> Any:
        """:param data: bytes written by :meth:`encode`
        :raises DecodeError: :class:`UnsafeCheckpointError` for anything outside the allow-list,
            :class:`CorruptCheckpointError` for damaged data; never another exception type
        :return: the tree

        Memory stays proportional to ``data`` (see :mod:`._pickle_scan`): the C unpickler
        would otherwise grow its memo or a bytes object to whatever size the payload names.
        """
        check_payload(data, "pickle")
        if type(data) is not bytes:
            data = bytes(data)  # the scan searches it; BytesIO copies it anyway
        stream = io.BytesIO(data)
        with decode_errors("pickle"):
            check_opcodes(data)
            if not self.restricted:
                return _resolve_refs(_TrustingUnpickler(stream).load(), None, {})
            unpickler = RestrictedUnpickler(stream, registry=self.registry)
            value = unpickler.load()
            if unpickler.saw_class_refs:
                value = _resolve_refs(value, self.registry, {})
        if stream.tell() != len(data):
            msg = f"Pickle payload has {len(data) - stream.tell()} bytes after its end (spliced?)."
            raise CorruptCheckpointError(msg)
        return value


def _counts(value: Any) -> bool:
    return True


def _too_deep(value: Any, registry: HookRegistry) -> EncodeError:
    # pickle recurses in C once per level, counted against Python's recursion limit.
    path = path_nested_deeper(value, registry, sys.getrecursionlimit() // 2, _counts)
    msg = (
        f"Values nest too deep for pickle (Python's recursion limit, "
        f"{sys.getrecursionlimit()}) at {path or '<root>'}. Flatten the value, e.g. into "
        "rows; msgpack takes up to 1,000 levels of lists and dicts."
    )
    return EncodeError(msg, path=path)


def configure_registry(registry: HookRegistry) -> None:
    """pickle needs no hooks: its allow-list is the registry's.

    :param registry: the registry to configure
    """
    del registry


def make_codec(*, registry: HookRegistry | None = None) -> PickleCodec:
    """:param registry: the allow-list for loading (default: ``default_registry``)
    :return: a pickle codec that loads through :class:`RestrictedUnpickler`
    """
    return PickleCodec(registry=registry)


def make_unrestricted_codec(*, registry: HookRegistry | None = None) -> PickleCodec:
    """:param registry: unused for loading; kept for a uniform factory signature
    :return: a pickle codec that loads with the plain, unsafe unpickler (warns)
    """
    return PickleCodec(registry=registry, restricted=False)
