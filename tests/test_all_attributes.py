"""The public namespace: __all__ complete, sorted and importable; the error tree as designed."""

from __future__ import annotations
import __future__

import importlib
import pkgutil
import re
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
    OpsError,
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
    OpsError,
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


def _package_modules() -> list[types.ModuleType]:
    found = [loopaware_persist]
    for info in pkgutil.walk_packages(loopaware_persist.__path__, "loopaware_persist."):
        if info.name.rpartition(".")[2] == "__main__":  # importing it runs the CLI
            continue
        if info.name.startswith("loopaware_persist.aiida"):
            # Imports aiida-core (an extra) and its configuration folder; the subpackage
            # defines no exception and has its own __all__ test in tests/aiida.
            continue
        found.append(importlib.import_module(info.name))
    return found


def _defined_exceptions() -> dict[str, type]:
    """Every exception and warning class a module of the package defines under a public
    name, except those whose docstring says they are internal signals."""
    found: dict[str, type] = {}
    for module in _package_modules():
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("loopaware_persist")
                and not name.startswith("_")
                and not (value.__doc__ or "").startswith("Internal:")
            ):
                found[name] = value
    return found


def test_every_exception_and_warning_is_exported() -> None:
    exported = {name for name in ALL if isinstance(getattr(loopaware_persist, name), type)}
    assert set(_defined_exceptions()) <= exported


def test_every_exception_and_warning_is_in_errors_and_its_drawn_tree() -> None:
    from loopaware_persist import _errors

    drawn = set(re.findall(r"── (\w+)", (_errors.__doc__ or "").split("::")[1]))
    defined = _defined_exceptions()
    assert set(defined) <= drawn
    # The fenced errors move from _worker.py into _errors.py in the kiwipy split (#13).
    fenced = {"FencedError", "StaleFencedError", "UnavailableFencedError", "ShutdownFencedError"}
    assert set(defined) - set(_errors.__all__) <= fenced
    for name in _errors.__all__:
        assert getattr(loopaware_persist, name) is getattr(_errors, name)


def test_old_homes_of_moved_errors_still_import() -> None:
    from loopaware_persist import _hooks, _ops
    from loopaware_persist.codecs import pickle

    assert pickle.UnsafeLoadWarning is loopaware_persist.UnsafeLoadWarning
    assert _ops.OpsError is loopaware_persist.OpsError
    assert _hooks.ForeignException is loopaware_persist.ForeignException


# endregion
