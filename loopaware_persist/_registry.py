"""Type dispatch: which hook stores a value of a given type, under which stable tag.

A :class:`HookRegistry` maps Python types to stable string tags, each with an
``encode`` hook (value -> list of fields) and a ``decode`` hook (fields -> value).
Codecs consult it for every value they cannot write natively. Lookup follows
cattrs' ``Converter``: exact class and MRO through :func:`functools.singledispatch`,
then predicate hooks newest first, memoised per class, the memo cleared on every
registration. Unlike cattrs, an exception raised by a predicate propagates.

Each registry owns an :class:`~._allowlist.AllowList`, the only modules and classes
a safe load may import (:mod:`._allowlist`); its methods here (:meth:`HookRegistry.allow`,
:meth:`~HookRegistry.resolve`...) delegate to it.
"""

from __future__ import annotations

import builtins
import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, get_args, overload

import attrs

from ._allowlist import AllowList, Kind, class_name
from ._arguments import check_allow, check_flag, check_instance, describe
from ._errors import ArgumentTypeError, EncodeError, UnknownTagError

__all__ = (
    "Hook",
    "HookRegistry",
    "YamlTagCheck",
    "YamlTags",
    "check_registry",
    "class_name",
    "solid_base",
)

T = TypeVar("T")

#: A YAML tag's check: called with the tagged scalar's text, or a tagged mapping's scalar
#: key/value pairs, the registry and the path; raises ``UnsafeCheckpointError`` to refuse.
YamlTagCheck = Callable[[Any, "HookRegistry", str], None]
#: Application YAML tags a loader knows, each with its check (``None``: always passes).
YamlTags = Mapping[str, YamlTagCheck | None]


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


