"""The built-in hooks that store a value under its class's name, resolved through the allow-list.

Class references, enum members, exceptions (with their chains and tracebacks as
text), instances of allowed classes without a hook of their own, and allowed
subclasses of built-in types (``class Label(str)``, a namedtuple, a ``dict``
subclass). Each stores ``module:qualname`` and, on load, asks the registry in use
(these hooks are registered with ``takes_registry=True``) to resolve it, so a load
imports nothing the allow-list does not permit. An exception of a class a load may
not import comes back as a :class:`ForeignException`.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import traceback
from collections.abc import Callable
from typing import Any, cast

import attrs

from ._errors import CorruptCheckpointError, EncodeError, ForeignException
from ._registry import HookRegistry, class_name, solid_base

__all__ = ("register_named_hooks",)


def _corrupt(what: str, fields: Any) -> CorruptCheckpointError:
    msg = f"Malformed {what} in checkpoint: {fields!r:.200}. The record is damaged or crafted."
    return CorruptCheckpointError(msg)


def _enc_class(value: type, registry: HookRegistry) -> list[Any]:
    registry.check_importable(value, "the class", "class")
    return [class_name(value)]


def _dec_class(fields: list[Any], registry: HookRegistry) -> type:
    (name,) = fields
    return registry.resolve(name, "class")


def _enc_enum(value: enum.Enum, registry: HookRegistry) -> list[Any]:
    registry.check_importable(type(value), "a member of", "enum")
    return [class_name(type(value)), value.value]


def _dec_enum(fields: list[Any], registry: HookRegistry) -> enum.Enum:
    name, value = fields
    cls = registry.resolve(name, "enum")
    try:
        return cls(value)  # type: ignore[no-any-return]
    except ValueError as error:
        raise _corrupt(f"member of {name}", fields) from error


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return repr(exc.args)


# Builtin exceptions whose fields live in C slots that their constructor fills from args.
_EXCEPTION_SLOTS: tuple[tuple[type[BaseException], tuple[str, ...]], ...] = (
    (OSError, ("errno", "strerror", "filename", "filename2")),
    (StopIteration, ("value",)),
    (StopAsyncIteration, ("value",)),
    (SystemExit, ("code",)),
    (ImportError, ("msg", "name", "path")),
)


def exception_slots(exc: BaseException) -> tuple[str, ...]:
    """:return: the fields ``exc`` keeps in C slots (``OSError.errno``...), not ``__dict__``"""
    for base, names in _EXCEPTION_SLOTS:
        if isinstance(exc, base):
            return names
    return ()


def set_by_init(exc: BaseException) -> dict[str, Any]:
    """:return: what the ``__init__`` of ``exc``'s builtin base set outside ``__dict__``:
    its C-slot fields and ``args``, which a load that runs no ``__init__`` of the user's
    sets back as attributes"""
    return {**{name: getattr(exc, name) for name in exception_slots(exc)}, "args": exc.args}


def _reduced(value: BaseException) -> tuple[list[Any], dict[str, Any] | None]:
    # What pickle would keep: __reduce__ knows attributes set outside args
    # (OSError.filename, ImportError.name/path); the rest lives in __dict__.
    reduced = value.__reduce__()
    args = list(reduced[1]) if isinstance(reduced, tuple) and len(reduced) > 1 else list(value.args)
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    merged = {**vars(value), **(state if isinstance(state, dict) else {})}
    if type(value).__module__ != "builtins":
        # A load runs no __init__ of the user's: what a builtin base's __init__ set from
        # its arguments is set back (an OSError subclass's errno...), and args where they
        # differ from the stored ones (its __reduce__ adds the filename to them).
        merged.update(set_by_init(value))
        if tuple(args) == value.args:
            del merged["args"]
    return args, merged or None


def _enc_exception(value: BaseException, _registry: HookRegistry) -> list[Any]:
    tb = value.__traceback__
    args, state = _reduced(value)
    return [
        class_name(type(value)),
        args,
        _message(value),
        state,
        value.__cause__,
        value.__context__,
        value.__suppress_context__,
        "".join(traceback.format_tb(tb)) if tb is not None else None,
    ]


def _dec_exception(fields: list[Any], registry: HookRegistry) -> BaseException:
    name, args, message, state, cause, context, suppress, tb_text = fields
    if not isinstance(name, str) or not isinstance(args, list):
        raise _corrupt("exception", fields)
    try:
        cls = registry.resolve(name, "exception")
    except CorruptCheckpointError:
        raise
    except Exception:
        exc: BaseException = ForeignException(name, str(message))
    else:
        try:
            exc = cast(BaseException, cls.__new__(cls, *args))
        except Exception:
            exc = BaseException.__new__(cls)
        if cls.__module__ == "builtins":
            # Builtin __init__s derive attributes from args (SystemExit.code,
            # StopIteration.value, OSError.errno); they run no user code.
            init: Any = cls.__init__  # type: ignore[misc]
            init(exc, *args)  # also sets .args (OSError keeps filename out of it)
        else:
            exc.args = tuple(args)
        if state:
            if not isinstance(state, dict):
                raise _corrupt("exception state", fields)
            for key, val in state.items():
                try:
                    setattr(exc, key, val)
                except (AttributeError, TypeError):
                    exc.__dict__[key] = val
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = bool(suppress)
    if tb_text:
        exc.add_note(f"Traceback when the checkpoint was saved:\n{tb_text}".rstrip())
    return exc


def _enc_object(value: Any, registry: HookRegistry) -> list[Any]:
    cls = type(value)
    registry.check_importable(cls, "an instance of")
    return [class_name(cls), value.__getstate__()]


def _dec_object(fields: list[Any], registry: HookRegistry) -> Any:
    name, state = fields
    cls = registry.resolve(name, "object")
    # As pickle's default reduce does: no __init__, state put back as saved.
    new: Any = cls.__new__
    obj = object.__new__(cls) if new is object.__new__ else new(cls)
    _set_state(obj, state, name, fields)
    return obj


def _set_state(obj: Any, state: Any, name: str, fields: list[Any]) -> None:
    """Put back what ``__getstate__`` gave, as pickle does: ``__setstate__`` if the class
    has one, else the instance dict and slots."""
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slots: Any = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        if not isinstance(state, dict):
            raise _corrupt(f"state of {name}", fields)
        obj.__dict__.update(state)
    if slots:
        if not isinstance(slots, dict):
            raise _corrupt(f"slots of {name}", fields)
        for key, val in slots.items():
            object.__setattr__(obj, key, val)


# Subclasses of built-in types.
#
# An allowed class built on a C type other than object (``class Structure(dict)``, a
# namedtuple, ``class Label(str)``, a datetime subclass) is stored as
# ``[class name, base, value, state]``: the class through the allow-list like any other,
# the base's own value read through the base's C methods (never the subclass's
# overrides), and what ``__getstate__`` gives. Loading builds the instance through the
# base's ``__new__`` and C methods, so no code of the subclass runs before its
# ``__setstate__`` (if it has one), as with pickle.


def _read(base: type, names: tuple[str, ...], value: Any) -> list[Any]:
    # The base's own descriptors: a subclass may override the attributes.
    return [getattr(base, name).__get__(value) for name in names]


def _kind(expected: type) -> Callable[[Any], bool]:
    return lambda payload: type(payload) is expected


_DT_NAMES = ("year", "month", "day", "hour", "minute", "second", "microsecond", "tzinfo")
_TIME_NAMES = ("hour", "minute", "second", "microsecond", "tzinfo")


def _new_mutable(base: Any, fill: Callable[[Any, Any], Any]) -> Callable[[type, Any], Any]:
    def build(cls: type, payload: Any) -> Any:
        obj = base.__new__(cls)
        fill(obj, payload)
        return obj

    return build


def _fill_odict(obj: Any, payload: dict[Any, Any]) -> None:
    for key, val in payload.items():
        collections.OrderedDict.__setitem__(obj, key, val)


@attrs.frozen
class _Base:
    """How the value of one C base type is stored: ``dump`` reads it from an instance of
    a subclass, ``check`` tells a well-formed stored value, ``build`` makes the instance."""

    key: str
    dump: Callable[[Any], Any]
    check: Callable[[Any], bool]
    build: Callable[[type, Any], Any]


def _is_list(payload: Any) -> bool:
    return type(payload) is list


def _is_real_pair(payload: Any) -> bool:
    return type(payload) is list and len(payload) == 2 and all(type(x) is float for x in payload)


_BASES: dict[type, _Base] = {
    dict: _Base(
        "dict", lambda v: dict(dict.items(v)), _kind(dict), _new_mutable(dict, dict.update)
    ),
    collections.OrderedDict: _Base(
        "odict",
        lambda v: dict(collections.OrderedDict.items(v)),
        _kind(dict),
        _new_mutable(collections.OrderedDict, _fill_odict),
    ),
    list: _Base("list", list.copy, _is_list, _new_mutable(list, list.extend)),
    set: _Base("set", lambda v: list(set.__iter__(v)), _is_list, _new_mutable(set, set.update)),
    frozenset: _Base(
        "frozenset",
        lambda v: list(frozenset.__iter__(v)),
        _is_list,
        lambda cls, p: frozenset.__new__(cls, p),
    ),
    tuple: _Base(
        "tuple", lambda v: list(tuple.__iter__(v)), _is_list, lambda cls, p: tuple.__new__(cls, p)
    ),
    str: _Base("str", str.__str__, _kind(str), lambda cls, p: str.__new__(cls, p)),
    bytes: _Base("bytes", bytes.__bytes__, _kind(bytes), lambda cls, p: bytes.__new__(cls, p)),
    bytearray: _Base(
        "bytearray",
        lambda v: bytes(memoryview(v)),
        _kind(bytes),
        _new_mutable(bytearray, bytearray.extend),
    ),
    int: _Base("int", int.__index__, _kind(int), lambda cls, p: int.__new__(cls, p)),
    float: _Base("float", float.__float__, _kind(float), lambda cls, p: float.__new__(cls, p)),
    complex: _Base(
        "complex",
        lambda v: [complex.__complex__(v).real, complex.__complex__(v).imag],
        _is_real_pair,
        lambda cls, p: complex.__new__(cls, *p),
    ),
    dt.datetime: _Base(
        "datetime",
        lambda v: [*_read(dt.datetime, _DT_NAMES, v), dt.datetime.fold.__get__(v)],
        _is_list,
        lambda cls, p: dt.datetime.__new__(cls, *p[:8], fold=p[8]),
    ),
    dt.date: _Base(
        "date",
        lambda v: _read(dt.date, ("year", "month", "day"), v),
        _is_list,
        lambda cls, p: dt.date.__new__(cls, *p),
    ),
    dt.time: _Base(
        "time",
        lambda v: [*_read(dt.time, _TIME_NAMES, v), dt.time.fold.__get__(v)],
        _is_list,
        lambda cls, p: dt.time.__new__(cls, *p[:5], fold=p[5]),
    ),
    dt.timedelta: _Base(
        "timedelta",
        lambda v: _read(dt.timedelta, ("days", "seconds", "microseconds"), v),
        _is_list,
        lambda cls, p: dt.timedelta.__new__(cls, *p),
    ),
    decimal.Decimal: _Base(
        "decimal",
        decimal.Decimal.__str__,
        _kind(str),
        lambda cls, p: decimal.Decimal.__new__(cls, p),
    ),
}
_BY_KEY: dict[str, tuple[type, _Base]] = {base.key: (cls, base) for cls, base in _BASES.items()}


def _enc_subclass(value: Any, registry: HookRegistry) -> list[Any]:
    cls = type(value)
    solid = solid_base(cls)
    base = _BASES.get(solid)
    if base is None:
        msg = (
            f"Cannot store an instance of {class_name(cls)!r}: it is built on "
            f"{class_name(solid)!r}, whose value lives outside the instance's __dict__ and "
            "slots, so only the attributes would come back. Register a hook for the class "
            "with registry.register(...)."
        )
        raise EncodeError(msg)
    registry.check_importable(cls, "an instance of")
    return [class_name(cls), base.key, base.dump(value), value.__getstate__()]


def _dec_subclass(fields: list[Any], registry: HookRegistry) -> Any:
    name, key, payload, state = fields
    found = _BY_KEY.get(key) if isinstance(key, str) else None
    if found is None:
        raise _corrupt("subclass value", fields)
    solid, base = found
    cls = registry.resolve(name, "object")
    if solid_base(cls) is not solid or not base.check(payload):
        raise _corrupt(f"{key} value of {name}", fields)
    obj = base.build(cls, payload)
    _set_state(obj, state, name, fields)
    return obj


def register_named_hooks(registry: HookRegistry) -> None:
    """Register the hooks that store a value under its class's name on ``registry``.

    They take the registry in use (``takes_registry=True``), so each load resolves
    names through its own allow-list.

    :param registry: a registry that has none of these tags yet
    """
    registry.register_predicate(
        lambda cls: issubclass(cls, type),
        tag="class", encode=_enc_class, decode=_dec_class, takes_registry=True,
    )  # fmt: skip
    registry.register_predicate(
        lambda cls: issubclass(cls, enum.Enum),
        tag="enum", encode=_enc_enum, decode=_dec_enum, takes_registry=True,
    )  # fmt: skip
    registry.register_predicate(
        lambda cls: issubclass(cls, BaseException),
        tag="exception", encode=_enc_exception, decode=_dec_exception, takes_registry=True,
    )  # fmt: skip
    # The fallback for allowed classes without a hook of their own: never matched by
    # predicate, only chosen by HookRegistry.hook_for after the allow-list says yes.
    registry.register_predicate(
        lambda cls: False,
        tag="object", encode=_enc_object, decode=_dec_object, takes_registry=True,
    )  # fmt: skip
    # Likewise for allowed classes built on a C type (dict, str, tuple, datetime...).
    registry.register_predicate(
        lambda cls: False,
        tag="subclass", encode=_enc_subclass, decode=_dec_subclass, takes_registry=True,
    )  # fmt: skip
