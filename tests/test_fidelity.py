"""A checkpoint is a promise: what a save accepts comes back with the same type, value and
attributes, through every codec and every storage, or the save refuses it naming the path.

The values are a user's own classes (:mod:`tests.user_types`, allowed by module), held in
the context of a real plumpy WorkChain that is saved, stored and loaded onto another loop.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import msgpack
import plumpy
import pytest
from hypothesis import HealthCheck, given, settings

from loopaware_persist import (
    EncodeError,
    FutureSnapshot,
    LoopAwarePersister,
    LoopContext,
    get_codec,
    open_persister,
    unbundle,
)
from loopaware_persist.codecs.msgpack import WELL_KNOWN_CODES
from tests import user_types as ut
from tests.axes import CODECS, STORAGES, store_url
from tests.loops import LoopPair
from tests.strategies import USER_TYPES, assert_same, user_values


@pytest.fixture(scope="module", params=STORAGES)
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh store of each kind, for the whole module (hypothesis reuses it per example)."""
    with store_url(request.param, tmp_path_factory.mktemp("store"), "fidelity") as url:
        yield url


@pytest.fixture(scope="module", params=CODECS)
def persister(
    request: pytest.FixtureRequest, module_store_url: str
) -> Iterator[LoopAwarePersister]:
    """A persister per storage and codec, allowing the user's module."""
    with open_persister(module_store_url, codec=request.param, allow=[USER_TYPES]) as opened:
        yield opened


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopPair]:
    """Loop A, where processes are made, and loop B, where they are loaded."""
    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    yield a, b
    a.close()
    b.close()
    asyncio.set_event_loop(None)


def reload_context(
    persister: LoopAwarePersister,
    loops: LoopPair,
    value: Any,
) -> Any:
    """Save a :class:`~tests.user_types.Keeper` whose context holds ``value`` (verified),
    load it onto loop B, and return what its context holds then."""
    a, b = loops
    process = ut.Keeper(loop=a)
    assert process.ctx is not None
    process.ctx.value = value
    persister.save_checkpoint(process, verify=True)
    loaded = persister.load_process(process.pid, loop=b)
    assert isinstance(loaded, ut.Keeper)
    assert loaded.ctx is not None
    return loaded.ctx.value


@settings(
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=user_values())
def test_user_values_round_trip_through_each_codec(codec_name: str, value: Any) -> None:
    codec = get_codec(codec_name, allow=[USER_TYPES])
    assert_same(value, codec.decode(codec.encode({"value": value}))["value"])


@settings(report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow])
@given(value=user_values())
def test_user_values_round_trip_through_every_storage(
    persister: LoopAwarePersister, loops: LoopPair, value: Any
) -> None:
    assert_same(value, reload_context(persister, loops, value))


def _structure() -> ut.Structure:
    structure = ut.Structure(cell=[[1.0, 0.0], [0.0, 1.0]], kind="fcc")
    structure.pbc = (True, True, False)
    return structure


def _label() -> ut.Label:
    label = ut.Label("relax-step-3")
    label.origin = "restart"
    return label


# What the issue reported: each came back as an empty or zero value of its class, or
# as the plain base type.
REPORTED = {
    "dict subclass": _structure,
    "str subclass": _label,
    "int subclass": lambda: ut.Count(42),
    "list subclass": lambda: ut.Steps([1, "two"]),
    "float subclass": lambda: ut.Ratio(0.25),
    "bytes subclass": lambda: ut.Blob(b"\x00\x01"),
    "namedtuple": lambda: ut.Point(1, [2]),
    "typing.NamedTuple": lambda: ut.Cell("a", ut.Count(1)),
    "set subclass": lambda: ut.Tags({1, "x"}),
    "frozenset subclass": lambda: ut.FrozenTags({ut.Label("y")}),
    "tuple subclass": lambda: ut.Pair((1, 2)),
    "OrderedDict subclass": lambda: ut.Ordered([("b", 1), ("a", 2)]),
    "datetime subclass": lambda: ut.Stamp(2026, 12, 6, 8, 30, tzinfo=dt.UTC),
    "date subclass": lambda: ut.Day(2026, 12, 6),
    "time subclass": lambda: ut.Clock(8, 30, fold=1),
    "timedelta subclass": lambda: ut.Span(days=1, seconds=2),
    "Decimal subclass": lambda: ut.Amount("1.50"),
    "complex subclass": lambda: ut.Impedance(1, -2),
    "bytearray subclass": lambda: ut.Buffer(b"ab"),
    "enum": lambda: [ut.Phase.SCF, ut.Level.HIGH, ut.Flags.READ | ut.Flags.WRITE],
    "nested": lambda: ut.Structure(inner=ut.Steps([ut.Point(ut.Label("p"), ut.Count(3))])),
    "nested Savable": lambda: ut.Note(text="checkpointed", parts=ut.Steps([1])),
}


