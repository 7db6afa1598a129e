"""The built-in hooks: what every checkpoint may hold, and ``default_registry``.

Each hook turns a value into a short list of fields and back. Tags are stable
strings chosen here, never ``module:qualname``, so moving code never breaks a
checkpoint. This module holds the hooks of value types and futures and assembles
the default registry; the hooks that must name a class (class references, enum
members, exceptions, allowed objects and subclasses of built-in types), whose names
are resolved through the allow-list on load, live in :mod:`._named_hooks`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import decimal
import pathlib
import uuid
import zoneinfo
from typing import Any

import attrs
import plumpy
from plumpy.utils import AttributesFrozendict, Frozendict

from ._errors import EncodeError, ForeignException
from ._named_hooks import _corrupt, register_named_hooks
from ._registry import HookRegistry, class_name
from ._snapshot import FutureSnapshot, FutureStatus, _check_consistent, snapshot_future
from ._uuid import uuid_from_int

__all__ = ("ForeignException", "configure_defaults", "default_registry")

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


# Plain value types.


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


# Futures.


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
    # Registered last, so tried first among the predicates: classes, enum members and
    # exceptions are stored by name; allowed objects fall back to 'object'/'subclass'.
    register_named_hooks(registry)


def _make_default() -> HookRegistry:
    registry = HookRegistry()
    configure_defaults(registry)
    return registry


#: The registry every codec uses unless given another: builtins, plumpy and kiwipy types.
default_registry: HookRegistry = _make_default()
