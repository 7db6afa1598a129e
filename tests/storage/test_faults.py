"""Storage backends under faults a user meets: unreadable or foreign files, damaged
schemas and headers, failing OS calls, odd URLs, and very long tags. Every failure is
a typed error that names the store and says what to check; nothing half-works.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist import (
    BackendUnavailableError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    CorruptStoredRecordError,
    DurabilityError,
    StorageError,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import FileIO, FileStorage, checkpoint_filename
from loopaware_persist.storage.memory import MemoryStorage
from loopaware_persist.storage.sqlite import SqliteStorage
from loopaware_persist.testing import check_storage, check_storage_processes

KEY = CheckpointKey("p", "t")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStorage]:
    store = SqliteStorage(f"sqlite:///{tmp_path}/store.db")
    yield store
    store.close()


# SQLite.


def test_sqlite_refuses_a_url_with_a_nul_byte(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="holds a NUL byte"):
        SqliteStorage(f"sqlite:///{tmp_path}/a%00b.db")


def test_sqlite_cannot_create_the_directory_of_its_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DurabilityError, match="Cannot create the directory") as info:
        SqliteStorage(f"sqlite:///{blocker}/sub/store.db")
    assert "choose a writable location" in str(info.value)


def test_sqlite_on_a_directory_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(BackendUnavailableError, match="cannot be opened") as info:
        SqliteStorage(f"sqlite:///{tmp_path}/dir.db")
    assert "readable and writable" in str(info.value)


def test_sqlite_reports_a_tag_column_another_tool_wrote(
    tmp_path: Path, sqlite_store: SqliteStorage
) -> None:
    sqlite_store.put(KEY, b"data")
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("UPDATE checkpoints SET tag = 'no-colon'")
    conn.close()
    # One damaged row is skipped by the listing (with a warning), not fatal to it.
    assert sqlite_store.list() == []
    (damaged,) = sqlite_store.find_damaged()
    assert isinstance(damaged, CorruptStoredRecordError)
    assert "Malformed tag column value 'no-colon'" in str(damaged)


def test_sqlite_reports_every_operation_on_a_damaged_schema(
    sqlite_store: SqliteStorage,
) -> None:
    """The checkpoints table was dropped behind the store's back: each operation fails
    with a StorageError naming what it was doing and the store, and the store stays
    usable for the next call (the failed connection is not left in a transaction)."""
    sqlite_store.put(KEY, b"data")
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("DROP TABLE checkpoints")
    conn.close()
    calls: dict[str, Callable[[], object]] = {
        "read pid 'p' with tag 't'": lambda: sqlite_store.get(KEY),
        "read pid 'p' with tag 't' ": lambda: sqlite_store.read_prefix(KEY, 4),
        "delete pid 'p' with tag 't'": lambda: sqlite_store.delete(KEY),
        "delete the checkpoints of pid 'p'": lambda: sqlite_store.delete_pid("p"),
        "list the checkpoints": lambda: sqlite_store.list(),
    }
    for doing, call in calls.items():
        with pytest.raises(StorageError, match="no such table: checkpoints") as info:
            call()
        assert f"Could not {doing.strip()}" in str(info.value)
        assert sqlite_store.url in str(info.value)
        assert not isinstance(info.value, CorruptCheckpointError)


# File storage.


class FaultyIO(FileIO):
    """Fails the named calls with ``OSError(err)``; ``pwrite`` may instead write nothing."""

    def __init__(self, err: int = errno.EIO, *calls: str, short_write: bool = False) -> None:
        self.err = err
        self.calls = set(calls)
        self.short_write = short_write

    def _fail(self, name: str) -> None:
        if name in self.calls:
            raise OSError(self.err, os.strerror(self.err))

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._fail("pread")
        return super().pread(fd, size, offset)

    def fstat(self, fd: int) -> os.stat_result:
        self._fail("fstat")
        return super().fstat(fd)

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        if not flags & os.O_CREAT and path.endswith(".ckpt"):
            self._fail("open-read")
        return super().open(path, flags, mode)

    def listdir(self, path: str) -> list[str]:
        self._fail("listdir")
        return super().listdir(path)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self.short_write:
            return 0
        return super().pwrite(fd, data, offset)


def _saved_store(tmp_path: Path, io: FileIO) -> FileStorage:
    url = (tmp_path / "files").as_uri()
    with FileStorage(url) as healthy:
        healthy.put(KEY, b"0123456789")
    return FileStorage(url, io=io)


@pytest.mark.parametrize("call", ["pread", "fstat", "open-read"])
def test_file_read_errors_name_the_record_and_the_store(tmp_path: Path, call: str) -> None:
    with _saved_store(tmp_path, FaultyIO(errno.EIO, call)) as store:
        operations: list[Callable[[], object]] = [lambda: store.get(KEY)]
        if call != "fstat":  # only get() sizes the file; the others read the header
            operations += [lambda: store.read_prefix(KEY, 4), lambda: store.list()]
        for operation in operations:
            with pytest.raises(StorageError, match="Cannot read") as info:
                operation()
            assert "Input/output error" in str(info.value)
            assert store.url in str(info.value)
            assert not isinstance(info.value, CheckpointNotFoundError)


def test_a_write_that_makes_no_progress_fails_instead_of_spinning(tmp_path: Path) -> None:
    with _saved_store(tmp_path, FaultyIO(short_write=True)) as store:
        with pytest.raises(DurabilityError, match="pwrite wrote nothing"):
            store.put(KEY, b"new data")
        assert store.get(KEY).data == b"0123456789"  # the previous checkpoint is untouched


def test_a_read_only_store_directory_still_opens(tmp_path: Path) -> None:
    """Sweeping temp files needs to list the directory; a store that may not be
    listed for writing (EACCES) still opens for reading, any other error is reported."""
    with _saved_store(tmp_path, FaultyIO(errno.EACCES, "listdir")) as store:
        assert store.sweep_temp_files() == 0
    with pytest.raises(StorageError, match="Cannot read the directory"):
        _saved_store(tmp_path, FaultyIO(errno.EIO, "listdir"))


def test_file_storage_refuses_a_non_file_url(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="Not a file URL"):
        FileStorage(f"sqlite:///{tmp_path}/x.db")


def test_a_tag_longer_than_the_first_header_read_is_listed_and_read(tmp_path: Path) -> None:
    key = CheckpointKey("p", "t" * 2000)
    with FileStorage((tmp_path / "files").as_uri()) as store:
        store.put(key, b"payload")
        (info,) = store.list()
        assert info.key == key
        assert store.read_prefix(key, 3) == b"pay"
        assert store.get(key).data == b"payload"


_MAGIC = b"LAPCKPT1"
_FIXED = struct.Struct(">8sIQdQIB")


def _header(token: bytes, tag: bytes, *, tag_flag: int, length: int | None = None) -> bytes:
    total = _FIXED.size + len(token) + len(tag) + 4
    body = _FIXED.pack(_MAGIC, length or total, 1, 0.0, 0, len(token), tag_flag) + token + tag
    return body + struct.pack(">I", zlib.crc32(body))


DAMAGED_HEADERS = {
    "short file without the magic": (b"NOPE", "no loopaware magic"),
    "length shorter than its fields": (
        _header(b"s:p", b"t", tag_flag=1, length=8),
        "inconsistent header fields",
    ),
    "unknown tag flag": (_header(b"s:p", b"t", tag_flag=7), "inconsistent header fields"),
    "untagged with tag bytes": (_header(b"s:p", b"t", tag_flag=0), "untagged header with tag"),
    "key not UTF-8": (_header(b"s:\xff", b"t", tag_flag=1), "undecodable key"),
    "malformed pid token": (_header(b"zz", b"t", tag_flag=1), "undecodable key"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_HEADERS))
def test_damaged_file_headers_are_corrupt_records(tmp_path: Path, case: str) -> None:
    content, reason = DAMAGED_HEADERS[case]
    root = tmp_path / "files"
    with FileStorage(root.as_uri()) as store:
        (root / checkpoint_filename(KEY)).write_bytes(content)
        with pytest.raises(CorruptCheckpointError, match=reason):
            store.get(KEY)
        with pytest.raises(CorruptCheckpointError, match=reason):
            store.read_prefix(KEY, 4)


# The conformance kit reports a backend's wrong errors precisely.


class _KeyErrorWhenMissing(MemoryStorage):
    """read_prefix raises a bare KeyError for a missing record, not CheckpointNotFoundError."""

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        try:
            return super()._read_prefix(key, size)
        except CheckpointNotFoundError:
            raise KeyError(key) from None


class _LosesEmptyTag(MemoryStorage):
    """Stores tag '' but then reports it missing (a backend mixing up '' and None)."""

    def _get(self, key: CheckpointKey) -> Any:
        if key.tag == "":
            raise self._not_found(key)
        return super()._get(key)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            _KeyErrorWhenMissing,
            "check_storage: missing keys failed .*read_prefix of missing key: "
            "expected CheckpointNotFoundError, got KeyError",
        ),
        (
            _LosesEmptyTag,
            r"check_storage: awkward keys failed .*tag=''\): get\(.*\) raised "
            "CheckpointNotFoundError",
        ),
    ],
)
def test_conformance_kit_names_the_wrong_error(broken: type[MemoryStorage], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_storage(broken)


def test_process_check_catches_a_store_each_process_sees_separately() -> None:
    """memory:// is per process: versions repeat across processes, which the check reports."""
    with pytest.raises(AssertionError, match="puts returned lost or repeated versions; missing"):
        check_storage_processes("memory://", processes=2, puts_per_process=3)


def test_process_check_reports_a_writer_that_cannot_open_the_store() -> None:
    with pytest.raises(AssertionError, match="a writer process failed") as info:
        check_storage_processes("nosuchscheme:///x", processes=2, puts_per_process=1)
    assert "No storage for the URL scheme 'nosuchscheme'" in str(info.value)