@pytest.mark.parametrize("make", REPORTED.values(), ids=REPORTED.keys())
def test_reported_values_reload_exactly(
    persister: LoopAwarePersister, loops: LoopPair, make: Any
) -> None:
    value = make()
    assert_same(value, reload_context(persister, loops, value))


def test_subclass_is_stored_under_its_own_tag() -> None:
    data = get_codec("msgpack", allow=[USER_TYPES]).encode(ut.Label("x"))
    ext = msgpack.unpackb(data)
    assert ext.code == WELL_KNOWN_CODES["subclass"]
    assert msgpack.unpackb(ext.data) == ["tests.user_types:Label", "str", "x", None]


def test_records_of_the_object_layout_still_load() -> None:
    # Before the 'subclass' layout, an allowed dict subclass was written as an 'object'
    # with its instance dict only; such records must keep loading as they did.
    state = msgpack.packb(["tests.user_types:Structure", {"note": "old"}])
    data = msgpack.packb(msgpack.ExtType(WELL_KNOWN_CODES["object"], state))
    decoded = get_codec("msgpack", allow=[USER_TYPES]).decode(data)
    assert type(decoded) is ut.Structure
    assert vars(decoded) == {"note": "old"}


@pytest.mark.parametrize(
    ("value", "inner", "match"),
    [
        ([0, collections.namedtuple("Local", "a")(1)], "[1]", "Local"),
        ({"k": collections.deque([1])}, "['k']", "deque"),
    ],
    ids=["namedtuple not allowed", "deque not allowed"],
)
def test_values_not_allowed_are_refused_at_save(
    codec_name: str, tmp_path: pathlib.Path, loops: LoopPair, value: Any, inner: str, match: str
) -> None:
    with open_persister(f"sqlite:///{tmp_path}/s.db", codec=codec_name) as persister:
        with pytest.raises(EncodeError, match=match) as info:
            reload_context(persister, loops, value)
        assert info.value.path == f"_context['value']{inner}"
        assert "allow" in str(info.value)
        assert persister.get_checkpoints() == []


@pytest.mark.parametrize(
    "error",
    [
        ut.JobFailed("relax", 137),
        ut.Rejected("over quota", reason="disk"),
        ut.MissingInput("/scratch/input.dat"),
        ut.NoPlugin("core.arithmetic"),
    ],
    ids=["other arguments", "keyword-only", "OSError subclass", "ImportError subclass"],
)
def test_exceptions_whose_init_takes_other_arguments_reload(
    persister: LoopAwarePersister, loops: LoopPair, error: BaseException
) -> None:
    """pickle's own reduce calls ``cls(*args)`` on load (CPython gh-76877): neither codec
    runs the user's ``__init__``, and what it set comes back (its attributes, errno...)."""
    error.__cause__ = ValueError("why")
    value = {"error": error, "future": FutureSnapshot.failed(error)}
    loaded = reload_context(persister, loops, value)
    assert_same(value["error"], loaded["error"])
    assert type(loaded["future"]).__name__ == "Future"
    assert_same(error, loaded["future"].exception())


@pytest.mark.parametrize("kind", list(ut.FAILURES))
def test_an_excepted_process_reloads_with_its_exception(
    persister: LoopAwarePersister, loops: LoopPair, kind: str
) -> None:
    """plumpy keeps an EXCEPTED process's exception as YAML, which its load rebuilds by
    calling ``cls(*args)``: with plumpy's own persisters such a checkpoint of a user's
    exception whose ``__init__`` takes other arguments saves and never loads. This one
    comes back, its exception with its class, args and attributes."""
    a, b = loops
    process = ut.Failing(inputs={"kind": kind}, loop=a)
    a.run_until_complete(process.step_until_terminated())
    assert process.state is plumpy.ProcessState.EXCEPTED
    persister.save_checkpoint(process)
    loaded = persister.load_process(process.pid, loop=b)
    assert loaded.state is plumpy.ProcessState.EXCEPTED
    assert_same(process.exception(), loaded.exception())


