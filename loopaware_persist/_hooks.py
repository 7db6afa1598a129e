"""The built-in hooks: what every checkpoint may hold, and ``default_registry``.

Each hook turns a value into a short list of fields and back. Tags are stable
strings chosen here, never ``module:qualname``, so moving code never breaks a
checkpoint; where a class must be named (enums, exceptions, class references,
allowed objects) the name is resolved through the allow-list on load.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import decimal
import enum
import pathlib
import traceback
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any, cast

import attrs
import plumpy
from plumpy.utils import AttributesFrozendict, Frozendict

from ._errors import CorruptCheckpointError, EncodeError, ForeignException
from ._registry import HookRegistry, class_name, solid_base
from ._snapshot import FutureSnapshot, FutureStatus, _check_consistent, snapshot_future
from ._uuid import uuid_from_int

__all__ = ("ForeignException", "configure_defaults", "default_registry")

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _corrupt(what: str, fields: Any) -> CorruptCheckpointError:
    msg = f"Malformed {what} in checkpoint: {fields!r:.200}. The record is damaged or crafted."
    return CorruptCheckpointError(msg)


# region plain value types


def _enc_int(value: int) -> list[Any]:
    # Hex, not decimal: int <-> str in base 10 is capped at 4300 digits by default.
    return [hex(value)]


def _dec_int(fields: list[Any]) -> int:
    (text,) = fields
    if not isinstance(text, str):
        raise _corrupt("big integer", fields)
    return int(text, 16)


def _enc_datetime(value: dt.datetime) -> list[Any]:
    return [
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, value.fold, value.tzinfo,
    ]  # fmt: skip


def _dec_datetime(fields: list[Any]) -> dt.datetime:
    year, month, day, hour, minute, second, micro, fold, tz = fields
    return dt.datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)


def _enc_time(value: dt.time) -> list[Any]:
    return [value.hour, value.minute, value.second, value.microsecond, value.fold, value.tzinfo]


def _dec_time(fields: list[Any]) -> dt.time:
    hour, minute, second, micro, fold, tz = fields
    return dt.time(hour, minute, second, micro, tz, fold=fold)


def _enc_timezone(value: dt.timezone) -> list[Any]:
    offset = value.utcoffset(None)
    # Keep the name only when one was given explicitly (timezone(offset, "CET")).
    name = value.tzname(None)
    return [offset, None if dt.timezone(offset).tzname(None) == name else name]


def _dec_timezone(fields: list[Any]) -> dt.timezone:
    offset, name = fields
    return dt.timezone(offset) if name is None else dt.timezone(offset, name)


def _enc_zoneinfo(value: zoneinfo.ZoneInfo) -> list[Any]:
    if value.key is None:
        msg = f"Cannot store {value!r}: a ZoneInfo read from a file has no key to restore it by."
        raise EncodeError(msg)
    return [value.key]


def _dec_zoneinfo(fields: list[Any]) -> zoneinfo.ZoneInfo:
    (key,) = fields
    try:
        return zoneinfo.ZoneInfo(key)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError, TypeError) as error:
        raise _corrupt("time zone", fields) from error


_PATHS: dict[str, type[pathlib.PurePath]] = {
    cls.__name__: cls
    for cls in (
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}


def _enc_path(value: pathlib.PurePath) -> list[Any]:
    name = type(value).__name__
    if _PATHS.get(name) is not type(value):
        raise _no_subclass(type(value), "a pathlib path or str(path)")
    return [name, str(value)]


def _no_subclass(cls: type, instead: str) -> EncodeError:
    msg = (
        f"Cannot store an instance of {class_name(cls)!r}: only the classes themselves, not "
        f"subclasses, are stored by the built-in hook. Store {instead} instead, or register "
        "a hook for the subclass with registry.register(...)."
    )
    return EncodeError(msg)


def _dec_path(fields: list[Any]) -> pathlib.PurePath:
    kind, text = fields
    try:
        return _PATHS[kind](text)
    except (KeyError, TypeError, NotImplementedError) as error:
        raise _corrupt("path", fields) from error


_new: Any = object.__new__


def _dec_uuid(fields: list[Any]) -> uuid.UUID:
    (raw,) = fields
    if type(raw) is not bytes or len(raw) != 16:
        raise _corrupt("UUID", fields)
    return uuid_from_int(int.from_bytes(raw, "big"))


def _dec_bundle(fields: list[Any]) -> plumpy.Bundle:
    (mapping,) = fields
    if type(mapping) is not dict:
        raise _corrupt("bundle", fields)
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, mapping)
    return bundle


def _enc_frozendict(value: Frozendict) -> list[Any]:
    # plumpy's Frozendict keeps its items in a dict; copying that one is a C loop, where
    # dict(value) walks the Mapping protocol in Python (a subclass may override it).
    if type(value) in _PLUMPY_FROZENDICTS:
        return [value._dict]
    return [dict(value)]


_PLUMPY_FROZENDICTS = (Frozendict, AttributesFrozendict)


def _frozendict_state(cls: type[Frozendict]) -> dict[str, Any] | None:
    """The instance dict ``cls(mapping)`` builds, minus ``_dict``, if storing a copy of
    ``mapping`` in ``_dict`` is all that depends on the mapping (as in plumpy 0.26)."""
    probe = {"key": 1}
    empty, full = vars(cls()), vars(cls(probe))
    if full.get("_dict") != probe or "_dict" not in empty:
        return None
    state = {key: value for key, value in full.items() if key != "_dict"}
    if state != {key: value for key, value in empty.items() if key != "_dict"}:
        return None
    return state


def _dec_frozendict(cls: type[Frozendict]) -> Any:
    # Filling in the instance dict halves the cost of cls(mapping), which copies the
    # (freshly decoded, unshared) mapping through two __init__s; plumpy bundles hold two.
    state = _frozendict_state(cls)

    def decode(fields: list[Any]) -> Frozendict:
        (mapping,) = fields
        if type(mapping) is not dict:
            raise _corrupt(cls.__name__, fields)
        if state is None:
            return cls(mapping)
        obj = _new(cls)
        instance_dict = state.copy()
        instance_dict["_dict"] = mapping
        obj.__dict__ = instance_dict
        return obj  # type: ignore[no-any-return]

    return decode


# endregion

# region futures


def _is_future(cls: type) -> bool:
    return issubclass(cls, (asyncio.Future, concurrent.futures.Future))


_STATUS_VALUES: dict[FutureStatus, str] = {status: status.value for status in FutureStatus}
_STATUSES: dict[Any, FutureStatus] = {status.value: status for status in FutureStatus}
# FutureSnapshot is a frozen slotted attrs class: _dec_snapshot sets its slots directly,
# as pickle's __setstate__ would, then runs the validator its __init__ runs.
_SNAPSHOT_FIELDS = ("status", "result", "exception", "cancel_message")
if tuple(field.name for field in attrs.fields(FutureSnapshot)) != _SNAPSHOT_FIELDS:
    msg = "FutureSnapshot's fields changed: update the 'future' hook in _hooks.py to match."
    raise RuntimeError(msg)
_FINISHED, _FAILED = FutureStatus.FINISHED, FutureStatus.FAILED
_SNAPSHOT_SLOTS = tuple(getattr(FutureSnapshot, name).__set__ for name in _SNAPSHOT_FIELDS)


def _enc_snapshot(value: Any) -> list[Any]:
    snap = value if isinstance(value, FutureSnapshot) else snapshot_future(value)
    return [_STATUS_VALUES[snap.status], snap.result, snap.exception, snap.cancel_message]


def _dec_snapshot(fields: list[Any]) -> FutureSnapshot:
    # About a quarter of FutureSnapshot(...)'s cost (its converter and validator calls
    # dominate); checkpoints of WorkChains hold thousands of snapshots.
    status, result, exception, cancel_message = fields
    try:
        status = _STATUSES[status]
    except (KeyError, TypeError) as error:
        raise _corrupt("future snapshot", fields) from error
    snap = _new(FutureSnapshot)
    set_status, set_result, set_exception, set_cancel_message = _SNAPSHOT_SLOTS
    set_status(snap, status)
    set_result(snap, result)
    set_exception(snap, exception)
    set_cancel_message(snap, cancel_message)
    # The common shapes (finished with a result, pending) are consistent by inspection;
    # anything else goes through the validator itself.
    if not (
        exception is None
        and cancel_message is None
        and (status is _FINISHED or (result is None and status is not _FAILED))
    ):
        try:
            _check_consistent(snap, None, None)
        except ValueError as error:
            raise _corrupt("future snapshot", fields) from error
    return snap  # type: ignore[no-any-return]


# endregion

# region classes, enums, exceptions, objects (these consult the allow-list)


def _enc_class(value: type, registry: HookRegistry) -> list[Any]:
    registry.check_importable(value, "the class")
    return [class_name(value)]


def _dec_class(fields: list[Any], registry: HookRegistry) -> type:
    (name,) = fields
    return registry.resolve(name, "class")


def _enc_enum(value: enum.Enum, registry: HookRegistry) -> list[Any]:
    registry.check_importable(type(value), "a member of")
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


def _reduced(value: BaseException) -> tuple[list[Any], dict[str, Any] | None]:
    # What pickle would keep: __reduce__ knows attributes set outside args
    # (OSError.filename, ImportError.name/path); the rest lives in __dict__.
    reduced = value.__reduce__()
    args = list(reduced[1]) if isinstance(reduced, tuple) and len(reduced) > 1 else list(value.args)
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    merged = {**vars(value), **(state if isinstance(state, dict) else {})}
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


# region subclasses of built-in types
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


# endregion


# endregion


def configure_defaults(registry: HookRegistry) -> None:
    """Register the built-in hooks on ``registry``.

    :param registry: a registry that has none of the built-in tags yet
    """

    def reg(cls: type, *, tag: str, encode: Any, decode: Any, subclasses: bool = False) -> None:
        # Value types only: a subclass goes to the allow-list ('subclass' below), so it
        # keeps its class and attributes or is refused, never narrowed to the base.
        registry.register(cls, tag=tag, encode=encode, decode=decode, subclasses=subclasses)

    reg(tuple, tag="tuple", encode=list, decode=tuple)
    reg(set, tag="set", encode=list, decode=set)
    reg(frozenset, tag="frozenset", encode=list, decode=frozenset)
    # bytearray needs no hook: msgpack's packer writes it natively as bin (even with
    # strict_types), so it loads back as bytes; pickle keeps it.
    reg(complex, tag="complex", encode=lambda v: [v.real, v.imag], decode=lambda f: complex(*f))
    reg(
        collections.OrderedDict,
        tag="odict",
        encode=lambda v: [list(v.items())],
        decode=lambda f: collections.OrderedDict(f[0]),
    )
    registry.register_predicate(
        lambda cls: cls is int, tag="bigint", encode=_enc_int, decode=_dec_int
    )
    reg(uuid.UUID, tag="uuid", encode=lambda v: [v.int.to_bytes(16, "big")], decode=_dec_uuid)
    reg(dt.datetime, tag="datetime", encode=_enc_datetime, decode=_dec_datetime)
    reg(
        dt.date, tag="date", encode=lambda v: [v.year, v.month, v.day], decode=lambda f: dt.date(*f)
    )
    reg(dt.time, tag="time", encode=_enc_time, decode=_dec_time)
    reg(
        dt.timedelta,
        tag="timedelta",
        encode=lambda v: [v.days, v.seconds, v.microseconds],
        decode=lambda f: dt.timedelta(*f),
    )
    reg(dt.timezone, tag="timezone", encode=_enc_timezone, decode=_dec_timezone)
    reg(zoneinfo.ZoneInfo, tag="zoneinfo", encode=_enc_zoneinfo, decode=_dec_zoneinfo)
    reg(
        decimal.Decimal,
        tag="decimal",
        encode=lambda v: [str(v)],
        decode=lambda f: decimal.Decimal(f[0]),
    )
    # The path hook serves the four concrete classes (subclasses of PurePath) and refuses
    # any other subclass itself; a LoopAwareBundle is saved as the plumpy Bundle it wraps.
    reg(pathlib.PurePath, tag="path", encode=_enc_path, decode=_dec_path, subclasses=True)
    reg(
        plumpy.Bundle,
        tag="bundle",
        encode=lambda v: [dict(v)],
        decode=_dec_bundle,
        subclasses=True,
    )
    reg(
        AttributesFrozendict,
        tag="attrdict",
        encode=_enc_frozendict,
        decode=_dec_frozendict(AttributesFrozendict),
    )
    reg(Frozendict, tag="frozendict", encode=_enc_frozendict, decode=_dec_frozendict(Frozendict))
    reg(FutureSnapshot, tag="future", encode=_enc_snapshot, decode=_dec_snapshot, subclasses=True)
    # Futures of every kind are stored as the snapshot they would give.
    registry.register_predicate(
        _is_future, tag="future-live", encode=_enc_snapshot, decode=_dec_snapshot
    )
    # These hooks name classes, so they resolve them through the registry in use.
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


def _make_default() -> HookRegistry:
    registry = HookRegistry()
    configure_defaults(registry)
    return registry


#: The registry every codec uses unless given another: builtins, plumpy and kiwipy types.
default_registry: HookRegistry = _make_default()
