"""Argument checks at the public storage and registry API: a wrong type is an
EncodeError/StorageError that says what was expected, before any I/O; URLs in error
messages never show a password; an allowed name that cannot be imported is refused
with the reason."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from loopaware_persist import (
    BackendUnavailableError,
    EncodeError,
    StorageError,
    UnsafeCheckpointError,
    default_registry,
)
from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.storage.memory import MemoryStorage


@pytest.mark.parametrize("tag", [3, b"t", ("a",)])
def test_a_tag_must_be_a_str_or_none(tag: Any) -> None:
    with pytest.raises(EncodeError, match=r"Unsupported checkpoint tag type .* Use a str or None"):
        CheckpointKey("p", tag)


def test_an_int_pid_too_large_to_write_as_decimal_is_refused() -> None:
    huge = 10 ** (sys.get_int_max_str_digits() + 10)
    with pytest.raises(EncodeError, match=r"The int pid is too large to store .* Use a str"):
        CheckpointKey(huge).token  # noqa: B018


def test_storage_calls_check_their_arguments() -> None:
    with MemoryStorage() as storage:
        storage.put(CheckpointKey("p"), b"data")
        with pytest.raises(EncodeError, match="Expected a CheckpointKey, got <class 'tuple'>"):
            storage.get(("p", None))  # type: ignore[arg-type]
        for size in ("4", 4.0, True):
            with pytest.raises(EncodeError, match="read_prefix size must be an int"):
                storage.read_prefix(CheckpointKey("p"), size)  # type: ignore[arg-type]
        for expected in ("1", 1.0, False):
            with pytest.raises(EncodeError, match="expected_version must be None or an int"):
                storage.put(CheckpointKey("p"), b"x", expected_version=expected)  # type: ignore[arg-type]
        assert storage.get(CheckpointKey("p")).version == 1  # nothing was changed


@pytest.mark.parametrize(
    "url", ["memory://name/path", "memory://?x=1", "memory://#frag", "memory:name"]
)
def test_an_invalid_memory_url_is_refused(url: str) -> None:
    with pytest.raises(StorageError, match="Invalid memory storage URL"):
        open_storage(url)


def test_a_storage_url_must_be_a_string() -> None:
    with pytest.raises(StorageError, match="A storage URL must be a str, got <class 'bytes'>"):
        open_storage(b"memory://")  # type: ignore[arg-type]


def test_errors_about_a_url_never_show_its_password() -> None:
    with pytest.raises(StorageError) as info:
        open_storage("nosuchscheme://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)
    assert "user:***@host" in str(info.value)


def test_a_postgres_url_that_cannot_connect_hides_its_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(BackendUnavailableError) as info:
        open_storage("postgresql://user:s3cret@127.0.0.1:1/db?connect_timeout=1")
    assert "s3cret" not in str(info.value)


def test_an_allowed_name_that_cannot_be_imported_is_refused_with_the_reason() -> None:
    registry = default_registry.copy()
    registry.allow("tests.processes", "no_such_package_xyz")
    assert not registry.trusted
    with pytest.raises(UnsafeCheckpointError, match="cannot be imported here") as info:
        registry.resolve("tests.processes:NoSuchClass", "class")
    assert info.value.name == "tests.processes:NoSuchClass"
    with pytest.raises(UnsafeCheckpointError, match="cannot be imported here"):
        registry.resolve("no_such_package_xyz:Thing", "class")


def test_standard_library_classes_are_names_not_constructors() -> None:
    """A checkpoint may name a stdlib class (as a value) but not have it constructed."""
    import datetime

    registry = default_registry.copy()
    assert registry.may_revive(datetime.tzinfo, "class")
    assert not registry.may_revive(datetime.tzinfo, "object")