# Class references and enum members whose class a load may not revive: (value, the
# module that allowing lets it load, what the refusal says). None: nothing can.
_NOT_REVIVABLE = {
    "class off the list": (lambda: subprocess.Popen, "subprocess", "not on the allow-list"),
    "enum off the list": (lambda: signal.SIGTERM, "signal", "not on the allow-list"),
    "NoneType": (lambda: type(None), None, "has no name in builtins"),
    "function type": (lambda: type(len), None, "has no name in builtins"),
}


@pytest.mark.parametrize("kind", list(_NOT_REVIVABLE))
def test_names_a_load_would_refuse_are_refused_at_save(
    codec_name: str, tmp_path: pathlib.Path, loops: LoopPair, kind: str
) -> None:
    make, module, match = _NOT_REVIVABLE[kind]
    value = {"k": [1, make()]}
    url = f"sqlite:///{tmp_path}/s.db"
    with open_persister(url, codec=codec_name, allow=[USER_TYPES]) as persister:
        with pytest.raises(EncodeError, match=match) as info:
            reload_context(persister, loops, value)
        assert info.value.path == "_context['value']['k'][1]"
        assert persister.get_checkpoints() == []
    if module is not None:  # the control: allowed, the same value reloads
        with open_persister(url, codec=codec_name, allow=[USER_TYPES, module]) as persister:
            assert_same(value, reload_context(persister, loops, value))


class Queue(collections.deque):  # type: ignore[type-arg]
    """Built on a C type whose items live outside ``__dict__``: only a hook can store it."""


class Home(pathlib.PurePosixPath):
    pass


@pytest.mark.parametrize(
    ("value", "match"),
    [(Queue([1, 2]), "collections:deque"), (Home("/home"), "subclass")],
    ids=["deque subclass", "path subclass"],
)
def test_msgpack_refuses_what_it_cannot_store_exactly(value: Any, match: str) -> None:
    codec = get_codec("msgpack", allow=[__name__])
    with pytest.raises(EncodeError, match=match) as info:
        codec.encode({"x": [value]})
    assert info.value.path == "['x'][0]"
    assert "register" in str(info.value)


# Values msgpack's packer writes natively, before any hook, as something that would not
# load back as themselves: each one refused, wherever the guard's walk meets it.
_WRITTEN_AS_IS = {
    "memoryview": (lambda: memoryview(b"ab"), r"memoryview .*Store bytes\(view\)"),
    "ExtType": (
        lambda: msgpack.ExtType(WELL_KNOWN_CODES["tuple"], msgpack.packb([1, 2])),
        r"msgpack\.ExtType .*Store its code and data",
    ),
    "Timestamp": (
        lambda: msgpack.Timestamp(1, 2),
        r"msgpack\.Timestamp .*Store timestamp\.to_datetime\(\)",
    ),
}
_PLACES = {
    "item": (lambda v: [0, v], "[1]"),
    "in a tuple": (lambda v: {"t": (1, (v,))}, "['t'][1][0]"),
    "attribute": (lambda v: ut.Record(field=[v]), ".field[0]"),
    "snapshot result": (lambda v: [FutureSnapshot.finished(v)], "[0]['<future>']"),
}


@pytest.mark.parametrize("place", list(_PLACES))
@pytest.mark.parametrize("kind", list(_WRITTEN_AS_IS))
def test_msgpack_refuses_values_it_would_write_as_something_else(
    tmp_path: pathlib.Path, loops: LoopPair, kind: str, place: str
) -> None:
    make, match = _WRITTEN_AS_IS[kind]
    wrap, inner = _PLACES[place]
    with open_persister(
        f"sqlite:///{tmp_path}/s.db", codec="msgpack", allow=[USER_TYPES]
    ) as persister:
        with pytest.raises(EncodeError, match=match) as info:
            reload_context(persister, loops, wrap(make()))
        assert info.value.path == f"_context['value']{inner}"
        assert info.value.path in str(info.value)
        assert persister.get_checkpoints() == []