@attrs.frozen(kw_only=True)
class Hook:
    """How one type is stored.

    :param tag: the stable string stored with the value, e.g. ``"uuid"``
    :param encode: turns a value into a list of fields (themselves encodable)
    :param decode: turns the decoded list of fields back into a value
    :param cls: the class the hook is registered for, or ``None`` for a predicate hook
    :param predicate: for predicate hooks, which classes the hook handles
    :param takes_registry: whether ``encode`` and ``decode`` take the registry in use as
        a second argument (to resolve a stored class name through its allow-list, or to
        encode a nested value with its hooks), as cattrs' ``takes_converter``
    :param subclasses: whether a class hook also stores instances of subclasses of ``cls``;
        the built-in hooks of value types (``tuple``, ``datetime``...) do not, so that a
        subclass is stored with its own class name, or refused, never narrowed to its base
    """

    tag: str
    encode: Callable[..., list[Any]]
    decode: Callable[..., Any]
    cls: type | None = None
    predicate: Callable[[type], bool] | None = None
    takes_registry: bool = False
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
        self._hooked_cache: dict[tuple[str, str], type] | None = None
        self._unimportable: dict[type, str | None] = {}
        self._opaque: tuple[type, ...] = ()
        self._yaml_fields: list[tuple[type, tuple[str, ...], YamlTags, bool]] = []
        self._allow_list = AllowList(hooked=self._hooked, class_hook_for=self._class_hook_for)
        self._approved = self._allow_list.approved
        self.allow(*check_allow(allow, call="HookRegistry()"))

    @overload
    def register(
        self,
        cls: type,
        *,
        tag: str,
        encode: Callable[[Any], list[Any]],
        decode: Callable[[list[Any]], Any],
        takes_registry: Literal[False] = False,
        subclasses: bool = True,
    ) -> None: ...

    @overload
    def register(
        self,
        cls: type,
        *,
        tag: str,
        encode: Callable[[Any, HookRegistry], list[Any]],
        decode: Callable[[list[Any], HookRegistry], Any],
        takes_registry: Literal[True],
        subclasses: bool = True,
    ) -> None: ...

    def register(
        self,
        cls: type,
        *,
        tag: str,
        encode: Callable[..., list[Any]],
        decode: Callable[..., Any],
        takes_registry: bool = False,
        subclasses: bool = True,
    ) -> None:
        """Store instances of ``cls`` (and, unless overridden, its subclasses) under ``tag``.

        .. code-block:: python

            registry.register(Point, tag="myapp.point",
                              encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f))
            # A hook that needs the registry (its allow-list, its other hooks) says so:
            registry.register(Plugin, tag="myapp.plugin",
                              encode=lambda p, reg: [class_name(p.cls)],
                              decode=lambda f, reg: Plugin(reg.resolve(f[0])),
                              takes_registry=True)

        :param cls: the class to handle
        :param tag: a stable string; changing it later breaks old checkpoints
        :param encode: value -> list of fields, each itself encodable
        :param decode: list of decoded fields -> value
        :param takes_registry: pass the registry in use to ``encode`` and ``decode`` as a
            second argument: ``encode(value, registry)``, ``decode(fields, registry)``
        :param subclasses: store instances of subclasses of ``cls`` with this hook too;
            with ``False`` a subclass is stored under its own class name if allowed, or
            refused, never narrowed to ``cls``
        :raises ValueError: if ``tag`` is already registered
        :raises ArgumentTypeError: if ``cls`` is not a class, ``tag`` not a str, a hook
            not callable, or a flag not a bool
        """
        call = "HookRegistry.register()"
        check_instance(
            cls,
            type,
            call=call,
            argument="cls",
            wanted="a class",
            hint="Pass the class whose instances the hook stores, e.g. register(Point, ...).",
        )
        check_flag(takes_registry, call=call, argument="takes_registry")
        check_flag(subclasses, call=call, argument="subclasses")
        self._add(
            Hook(
                tag=tag,
                encode=encode,
                decode=decode,
                cls=cls,
                takes_registry=takes_registry,
                subclasses=subclasses,
            )
        )

    @overload
    def register_predicate(
        self,
        predicate: Callable[[type], bool],
        *,
        tag: str,
        encode: Callable[[Any], list[Any]],
        decode: Callable[[list[Any]], Any],
        takes_registry: Literal[False] = False,
    ) -> None: ...

    @overload
    def register_predicate(
        self,
        predicate: Callable[[type], bool],
        *,
        tag: str,
        encode: Callable[[Any, HookRegistry], list[Any]],
        decode: Callable[[list[Any], HookRegistry], Any],
        takes_registry: Literal[True],
    ) -> None: ...

    def register_predicate(
        self,
        predicate: Callable[[type], bool],
        *,
        tag: str,
        encode: Callable[..., list[Any]],
        decode: Callable[..., Any],
        takes_registry: bool = False,
    ) -> None:
        """Store instances of every class for which ``predicate(cls)`` is true under ``tag``.

        Predicate hooks are tried after class hooks, newest first.

        :param predicate: class -> whether this hook handles it; its exceptions propagate
        :param tag: a stable string
        :param encode: value -> list of fields
        :param decode: list of decoded fields -> value
        :param takes_registry: pass the registry in use to ``encode`` and ``decode`` as a
            second argument, as for :meth:`register`
        :raises ValueError: if ``tag`` is already registered
        :raises ArgumentTypeError: if ``predicate`` or a hook is not callable, ``tag``
            not a str, or ``takes_registry`` not a bool
        """
        self._check_callable(predicate, "register_predicate", "predicate")
        check_flag(
            takes_registry, call="HookRegistry.register_predicate()", argument="takes_registry"
        )
        self._add(
            Hook(
                tag=tag,
                encode=encode,
                decode=decode,
                predicate=predicate,
                takes_registry=takes_registry,
            )
        )

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
        self._allow_list.forget()  # a class with a hook may now be named

    def copy(self) -> HookRegistry:
        """:return: an independent registry with the same hooks and allow-list"""
        new = HookRegistry()
        new._allow_list.update(self._allow_list)
        new._opaque = self._opaque
        new._yaml_fields = list(self._yaml_fields)
        for hook in reversed(self._predicates):
            new._add(hook)
        for hook in self._by_tag.values():
            if hook.cls is not None:
                new._add(hook)
        return new

    def declare_opaque(self, *types: type) -> None:
        """Declare types whose instances the loop check never walks into.

        An opaque value is handed over as is: :func:`~loopaware_persist.check_loop_bound`
        and the load's walk of what hooks decoded skip it and everything it references.
        For objects a loader supplies or a hook looks up rather than restores (AiiDA's ORM
        entities, a storage backend, a database session, a runner): their graphs hold no
        future a load made, and can be large.

        :param types: the classes (their subclasses are opaque too)
        :raises ArgumentTypeError: if one is not a class
        """
        for cls in types:
            check_instance(
                cls,
                type,
                call="HookRegistry.declare_opaque()",
                argument="types",
                wanted="a class",
                hint="Pass the classes whose instances the loop check must not walk into.",
            )
        self._opaque = tuple(dict.fromkeys((*self._opaque, *types)))

    @property
    def opaque(self) -> tuple[type, ...]:
        """:return: the types declared with :meth:`declare_opaque`"""
        return self._opaque

    def declare_yaml(
        self, cls: type, *keys: str, tags: YamlTags | None = None, python_objects: bool = True
    ) -> None:
        """Declare that savables of ``cls`` store YAML text under ``keys`` that their loading
        code parses with an unsafe loader: a load audits that text first.

        plumpy's ``Excepted`` state is declared by default; AiiDA's processes parse their
        ``INPUTS_RAW``, ``INPUTS_PARSED`` and ``OUTPUTS`` this way. The audit refuses any
        ``!!python/...`` tag naming what the allow-list does not permit, any other tag
        not in ``tags``, and text too deep or expanding too far
        (the same audit as plumpy's ``Excepted`` YAML).

        :param cls: the savable class (subclasses included)
        :param keys: the keys of its saved state that hold YAML text
        :param tags: the application tags that loader knows, each with a check called
            with the tagged scalar's text (or, for a tagged mapping, its scalar key/value
            pairs) that raises :class:`UnsafeCheckpointError` to refuse; ``None`` as a
            check lets the tag pass
        :param python_objects: whether ``!!python/object/apply:``, ``!!python/object/new:``
            and ``!!python/object:`` tags naming a class the allow-list lets unpickling
            call may pass. ``False`` (AiiDA's keys) refuses every one of them but an enum
            member (``!!python/object/apply:module.Enum [value]``, how PyYAML's dumper
            writes one), and resolves ``!!python/name:`` as a class reference
        :raises ArgumentTypeError: if ``cls`` is not a class, a key not a str or
            ``python_objects`` not a bool
        """
        check_instance(
            cls,
            type,
            call="HookRegistry.declare_yaml()",
            argument="cls",
            wanted="a class",
            hint="Pass the savable class whose saved state holds the YAML.",
        )
        for key in keys:
            check_instance(
                key,
                str,
                call="HookRegistry.declare_yaml()",
                argument="keys",
                wanted="a str",
                hint="Pass the keys of the saved state that hold YAML text.",
            )
        check_flag(python_objects, call="HookRegistry.declare_yaml()", argument="python_objects")
        self._yaml_fields.append((cls, keys, dict(tags or {}), python_objects))

    def yaml_fields(self, cls: type) -> list[tuple[str, YamlTags, bool]]:
        """The keys of a savable of ``cls`` that hold YAML to audit (see :meth:`declare_yaml`).

        :param cls: the savable's class
        :returns: each key with the application tags its loader knows and whether
            ``!!python/object...`` tags may pass (``python_objects``)
        """
        return [
            (key, tags, python_objects)
            for base, keys, tags, python_objects in self._yaml_fields
            if issubclass(cls, base)
            for key in keys
        ]

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

    def check_importable(self, cls: type, what: str, kind: Kind | None = None) -> None:
        """Refuse, at save time, to store the name of a class a load could not import.

        :param cls: the class
        :param what: what is being stored, for the message (``"an instance of"``...)
        :param kind: what a load will revive it as (``"class"``, ``"enum"``...): refuse
            it too if the allow-list would refuse that load
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
        if kind is not None and not self.may_revive(cls, kind):
            msg = (
                f"Cannot store {what} {class_name(cls)!r}: a load may not revive it as "
                f"{kind!r} (it is not on the allow-list), so the checkpoint would not load. "
                f"Add its module to allow=[{cls.__module__!r}] if a load may import it."
            )
            raise EncodeError(msg)

    @property
    def generation(self) -> int:
        """A number that changes whenever a registration or the allow-list could change
        which hook :meth:`hook_for` picks; codecs that keep :meth:`encoder` results drop
        them when it does.
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
        if hook.takes_registry:
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
        if hook.takes_registry:
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
        if hook.takes_registry:
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
        if hook.takes_registry:
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

    def allow(self, *entries: str | type, kinds: Iterable[Kind] | None = None) -> None:
        """Let loads revive more classes.

        :param entries: module names (``"myapp"``, covering submodules), exact
            ``"module:QualName"`` names, or classes
        :param kinds: allow them only as these kinds (``"class"``, ``"savable"``,
            ``"enum"``, ``"exception"``, ``"object"``, ``"pickle"``); default: as any.
            A process class that checkpoints may name (``"class"``, ``"savable"``) but
            that YAML or unpickling must never call (``"pickle"``) is allowed so.
        :raises ArgumentTypeError: if an entry is not a str or a class, or ``kinds`` not
            an iterable of kinds
        """
        checked = check_allow(entries, call="HookRegistry.allow()")
        limited = None if kinds is None else _check_kinds(kinds)
        self._allow_list.add(checked, limited)
        self._allow_list_changed()

    def trust_all(self) -> None:
        """Switch the allow-list off: loads may import and revive anything they name.

        Only for checkpoints you alone wrote; ``trusted=True`` on a persister calls this.
        """
        self._allow_list.trust_all()
        self._allow_list_changed()

    def _allow_list_changed(self) -> None:
        # hook_for picks the 'object'/'subclass' hooks for allowed classes only.
        self._cache.clear()
        self._generation += 1

    @property
    def trusted(self) -> bool:
        """:return: whether :meth:`trust_all` switched the allow-list off"""
        return self._allow_list.trusted

    @property
    def allowed(self) -> tuple[str, ...]:
        """:return: what the user allowed, besides the defaults (sorted)"""
        return self._allow_list.allowed

    def may_import(self, module: str, qualname: str) -> bool:
        """:return: whether a load may import ``module`` to look up ``qualname``"""
        return self._allow_list.may_import(module, qualname)

    def may_revive(self, cls: type, kind: Kind) -> bool:
        """:return: whether a load may revive ``cls`` as a ``kind``

        :raises ArgumentTypeError: if ``cls`` is not a class
        """
        return self._allow_list.may_revive(cls, kind)

    def resolve(self, name: str, kind: Kind = "class") -> type:
        """Import the class a checkpoint names, if and only if the allow-list permits it.

        :param name: ``module:QualName`` as stored
        :param kind: what the class will be used as; narrows what is accepted
        :raises UnsafeCheckpointError: if the name is malformed, not allowed, or not a class
            of the right kind; nothing outside the allow-list is imported
        :return: the class
        """
        # The hot path of every load, one dict lookup without a call: the allow-list's memo.
        cls = self._approved.get((name, kind)) if isinstance(name, str) else None
        return cls if cls is not None else self._allow_list.resolve(name, kind)

    def hook_for_exact(self, cls: type) -> bool:
        """:return: whether a class hook is registered for exactly ``cls``"""
        return self._allow_list.hooked_exactly(cls)

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

    def _class_hook_for(self, cls: type) -> bool:
        hook = self.hook_for(cls)
        return hook is not None and hook.cls is not None


def _check_kinds(kinds: object) -> tuple[Kind, ...]:
    known = get_args(Kind)
    found = tuple(kinds) if isinstance(kinds, Iterable) and not isinstance(kinds, str) else None
    if not found or not all(kind in known for kind in found):
        msg = (
            f"HookRegistry.allow() takes kinds= as an iterable of {', '.join(map(repr, known))}, "
            f"got {describe(kinds)}. Pass e.g. kinds=('class', 'savable')."
        )
        raise ArgumentTypeError(msg, argument="kinds")
    return found


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
        if getattr(builtins, qualname, None) is cls:
            return None
        return (
            f"the interpreter's {qualname} has no name in builtins (nor anywhere a load "
            "could import it from)"
        )
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
