"""The public namespace: __all__ complete, sorted and importable; the error tree as designed."""

from __future__ import annotations
import __future__

import types

import plumpy
import pytest

import loopaware_persist
from loopaware_persist import (
    ArgumentTypeError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    ConfigurationError,
    CorruptCheckpointError,
    DecodeError,
    DurabilityError,
    EncodeError,
    FencedError,
    LoopAwarePersistError,
    LoopBoundaryError,
    NoEventLoopError,
    ShutdownFencedError,
    StaleCheckpointError,
    StaleFencedError,
    StorageError,
    UnavailableFencedError,
    UnknownTagError,
    UnsafeCheckpointError,
    default_registry,
)

ALL = loopaware_persist.__all__


def _public_classes() -> list[type]:
    return [obj for name in ALL if isinstance(obj := getattr(loopaware_persist, name), type)]


def test_all_is_a_tuple_of_unique_strings() -> None:
    assert isinstance(ALL, tuple)
    assert all(isinstance(name, str) for name in ALL)
    assert len(set(ALL)) == len(ALL)


def test_all_is_sorted() -> None:
    assert list(ALL) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_name_exists(name: str) -> None:
    assert hasattr(loopaware_persist, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from loopaware_persist import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(ALL)


def test_all_is_complete() -> None:
    """Every public, non-module attribute is exported (except ``__version__``).

    ``from __future__ import annotations`` leaves a ``annotations`` feature object in the
    namespace; it is a compiler directive, not API, so it is skipped like a submodule.
    """
    missing = []
    for name, value in vars(loopaware_persist).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, __future__._Feature):
            continue
        if name not in ALL:
            missing.append(name)
    assert missing == []


def test_version() -> None:
    assert isinstance(loopaware_persist.__version__, str)
    assert "__version__" not in ALL


@pytest.mark.parametrize("cls", _public_classes(), ids=lambda c: c.__name__)
def test_reexported_class_module_is_public(cls: type) -> None:
    assert cls.__module__ == "loopaware_persist"
    # module:qualname, as stored in checkpoints, resolves back to the class
    assert getattr(loopaware_persist, cls.__qualname__) is cls


@pytest.mark.parametrize("cls", _public_classes(), ids=lambda c: c.__name__)
def test_reexported_class_resolves_through_registry(cls: type) -> None:
    assert default_registry.resolve(f"loopaware_persist:{cls.__qualname__}", "class") is cls


@pytest.mark.parametrize(
    "name", [n for n in ALL if not isinstance(getattr(loopaware_persist, n), type)]
)
def test_reexported_function_is_documented(name: str) -> None:
    assert getattr(loopaware_persist, name).__doc__


# region error tree

ERRORS = [
    ArgumentTypeError,
    ConfigurationError,
    EncodeError,
    DecodeError,
    CorruptCheckpointError,
    UnknownTagError,
    UnsafeCheckpointError,
    NoEventLoopError,
    LoopBoundaryError,
    StorageError,
    CheckpointNotFoundError,
    StaleCheckpointError,
    DurabilityError,
    BackendUnavailableError,
    FencedError,
    StaleFencedError,
    UnavailableFencedError,
    ShutdownFencedError,
]


@pytest.mark.parametrize("error", [LoopAwarePersistError, *ERRORS], ids=lambda c: c.__name__)
def test_every_error_is_ours_and_plumpys(error: type[BaseException]) -> None:
    assert issubclass(error, LoopAwarePersistError)
    assert issubclass(error, plumpy.PersistenceError)
    assert error.__name__ in ALL


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (ArgumentTypeError, (TypeError,)),
        (ConfigurationError, (ValueError,)),
        (EncodeError, (TypeError,)),
        (DecodeError, (ValueError,)),
        (CorruptCheckpointError, (DecodeError, ValueError)),
        (UnknownTagError, (DecodeError, ValueError)),
        (UnsafeCheckpointError, (DecodeError, ValueError)),
        (NoEventLoopError, (RuntimeError,)),
        (LoopBoundaryError, (RuntimeError,)),
        (CheckpointNotFoundError, (LookupError, StorageError)),
        (StaleCheckpointError, (StorageError,)),
        (DurabilityError, (StorageError, OSError)),
        (BackendUnavailableError, (StorageError, ConnectionError)),
        (StaleFencedError, (FencedError, StaleCheckpointError)),
        (UnavailableFencedError, (FencedError, BackendUnavailableError, ConnectionError)),
        (ShutdownFencedError, (FencedError, StorageError)),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_builtin_bases(error: type[BaseException], bases: tuple[type, ...]) -> None:
    for base in bases:
        assert issubclass(error, base), f"{error.__name__} is not a {base.__name__}"


@pytest.mark.parametrize(
    ("error", "not_base"),
    [
        (EncodeError, ValueError),
        (DecodeError, TypeError),
        (StorageError, RuntimeError),
        (NoEventLoopError, ValueError),
        (CorruptCheckpointError, TypeError),
        (ArgumentTypeError, ValueError),
        (ConfigurationError, TypeError),
        # Only a stale fence is stale: callers catching StaleCheckpointError must not
        # mistake a down store or a shutdown for another writer's save.
        (FencedError, StaleCheckpointError),
        (UnavailableFencedError, StaleCheckpointError),
        (ShutdownFencedError, StaleCheckpointError),
        (ShutdownFencedError, BackendUnavailableError),
        (StaleFencedError, BackendUnavailableError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_no_accidental_bases(error: type[BaseException], not_base: type) -> None:
    assert not issubclass(error, not_base)


def test_errors_carry_context_attributes() -> None:
    assert EncodeError("m", path="_state.ctx['x']").path == "_state.ctx['x']"
    assert UnknownTagError("m", tag="t").tag == "t"
    assert UnsafeCheckpointError("m", name="os:system").name == "os:system"
    assert LoopBoundaryError("m", paths=["a", "b"]).paths == ("a", "b")
    missing = CheckpointNotFoundError("m", pid=3, tag="x")
    assert (missing.pid, missing.tag) == (3, "x")
    stale = StaleCheckpointError("m", expected=1, actual=2)
    assert (stale.expected, stale.actual) == (1, 2)


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_errors_keep_message(error: type[BaseException]) -> None:
    assert str(error("the message")) == "the message"


def test_errors_are_caught_by_plumpy_callers() -> None:
    with pytest.raises(plumpy.PersistenceError):
        raise CheckpointNotFoundError("no such checkpoint", pid="p")


# endregion
