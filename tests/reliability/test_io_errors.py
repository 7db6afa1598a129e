"""Figure 3: I/O errors. Fail the k-th write, fsync and replace of a save for every k,
fill the disk (``RLIMIT_FSIZE``), make the directory read-only.

Each time the error must be a ``DurabilityError`` (a ``LoopAwarePersistError``), the
previous checkpoint must still load, no temp file may be left behind, and a
failed fsync is never retried on the same file: after ``fsync`` fails on a file,
the storage neither fsyncs it again nor renames it into place (its page-cache
state is unknown after a failed fsync, so "retry until it works" can report
lost data as durable).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist import (
    CheckpointNotFoundError,
    DurabilityError,
    LoopAwarePersister,
    LoopAwarePersistError,
    StorageError,
    open_persister,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import TEMP_PREFIX, FileIO, FileStorage
from tests.axes import LOCAL_STORAGES, local_store_url

from ._support import ALLOW, figure, record_for, run_forked

KEY = CheckpointKey("victim")
FAULTS = ("pwrite", "fsync", "replace", "unlink", "open", "close")


class FaultIO(FileIO):
    """Fails call number ``fail_at`` (1-based) of kind ``kind`` with ``err`` (and every
    later one if ``persistent``); logs calls, and any fsync retried after failing."""

    def __init__(
        self, kind: str = "", fail_at: int = 0, err: int = errno.EIO, *, persistent: bool = False
    ) -> None:
        self.kind, self.fail_at, self.err, self.persistent = kind, fail_at, err, persistent
        self.counts: dict[str, int] = {}
        self.paths: dict[int, str] = {}
        self.fsync_failed: set[str] = set()
        self.violations: list[str] = []
        self.armed = False
        self.replaced = False

    def _hit(self, kind: str) -> bool:
        if not self.armed:
            return False
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.persistent:
            return kind == self.kind and self.counts[kind] >= self.fail_at
        return kind == self.kind and self.counts[kind] == self.fail_at

    def _fail(self) -> None:
        raise OSError(self.err, os.strerror(self.err))

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        if self._hit("open"):
            self._fail()
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        hit = self._hit("close")
        self.paths.pop(fd, None)
        if hit:
            os.close(fd)  # a failed close still frees the descriptor (POSIX, Linux)
            self._fail()
        super().close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self._hit("pwrite"):
            self._fail()
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        path = self.paths.get(fd, "?")
        if path in self.fsync_failed:
            self.violations.append(f"fsync retried on {path}")
        if self._hit("fsync"):
            self.fsync_failed.add(path)
            self._fail()
        super().fsync(fd)

    def unlink(self, path: str) -> None:
        if self._hit("unlink"):
            self._fail()
        super().unlink(path)
        if not os.path.basename(path).startswith(TEMP_PREFIX):
            self.replaced = self.armed  # a record removed: the new state of a delete

    def replace(self, src: str, dst: str) -> None:
        if src in self.fsync_failed:
            self.violations.append(f"{src} renamed into place after its fsync failed")
        if self._hit("replace"):
            self._fail()
        super().replace(src, dst)
        self.replaced = self.armed


def _temps(root: Path) -> list[str]:
    return [n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)]


OPS = ("save", "overwrite", "delete", "delete_pid")


def _operate(store: FileStorage, op: str, new: bytes) -> None:
    if op in ("save", "overwrite"):
        store.put(KEY, new)
    elif op == "delete":
        store.delete(KEY)
    else:
        store.delete_pid(KEY.pid)


def _calls_of(tmp: Path, op: str, old: bytes, new: bytes) -> dict[str, int]:
    io = FaultIO()
    with FileStorage((tmp / f"count-{op}").as_uri(), durability="full", io=io) as store:
        if op != "save":
            store.put(KEY, old)
        io.armed = True
        _operate(store, op, new)
    return io.counts


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_kth_call_fails(tmp_path: Path, persistent: bool) -> None:
    """SQLite's ioerr tests: fail call k of each kind, once (transient) or from then on
    (persistent, like a dead disk), for every k of every operation."""
    with open_persister("memory://", allow=[ALLOW]) as enc:
        old, new = record_for(enc, "victim", 1), record_for(enc, "victim", 2)
    cases = typed = previous_ok = leftover = violations = new_in_place = 0
    durability = not_durability = 0
    calls: dict[str, dict[str, int]] = {}
    for op in OPS:
        counts = calls[op] = _calls_of(tmp_path, op, old, new)
        for kind in FAULTS:
            for k in range(1, counts.get(kind, 0) + 1):
                root = tmp_path / f"{op}-{kind}-{k}"
                io = FaultIO(kind, k, persistent=persistent)
                store = FileStorage(root.as_uri(), durability="full", io=io)
                with store:
                    if op != "save":
                        store.put(KEY, old)
                    io.armed = True
                    cases += 1
                    try:
                        _operate(store, op, new)
                    except DurabilityError:
                        typed += 1
                        durability += 1
                    except StorageError:
                        # Only a failed *read* (delete_pid scanning the directory) may
                        # be a plain StorageError; a failed write is a DurabilityError.
                        typed += 1
                        not_durability += kind in ("pwrite", "fsync", "replace", "unlink")
                    io.armed = False
                    violations += len(io.violations)
                # The next open, with a working disk, finds old or new and no temp file.
                with LoopAwarePersister(FileStorage(root.as_uri()), allow=[ALLOW]) as per:
                    leftover += len(_temps(root))
                    try:
                        data = per.storage.get(KEY).data
                    except CheckpointNotFoundError:
                        data = None
                    before = None if op == "save" else old
                    after = new if op in ("save", "overwrite") else None
                    # The new state is in place exactly when the rename (or unlink) of
                    # the record happened: the failure hit a later step.
                    assert (data == after and data != before) is io.replaced, (op, kind, k)
                    new_in_place += io.replaced
                    assert data in (before, after)
                    if data is not None:
                        per.load_checkpoint("victim")
                    previous_ok += 1
                    assert per.storage.put(KEY, new) >= 1  # the store still works
    line = figure(
        "io_errors_kth_call",
        storage="file",
        durability="full",
        mode="persistent" if persistent else "transient",
        calls_per_op=calls,
        cases=cases,
        typed_storage_error_pct=100.0 * typed / cases,
        durability_errors=durability,
        write_failures_not_durability_error=not_durability,
        previous_or_new_loadable_pct=100.0 * previous_ok / cases,
        new_state_in_place_failure_after_rename=new_in_place,
        temp_files_left_after_next_open=leftover,
        fsync_retried_or_renamed_after_failure=violations,
    )
    assert line["typed_storage_error_pct"] == 100.0
    assert line["write_failures_not_durability_error"] == 0
    assert line["previous_or_new_loadable_pct"] == 100.0
    assert line["temp_files_left_after_next_open"] == 0
    assert line["fsync_retried_or_renamed_after_failure"] == 0


# Disk-full and read-only are faked on the local file system: the durable local storages.
@pytest.mark.parametrize("storage", [s for s in LOCAL_STORAGES if s != "memory"])
def test_disk_full_and_read_only(tmp_path: Path, storage: str) -> None:
    url = local_store_url(storage, tmp_path, "files" if storage == "file" else "s")
    with open_persister(url, allow=[ALLOW]) as per:
        old = record_for(per, "victim", 1)
        per.storage.put(KEY, old)
    results: dict[str, Any] = {}
    for limit in (0, 1, 4096, 65536, 1 << 20):

        def child(limit: int = limit) -> int:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            here = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
            cap = here + limit
            resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
            try:  # a full disk may already refuse the open (SQLite's -wal/-shm files)
                with open_persister(url, allow=[ALLOW]) as per:
                    per.storage.put(KEY, old + os.urandom(4 << 20))
            except DurabilityError:
                return 10
            except LoopAwarePersistError:
                return 11
            return 12

        results[f"fsize+{limit}"] = {10: "DurabilityError", 11: "other typed", 12: "stored"}.get(
            run_forked(child), "crashed"
        )
        with open_persister(url, allow=[ALLOW]) as per:
            assert per.storage.get(KEY).data == old
            per.load_checkpoint("victim")
            if storage == "file":
                assert _temps(tmp_path / "files") == []
    if storage == "file":
        for err in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT):
            io = FaultIO("open", 2, err)  # the temp file's open (1st is the writers' lock)
            store = FileStorage(url, io=io)
            io.armed = True
            with store, pytest.raises(DurabilityError):
                store.put(KEY, b"new")
            results[errno.errorcode[err]] = "DurabilityError"
            with FileStorage(url) as store:
                assert store.get(KEY).data == old
    line = figure("io_errors_disk_full_read_only", storage=storage, results=results)
    assert set(line["results"].values()) == {"DurabilityError"}