@pytest.mark.parametrize("kind", list(_WRITTEN_AS_IS))
def test_msgpack_refuses_them_as_keys_and_as_the_whole_value(kind: str) -> None:
    make, match = _WRITTEN_AS_IS[kind]
    codec = get_codec("msgpack")
    value = make()
    with pytest.raises(EncodeError, match=match) as info:
        codec.encode(value)
    assert info.value.path == "<root>"
    if kind != "memoryview":  # (unhashable)
        with pytest.raises(EncodeError, match=match) as info:
            codec.encode({"k": {value: 1}})
        assert info.value.path.startswith("['k']")


class RecordingListener(plumpy.ProcessListener):
    pass


def test_listener_defined_in_a_function_is_refused_at_save(
    codec_name: str, loops: LoopPair
) -> None:
    # plumpy's own test_listener_persistence defines its listener inside the test.
    class LocalListener(plumpy.ProcessListener):
        pass

    with open_persister("memory://", codec=codec_name, allow=[USER_TYPES, __name__]) as p:
        process = ut.Keeper(loop=loops[0])
        process.add_process_listener(LocalListener())
        with pytest.raises(EncodeError, match="inside a function") as info:
            p.save_checkpoint(process)
        assert info.value.path.startswith("_event_helper")
        assert "module level" in str(info.value)
        assert p.get_checkpoints() == []
        # The same listener at module level saves and comes back.
        process = ut.Keeper(loop=loops[0])
        process.add_process_listener(RecordingListener())
        p.save_checkpoint(process, verify=True)
        loaded = p.load_process(process.pid, loop=loops[1])
        assert [type(x) for x in loaded._event_helper.listeners] == [RecordingListener]


