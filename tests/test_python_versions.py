"""Checkpoints that name standard-library classes load on every supported Python.

pickle and the allow-list name a class by ``module:qualname``, and the module that
defines a standard-library class moves between versions: ``pathlib.PurePosixPath``
is ``pathlib._local.PurePosixPath`` on 3.13. The files in ``tests/data/stdlib_names``
were written by each tested Python (``python -m tests.test_python_versions DIR``
writes this Python's pair); every Python must load all of them.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import pathlib
import pickle
import sys
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist import FutureStatus, UnsafeCheckpointError, default_registry, get_codec
from loopaware_persist.codecs.pickle import UnsafeLoadWarning
from tests.axes import CODECS

DATA = Path(__file__).parent / "data" / "stdlib_names"
STDLIB_CLASSES: tuple[type, ...] = (
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    collections.OrderedDict,
    dt.datetime,
    dt.timezone,
    decimal.Decimal,
    uuid.UUID,
    zoneinfo.ZoneInfo,
)
# Where each version defines pathlib's classes; a checkpoint may carry any of them.
PATHLIB_MODULES = ("pathlib", "pathlib._local")


def sample() -> dict[str, Any]:
    """:return: instances and class references of standard-library classes"""
    return {
        "paths": [
            pathlib.PurePosixPath("/srv/runs/1"),
            pathlib.PureWindowsPath("C:/runs/1"),
            pathlib.PosixPath("/srv/runs/1"),
        ],
        "classes": list(STDLIB_CLASSES),
        "values": [
            collections.OrderedDict(b=1, a=2),
            dt.datetime(2026, 10, 31, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Zurich")),
            dt.timezone(dt.timedelta(hours=2), "CEST"),
            decimal.Decimal("1.10"),
            uuid.UUID(int=2**100 + 7),
        ],
    }


def _assert_sample(value: Any) -> None:
    expected = sample()
    assert value == expected
    instances = zip(
        value["paths"] + value["values"], expected["paths"] + expected["values"], strict=True
    )
    for got, want in instances:
        assert type(got) is type(want)
    assert all(a is b for a, b in zip(value["classes"], expected["classes"], strict=True))


def _written_by() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def _recorded() -> list[Path]:
    return sorted(DATA.glob("cp*.*"))


@pytest.mark.parametrize("codec_name", CODECS)
def test_stdlib_classes_round_trip_on_this_python(codec_name: str) -> None:
    codec = get_codec(codec_name)
    _assert_sample(codec.decode(codec.encode(sample())))


def test_recorded_checkpoints_cover_every_tested_python() -> None:
    names = {path.name for path in _recorded()}
    for version in ("cp311", "cp313", "cp314"):
        assert {f"{version}.{codec}" for codec in CODECS} <= names


@pytest.mark.parametrize("recorded", _recorded(), ids=lambda path: path.name)
def test_checkpoint_written_by_any_tested_python_loads(recorded: Path) -> None:
    codec_name = recorded.suffix.lstrip(".")
    _assert_sample(get_codec(codec_name).decode(recorded.read_bytes()))


@pytest.mark.parametrize("recorded", _recorded(), ids=lambda path: path.name)
def test_checkpoint_written_by_any_tested_python_loads_unrestricted(recorded: Path) -> None:
    codec_name = recorded.suffix.lstrip(".")
    if codec_name == "pickle":
        with pytest.warns(UnsafeLoadWarning):
            codec = get_codec("pickle-unrestricted")
    else:
        codec = get_codec(codec_name, registry=_trusting_registry())
    _assert_sample(codec.decode(recorded.read_bytes()))


def _trusting_registry() -> Any:
    registry = default_registry.copy()
    registry.trust_all()
    return registry


@pytest.mark.parametrize("module", PATHLIB_MODULES)
@pytest.mark.parametrize("kind", ["class", "pickle"])
@pytest.mark.parametrize("cls", [pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.Path])
def test_pathlib_class_named_by_any_version(module: str, kind: Any, cls: type) -> None:
    assert default_registry.resolve(f"{module}:{cls.__name__}", kind) is cls


@pytest.mark.parametrize("cls", STDLIB_CLASSES)
def test_stdlib_class_named_by_its_module_and_its_public_home(cls: type) -> None:
    home = cls.__module__.partition(".")[0]
    for name in (f"{cls.__module__}:{cls.__qualname__}", f"{home}:{cls.__qualname__}"):
        assert default_registry.resolve(name, "class") is cls


def _pickle_naming(module: str, name: str, *args: str) -> bytes:
    """A protocol-0 payload that calls ``module.name(*args)``: what pickle writes for a
    path, with the class named as another Python version names it."""
    text_args = b"".join(b"V" + arg.encode() + b"\n" for arg in args)
    return b"c" + f"{module}\n{name}\n".encode() + b"(" + text_args + b"tR."


@pytest.mark.parametrize("module", PATHLIB_MODULES)
def test_pickled_path_named_by_any_version_loads(module: str) -> None:
    payload = _pickle_naming(module, "PurePosixPath", "/srv", "runs")
    loaded = get_codec("pickle").decode(payload)
    assert type(loaded) is pathlib.PurePosixPath
    assert loaded == pathlib.PurePosixPath("/srv/runs")
    with pytest.warns(UnsafeLoadWarning):
        unrestricted = get_codec("pickle-unrestricted")
    assert unrestricted.decode(payload) == loaded


@pytest.mark.parametrize(
    "name",
    [
        "pathlib._local:os",  # a module, not a class
        "pathlib._local:_Flavour",  # private names are never standard-library value types
        "collections:_Link",
        "collections.abc:Sequence",  # a public submodule is not the module itself
        "collections._x:namedtuple",  # a function
        "pathlib:Sequence",  # pathlib imports it; collections.abc defines it
        "os._local:system",
    ],
)
@pytest.mark.parametrize("kind", ["class", "pickle"])
def test_stdlib_lookup_admits_only_exported_classes(name: str, kind: Any) -> None:
    with pytest.raises(UnsafeCheckpointError):
        default_registry.resolve(name, kind)


def test_stdlib_lookup_imports_nothing() -> None:
    """A made-up private submodule of an allowed package is never imported."""
    name = "pathlib._made_up_by_a_checkpoint"
    assert default_registry.resolve(f"{name}:PurePosixPath", "pickle") is pathlib.PurePosixPath
    assert name not in sys.modules


@pytest.mark.parametrize("status", list(FutureStatus))
def test_future_status_reads_the_same_on_every_python(status: FutureStatus) -> None:
    """A ``(str, Enum)`` mixin formats as its value on 3.11 and as ``FutureStatus.X`` on
    3.12+; a ``StrEnum`` is its value everywhere (messages and the CLI show it)."""
    assert str(status) == f"{status}" == format(status) == status.value


def write(directory: Path) -> None:
    """Write this Python's pair of recorded checkpoints into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for codec_name in CODECS:
        data = get_codec(codec_name).encode(sample())
        (directory / f"{_written_by()}.{codec_name}").write_bytes(data)
    # pickle must be able to name every class it stores: say what this Python wrote.
    names = sorted({f"{cls.__module__}:{cls.__qualname__}" for cls in STDLIB_CLASSES})
    print(_written_by(), pickle.format_version, *names)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
