"""Codecs against crafted and edge-case values: every malformed field of a hook's record
is refused with a typed, descriptive error (never an arbitrary exception), values that
cannot be restored are refused at save time, and the pickle codec's class references
resolve wherever they sit in the tree.
"""

from __future__ import annotations

import warnings
import zoneinfo
from typing import Any

import msgpack
import plumpy
import pytest

from loopaware_persist import CorruptCheckpointError, EncodeError, get_codec
from loopaware_persist._snapshot import FutureSnapshot, FutureStatus
from loopaware_persist.codecs.msgpack import WELL_KNOWN_CODES, MsgpackCodec
from loopaware_persist.codecs.pickle import UnsafeLoadWarning
from tests.axes import CODECS
from tests.msgpack_wire import ext
from tests.processes import Opaque


def _record(tag: str, *fields: Any) -> bytes:
    packed: bytes = msgpack.packb(ext(tag, *fields), use_bin_type=True)
    return packed


MALFORMED = {
    "bigint not text": (_record("bigint", 5), "Malformed big integer"),
    "unknown zone": (_record("zoneinfo", "No/Such_Zone"), "Malformed time zone"),
    "zone path escape": (_record("zoneinfo", "../../etc/passwd"), "Malformed time zone"),
    "zone not text": (_record("zoneinfo", 7), "Malformed time zone"),
    "unknown path kind": (_record("path", "EvilPath", "/a"), "Malformed path"),
    "bundle not a dict": (_record("bundle", [1, 2]), "Malformed bundle"),
    "uuid not 16 bytes": (
        msgpack.packb(msgpack.ExtType(WELL_KNOWN_CODES["uuid"], b"\x00" * 15)),
        "Malformed UUID",
    ),
    "snapshot status": (_record("future", "exec", None, None, None), "Malformed future snapshot"),
    "snapshot exception not an exception": (
        _record("future", "failed", None, "boom", None),
        "Malformed future snapshot",
    ),
    "snapshot result while pending": (
        _record("future", "pending", 1, None, None),
        "Malformed future snapshot",
    ),
    "attrdict not a dict": (_record("attrdict", [1]), "Malformed AttributesFrozendict"),
    "enum member": (
        _record("enum", "plumpy.process_states:ProcessState", "no-such-state"),
        "Malformed member of plumpy.process_states:ProcessState",
    ),
    "exception name": (
        _record("exception", 5, [], "", None, None, None, False, None),
        "Malformed exception",
    ),
    "exception state": (
        _record("exception", "builtins:ValueError", ["x"], "x", [1], None, None, False, None),
        "Malformed exception state",
    ),
    "object state": (
        _record("object", "tests.processes:Opaque", [1, 2, 3]),
        "Malformed state of tests.processes:Opaque",
    ),
    "object slots": (
        _record("object", "tests.processes:Opaque", ext("tuple", {"value": 1}, 5)),
        "Malformed slots of tests.processes:Opaque",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_msgpack_refuses_malformed_hook_fields_as_corrupt(case: str) -> None:
    data, message = MALFORMED[case]
    codec = get_codec("msgpack", allow=["tests.processes"])
    with pytest.raises(CorruptCheckpointError, match=message) as info:
        codec.decode(data)
    assert "damaged or crafted" in str(info.value)


def test_msgpack_refuses_bytes_after_an_ext_value_naming_its_type(
    msgpack_codec: MsgpackCodec,
) -> None:
    code = WELL_KNOWN_CODES["tuple"]
    data = msgpack.packb(msgpack.ExtType(code, msgpack.packb([1, 2]) + b"\xc0"))
    with pytest.raises(CorruptCheckpointError) as info:
        msgpack_codec.decode(data)
    if msgpack_codec.decoder == "msgpack":  # msgspec's own message says "trailing"
        assert f"ext value of type {code}" in str(info.value)
    assert "railing" in str(info.value)


@pytest.mark.parametrize("inside", [{"a": 1}, 5, "text"], ids=["a map", "an int", "a string"])
def test_msgpack_refuses_a_tuple_that_holds_no_array(
    msgpack_codec: MsgpackCodec, inside: Any
) -> None:
    """A tuple's data must be an array: the decode refuses anything else rather than
    making a tuple of a map's keys or a string's letters."""
    code = WELL_KNOWN_CODES["tuple"]
    data = msgpack.packb(msgpack.ExtType(code, msgpack.packb(inside)))
    with pytest.raises(CorruptCheckpointError, match=f"Malformed ext value of type {code}"):
        msgpack_codec.decode(data)


def test_msgpack_restores_an_object_saved_with_slot_state() -> None:
    data = _record("object", "tests.processes:Opaque", ext("tuple", {"value": 1}, {"extra": 2}))
    obj = get_codec("msgpack", allow=["tests.processes"]).decode(data)
    assert type(obj) is Opaque
    assert obj.value == 1
    assert obj.extra == 2  # type: ignore[attr-defined]


def test_msgpack_puts_back_exception_state_a_property_refuses() -> None:
    """``OSError.characters_written`` only takes ints through its setter; a stored state
    still comes back, kept in the instance dict, instead of failing the whole load."""
    data = _record(
        "exception",
        "builtins:BlockingIOError",
        [11, "busy"],
        "busy",
        {"characters_written": "many"},
        None,
        None,
        False,
        None,
    )
    exc = get_codec("msgpack").decode(data)
    assert type(exc) is BlockingIOError
    assert exc.errno == 11
    assert exc.__dict__["characters_written"] == "many"


@pytest.mark.parametrize("name", CODECS)
def test_a_zoneinfo_without_a_key_is_refused_at_save_time(name: str) -> None:
    with open("/usr/share/zoneinfo/UTC", "rb") as file:
        zone = zoneinfo.ZoneInfo.from_file(file)
    with pytest.raises(EncodeError, match="ZoneInfo read from a file has no key"):
        get_codec(name).encode({"tz": zone})


def test_pickle_resolves_class_references_anywhere_in_the_tree() -> None:
    """A process class stored as a value (AiiDA's ``ctx.process_class``) is written as a
    reference (unpickling must never *call* a Process class) and comes back as the class,
    in lists, tuples, sets, futures, exception args and object state; shared containers
    stay shared."""
    shared = [plumpy.Process]
    value = {
        "list": [plumpy.Process],
        "tuple": (plumpy.Process, 1),
        "set": {plumpy.Process},
        "frozenset": frozenset({plumpy.Process}),
        "future": FutureSnapshot(status=FutureStatus.FINISHED, result=plumpy.Process),
        "error": ValueError(plumpy.Process),
        "object": Opaque(plumpy.Process),
        "a": shared,
        "b": shared,
    }
    codec = get_codec("pickle", allow=["tests.processes"])
    out = codec.decode(codec.encode(value))
    assert out["list"] == [plumpy.Process]
    assert out["tuple"] == (plumpy.Process, 1)
    assert out["set"] == {plumpy.Process}
    assert out["frozenset"] == frozenset({plumpy.Process})
    assert out["future"] == FutureSnapshot(status=FutureStatus.FINISHED, result=plumpy.Process)
    assert out["error"].args == (plumpy.Process,)
    assert out["object"] == Opaque(plumpy.Process)
    assert out["a"] is out["b"]


def test_unrestricted_pickle_resolves_class_references_by_import() -> None:
    with pytest.warns(UnsafeLoadWarning, match="runs whatever a checkpoint contains"):
        codec = get_codec("pickle-unrestricted")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = codec.decode(codec.encode({"cls": [plumpy.Process]}))
    assert out == {"cls": [plumpy.Process]}


@pytest.mark.parametrize("name", CODECS)
def test_an_unstorable_dict_key_is_named_in_the_path(name: str) -> None:
    with pytest.raises(EncodeError, match=r"Unsupported type .*Opaque") as info:
        get_codec(name).encode({"ctx": {Opaque(1): 2}})
    assert info.value.path == "['ctx']['<key>']"
    assert "(at ['ctx']['<key>'])" in str(info.value)