def _run_script(script: str) -> str:
    """Run ``script`` as ``__main__`` of a fresh interpreter; :return: its stdout."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout


@pytest.mark.parametrize(
    "value",
    ["Local()", "[Local]", "Kind.A"],
    ids=["instance", "class", "enum member"],
)
def test_classes_of_a_script_are_refused_at_save(codec_name: str, value: str) -> None:
    script = textwrap.dedent(
        f"""
        import enum
        from loopaware_persist import EncodeError, get_codec

        class Local:
            pass

        class Kind(enum.Enum):
            A = 1

        try:
            get_codec({codec_name!r}, allow=["__main__"]).encode({{"x": [{value}]}})
        except EncodeError as error:
            print(error.path)
            print(error)
        """
    )
    path, message = _run_script(script).split("\n", 1)
    assert path.startswith("['x']")
    assert "__main__" in message
    assert "importable module" in message


@pytest.mark.parametrize("verify", [False, True])
def test_a_process_class_of_a_script_is_refused_at_save(codec_name: str, verify: bool) -> None:
    """plumpy stores the process's own class by name and only checks that the name loads
    in the saving process: a process class defined in a script saved, then every load
    refused it. (A script that allows its own ``__name__``, as the README's example
    does, reloads it when run again: that save is allowed.)"""
    script = textwrap.dedent(
        f"""
        import asyncio
        import plumpy
        from loopaware_persist import EncodeError, open_persister

        class Hello(plumpy.Process):
            pass

        with open_persister("memory://", codec={codec_name!r}, allow=["tests"]) as p:
            process = Hello(loop=asyncio.new_event_loop())
            try:
                p.save_checkpoint(process, verify={verify!r})
            except EncodeError as error:
                print(error)
            else:
                print("saved")
            print(list(p.get_checkpoints()))
        """
    )
    message, stored = _run_script(script).splitlines()
    assert "'__main__:Hello'" in message
    assert "importable module" in message
    assert stored == "[]"


def _doubling(depth: int, make: Any) -> Any:
    value: Any = [1.5, "data"]
    for _ in range(depth):
        value = make(value)
    return value


# How to double, and how many times: 40 levels of plain containers, fewer of ext values
# (msgpack nests at most 32 of those), each still far beyond what could be written.
EXPLODING = {
    "lists": (lambda x: [x, x], 40),
    "dicts": (lambda x: {"a": x, "b": x}, 40),
    "tuples": (lambda x: (x, x), 30),
    "inside a dict subclass": (lambda x: ut.Structure(a=[x, x]), 30),
    "in future snapshots": (lambda x: FutureSnapshot.finished([x, x]), 30),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "depth"), EXPLODING.values(), ids=EXPLODING.keys())
def test_exploding_shared_references_are_refused_at_save(
    tmp_path: pathlib.Path, loops: LoopPair, make: Any, depth: int
) -> None:
    # ~40 distinct containers, 2**40 of them written as a tree: msgpack used to hang.
    with open_persister(f"sqlite:///{tmp_path}/s.db", allow=[USER_TYPES]) as persister:
        with pytest.raises(EncodeError, match=r"Shared references|from many places") as info:
            reload_context(persister, loops, {"x": _doubling(depth, make)})
        assert info.value.path.startswith("_context['value']['x']")
        assert "codec='pickle'" in str(info.value)
        assert persister.get_checkpoints() == []


@pytest.mark.timeout(60)
def test_exploding_shared_objects_are_refused_at_save(loops: LoopPair) -> None:
    # Objects msgpack writes as ext values: each written once, its copies counted.
    value = _doubling(25, lambda x: ut.Record(a=x, b=x))
    with open_persister("memory://", allow=[USER_TYPES]) as persister:
        with pytest.raises(EncodeError, match="referenced from many places") as info:
            reload_context(persister, loops, value)
        assert info.value.path.startswith("_context['value'].a.a")


# Containers only: a snapshot's result is the result of a future once loaded.
CONTAINERS = {key: EXPLODING[key] for key in ("lists", "dicts", "tuples", "inside a dict subclass")}


@pytest.mark.parametrize(("make", "depth"), CONTAINERS.values(), ids=CONTAINERS.keys())
def test_pickle_keeps_exploding_shared_references(loops: LoopPair, make: Any, depth: int) -> None:
    with open_persister("memory://", codec="pickle", allow=[USER_TYPES]) as persister:
        value = _doubling(depth, make)
        loaded = reload_context(persister, loops, value)
        for _ in range(depth):  # sharing kept: one path down is the whole check
            assert type(loaded) is type(value)
            assert _second(loaded) is _first(loaded)
            value, loaded = _first(value), _first(loaded)
        assert_same(value, loaded)


def _first(value: Any) -> Any:
    if isinstance(value, ut.Structure):
        value = value["a"]
    return value["a"] if isinstance(value, dict) else value[0]


def _second(value: Any) -> Any:
    if isinstance(value, ut.Structure):
        value = value["a"]
    return value["b"] if isinstance(value, dict) else value[1]


def test_moderate_sharing_is_stored_as_copies(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    shared = {"cell": [[1.0, 0.0], [0.0, 1.0]], "kpoints": (4, 4, 4)}
    value = {"runs": [{"i": i, "params": shared} for i in range(200)], "again": (shared,)}
    assert_same(value, reload_context(persister, loops, value))


def test_cycle_is_refused_at_save_by_msgpack() -> None:
    cycle: list[Any] = [1]
    cycle.append({"again": (cycle,)})
    with pytest.raises(EncodeError, match="cycle") as info:
        get_codec("msgpack").encode({"root": cycle})
    assert info.value.path.startswith("['root']")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "wrap",
    [lambda v: {"x": v}, lambda v: (v,), lambda v: ut.Structure(x=v)],
    ids=["dict", "tuple", "dict subclass"],
)
def test_msgpack_decodes_every_depth_it_encodes(wrap: Any) -> None:
    codec = get_codec("msgpack", allow=[USER_TYPES])
    depth = 1000
    while True:  # up to the deepest value the encoder accepts: it must decode
        try:
            data = codec.encode(wrap(_nested(depth + 1)))
        except EncodeError:
            break
        depth += 1
        assert depth < 1100
    decoded = codec.decode(codec.encode(wrap(_nested(depth))))
    assert type(decoded) is type(wrap([]))
    inner = decoded["x"] if isinstance(decoded, dict) else decoded[0]
    for _ in range(depth - 1):
        assert type(inner) is list
        assert len(inner) == 1
        (inner,) = inner
    assert inner == []
    with pytest.raises(EncodeError, match="nest more than") as info:
        codec.encode(wrap(_nested(depth + 1)))
    assert info.value.path.endswith("[0]")
    del data


def _refused_naming_where_or_exact(codec: Any, value: Any, *, match: str, prefix: str) -> bool:
    """Pickle's depth limit is the interpreter's: Python 3.11 refuses ~500 levels of lists,
    3.13 and 3.14 (whose C recursion limit is no longer Python's) pickle and load far
    deeper. Either way the promise holds: refused at save naming where, or loaded exactly.

    :return: whether it was refused
    """
    refusal: EncodeError | None = None
    try:
        record = codec.encode(value)
    except EncodeError as error:
        refusal = error
    if refusal is None:
        # Deeper than assert_same compares: what was stored exactly re-encodes the same.
        assert codec.encode(codec.decode(record)) == record
        return False
    assert re.search(match, str(refusal)), refusal
    assert refusal.path.startswith(prefix), refusal.path
    assert refusal.path in str(refusal)
    return True


def test_pickle_refuses_deep_nesting_naming_where() -> None:
    refused = _refused_naming_where_or_exact(
        get_codec("pickle"), {"x": _nested(5000)}, match="recursion limit", prefix="['x'][0][0]"
    )
    # 3.11 and 3.12 share their recursion limit with C code: there it must refuse.
    assert refused or sys.version_info >= (3, 13)


def _nested_values(kind: str, depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = (
            (value,)
            if kind == "tuple"
            else ut.Pair((value,))
            if kind == "pair"
            else ut.Record(x=value)
        )
    return value


@pytest.mark.parametrize("kind", ["tuple", "pair", "record"])
def test_too_deep_refusals_name_the_path_through_any_value(codec_name: str, kind: str) -> None:
    """msgpack nests ext values (tuples, a user's classes) only so deep, pickle recurses
    once per object: the refusal names where, through attributes and tuples too (it
    had an empty path)."""
    depth = 1500 if codec_name == "pickle" else 40
    codec = get_codec(codec_name, allow=[USER_TYPES])
    step = ".x" if kind == "record" else "[0]"
    refused = _refused_naming_where_or_exact(
        codec,
        {"x": [_nested_values(kind, depth)]},
        match="nest",
        prefix=f"['x'][0]{step}{step}{step}",
    )
    # msgpack's limit is its own (32 ext levels); pickle's is the interpreter's (above).
    assert refused or (codec_name == "pickle" and sys.version_info >= (3, 13))


def test_msgpack_deep_lists_inside_nested_objects_are_refused_naming_where() -> None:
    """Below three ext levels msgpack stores only 32 levels of lists and dicts per value."""
    inner = ut.Record(x=_nested(100))
    value = {"k": [1, ut.Record(y=ut.Record(z=ut.Record(w=inner)))]}
    with pytest.raises(EncodeError, match="more than 32 deep") as info:
        get_codec("msgpack", allow=[USER_TYPES]).encode(value)
    assert info.value.path == "['k'][1].y.z.w"


def test_object_shared_at_different_depths_encodes_for_each_depth() -> None:
    # What an ext value may hold depends on its depth: a copy made for one depth is
    # never reused at another, where the decoder would refuse it.
    codec = get_codec("msgpack", allow=[USER_TYPES])
    small = ut.Record(x=[1, [2]])
    value = {"a": small, "b": (((small,),),)}
    assert_same(value, codec.decode(codec.encode(value)))
    deep = ut.Record(x=_nested(40))
    with pytest.raises(EncodeError, match="nested more than 32 deep"):
        codec.encode({"a": deep, "b": (((deep,),),)})


LOAD_ROADS = ("load_process", "bundle.unbundle", "bundle.unbundle twice", "unbundle")


def _holders(future: asyncio.Future[Any]) -> dict[str, Any]:
    """A future (and a plain value) inside each kind of user container, with attributes."""
    pair, tags, frozen = ut.Pair((future, 1)), ut.Tags({future, 1}), ut.FrozenTags({future, 1})
    structure, steps = ut.Structure(f=future, cell=[1, 2]), ut.Steps([future, 1])
    for holder in (pair, tags, frozen, structure, steps):
        holder.kind = "fcc"
        holder.awaited = future
    return {
        "pair": pair,
        "tags": tags,
        "frozen": frozen,
        "structure": structure,
        "steps": steps,
        "cell": ut.Cell(future, 2),
    }


@pytest.mark.parametrize("road", LOAD_ROADS)
def test_futures_in_user_containers_come_back_as_futures_on_the_target_loop(
    codec_name: str, road: str, tmp_path: pathlib.Path
) -> None:
    """A future in a namedtuple, or in a tuple, set or frozenset subclass, was left a
    ``FutureSnapshot`` by the load (only ``dict``/``list`` subclasses were walked);
    ``LoopAwareBundle.unbundle`` (plumpy's launcher, AiiDA) must keep attributes too."""
    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        with open_persister(
            f"sqlite:///{tmp_path}/store.db", codec=codec_name, allow=[USER_TYPES]
        ) as persister:
            process = ut.Keeper(loop=a)
            assert process.ctx is not None
            future = a.create_future()
            future.set_result(5)
            process.ctx.value = _holders(future)
            persister.save_checkpoint(process, verify=True)
            if road == "load_process":
                loaded = persister.load_process(process.pid, loop=b)
            else:
                bundle = persister.load_checkpoint(process.pid)
                if road == "unbundle":
                    loaded = unbundle(bundle, LoopContext(loop=b))
                else:
                    if road == "bundle.unbundle twice":
                        bundle.unbundle(plumpy.LoadSaveContext(loop=b))
                    loaded = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert loaded.ctx is not None
            holders = loaded.ctx.value
            for name, holder in _holders(future).items():
                back = holders[name]
                assert type(back) is type(holder), name
                assert getattr(back, "kind", None) == getattr(holder, "kind", None), name
                if hasattr(holder, "awaited"):  # a future among the attributes, too
                    assert isinstance(back.awaited, asyncio.Future), name
                    assert back.awaited.get_loop() is b
                items = list(back.values() if isinstance(back, dict) else back)
                futures = [item for item in items if isinstance(item, asyncio.Future)]
                assert len(futures) == 1, (name, items)
                assert futures[0].get_loop() is b
                assert futures[0].result() == 5
                assert not any(isinstance(item, FutureSnapshot) for item in items), name
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("road", LOAD_ROADS)
def test_futures_as_dict_keys_come_back_as_futures_on_the_target_loop(
    codec_name: str, road: str
) -> None:
    """A dict keyed by futures (as plumpy's own ``Waiting._awaiting`` is) came back keyed
    by ``FutureSnapshot``: the load walked values only."""
    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        with open_persister("memory://", codec=codec_name, allow=[USER_TYPES]) as persister:
            process = ut.Keeper(loop=a)
            assert process.ctx is not None
            future = a.create_future()
            future.set_result(5)
            structure = ut.Structure({future: "s"})
            structure.kind = "fcc"
            process.ctx.value = {
                "by": {future: "x", "k": 2},
                "in": {(future, 1): 3},
                "s": structure,
            }
            persister.save_checkpoint(process, verify=True)
            if road == "load_process":
                loaded = persister.load_process(process.pid, loop=b)
            elif road == "unbundle":
                loaded = unbundle(persister.load_checkpoint(process.pid), LoopContext(loop=b))
            else:
                bundle = persister.load_checkpoint(process.pid)
                if road == "bundle.unbundle twice":
                    bundle.unbundle(plumpy.LoadSaveContext(loop=b))
                loaded = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert loaded.ctx is not None
            value = loaded.ctx.value
            (key, other) = value["by"]
            assert other == "k"
            ((tuple_key, one),) = value["in"]
            assert value["in"][(tuple_key, one)] == 3
            (structure_key,) = value["s"]
            assert type(value["s"]) is ut.Structure
            assert value["s"].kind == "fcc"
            for found in (key, tuple_key, structure_key):
                assert isinstance(found, asyncio.Future)
                assert found.get_loop() is b
                assert found.result() == 5
            if codec_name == "pickle":  # msgpack stores trees: copies (README)
                assert key is tuple_key is structure_key
    finally:
        a.close()
        b.close()
