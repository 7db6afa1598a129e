"""Hostile checkpoints: refused with a DecodeError subclass, and none of their code runs.

Every gadget here would create ``marker`` (a file in tmp_path) if it ran; the
unrestricted-pickle control test shows that they really do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import pickle
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import plumpy
import pytest

from loopaware_persist import (
    CorruptCheckpointError,
    DecodeError,
    ForeignException,
    UnknownTagError,
    UnsafeCheckpointError,
    get_codec,
)
from loopaware_persist.codecs.msgpack import MAX_EXT_DEPTH, WELL_KNOWN_CODES, MsgpackCodec
from loopaware_persist.codecs.pickle import ClassRef, UnsafeLoadWarning
from tests.msgpack_wire import ext, pack
from tests.strategies import current_event_loop

REFUSALS = (UnsafeCheckpointError, UnknownTagError, CorruptCheckpointError)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a hostile payload ran code"


@pytest.fixture
def marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path) -> Iterator[str]:
    """A module on sys.path whose import alone creates the marker."""
    name = f"lap_hostile_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib, enum\npathlib.Path({str(marker)!r}).touch()\n\n"
        "class Thing:\n    pass\n\n"
        "class Boom(Exception):\n    pass\n\n"
        "class Color(enum.Enum):\n    RED = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    imported = name in sys.modules
    sys.modules.pop(name, None)
    assert not imported, f"{name} was imported by a load"


def _legacy(tag: str) -> msgpack.ExtType:
    """The marker of the earlier, list-headed layout: ``[_legacy(tag), *fields]``."""
    return msgpack.ExtType(1, tag.encode())


# Pickle gadgets.


def _p0(text: str) -> bytes:
    return text.encode()


def _pickle_gadgets(marker: Path) -> dict[str, bytes]:
    m = str(marker)
    touch = f"touch {m}"
    code = f"open({m!r}, 'w').close()"

    class Reduce:
        def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
            self.fn, self.args = fn, args

        def __reduce__(self) -> Any:
            return self.fn, self.args

    import builtins
    import os

    gadgets = {
        "GLOBAL os.system": _p0(f"cos\nsystem\n(S'{touch}'\ntR."),
        "GLOBAL posix.system": _p0(f"cposix\nsystem\n(S'{touch}'\ntR."),
        "GLOBAL builtins.exec": _p0(f'cbuiltins\nexec\n(S"{code}"\ntR.'),
        "GLOBAL builtins.eval": _p0(f'cbuiltins\neval\n(S"{code}"\ntR.'),
        "GLOBAL __builtin__.eval (py2 name)": _p0(f'c__builtin__\neval\n(S"{code}"\ntR.'),
        "getattr(__import__('os'), 'system')": _p0(
            f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'{touch}'\ntR."
        ),
        "INST os.system": _p0(f"(S'{touch}'\nios\nsystem\n."),
        "OBJ os.system": _p0(f"(cos\nsystem\nS'{touch}'\no."),
        "subprocess.Popen": _p0(f"csubprocess\nPopen\n((lp0\nS'touch'\naS'{m}'\natR."),
        "nested in a dict": _p0(f"(dp0\nS'ctx'\ncos\nsystem\n(S'{touch}'\ntRs."),
        "copyreg._reconstructor": _p0(f"ccopyreg\n_reconstructor\n(cos\nsystem\n(S'{touch}'\ntR."),
        "importlib.import_module": _p0("cimportlib\nimport_module\n(S'os'\ntR."),
        "plumpy PicklePersister (creates a directory)": _p0(
            f"cplumpy.persistence\nPicklePersister\n(S'{m}'\ntR."
        ),
    }
    for protocol in (2, 4, 5):
        gadgets[f"reduce os.system p{protocol}"] = pickle.dumps(
            Reduce(os.system, touch), protocol=protocol
        )
        gadgets[f"reduce builtins.exec p{protocol}"] = pickle.dumps(
            Reduce(builtins.exec, code), protocol=protocol
        )
        gadgets[f"reduce subprocess.check_call p{protocol}"] = pickle.dumps(
            Reduce(subprocess.check_call, ["touch", m]), protocol=protocol
        )
        gadgets[f"reduce Popen inside a list p{protocol}"] = pickle.dumps(
            [1, {"x": Reduce(subprocess.Popen, ["touch", m])}], protocol=protocol
        )
    return gadgets


_GADGET_NAMES = sorted(_pickle_gadgets(Path("/nonexistent")))


@pytest.mark.parametrize("gadget", _GADGET_NAMES)
def test_pickle_gadget_refused(gadget: str, marker: Path) -> None:
    payload = _pickle_gadgets(marker)[gadget]
    with pytest.raises(REFUSALS) as info:
        get_codec("pickle").decode(payload)
    assert isinstance(info.value, UnsafeCheckpointError), info.value


@pytest.mark.parametrize(
    "gadget",
    ["GLOBAL builtins.exec", "reduce builtins.exec p5", "GLOBAL os.system", "nested in a dict"],
)
def test_unrestricted_pickle_control(gadget: str, marker: Path) -> None:
    """The same bytes do run code through the unrestricted codec: the gadgets are real."""
    with pytest.warns(UnsafeLoadWarning):
        codec = get_codec("pickle-unrestricted")
    codec.decode(_pickle_gadgets(marker)[gadget])
    assert marker.exists()
    marker.unlink()  # the fixture checks it is gone


def test_pickle_global_of_marker_module_not_imported(marker_module: str) -> None:
    for name in ("Thing", "Boom", "Color"):
        payload = _p0(f"c{marker_module}\n{name}\n)R.")
        with pytest.raises(UnsafeCheckpointError):
            get_codec("pickle").decode(payload)


def test_pickle_import_module_of_marker_module(marker_module: str) -> None:
    payload = _p0(f"cimportlib\nimport_module\n(S'{marker_module}'\ntR.")
    with pytest.raises(UnsafeCheckpointError):
        get_codec("pickle").decode(payload)


def test_pickle_does_not_construct_plumpy_process() -> None:
    """Unpickling may name a Savable class as a value, but must never *call* it.

    ``plumpy.Process()`` runs ``__init__``, which (among other things) creates and sets
    an event loop in the loading thread: exactly the silent side effect design.md forbids.
    """
    payload = _p0("cplumpy.processes\nProcess\n)R.")

    def load() -> tuple[str, bool]:
        try:
            result = get_codec("pickle").decode(payload)
        except UnsafeCheckpointError:
            outcome = "refused"
        else:
            outcome = f"constructed {type(result).__name__}"
        leaked = current_event_loop()
        if leaked is not None:  # keep the leak from failing some later test
            leaked.close()
            asyncio.set_event_loop(None)
        return outcome, leaked is not None

    box: list[tuple[str, bool]] = []
    thread = threading.Thread(target=lambda: box.append(load()))
    thread.start()
    thread.join()
    outcome, leaked_loop = box[0]
    assert not leaked_loop, "loading the checkpoint created and set an event loop"
    assert outcome == "refused"


def test_pickle_class_reference_to_process_loads_without_being_callable() -> None:
    """The legitimate use: a process class stored as a value (plumpy stores its
    listener type in every bundle). pickle writes it as a ClassRef placeholder that is
    resolved after loading; a crafted REDUCE on a placeholder cannot call anything."""
    codec = get_codec("pickle")
    assert codec.decode(codec.encode({"cls": plumpy.Process}))["cls"] is plumpy.Process
    ref = pickle.dumps(ClassRef("plumpy.processes:Process"), protocol=5)
    # REDUCE(<ClassRef instance>, ()): try to call the placeholder
    crafted = ref[:-1] + b")R."
    with pytest.raises(CorruptCheckpointError):
        codec.decode(crafted)


# Msgpack payloads.


@functools.cache
def _nesting_bomb() -> bytes:
    """10,000 tuples inside one another (~40 KB): each level wraps the packed one below."""
    bomb = pack(None)
    for _ in range(10_000):
        bomb = pack(msgpack.ExtType(WELL_KNOWN_CODES["tuple"], b"\x91" + bomb))
    return bomb


def _msgpack_cases(marker: Path, module: str) -> dict[str, tuple[bytes, type[DecodeError]]]:
    m = str(marker)
    exc_fields: list[Any] = ["m", [], "msg", None, None, None, False, None]
    u, k, c = UnsafeCheckpointError, UnknownTagError, CorruptCheckpointError
    deep: Any = None
    for _ in range(MAX_EXT_DEPTH + 1):
        deep = ext("tuple", deep)
    nested_lists: Any = 1
    for _ in range(40):
        nested_lists = [nested_lists]
    return {
        "class os:system": (pack(ext("class", "os:system")), u),
        "class builtins:eval": (pack(ext("class", "builtins:eval")), u),
        "class builtins:exec": (pack(ext("class", "builtins:exec")), u),
        "class subprocess:Popen": (pack(ext("class", "subprocess:Popen")), u),
        "class dunder": (pack(ext("class", "plumpy:Process.__init__")), u),
        "class marker module": (pack(ext("class", f"{module}:Thing")), u),
        "class under the generic code": (
            pack(msgpack.ExtType(2, pack(["class", "os:system"]))),
            u,
        ),
        "enum os:system": (pack(ext("enum", "os:system", "x")), u),
        "enum marker module": (pack(ext("enum", f"{module}:Color", 1)), u),
        "object subprocess:Popen": (
            pack(ext("object", "subprocess:Popen", {"args": ["touch", m]})),
            u,
        ),
        "object os:system": (pack(ext("object", "os:system", {})), u),
        "object marker module": (pack(ext("object", f"{module}:Thing", {})), u),
        "object plumpy PicklePersister": (
            pack(ext("object", "plumpy.persistence:PicklePersister", {"_pickle_directory": m})),
            u,
        ),
        "object plumpy Process": (pack(ext("object", "plumpy.processes:Process", {})), u),
        "object builtins:list": (pack(ext("object", "builtins:list", {})), u),
        "gadget after a valid exception": (
            pack([ext("exception", *exc_fields), ext("class", "os:system")]),
            u,
        ),
        "gadget deep in a bundle": (
            pack(
                ext(
                    "bundle",
                    {"_state": {"ctx": [1, 2, {"x": ext("object", "os:system", {})}]}},
                )
            ),
            u,
        ),
        "gadget as a map key": (pack({ext("class", "os:system"): 1}), u),
        "unknown tag": (pack(ext("os.system", m)), k),
        "unknown tag pickle": (pack(ext("pickle", b"cos\nsystem\n.")), k),
        "unknown ext code": (pack(msgpack.ExtType(3, pack(["os:system"]))), c),
        "ext code 0": (pack(msgpack.ExtType(0, b"")), c),
        "ext code 127": (pack(msgpack.ExtType(127, pack([]))), c),
        "non-utf8 tag": (pack(msgpack.ExtType(2, b"\x91\xc4\x02\xff\xfe")), c),
        "tag that is not a string": (pack(msgpack.ExtType(2, pack([7, "os:system"]))), c),
        "tagged value without a tag": (pack(msgpack.ExtType(2, pack([]))), c),
        "ext data that is not msgpack": (pack(msgpack.ExtType(16, b"\xc1")), c),
        "ext data that is empty": (pack(msgpack.ExtType(16, b"")), c),
        "ext data that is truncated": (pack(msgpack.ExtType(16, b"\x93\x01")), c),
        "ext data with trailing bytes": (pack(msgpack.ExtType(16, b"\x91\x01\x02")), c),
        "ext data that is not a list": (pack(msgpack.ExtType(16, pack({"a": 1}))), c),
        "ext data claiming a huge array": (
            pack(msgpack.ExtType(16, b"\xdd\xff\xff\xff\xff")),
            c,
        ),
        "ext data claiming a huge string": (
            pack(msgpack.ExtType(16, b"\x91\xdb\xff\xff\xff\xff")),
            c,
        ),
        "uuid of the wrong length": (pack(msgpack.ExtType(WELL_KNOWN_CODES["uuid"], b"x")), c),
        "unhashable map key": (pack({ext("set", 1): 1}), c),
        "list as a map key": (b"\x81\x91\x01\x01", c),
        "earlier layout's marker inside the new layout": (
            pack(ext("tuple", msgpack.ExtType(1, b"class"), "os:system")),
            c,
        ),
        "new code inside the earlier layout": (
            pack([_legacy("tuple"), ext("class", "os:system")]),
            c,
        ),
        "malformed class fields": (pack(ext("class", 1, 2)), c),
        "failed snapshot without an exception object": (
            pack(ext("future", "failed", None, "boom", None)),
            c,
        ),
        "snapshot with bogus status": (pack(ext("future", "exec", None, None, None)), c),
        "snapshot with unhashable status": (pack(ext("future", [], None, None, None)), c),
        "snapshot with too few fields": (pack(ext("future", "pending")), c),
        "bigint that is not hex": (pack(ext("bigint", "0xzz")), c),
        "nested deeper than the codec writes": (pack(deep), c),
        "nesting bomb": (_nesting_bomb(), c),
        "lists nested deep inside a deep value": (
            pack(ext("tuple", ext("tuple", ext("tuple", ext("tuple", nested_lists))))),
            c,
        ),
    }


_MSGPACK_NAMES = sorted(_msgpack_cases(Path("/x"), "m"))


# msgspec reads an array used as a map key as a tuple (the codec never writes one: a
# tuple is an ext value); msgpack-python refuses it. Either way nothing runs.
_ARRAY_KEY = "list as a map key"


@pytest.mark.parametrize("case", _MSGPACK_NAMES)
def test_msgpack_payload_refused(
    case: str, marker: Path, marker_module: str, msgpack_codec: MsgpackCodec
) -> None:
    payload, expected = _msgpack_cases(marker, marker_module)[case]
    if case == _ARRAY_KEY and msgpack_codec.decoder == "msgspec":
        assert msgpack_codec.decode(payload) == {(1,): 1}
        return
    with pytest.raises(REFUSALS) as info:
        msgpack_codec.decode(payload)
    assert type(info.value) is expected, info.value


def _legacy_cases(marker: Path, module: str) -> dict[str, tuple[bytes, type[DecodeError]]]:
    m = str(marker)
    c = CorruptCheckpointError
    return {
        "class os:system": (pack([_legacy("class"), "os:system"]), c),
        "class marker module": (pack([_legacy("class"), f"{module}:Thing"]), c),
        "enum os:system": (pack([_legacy("enum"), "os:system", "x"]), c),
        "object subprocess:Popen": (
            pack([_legacy("object"), "subprocess:Popen", {"args": ["touch", m]}]),
            c,
        ),
        "gadget deep in a bundle": (
            pack(
                [
                    _legacy("bundle"),
                    {"_state": {"ctx": [1, {"x": [_legacy("object"), "os:system", {}]}]}},
                ]
            ),
            c,
        ),
        "gadget after valid new-layout values": (
            pack([ext("tuple", 1), [_legacy("class"), "os:system"]]),
            c,
        ),
        "unknown tag": (pack([_legacy("os.system"), m]), c),
        "non-utf8 tag": (pack([msgpack.ExtType(1, b"\xff\xfe"), 1]), c),
        "malformed class fields": (pack([_legacy("class"), 1, 2]), c),
    }


@pytest.mark.parametrize("case", sorted(_legacy_cases(Path("/x"), "m")))
def test_msgpack_payload_of_the_pre_release_layout_refused(
    case: str, marker: Path, marker_module: str
) -> None:
    """Development builds wrote a list-headed layout (``[Ext(1, tag), *fields]``); no
    release reads it, so its gadgets are refused as damage before any tag is looked up."""
    payload, expected = _legacy_cases(marker, marker_module)[case]
    with pytest.raises(REFUSALS) as info:
        get_codec("msgpack").decode(payload)
    assert type(info.value) is expected, info.value


@pytest.mark.parametrize("name_of", ["{module}:Boom", "os:system", "subprocess:Popen"])
def test_msgpack_exception_naming_foreign_class(
    name_of: str, marker: Path, marker_module: str
) -> None:
    """A stored exception of a class a load may not import becomes a ForeignException."""
    name = name_of.format(module=marker_module)
    payload = pack(ext("exception", name, ["a"], "the message", None, None, None, False, None))
    decoded = get_codec("msgpack").decode(payload)
    assert type(decoded) is ForeignException
    assert decoded.type_name == name
    assert decoded.message == "the message"


def test_msgpack_exception_cause_is_checked_too(marker_module: str) -> None:
    cause = ext("object", f"{marker_module}:Thing", {})
    payload = pack(
        ext("exception", "builtins:ValueError", ["a"], "a", None, cause, None, False, None)
    )
    with pytest.raises(UnsafeCheckpointError):
        get_codec("msgpack").decode(payload)


def test_msgpack_refusal_returns_nothing_partial(marker: Path) -> None:
    """One refused value fails the whole load: no tree with holes comes back."""
    payload = pack({"good": ext("tuple", 1, 2), "bad": ext("class", "os:system")})
    with pytest.raises(UnsafeCheckpointError):
        get_codec("msgpack").decode(payload)


def test_msgpack_codec_stays_usable_after_refusals(
    marker: Path, marker_module: str, msgpack_codec: MsgpackCodec
) -> None:
    """A refusal mid-way leaves no half-read state behind in the codec's pooled decoders."""
    codec = msgpack_codec
    good = codec.encode({"t": (1, (2, (3,))), "s": {frozenset({(4,)})}})
    for case, (payload, _expected) in _msgpack_cases(marker, marker_module).items():
        if case == _ARRAY_KEY and codec.decoder == "msgspec":
            continue
        with pytest.raises(REFUSALS):
            codec.decode(payload)
        assert codec.decode(good) == {"t": (1, (2, (3,))), "s": {frozenset({(4,)})}}


def test_msgpack_timestamp_ext_is_inert(msgpack_codec: MsgpackCodec) -> None:
    """Both decoders read ext type -1 themselves, before any hook: a crafted payload can
    make one appear. It stays an inert value (a ``msgpack.Timestamp``, or msgspec's aware
    ``datetime``) and runs nothing; the codec never writes one, and a damaged record never
    gets past the envelope CRC."""
    decoded = msgpack_codec.decode(b"\xd6\xff" + b"\x00" * 4)
    if msgpack_codec.decoder == "msgspec":
        assert decoded == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    else:
        assert type(decoded) is msgpack.Timestamp
