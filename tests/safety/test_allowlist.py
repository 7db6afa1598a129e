"""The allow-list: what a load may revive, by module and class name, and what it refuses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import plumpy
import pytest

from loopaware_persist import (
    ArgumentTypeError,
    ForeignException,
    HookRegistry,
    UnsafeCheckpointError,
    default_registry,
    get_codec,
)
from loopaware_persist.codecs.msgpack import WELL_KNOWN_CODES


@pytest.mark.parametrize(
    "name",
    [
        "os:system",
        "builtins:exec",
        "builtins:eval",
        "builtins:getattr",
        "builtins:object",
        "builtins:type",
        "subprocess:Popen",
        "posix:system",
        "pickle:loads",
        "importlib:import_module",
    ],
)
def test_resolve_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeCheckpointError) as info:
        default_registry.resolve(name)
    assert info.value.name == name
    assert "allow" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a:",
        ":b",
        "a:__class__",
        "builtins:__import__",
        "plumpy:__builtins__",
        "plumpy:Process.__init__",
        "plumpy:Process.__subclasses__",
        "a b:c",
        "a:b c",
        "a..b:c",
        "a:b:c",
        "a:b.",
        "1a:b",
        "",
    ],
)
def test_resolve_refuses_malformed_names(name: str) -> None:
    with pytest.raises(UnsafeCheckpointError):
        default_registry.resolve(name)


@pytest.mark.parametrize(
    "name",
    [
        "plumpy.processes:Process.run",  # a function
        "plumpy:ProcessState.WAITING",  # an enum member
        "collections:namedtuple",  # a function in an allowed stdlib module
        "plumpy.persistence:pickle",  # a module reached through an attribute
    ],
)
def test_resolve_refuses_non_classes(name: str) -> None:
    with pytest.raises(UnsafeCheckpointError):
        default_registry.resolve(name)


def test_resolve_refuses_foreign_class_reached_through_allowed_module() -> None:
    # plumpy.persistence imports pickle; pickle.Unpickler's own module is not allowed.
    with pytest.raises(UnsafeCheckpointError):
        default_registry.resolve("plumpy.persistence:pickle.Unpickler")


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("plumpy.processes:Process", "class", plumpy.Process),
        ("plumpy.workchains:WorkChain", "class", plumpy.WorkChain),
        ("plumpy.processes:Process", "savable", plumpy.Process),
        ("plumpy.process_states:ProcessState", "enum", plumpy.ProcessState),
        ("plumpy.exceptions:KilledError", "exception", plumpy.KilledError),
        ("builtins:ValueError", "exception", ValueError),
        ("builtins:KeyError", "class", KeyError),
        ("builtins:OSError", "exception", OSError),
        ("loopaware_persist:FutureSnapshot", "class", None),
    ],
)
def test_resolve_allows_library_classes(name: str, kind: Any, expected: type | None) -> None:
    cls = default_registry.resolve(name, kind)
    if expected is not None:
        assert cls is expected
    assert isinstance(cls, type)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("plumpy.processes:Process", "exception"),  # not an exception
        ("builtins:ValueError", "enum"),  # not an enum
        ("plumpy.persistence:PicklePersister", "object"),  # side effects when built
        ("builtins:int", "exception"),
    ],
)
def test_resolve_checks_kind(name: str, kind: Any) -> None:
    with pytest.raises(UnsafeCheckpointError):
        default_registry.resolve(name, kind)


def test_user_allow_by_module_name_and_class(make_module: Callable[[str], str]) -> None:
    source = "class Thing:\n    pass\n\nclass Other:\n    pass\n"
    by_module, by_name, by_class = make_module(source), make_module(source), make_module(source)
    registry = default_registry.copy()
    for mod in (by_module, by_name, by_class):
        with pytest.raises(UnsafeCheckpointError):
            registry.resolve(f"{mod}:Thing")
        assert mod not in sys.modules  # refused before import

    registry.allow(by_module, f"{by_name}:Thing")
    assert registry.resolve(f"{by_module}:Thing", "object").__name__ == "Thing"
    assert registry.resolve(f"{by_module}:Other", "object").__name__ == "Other"
    assert registry.resolve(f"{by_name}:Thing", "object").__name__ == "Thing"
    with pytest.raises(UnsafeCheckpointError):
        registry.resolve(f"{by_name}:Other", "object")  # only the named class

    module = __import__(by_class)
    registry.allow(module.Thing)
    assert registry.resolve(f"{by_class}:Thing", "object") is module.Thing
    with pytest.raises(UnsafeCheckpointError):
        registry.resolve(f"{by_class}:Other", "object")


def test_allow_as_some_kinds_only(make_module: Callable[[str], str]) -> None:
    """``allow(..., kinds=...)``: a process class a checkpoint may name, never call."""
    name = make_module("import plumpy\n\nclass Proc(plumpy.Process):\n    pass\n")
    registry = default_registry.copy()
    registry.allow(f"{name}:Proc", kinds=("class", "savable"))
    copy = registry.copy()
    for reg in (registry, copy):
        assert reg.resolve(f"{name}:Proc", "savable").__name__ == "Proc"
        assert reg.resolve(f"{name}:Proc", "class").__name__ == "Proc"
        for kind in ("pickle", "object"):
            with pytest.raises(UnsafeCheckpointError, match="Proc"):
                reg.resolve(f"{name}:Proc", kind)  # type: ignore[arg-type]
    assert f"{name}:Proc" in registry.allowed
    registry.allow(name)  # the user's own allow-list entry is for every kind...
    assert registry.resolve(f"{name}:Proc", "class").__name__ == "Proc"
    for kind in ("pickle", "object"):  # ...but calling a process class launches one
        with pytest.raises(UnsafeCheckpointError, match="Proc"):
            registry.resolve(f"{name}:Proc", kind)  # type: ignore[arg-type]
    registry.trust_all()
    assert registry.resolve(f"{name}:Proc", "pickle").__name__ == "Proc"
    for kinds in ("class", [], ["call"], None):
        with pytest.raises(ArgumentTypeError, match="kinds"):
            registry.allow(name, kinds=kinds if kinds is not None else 3)  # type: ignore[arg-type]


def test_allow_module_covers_submodules_not_prefixes() -> None:
    registry = HookRegistry(allow=["myapp"])
    assert registry.may_import("myapp.sub", "X")
    assert registry.may_import("myapp", "X")
    assert not registry.may_import("myapplication", "X")


def test_allow_malformed_name_is_refused() -> None:
    with pytest.raises(UnsafeCheckpointError):
        HookRegistry(allow=["a b:c"])


_MARKER_MODULE = (
    "import pathlib\npathlib.Path({marker!r}).touch()\n\nclass Boom(Exception):\n    pass\n"
)


def test_disallowed_exception_becomes_foreign_exception(
    codec_name: str, make_module: Callable[[str], str], tmp_path: Path
) -> None:
    marker = tmp_path / "imported.marker"
    name = make_module(_MARKER_MODULE.format(marker=str(marker)))
    codec = get_codec(codec_name)
    data = codec.encode({"e": __import__(name).Boom("it broke", 3)})
    # The saving process had the module; the loading one has not imported it.
    marker.unlink()
    del sys.modules[name]
    # msgpack stands in on load; pickle already wrote the stand-in (the restricted
    # unpickler would refuse the class), so both give the same documented result.
    decoded = codec.decode(data)["e"]
    assert type(decoded) is ForeignException
    assert decoded.type_name == f"{name}:Boom"
    assert "it broke" in decoded.message
    assert f"{name}:Boom" in str(decoded)
    assert name not in sys.modules
    assert not marker.exists()


def test_foreign_exception_from_handmade_payload(
    make_module: Callable[[str], str], tmp_path: Path
) -> None:
    marker = tmp_path / "imported.marker"
    name = make_module(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Boom(Exception): pass\n"
    )
    fields = [f"{name}:Boom", ["m"], "the message", None, None, None, False, None]
    payload = msgpack.packb(
        msgpack.ExtType(WELL_KNOWN_CODES["exception"], msgpack.packb(fields, use_bin_type=True)),
        use_bin_type=True,
    )
    decoded = get_codec("msgpack").decode(payload)
    assert type(decoded) is ForeignException
    assert decoded.type_name == f"{name}:Boom"
    assert decoded.message == "the message"
    assert name not in sys.modules
    assert not marker.exists()
