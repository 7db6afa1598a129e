"""The allow-list: which modules and classes a safe load may import, and as what.

A class name found in a checkpoint (``module:qualname``) is turned into a class by
:meth:`AllowList.resolve`, which refuses anything not allowed with an
:class:`UnsafeCheckpointError` *before* importing it. What is allowed depends on the
*kind* of use (a class reference, an exception, an enum member, a plumpy ``Savable``,
an object rebuilt from its state, or something unpickling calls): plumpy's and
kiwipy's modules only for the inert kinds, the standard library's value types only as
classes, and whatever the user allowed for every kind.

The type registry (:mod:`._registry`) owns one :class:`AllowList` and answers two
questions for it -- which classes have hooks of their own -- so this module never
imports the registry: dispatch sits above the allow-list, as cattrs' ``dispatch.py``
sits apart from its converters.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import enum
import importlib
import pathlib
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, Literal

from plumpy.process_listener import ProcessListener

from ._arguments import describe
from ._errors import ArgumentTypeError, UnsafeCheckpointError

__all__ = ("DEFAULT_MODULES", "OWN_MODULES", "AllowList", "Kind", "class_name")

#: What a load uses a class as; narrows what the allow-list accepts.
Kind = Literal["class", "exception", "enum", "savable", "object", "pickle"]

#: Packages (with their submodules) whose classes of the kinds in ``_LIBRARY_KINDS`` a
#: load may revive by default.
DEFAULT_MODULES: tuple[str, ...] = ("plumpy", "kiwipy")
#: This package's own modules a load may import by default, exactly (not their
#: submodules). Checkpoints and messages name this package's classes by the public
#: module (``loopaware_persist:FutureSnapshot``, the errors); the demo's and benchmark's
#: process classes (``loopaware_persist._demo``, the ``benchmarks`` suite) must not be
#: launchable by a task message to any worker: only the commands that run them allow them.
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


class AllowList:
    """What a safe load may import and revive: the defaults plus what the user allowed.

    :param hooked: the registry's class hooks by name, ``(module, qualname) -> class``:
        a class with a hook of its own may be named by a checkpoint
    :param class_hook_for: whether a class hook (its own or a base's) stores ``cls``:
        what unpickling may call besides value types, exceptions and enums
    """

    def __init__(
        self,
        *,
        hooked: Callable[[], Mapping[tuple[str, str], type]],
        class_hook_for: Callable[[type], bool],
    ) -> None:
        self._hooked = hooked
        self._class_hook_for = class_hook_for
        self._modules: set[str] = set()
        self._names: set[str] = set()
        #: Entries allowed only as some kinds (``add(..., kinds=...)``): entry -> kinds
        self._limited: dict[str, frozenset[str]] = {}
        self._trust_all = False
        self._resolved: dict[tuple[str, str], type] = {}
        #: What :meth:`resolve` approved, ``(name, kind) -> class``: only ever cleared,
        #: never replaced, so the registry may look it up without a call
        self.approved: dict[tuple[str, str], type] = {}

    def add(self, entries: Iterable[str | type], kinds: Iterable[Kind] | None = None) -> None:
        """Allow more; the entries were checked by the caller (:func:`check_allow`).

        :param entries: module names (covering submodules), exact ``"module:QualName"``
            names, or classes
        :param kinds: if given, allow them only as these kinds (checked by the caller):
            a process class a checkpoint names as its ``"savable"`` and as a ``"class"``,
            never as something YAML or unpickling may call
        :raises UnsafeCheckpointError: if a ``module:QualName`` entry is malformed
        """
        for entry in entries:
            if isinstance(entry, type):
                entry = class_name(entry)
            elif ":" in entry:
                _split(entry)
            if kinds is not None:
                self._limited[entry] = self._limited.get(entry, frozenset()) | frozenset(kinds)
            elif ":" in entry:
                self._names.add(entry)
            else:
                self._modules.add(entry)
        self.forget()

    def trust_all(self) -> None:
        """Switch the allow-list off: loads may import and revive anything they name."""
        self._trust_all = True
        self.forget()

    def update(self, other: AllowList) -> None:
        """Allow what ``other`` allows too (for a registry's copy).

        :param other: another allow-list
        """
        self._modules |= other._modules
        self._names |= other._names
        for entry, kinds in other._limited.items():
            self._limited[entry] = self._limited.get(entry, frozenset()) | kinds
        self._trust_all = self._trust_all or other._trust_all
        self.forget()

    def forget(self) -> None:
        """Drop what :meth:`resolve` memoised: the allow-list or the hooks changed."""
        self._resolved.clear()
        self.approved.clear()

    @property
    def trusted(self) -> bool:
        """:return: whether :meth:`trust_all` switched the allow-list off"""
        return self._trust_all

    @property
    def allowed(self) -> tuple[str, ...]:
        """:return: what the user allowed, besides the defaults (sorted)"""
        return tuple(sorted(self._modules | self._names | set(self._limited)))

    @staticmethod
    def _in(module: str, modules: Iterable[str]) -> bool:
        return any(module == m or module.startswith(m + ".") for m in modules)

    def _user_allows(self, module: str, qualname: str, kind: Kind | None = None) -> bool:
        """:param kind: ``None``: as any kind (may it be imported at all?)"""
        name = f"{module}:{qualname}"
        if name in self._names or self._in(module, self._modules):
            return True
        if not self._limited:
            return False
        found = [
            kinds
            for entry, kinds in self._limited.items()
            if entry == name or (":" not in entry and self._in(module, (entry,)))
        ]
        return bool(found) and (kind is None or any(kind in kinds for kinds in found))

    def may_import(self, module: str, qualname: str) -> bool:
        """:return: whether a load may import ``module`` to look up ``qualname``"""
        return self._may_import(module, qualname, None)

    def _may_import(self, module: str, qualname: str, kind: Kind | None) -> bool:
        if self._trust_all:
            return True
        if module == "builtins":
            return qualname in _SAFE_BUILTINS or _is_builtin_exception(qualname)
        return (
            self._user_allows(module, qualname, kind)
            or self._in(module, DEFAULT_MODULES)
            or module in OWN_MODULES
            or _stdlib_class(module, qualname) is not None
            or (module, qualname) in self._hooked()
        )

    def hooked_exactly(self, cls: type) -> bool:
        """:return: whether a class hook is registered for exactly ``cls``"""
        return self._hooked().get((cls.__module__, cls.__qualname__)) is cls

    def may_revive(self, cls: type, kind: Kind) -> bool:
        """:return: whether a load may revive ``cls`` as a ``kind``

        :raises ArgumentTypeError: if ``cls`` is not a class
        """
        if not isinstance(cls, type):
            msg = f"HookRegistry.may_revive() takes a class as cls, got {describe(cls)}."
            raise ArgumentTypeError(msg, argument="cls")
        module, qualname = cls.__module__, cls.__qualname__
        if not self._may_import(module, qualname, kind):
            return False
        if kind == "exception" and not issubclass(cls, BaseException):
            return False
        if kind == "enum" and not issubclass(cls, enum.Enum):
            return False
        if kind == "savable" and not _is_savable(cls):
            return False
        if kind in {"pickle", "object"} and not self._trust_all and _is_process(cls):
            # Calling a process class launches a process (AiiDA creates and stores its
            # node), whoever allowed it: a checkpoint restores one as a "savable".
            return False
        if self._trust_all or self._user_allows(module, qualname, kind) or self.hooked_exactly(cls):
            return True
        if kind == "pickle":
            # Unpickling *calls* what it finds, so only value types, exceptions
            # and enums qualify unless the user allowed more.
            if module == "builtins":
                return qualname in _PICKLE_BUILTINS or issubclass(cls, BaseException)
            if issubclass(cls, (BaseException, enum.Enum)) or cls in _PICKLE_LIBRARY:
                return True
            return self._class_hook_for(cls)
        if module == "builtins":
            return kind in {"class", "exception"}
        if _stdlib_class(module, qualname) is cls:
            return kind == "class"
        return kind in _LIBRARY_KINDS

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
        approved = self.approved.get((name, kind))
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
        self.approved[(name, kind)] = cls
        return cls


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


def _is_process(cls: type) -> bool:
    processes = sys.modules.get("plumpy.processes")
    return processes is not None and issubclass(cls, processes.Process)


def _is_savable(cls: type) -> bool:
    savable = sys.modules.get("plumpy.persistence")
    return savable is not None and issubclass(cls, savable.Savable)
