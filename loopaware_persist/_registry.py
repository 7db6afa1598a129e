"""Type tags and the allow-list: what a checkpoint may contain and what a load may revive.

A :class:`HookRegistry` maps Python types to stable string tags, each with an
``encode`` hook (value -> list of fields) and a ``decode`` hook (fields -> value).
Codecs consult it for every value they cannot write natively. Lookup follows
cattrs' ``Converter``: exact class and MRO through :func:`functools.singledispatch`,
then predicate hooks newest first, memoised per class, the memo cleared on every
registration. Unlike cattrs, an exception raised by a predicate propagates.

The registry also owns the *allow-list*: the only modules and classes a safe load
may import. Class names found in a checkpoint (``module:qualname``) are resolved
through :meth:`HookRegistry.resolve`, which refuses anything not allowed with an
:class:`UnsafeCheckpointError` *before* importing it.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import enum
import functools
import importlib
import pathlib
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Literal, TypeVar

import attrs
from plumpy.process_listener import ProcessListener

from ._arguments import check_allow, check_instance, describe
from ._errors import ArgumentTypeError, EncodeError, UnknownTagError, UnsafeCheckpointError

__all__ = ("Hook", "HookRegistry", "check_registry", "class_name", "solid_base")

T = TypeVar("T")
Kind = Literal["class", "exception", "enum", "savable", "object", "pickle"]

#: Packages (with their submodules) whose classes of the kinds in ``_LIBRARY_KINDS`` a
#: load may revive by default.
DEFAULT_MODULES: tuple[str, ...] = ("plumpy", "kiwipy")
#: This package's own modules a load may import by default, exactly (not their
#: submodules). Checkpoints and messages name this package's classes by the public
#: module (``loopaware_persist:FutureSnapshot``, the errors); the demo's and benchmark's
#: process classes in ``loopaware_persist._demo``/``._bench`` must not be launchable by a
#: task message to any worker, so those are allowed only by the commands that run them.
OWN_MODULES: frozenset[str] = frozenset({"loopaware_persist"})
# For the library modules above, reviving is limited to inert kinds: a class
# reference, an exception, an enum member, a Savable (which plumpy rebuilds
# through recreate_from) or a type with a hook. Arbitrary plumpy objects such as
# PicklePersister have side effects when constructed, so they need an explicit allow.
_LIBRARY_KINDS = frozenset({"class", "exception", "enum", "savable"})
# Standard-library modules whose value types have hooks; importing them is inert. Named
# by the module objects, and their classes looked up through them (_stdlib_class): the
# submodule that defines a class is an implementation detail that moves between Python
# versions (pathlib.PurePosixPath is pathlib._local.PurePosixPath on 3.13).
_STDLIB_HOMES: dict[str, ModuleType] = {
    module.__name__: module for module in (collections, datetime, decimal, pathlib, uuid, zoneinfo)
}

# Builtins a checkpoint may name: value types and exceptions, never callables
# such as eval, exec, getattr or __import__.
_SAFE_BUILTINS = frozenset(
    {
        "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int",
        "list", "range", "set", "slice", "str", "tuple",
    }
)  # fmt: skip


# What unpickling may *call* from builtins. Containers and bytes have their own
# opcodes in protocol 5; allowing bytes/bytearray/list would let a 30-byte payload
# allocate gigabytes (bytearray(10**10)).
_PICKLE_BUILTINS = frozenset({"complex", "range", "slice"})
# Library classes that are inert to construct and appear in every process bundle
# (EventHelper stores its listener type): naming them directly spares the pickle
# codec a ClassRef and the walk that resolves it after loading.
_PICKLE_LIBRARY: frozenset[type] = frozenset({ProcessListener})


def class_name(cls: type) -> str:
    """:return: the ``module:qualname`` under which ``cls`` is stored"""
    return f"{cls.__module__}:{cls.__qualname__}"


def _stdlib_class(module: str, qualname: str) -> type | None:
    """The standard-library value class stored as ``module:qualname``, on any Python version.

    A class counts if one of the modules in ``_STDLIB_HOMES`` exports it under
    ``qualname`` and defines it (itself or in a submodule). ``module`` may be the public
    module or a private submodule of it (a name such as ``pathlib._local`` that only some
    versions have): the class is looked up in the public module, so a checkpoint written
    on 3.13 (``pathlib._local:PurePosixPath``) loads on 3.11 and one written on 3.11
    (``pathlib:PurePosixPath``) loads on 3.13. Nothing is imported.

    :return: the class, or ``None`` if the name is not one of these
    """
    package, _, rest = module.partition(".")
    home = _STDLIB_HOMES.get(package)
    if home is None or qualname.startswith("_") or "." in qualname:
        return None
    if rest and not all(part.startswith("_") for part in rest.split(".")):
        return None  # a public submodule (collections.abc) is a module of its own
    cls = vars(home).get(qualname)
    if not isinstance(cls, type):
        return None
    defined_in = cls.__module__
    if defined_in != package and not defined_in.startswith(package + "."):
        return None  # re-exported from elsewhere (pathlib imports Sequence)
    return cls


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: allocated at run time (a class statement, or C)
_IMMUTABLETYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: never set on a class statement's class


def _made_by_class_statement(klass: type) -> bool:
    # Python 3.12+ turned many C types into heap types (collections.deque,
    # decimal.Decimal on 3.13...), so HEAPTYPE alone no longer says "Python class";
    # those are created immutable, which a class statement's class never is.
    flags = klass.__flags__
    return bool(flags & _HEAPTYPE) and not flags & _IMMUTABLETYPE


def solid_base(cls: type) -> type:
    """:return: the first class in ``cls.__mro__`` implemented in C (``object``, ``dict``,
    ``datetime.datetime``, ``collections.deque``...): the one whose instance layout holds
    whatever state an instance keeps outside its ``__dict__`` and slots
    """
    for klass in cls.__mro__:
        if not _made_by_class_statement(klass):
            return klass
    return object  # pragma: no cover - every MRO ends in object


def _split(name: str) -> tuple[str, str]:
    if not isinstance(name, str):
        # A class name comes from stored or received data: a wrong type is damage.
        msg = (
            f"Malformed class reference {name!r} in checkpoint: expected a 'module:QualName' "
            "string. The checkpoint is damaged or was crafted."
        )
        raise UnsafeCheckpointError(msg, name=repr(name))
    module, sep, qualname = name.partition(":")
    parts = qualname.split(".")
    if (
        not sep
        or not module
        or not all(p.isidentifier() for p in module.split("."))
        or not all(p.isidentifier() and not p.startswith("__") for p in parts)
    ):
        msg = (
            f"Malformed class reference {name!r} in checkpoint: expected 'module:QualName' "
            "with identifiers only. The checkpoint is damaged or was crafted."
        )
        raise UnsafeCheckpointError(msg, name=name)
    return module, qualname


@attrs.frozen(kw_only=True)
class Hook:
    """How one type is stored.

    :param tag: the stable string stored with the value, e.g. ``"uuid"``
    :param encode: turns a value into a list of fields (themselves encodable)
    :param decode: turns the decoded list of fields back into a value
    :param cls: the class the hook is registered for, or ``None`` for a predicate hook
    :param predicate: for predicate hooks, which classes the hook handles
    :param contextual: internal: hooks that need the registry get it as a second argument
    :param subclasses: whether a class hook also stores instances of subclasses of ``cls``;
        the built-in hooks of value types (``tuple``, ``datetime``...) do not, so that a
        subclass is stored with its own class name, or refused, never narrowed to its base
    """

    tag: str
    encode: Callable[..., list[Any]]
    decode: Callable[..., Any]
    cls: type | None = None
    predicate: Callable[[type], bool] | None = None
    contextual: bool = False
    subclasses: bool = True


def _no_hook(_obj: object) -> Hook | None:
    return None


class HookRegistry:
    """Python type <-> stable tag, with encode/decode hooks and the allow-list.

    :param allow: modules (``"myapp"`` also allows ``"myapp.sub"``), exact class names
        (``"myapp.calcs:Relax"``) or classes that a load may revive, besides plumpy's
        and this package's own
    """

    def __init__(self, *, allow: Iterable[str | type] = ()) -> None:
        self._by_tag: dict[str, Hook] = {}
        self._dispatch = functools.singledispatch(_no_hook)
        self._predicates: list[Hook] = []  # newest first
        self._cache: dict[type, Hook | None] = {}
        self._generation = 0
        self._allowed_modules: set[str] = set()
        self._allowed_names: set[str] = set()
        self._resolved: dict[tuple[str, str], type] = {}
        self._approved: dict[tuple[str, str], type] = {}
        self._hooked_cache: dict[tuple[str, str], type] | None = None
        self._unimportable: dict[type, str | None] = {}
        self._trust_all = False
        self.allow(*check_allow(allow, call="HookRegistry()"))

    # region registration

    def register(
        self,
        cls: type,
        *,
        tag: str,
        encode: Callable[[Any], list[Any]],
        decode: Callable[[list[Any]], Any],
    ) -> None:
        """Store instances of ``cls`` (and, unless overridden, its subclasses) under ``tag``.

        :param cls: the class to handle
        :param tag: a stable string; changing it later breaks old checkpoints
        :param encode: value -> list of fields, each itself encodable
        :param decode: list of decoded fields -> value
        :raises ValueError: if ``tag`` is already registered
        :raises ArgumentTypeError: if ``cls`` is not a class, ``tag`` not a str, or a hook
            not callable
        """
        check_instance(
            cls,
            type,
            call="HookRegistry.register()",
            argument="cls",
            wanted="a class",
            hint="Pass the class whose instances the hook stores, e.g. register(Point, ...).",
        )
        self._add(Hook(tag=tag, encode=encode, decode=decode, cls=cls))

    def register_predicate(
        self,
        predicate: Callable[[type], bool],
        *,
        tag: str,
        encode: Callable[[Any], list[Any]],
        decode: Callable[[list[Any]], Any],
    ) -> None:
        """Store instances of every class for which ``predicate(cls)`` is true under ``tag``.

        Predicate hooks are tried after class hooks, newest first.

        :param predicate: class -> whether this hook handles it; its exceptions propagate
        :param tag: a stable string
        :param encode: value -> list of fields
        :param decode: list of decoded fields -> value
        :raises ValueError: if ``tag`` is already registered
        :raises ArgumentTypeError: if ``predicate`` or a hook is not callable, or ``tag``
            not a str
        """
        self._check_callable(predicate, "register_predicate", "predicate")
        self._add(Hook(tag=tag, encode=encode, decode=decode, predicate=predicate))

    def hook(self, cls: type, *, tag: str) -> Callable[[type[T]], type[T]]:
        """Decorator form: register a class holding ``encode`` and ``decode`` staticmethods.

        .. code-block:: python

            @registry.hook(Point, tag="myapp.point")
            class _PointHook:
                @staticmethod
                def encode(p: Point) -> list[Any]:
                    return [p.x, p.y]

                @staticmethod
                def decode(fields: list[Any]) -> Point:
                    return Point(*fields)

        :param cls: the class to handle
        :param tag: a stable string
        :return: a decorator that registers and returns the decorated holder
        """

        def decorate(holder: type[T]) -> type[T]:
            self.register(cls, tag=tag, encode=holder.encode, decode=holder.decode)  # type: ignore[attr-defined]
            return holder

        return decorate

    @staticmethod
    def _check_callable(value: object, method: str, argument: str) -> None:
        if not callable(value):
            msg = (
                f"HookRegistry.{method}() takes a callable as {argument}, got {describe(value)}. "
                "Pass a function: encode maps a value to a list of fields, decode maps them back."
            )
            raise ArgumentTypeError(msg, argument=argument)

    def _add(self, hook: Hook) -> None:
        method = "register" if hook.cls is not None else "register_predicate"
        check_instance(
            hook.tag,
            str,
            call=f"HookRegistry.{method}()",
            argument="tag",
            wanted="a str",
            hint="Choose a stable string such as 'myapp.point'.",
        )
        self._check_callable(hook.encode, method, "encode")
        self._check_callable(hook.decode, method, "decode")
        if hook.tag in self._by_tag:
            msg = (
                f"Tag {hook.tag!r} is already registered (for {self._by_tag[hook.tag].cls!r}). "
                "Tags are stored in checkpoints and must be unique; choose another one."
            )
            raise ValueError(msg)
        if not hook.tag or not isinstance(hook.tag, str):
            msg = f"A tag must be a non-empty string, not {hook.tag!r}."
            raise ValueError(msg)
        self._by_tag[hook.tag] = hook
        if hook.cls is not None:
            self._dispatch.register(hook.cls, lambda _obj, _hook=hook: _hook)
            self._hooked_cache = None
        else:
            self._predicates.insert(0, hook)
        self._cache.clear()
        self._generation += 1
        self._resolved.clear()
        self._approved.clear()

    def copy(self) -> HookRegistry:
        """:return: an independent registry with the same hooks and allow-list"""
        new = HookRegistry()
        new._allowed_modules = set(self._allowed_modules)
        new._allowed_names = set(self._allowed_names)
        new._trust_all = self._trust_all
        for hook in reversed(self._predicates):
            new._add(hook)
        for hook in self._by_tag.values():
            if hook.cls is not None:
                new._add(hook)
        return new

    # endregion

    # region lookup

    def hook_for(self, cls: type) -> Hook | None:
        """Find the hook that stores instances of ``cls``.

        :param cls: the class of the value
        :return: its hook, or ``None`` if the registry cannot store it
        """
        try:
            return self._cache[cls]
        except KeyError:
            pass
        found: Hook | None = self._dispatch.dispatch(cls)(None)
        if found is not None and not found.subclasses and found.cls is not cls:
            found = None  # a subclass of a value type: stored with its own name below
        if found is None:
            for hook in self._predicates:
                assert hook.predicate is not None
                if hook.predicate(cls):
                    found = hook
                    break
        if found is None and self.may_revive(cls, "object"):
            # Instances of allowed classes: those built on a C type other than object
            # (a dict, str, namedtuple, datetime subclass) keep that type's value too.
            found = self._by_tag.get("object" if solid_base(cls) is object else "subclass")
        self._cache[cls] = found
        return found

    def unimportable(self, cls: type) -> str | None:
        """Why a load could not import ``cls`` by the name a checkpoint stores, if it could not.

        :param cls: a class whose name a checkpoint would store
        :return: the reason (a class defined in a function or in ``__main__``, or not found
            under its own name), or ``None`` if ``module:qualname`` imports to ``cls`` itself
        """
        try:
            return self._unimportable[cls]
        except KeyError:
            pass
        reason = _unimportable(cls)
        self._unimportable[cls] = reason
        return reason

    def check_importable(self, cls: type, what: str) -> None:
        """Refuse, at save time, to store the name of a class a load could not import.

        :param cls: the class
        :param what: what is being stored, for the message (``"an instance of"``...)
        :raises EncodeError: saying why and what to do
        """
        reason = self.unimportable(cls)
        if reason is not None:
            msg = (
                f"Cannot store {what} {class_name(cls)!r}: {reason}. Define the class at "
                "module level in an importable module and add that module to allow=[...] "
                "(or register a hook for it)."
            )
            raise EncodeError(msg)

    @property
    def generation(self) -> int:
        """:return: a number that changes whenever a registration or the allow-list could
        change which hook :meth:`hook_for` picks; codecs that keep :meth:`encoder`
        results drop them when it does
        """
        return self._generation

    def encode_value(self, value: Any) -> tuple[str, list[Any]]:
        """Turn a value the codec cannot write natively into ``(tag, fields)``.

        :param value: the value
        :raises EncodeError: if no hook handles its type
        :return: the tag and the list of fields to write
        """
        hook = self.hook_for(type(value))
        if hook is None:
            raise _unsupported(type(value))
        if hook.contextual:
            return hook.tag, hook.encode(value, self)
        return hook.tag, hook.encode(value)

    def encoder(self, cls: type) -> tuple[str, Callable[[Any], list[Any]]]:
        """The tag and encode hook for instances of ``cls``, the hook as a one-argument callable.

        ``tag, encode = encoder(type(value))`` gives what :meth:`encode_value` does; it
        stays valid until :attr:`generation` changes.

        :param cls: the class of the values
        :raises EncodeError: if no hook handles it
        :return: the tag and value -> list of fields
        """
        hook = self.hook_for(cls)
        if hook is None:
            raise _unsupported(cls)
        if hook.contextual:
            return hook.tag, functools.partial(_with_registry, hook.encode, self)
        return hook.tag, hook.encode

    def decode_value(self, tag: str, fields: list[Any]) -> Any:
        """Turn ``(tag, fields)`` read from a checkpoint back into a value.

        :param tag: the stored tag
        :param fields: the decoded fields
        :raises UnknownTagError: if no hook has this tag
        :return: the value
        """
        try:
            hook = self._by_tag[tag]
        except KeyError:
            raise self._unknown(tag) from None
        if hook.contextual:
            return hook.decode(fields, self)
        return hook.decode(fields)

    def decoder(self, tag: str) -> Callable[[list[Any]], Any]:
        """The decode hook of ``tag`` as a one-argument callable, for a codec to keep.

        A tag, once registered, keeps its hook for the registry's lifetime, so the
        callable never goes stale; ``decoder(tag)(fields)`` is ``decode_value(tag, fields)``.

        :param tag: the stored tag
        :raises UnknownTagError: if no hook has this tag
        :return: fields -> value
        """
        try:
            hook = self._by_tag[tag]
        except KeyError:
            raise self._unknown(tag) from None
        if hook.contextual:
            return functools.partial(_with_registry, hook.decode, self)
        return hook.decode

    def _unknown(self, tag: str) -> UnknownTagError:
        known = ", ".join(sorted(self._by_tag)) or "none"
        msg = (
            f"Unknown type tag {tag!r} in checkpoint (known tags: {known}). It was written "
            "with a hook this registry lacks: register it before loading."
        )
        return UnknownTagError(msg, tag=tag)

    @property
    def tags(self) -> frozenset[str]:
        """:return: every registered tag"""
        return frozenset(self._by_tag)

    # endregion

    # region allow-list

    def allow(self, *entries: str | type) -> None:
        """Let loads revive more classes.

        :param entries: module names (``"myapp"``, covering submodules), exact
            ``"module:QualName"`` names, or classes
        :raises ArgumentTypeError: if an entry is not a str or a class
        """
        for entry in check_allow(entries, call="HookRegistry.allow()"):
            if isinstance(entry, type):
                self._allowed_names.add(class_name(entry))
            elif ":" in entry:
                _split(entry)
                self._allowed_names.add(entry)
            else:
                self._allowed_modules.add(entry)
        self._cache.clear()
        self._generation += 1
        self._resolved.clear()
        self._approved.clear()

    def trust_all(self) -> None:
        """Switch the allow-list off: loads may import and revive anything they name.

        Only for checkpoints you alone wrote; ``trusted=True`` on a persister calls this.
        """
        self._trust_all = True
        self._cache.clear()
        self._generation += 1
        self._resolved.clear()
        self._approved.clear()

    @property
    def trusted(self) -> bool:
        """:return: whether :meth:`trust_all` switched the allow-list off"""
        return self._trust_all

    @property
    def allowed(self) -> tuple[str, ...]:
        """:return: what the user allowed, besides the defaults (sorted)"""
        return tuple(sorted(self._allowed_modules | self._allowed_names))

    @staticmethod
    def _in(module: str, modules: Iterable[str]) -> bool:
        return any(module == m or module.startswith(m + ".") for m in modules)

    def _user_allows(self, module: str, qualname: str) -> bool:
        return f"{module}:{qualname}" in self._allowed_names or self._in(
            module, self._allowed_modules
        )

    def may_import(self, module: str, qualname: str) -> bool:
        """:return: whether a load may import ``module`` to look up ``qualname``"""
        if self._trust_all:
            return True
        if module == "builtins":
            return qualname in _SAFE_BUILTINS or _is_builtin_exception(qualname)
        return (
            self._user_allows(module, qualname)
            or self._in(module, DEFAULT_MODULES)
            or module in OWN_MODULES
            or _stdlib_class(module, qualname) is not None
            or (module, qualname) in self._hooked
        )

    @property
    def _hooked(self) -> dict[tuple[str, str], type]:
        # Built lazily: loopaware_persist/__init__ renames __module__ of its classes
        # after the default hooks are registered, and names must match what is stored.
        if self._hooked_cache is None:
            self._hooked_cache = {
                (h.cls.__module__, h.cls.__qualname__): h.cls
                for h in self._by_tag.values()
                if h.cls is not None
            }
        return self._hooked_cache

    def may_revive(self, cls: type, kind: Kind) -> bool:
        """:return: whether a load may revive ``cls`` as a ``kind``

        :raises ArgumentTypeError: if ``cls`` is not a class
        """
        if not isinstance(cls, type):
            msg = f"HookRegistry.may_revive() takes a class as cls, got {describe(cls)}."
            raise ArgumentTypeError(msg, argument="cls")
        module, qualname = cls.__module__, cls.__qualname__
        if not self.may_import(module, qualname):
            return False
        if kind == "exception" and not issubclass(cls, BaseException):
            return False
        if kind == "enum" and not issubclass(cls, enum.Enum):
            return False
        if kind == "savable" and not _is_savable(cls):
            return False
        if self._trust_all or self._user_allows(module, qualname) or self.hook_for_exact(cls):
            return True
        if kind == "pickle":
            # Unpickling *calls* what it finds, so only value types, exceptions
            # and enums qualify unless the user allowed more.
            if module == "builtins":
                return qualname in _PICKLE_BUILTINS or issubclass(cls, BaseException)
            if issubclass(cls, (BaseException, enum.Enum)) or cls in _PICKLE_LIBRARY:
                return True
            hook = self.hook_for(cls)
            return hook is not None and hook.cls is not None
        if module == "builtins":
            return kind in {"class", "exception"}
        if _stdlib_class(module, qualname) is cls:
            return kind == "class"
        return kind in _LIBRARY_KINDS

    def hook_for_exact(self, cls: type) -> bool:
        """:return: whether a class hook is registered for exactly ``cls``"""
        return self._hooked.get((cls.__module__, cls.__qualname__)) is cls

    def resolve(self, name: str, kind: Kind = "class") -> type:
        """Import the class a checkpoint names, if and only if the allow-list permits it.

        :param name: ``module:QualName`` as stored
        :param kind: what the class will be used as; narrows what is accepted
        :raises UnsafeCheckpointError: if the name is malformed, not allowed, or not a class
            of the right kind; nothing outside the allow-list is imported
        :return: the class
        """
        if not isinstance(name, str):
            _split(name)  # refuses it as a malformed reference (unhashable ones too)
        approved = self._approved.get((name, kind))
        if approved is not None:  # the hot path of every load: one dict lookup
            return approved
        module, qualname = _split(name)
        key = (module, qualname)
        cls = self._resolved.get(key)
        if cls is None:
            if not self.may_import(module, qualname):
                raise _refuse(name, "its module is not on the allow-list")
            obj: Any = _stdlib_class(module, qualname)
            try:
                if obj is None:
                    obj = importlib.import_module(module)
                    for part in qualname.split("."):
                        obj = getattr(obj, part)
            except (ImportError, AttributeError) as error:
                msg = (
                    f"Checkpoint names {name!r}, which cannot be imported here ({error}). "
                    "Install the code that wrote it, or check the allow-list entry."
                )
                raise UnsafeCheckpointError(msg, name=name) from error
            if not isinstance(obj, type):
                raise _refuse(name, "it is not a class")
            cls = obj
        if not self.may_revive(cls, kind):
            why = (
                "unpickling would call it" if kind == "pickle" else f"it is not allowed as {kind!r}"
            )
            raise _refuse(name, why)
        self._resolved[key] = cls
        self._approved[(name, kind)] = cls
        return cls

    # endregion


def check_registry(registry: object, *, call: str) -> None:
    """Refuse a ``registry=`` argument that is neither a :class:`HookRegistry` nor None.

    :param registry: what the caller passed
    :param call: the public call, e.g. ``"get_codec()"``
    :raises ArgumentTypeError: if ``registry`` has the wrong type
    """
    if registry is not None:
        check_instance(
            registry,
            HookRegistry,
            call=call,
            argument="registry",
            wanted="a HookRegistry or None",
            hint="Pass default_registry.copy() with your hooks, or None.",
        )


def _unimportable(cls: type) -> str | None:
    module, qualname = cls.__module__, cls.__qualname__
    if module == "builtins":
        return None
    if "<locals>" in qualname.split("."):
        return (
            "it is defined inside a function ('<locals>' in its qualified name), so a load "
            "cannot import it by name"
        )
    if module in {"__main__", "__mp_main__"}:
        return (
            "it is defined in __main__ (the script or notebook being run), which a load in "
            "another process does not import"
        )
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        return f"{module}:{qualname} does not name it (it was created dynamically or replaced)"
    return None


def _with_registry(hook: Callable[..., Any], registry: HookRegistry, arg: Any) -> Any:
    return hook(arg, registry)


def _unsupported(cls: type) -> EncodeError:
    msg = (
        f"Unsupported type {cls!r}: no hook is registered for it and "
        f"{class_name(cls)!r} is not on the allow-list. Register a hook with "
        "registry.register(...) or allow its module with allow=[...]."
    )
    return EncodeError(msg)


def _refuse(name: str, why: str) -> UnsafeCheckpointError:
    msg = (
        f"Refusing to load {name!r}: {why}. A safe load only revives plumpy's classes, "
        "registered types and what you allow. If you trust this checkpoint's code, add its "
        "module to allow=[...] (or pass trusted=True to skip the check)."
    )
    return UnsafeCheckpointError(msg, name=name)


def _is_builtin_exception(qualname: str) -> bool:
    obj = getattr(builtins, qualname, None)
    return isinstance(obj, type) and issubclass(obj, BaseException)


def _is_savable(cls: type) -> bool:
    savable = sys.modules.get("plumpy.persistence")
    return savable is not None and issubclass(cls, savable.Savable)
