"""The file storage's save path (issue 15, item 5): a small overwrite opens only its
temp file, and the lock files it keeps open still exclude threads, processes, forked
children and writers that do not know the remembered versions."""

from __future__ import annotations

import fcntl
import gc
import os
import pathlib
import signal
import threading
from typing import Any

import pytest

from loopaware_persist._errors import StaleCheckpointError
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import VERSIONS_LOCK, WRITERS_LOCK, FileIO, FileStorage

KEY = CheckpointKey("victim")


class CountingIO(FileIO):
    """Records each OS call by name (and each opened path's base name)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.opened: list[str] = []

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        self.calls.append("open")
        self.opened.append(os.path.basename(path))
        return super().open(path, flags, mode)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self.calls.append("pread")
        return super().pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self.calls.append("pwrite")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        super().fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        self.calls.append("replace")
        super().replace(src, dst)


def _store(root: pathlib.Path, **options: Any) -> FileStorage:
    return FileStorage(root.as_uri(), **options)


@pytest.mark.parametrize(("durability", "opens", "fsyncs"), [("normal", 1, 0), ("full", 2, 2)])
def test_a_small_overwrite_opens_only_its_temp_file(
    tmp_path: pathlib.Path, durability: Any, opens: int, fsyncs: int
) -> None:
    io = CountingIO()
    with _store(tmp_path, durability=durability, io=io) as storage:
        assert storage.put(KEY, b"old") == 1
        io.calls.clear()
        io.opened.clear()
        assert storage.put(KEY, b"new") == 2
        assert io.calls.count("open") == opens
        assert io.opened[0].startswith(".tmp-")
        assert VERSIONS_LOCK not in io.opened
        assert WRITERS_LOCK not in io.opened
        assert io.calls.count("pread") == 1  # the generation; no record header is read
        assert io.calls.count("pwrite") == 2  # header + data in one, then the generation
        assert io.calls.count("fsync") == fsyncs  # the file once, the directory once
        assert io.calls.count("replace") == 1
        assert (storage.get(KEY).data, storage.get(KEY).version) == (b"new", 2)


def test_a_large_record_is_written_before_the_version_lock(tmp_path: pathlib.Path) -> None:
    io = CountingIO()
    big = os.urandom(200_000)
    with _store(tmp_path, durability="full", io=io) as storage:
        storage.put(KEY, b"old")
        io.calls.clear()
        assert storage.put(KEY, big) == 2
        # data, fsync, then (under the lock) the header, fsync, the generation
        assert [c for c in io.calls if c in ("pwrite", "fsync")][:4] == [
            "pwrite",
            "fsync",
            "pwrite",
            "fsync",
        ]
        record = storage.get(KEY)
        assert (record.data, record.version) == (big, 2)
        assert storage.put(KEY, b"small again") == 3


def test_two_storages_on_one_directory_never_repeat_a_version(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path) as first, _store(tmp_path) as second:
        versions = []
        for index in range(6):
            writer = first if index % 2 == 0 else second
            versions.append(writer.put(KEY, f"v{index}".encode()))
        assert versions == [1, 2, 3, 4, 5, 6]
        # Fencing: a writer that remembers version 5 (its own) is refused at 6.
        with pytest.raises(StaleCheckpointError):
            first.put(KEY, b"stale", expected_version=5)
        assert first.put(KEY, b"fresh", expected_version=6) == 7
        second.delete(KEY)
        assert first.put(KEY, b"after delete") == 1
        assert second.put(KEY, b"again") == 2
        second.delete_pid(KEY.pid)
        assert first.put(KEY, b"after delete_pid") == 1


def test_a_writer_that_keeps_no_generation_is_still_seen(tmp_path: pathlib.Path) -> None:
    """A writer of an older release replaces records without bumping the generation:
    the file's inode, size and mtime tell the remembered version is stale."""
    with _store(tmp_path) as ours, _store(tmp_path) as older:
        older._versions.set_generation = lambda fd, value: None  # type: ignore[method-assign]
        assert ours.put(KEY, b"one") == 1
        assert older.put(KEY, b"two") == 2
        assert ours.put(KEY, b"three") == 3
        assert older.put(KEY, b"four") == 4
        assert ours.get(KEY).data == b"four"


def test_threads_share_the_kept_lock_files(tmp_path: pathlib.Path) -> None:
    threads, each = 8, 25
    seen: list[int] = []
    with _store(tmp_path) as storage:

        def save() -> None:
            for _ in range(each):
                version = storage.put(KEY, b"x" * 100)
                seen.append(version)

        workers = [threading.Thread(target=save) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sorted(seen) == list(range(1, threads * each + 1))
        assert storage.get(KEY).version == threads * each
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def _held_elsewhere(path: pathlib.Path) -> int:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_deleted_versions_lock_file_is_reopened(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path) as storage:
        assert storage.put(KEY, b"one") == 1
        os.unlink(tmp_path / VERSIONS_LOCK)
        with _store(tmp_path) as other:
            assert other.put(KEY, b"two") == 2  # made a new lock file
        fd = _held_elsewhere(tmp_path / VERSIONS_LOCK)
        done: list[int] = []
        writer = threading.Thread(target=lambda: done.append(storage.put(KEY, b"three")))
        try:
            writer.start()
            writer.join(0.3)
            assert writer.is_alive(), "the put did not wait for the new lock file's lock"
        finally:
            os.close(fd)
        writer.join(10)
        assert done == [3]


def test_a_forked_child_does_not_share_the_parents_lock(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path) as storage:
        storage.put(KEY, b"parent")
        # The parent holds the file lock on the kept descriptor (not the thread lock,
        # which a child would inherit locked): a child using that descriptor would get
        # the lock at once, one with its own waits.
        versions = storage._versions
        fd = versions._lock(fcntl.LOCK_EX)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
                signal.alarm(1)
                try:
                    storage.put(KEY, b"child")
                finally:
                    os._exit(4)  # it saved while the parent held the lock
            _, status = os.waitpid(pid, 0)
        finally:
            versions._unlock(fd)
        assert os.waitstatus_to_exitcode(status) == 3  # it waited for the parent's lock
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                os._exit(0 if storage.put(KEY, b"child") == 2 else 5)
            finally:
                os._exit(6)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert storage.put(KEY, b"parent again") == 3  # it saw the child's version


def _held(root: pathlib.Path) -> list[str]:
    """:return: the lock files under ``root`` this process holds open"""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to list open descriptors")
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)) and target.endswith(".lock"):
            names.append(os.path.basename(target))
    return names


def test_close_closes_the_kept_lock_files(tmp_path: pathlib.Path) -> None:
    storage = _store(tmp_path)
    storage.put(KEY, b"x")
    assert sorted(_held(tmp_path)) == sorted([VERSIONS_LOCK, WRITERS_LOCK])
    storage.close()
    assert _held(tmp_path) == []


def test_a_storage_dropped_unclosed_does_not_keep_its_lock_files(tmp_path: pathlib.Path) -> None:
    for _ in range(3):
        storage = _store(tmp_path)
        storage.put(KEY, b"x")
        del storage
    gc.collect()
    assert _held(tmp_path) == []
