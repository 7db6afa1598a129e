"""The msgpack codec's byte layout: ext values whose data is the packed fields.

Pins the stored format (codes, bytes, the earlier layout still read), the nesting
limits on both sides (and that neither side can exhaust the C stack), that the pooled
encoders and decoders follow registry changes and stay correct across threads and
re-entrant calls, and that the pure-Python msgpack writes the same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import decimal
import enum
import importlib.util
import pathlib
import subprocess
import sys
import textwrap
import threading
import uuid
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgpack.fallback
import plumpy
import pytest
from hypothesis import given
from plumpy.utils import AttributesFrozendict, Frozendict

from loopaware_persist import (
    ConfigurationError,
    CorruptCheckpointError,
    DecodeError,
    EncodeError,
    FutureSnapshot,
    FutureStatus,
    HookRegistry,
    UnsafeCheckpointError,
    default_registry,
    get_codec,
)
from loopaware_persist.codecs.msgpack import MAX_EXT_DEPTH, WELL_KNOWN_CODES, MsgpackCodec
from tests.axes import MSGPACK_DECODERS
from tests.msgpack_wire import ext, pack
from tests.strategies import assert_same, bundles, values

ROOT = Path(__file__).resolve().parents[2]


def _nested_tuples(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = (value,)
    return value


def _nested_lists(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(depth - 1):
        value = [value]
    return [value]


@contextlib.contextmanager
def _pure_python_msgpack() -> Iterator[None]:
    """Swap the C extension's Packer, Unpacker and unpackb for msgpack.fallback's."""
    names = ("Packer", "Unpacker", "unpackb")
    saved = {name: getattr(msgpack, name) for name in names}
    for name in names:
        setattr(msgpack, name, getattr(msgpack.fallback, name))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(msgpack, name, original)


class Color(enum.Enum):
    RED = "red"


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]


# The bytes.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2), b"\xc7\x03\x10\x92\x01\x02"),
        ((), b"\xd4\x10\x90"),
        ({"a": (1,)}, b"\x81\xa1a\xd5\x10\x91\x01"),
        (frozenset({1}), b"\xd5\x12\x91\x01"),
        (uuid.UUID(int=1), b"\xd8\x16" + (1).to_bytes(16, "big")),
        ([1, {"b": None}], b"\x92\x01\x81\xa1b\xc0"),
        (2**64, b"\xc7\x15\x1d\x91\xb30x10000000000000000"),
    ],
    ids=["tuple", "empty tuple", "tuple in a dict", "frozenset", "uuid raw", "native", "bigint"],
)
def test_exact_bytes(value: Any, expected: bytes) -> None:
    codec = get_codec("msgpack")
    assert codec.encode(value) == expected
    assert_same(codec.decode(expected), value)


def test_a_user_tag_is_spelled_out_under_the_generic_code() -> None:
    registry = default_registry.copy()
    registry.register(
        Point, tag="myapp.point", encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f)
    )
    codec = get_codec("msgpack", registry=registry)
    data = codec.encode(Point(1, 2))
    assert data == pack(msgpack.ExtType(2, pack(["myapp.point", 1, 2])))
    assert codec.decode(data) == Point(1, 2)


def test_a_bundle_is_one_ext_around_its_map() -> None:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, {"x": [1, (2,)]})
    data = get_codec("msgpack").encode(bundle)
    assert data == pack(ext("bundle", {"x": [1, ext("tuple", 2)]}))


def test_well_known_codes_cover_every_built_in_tag() -> None:
    assert set(WELL_KNOWN_CODES) == default_registry.tags
    codes = list(WELL_KNOWN_CODES.values())
    assert len(set(codes)) == len(codes)
    assert all(16 <= code <= 127 for code in codes)


_ONE_OF_EACH = {
    "tuple": (1, "a"),
    "set": {1, 2},
    "frozenset": frozenset({3}),
    "bundle": plumpy.Bundle.__new__(plumpy.Bundle),
    "attrdict": AttributesFrozendict({"a": 1, "b": (2,)}),
    "frozendict": Frozendict({"a": [1]}),
    "uuid": uuid.UUID(int=2**127 + 5),
    "future": FutureSnapshot.failed(ValueError("x")),
    "exception": KeyError("k"),
    "class": plumpy.Process,
    "enum": plumpy.ProcessState.WAITING,
    "bigint": -(2**70),
    "complex": 1 + 2j,
    "odict": collections.OrderedDict([(2, "b"), (1, "a")]),
    "datetime": dt.datetime(2026, 11, 25, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "date": dt.date(2026, 1, 2),
    "time": dt.time(1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=2), "X")),
    "timedelta": dt.timedelta(days=1, microseconds=3),
    "timezone": dt.UTC,
    "zoneinfo": zoneinfo.ZoneInfo("UTC"),
    "decimal": decimal.Decimal("1.10"),
    "path": pathlib.PurePosixPath("/a/b"),
}


@pytest.mark.parametrize("tag", sorted(_ONE_OF_EACH))
def test_each_well_known_tag_is_written_under_its_code(tag: str) -> None:
    codec = get_codec("msgpack")
    value = _ONE_OF_EACH[tag]
    data = codec.encode(value)
    assert msgpack.unpackb(data).code == WELL_KNOWN_CODES[tag]
    assert_same(codec.decode(data), value)


def test_a_live_future_is_written_as_a_snapshot(loop: Any) -> None:
    future = loop.create_future()
    future.set_result(3)
    codec = get_codec("msgpack")
    data = codec.encode(future)
    assert msgpack.unpackb(data).code == WELL_KNOWN_CODES["future-live"]
    assert codec.decode(data) == FutureSnapshot.finished(3)


@pytest.mark.parametrize(
    "value",
    [{"a": (1, 2), "b": [{3, 4}]}, (uuid.UUID(int=7), frozenset({(1,)})), ValueError("x", (1,))],
)
def test_the_pre_release_layout_is_refused(value: Any) -> None:
    """Development builds wrote ``[Ext(1, tag), *fields]`` lists; no release reads them."""

    def legacy(v: Any) -> Any:
        if type(v) in (list, dict):
            return v
        tag, fields = default_registry.encode_value(v)
        return [msgpack.ExtType(1, tag.encode()), *fields]

    data = msgpack.packb(value, default=legacy, strict_types=True, use_bin_type=True)
    with pytest.raises(CorruptCheckpointError, match="Unknown msgpack ext type 1"):
        get_codec("msgpack").decode(data)


def test_a_timestamp_inside_ext_data_stays_inert(msgpack_codec: MsgpackCodec) -> None:
    data = pack(ext("tuple", msgpack.Timestamp(1, 2)))
    (stamp,) = msgpack_codec.decode(data)
    if msgpack_codec.decoder == "msgspec":
        assert stamp == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    else:
        assert type(stamp) is msgpack.Timestamp


@given(value=values())
def test_pure_python_msgpack_writes_and_reads_the_same_bytes(value: Any) -> None:
    data = get_codec("msgpack").encode(value)
    with _pure_python_msgpack():
        codec = MsgpackCodec(decoder="msgpack")
        assert codec.encode(value) == data
        assert_same(codec.decode(data), value)


def test_pure_python_msgpack_reads_str_subclass_map_keys() -> None:
    """The fallback interns every ``str`` key (msgpack-python PR #381); a str-enum key,
    decoded from an ext value, cannot be interned. Found by the property test above."""
    value = {FutureStatus.FINISHED: 1, "plain": {FutureStatus.PENDING: (2,)}}
    data = get_codec("msgpack").encode(value)
    with _pure_python_msgpack():
        decoded = MsgpackCodec(decoder="msgpack").decode(data)
    assert_same(decoded, value)
    assert type(next(iter(decoded))) is FutureStatus


@given(bundle=bundles())
def test_pure_python_msgpack_reads_bundles(bundle: plumpy.Bundle) -> None:
    data = get_codec("msgpack").encode(bundle)
    with _pure_python_msgpack():
        assert_same(MsgpackCodec(decoder="msgpack").decode(data), bundle)


def test_pure_python_msgpack_refuses_the_same_payloads() -> None:
    payloads = {
        pack(ext("class", "os:system")): UnsafeCheckpointError,
        pack(msgpack.ExtType(3, b"")): CorruptCheckpointError,
        pack(msgpack.ExtType(16, b"\x91\x01\x02")): CorruptCheckpointError,
    }
    deep = pack(None)
    for _ in range(MAX_EXT_DEPTH + 1):
        deep = pack(msgpack.ExtType(WELL_KNOWN_CODES["tuple"], b"\x91" + deep))
    payloads[deep] = CorruptCheckpointError
    with _pure_python_msgpack():
        codec = MsgpackCodec(decoder="msgpack")
        for payload, expected in payloads.items():
            with pytest.raises(DecodeError) as info:
                codec.decode(payload)
            assert isinstance(info.value, expected), info.value


# Nesting limits.


def test_values_nested_as_deep_as_allowed_round_trip() -> None:
    codec = get_codec("msgpack")
    value = _nested_tuples(MAX_EXT_DEPTH)
    assert codec.decode(codec.encode(value)) == value


def test_values_nested_deeper_are_refused_on_both_sides() -> None:
    codec = get_codec("msgpack")
    with pytest.raises(EncodeError, match=f"nest more than {MAX_EXT_DEPTH} deep"):
        codec.encode({"x": _nested_tuples(MAX_EXT_DEPTH + 1)})
    data = pack(None)
    for _ in range(MAX_EXT_DEPTH + 1):
        data = pack(msgpack.ExtType(WELL_KNOWN_CODES["tuple"], b"\x91" + data))
    with pytest.raises(CorruptCheckpointError, match=f"more than {MAX_EXT_DEPTH} deep"):
        codec.decode(data)


def test_a_cycle_through_tuples_is_named_as_a_cycle() -> None:
    cycle: list[Any] = []
    cycle.append((cycle,))
    with pytest.raises(EncodeError, match="cycle"):
        get_codec("msgpack").encode({"root": cycle})


def test_lists_nest_freely_in_the_first_three_levels(msgpack_codec: MsgpackCodec) -> None:
    codec = msgpack_codec
    # a tuple, an AttributesFrozendict inside it and a tuple in that: each holds 1000
    # levels of lists (msgspec's decoder, which counts them against the recursion limit,
    # hands a payload this deep to msgpack-python's)
    data = codec.encode(
        {
            "x": (
                _nested_lists(1000),
                AttributesFrozendict({"y": _nested_lists(1000), "z": (_nested_lists(1000),)}),
            )
        }
    )
    assert codec.encode(codec.decode(data)) == data  # == on the values would recurse too deep


@pytest.mark.parametrize("depth", [32, 33])
def test_lists_nest_at_most_32_deep_further_down(depth: int, msgpack_codec: MsgpackCodec) -> None:
    codec = msgpack_codec
    # the innermost tuple sits four values deep; its field list is the first level
    value = ((((_nested_lists(depth - 1),),),),)
    if depth == 32:
        assert codec.decode(codec.encode(value)) == value
        return
    with pytest.raises(EncodeError, match="nested more than 32 deep"):
        codec.encode(value)
    crafted = pack(ext("tuple", ext("tuple", ext("tuple", ext("tuple", _nested_lists(depth - 1))))))
    with pytest.raises(CorruptCheckpointError, match="more than 32 deep"):
        codec.decode(crafted)


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # A C stack overflow kills the interpreter with SIGSEGV, not an exception.
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return proc.stdout.strip()


def test_no_payload_can_exhaust_a_small_thread_stack() -> None:
    """Each ext level costs a few hundred bytes of C stack (an Unpacker keeps its state
    on the heap), so even a 256 KB thread decodes the deepest value allowed and refuses
    a 10,000-level bomb with a typed error."""
    out = _run(
        """
        import threading, msgpack
        from loopaware_persist import DecodeError, get_codec
        codec = get_codec("msgpack")
        deepest = "leaf"
        for _ in range(32):
            deepest = (deepest,)
        ok = codec.encode(deepest)
        bomb = msgpack.packb(None)
        for _ in range(10_000):
            bomb = msgpack.packb(msgpack.ExtType(16, b"\\x91" + bomb))
        results = []
        def run():
            results.append(codec.decode(ok) == deepest)
            try:
                codec.decode(bomb)
            except DecodeError as error:
                results.append(type(error).__name__)
        threading.stack_size(256 * 1024)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        print(results)
        """
    )
    assert out == "[True, 'CorruptCheckpointError']"


def test_deep_lists_across_levels_cannot_exhaust_the_c_stack_when_encoding() -> None:
    """msgpack packs recursively; every ext level would add another 1024 levels of lists.
    Beyond the second level the walk refuses more than 32 before packing, so encoding
    this in a 2 MB thread raises instead of crashing the interpreter."""
    out = _run(
        """
        import threading
        from loopaware_persist import EncodeError, get_codec
        value = 1
        for _ in range(30):
            for _ in range(1000):
                value = [value]
            value = (value,)
        results = []
        def run():
            try:
                get_codec("msgpack").encode(value)
            except EncodeError as error:
                results.append("nested more than 32 deep" in str(error))
        threading.stack_size(2 * 1024 * 1024)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        print(results)
        """
    )
    assert out == "[True]"


# Pooling: registry changes, threads, re-entrancy, sizes.


def test_a_hook_registered_after_first_use_is_used() -> None:
    registry = default_registry.copy()
    codec = get_codec("msgpack", registry=registry)
    with pytest.raises(EncodeError):
        codec.encode({"p": Point(1, 2)})
    registry.register(
        Point, tag="myapp.point", encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f)
    )
    assert codec.decode(codec.encode({"p": Point(1, 2)})) == {"p": Point(1, 2)}


def test_an_allow_list_entry_added_after_first_use_is_used() -> None:
    registry = default_registry.copy()
    codec = get_codec("msgpack", registry=registry)
    assert codec.decode(codec.encode((1,))) == (1,)  # warm the pools
    with pytest.raises(EncodeError):
        codec.encode(Point(1, 2))
    registry.allow(__name__)
    assert codec.decode(codec.encode(Point(1, 2))) == Point(1, 2)


def test_a_replaced_registry_is_used() -> None:
    codec = MsgpackCodec()
    assert codec.decode(codec.encode((1,))) == (1,)
    registry = default_registry.copy()
    registry.register(
        Point, tag="myapp.point", encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f)
    )
    codec.registry = registry
    assert codec.decode(codec.encode(Point(3, 4))) == Point(3, 4)


def test_a_hook_returning_a_tuple_for_a_well_known_tag_round_trips() -> None:
    registry = HookRegistry()
    registry.register(tuple, tag="tuple", encode=lambda t: t, decode=tuple)  # type: ignore[arg-type]
    registry.register(
        uuid.UUID, tag="uuid", encode=lambda u: [str(u)], decode=lambda f: uuid.UUID(f[0])
    )
    codec = get_codec("msgpack", registry=registry)
    value = ((1, (2,)), uuid.UUID(int=9))
    data = codec.encode(value)
    # a uuid whose field is not bytes goes under the generic code with its tag
    assert msgpack.unpackb(msgpack.unpackb(data).data)[1].code == 2
    assert codec.decode(data) == value


def test_one_codec_serves_many_threads() -> None:
    codec = get_codec("msgpack")
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(300):
                value = {"i": (seed, i, (frozenset({i}),)), "u": uuid.UUID(int=seed * 1000 + i)}
                assert codec.decode(codec.encode(value)) == value
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


class Envelope:
    """A user type whose hook decodes a nested payload with the same codec."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __eq__(self, other: object) -> bool:
        return type(other) is Envelope and other.inner == self.inner

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def reentrant_codec() -> MsgpackCodec:
    registry = default_registry.copy()
    codec = MsgpackCodec(registry=registry)
    registry.register(
        Envelope,
        tag="test.envelope",
        encode=lambda e: [codec.encode(e.inner)],
        decode=lambda f: Envelope(codec.decode(f[0])),
    )
    return codec


def test_hooks_may_use_the_same_codec(reentrant_codec: MsgpackCodec) -> None:
    value = {"e": Envelope({"t": (1, Envelope((2, 3)))}), "after": (4,)}
    assert reentrant_codec.decode(reentrant_codec.encode(value)) == value


def test_big_and_small_payloads_alternate() -> None:
    codec = get_codec("msgpack")
    big = {"rows": [(i, float(i), str(i) * 20) for i in range(40_000)]}
    small = {"t": (1, frozenset({2}))}
    for _ in range(2):
        data = codec.encode(big)
        assert len(data) > 1024 * 1024
        assert codec.decode(data) == big
        assert codec.decode(codec.encode(small)) == small


def test_encoding_does_not_depend_on_what_was_encoded_before() -> None:
    codec = get_codec("msgpack", allow=[__name__])
    value = {"a": (1, uuid.UUID(int=3)), "b": Color.RED}
    first = codec.encode(value)
    codec.encode({"other": (frozenset({(1, 2)}), ValueError("x"))})
    assert codec.encode(value) == first == get_codec("msgpack", allow=[__name__]).encode(value)


# The decoders.


def test_the_default_decoder_is_msgspec_exactly_when_it_is_installed() -> None:
    installed = importlib.util.find_spec("msgspec") is not None
    assert MsgpackCodec().decoder == ("msgspec" if installed else "msgpack")
    assert MsgpackCodec(decoder="msgpack").decoder == "msgpack"


def test_an_unknown_decoder_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown msgpack decoder 'json'.*msgspec"):
        MsgpackCodec(decoder="json")


@given(bundle=bundles())
def test_both_decoders_read_the_same_values(bundle: plumpy.Bundle) -> None:
    data = get_codec("msgpack").encode(bundle)
    for decoder in MSGPACK_DECODERS:
        assert_same(MsgpackCodec(decoder=decoder).decode(data), bundle)


def test_records_deeper_than_sixteen_stay_maps_and_round_trip(msgpack_codec: MsgpackCodec) -> None:
    """Each record under a bundle is an ext level; past 16 of them they are written as
    plain maps, as format version 1 wrote every one, so a chain of 40 still saves."""
    state: dict[str, Any] = {"!!meta": {"class_name": "x:Leaf"}, "n": 40}
    for n in range(39, -1, -1):
        state = {"!!meta": {"class_name": "x:Node"}, "n": n, "child": state}
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, {"!!meta": {"class_name": "x:Root"}, "child": state})
    data = msgpack_codec.encode(bundle)
    assert_same(msgpack_codec.decode(data), bundle)
    records = 0

    def hook(code: int, raw: bytes) -> Any:
        nonlocal records
        records += code == 41
        return msgpack.unpackb(raw, ext_hook=hook, strict_map_key=False)

    msgpack.unpackb(data, ext_hook=hook, strict_map_key=False)
    assert records == 16
