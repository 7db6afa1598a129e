"""Figure 1: crash at every I/O step of the file storage (fork + ``os._exit``).

The child performs one save, overwrite or delete through a :class:`CrashIO` that
kills the process just before its k-th OS call (and, for a ``pwrite``, optionally
after writing only part of the buffer: a torn write). For every k the parent then
reopens the directory, loads, lists, and checks that exactly the old or the new
record is there, that an unrelated record is untouched, that no temp file is left
and that the store accepts the next save.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist import CheckpointNotFoundError, LoopAwarePersister, open_persister
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import TEMP_PREFIX, FileIO, FileStorage

from ._support import ALLOW, figure, record_for, run_forked

CRASHED = 77
OPS = ("save", "overwrite", "delete", "delete_pid")
STEPS = (
    "open",
    "close",
    "pwrite",
    "pread",
    "fstat",
    "fsync",
    "replace",
    "unlink",
    "listdir",
    "makedirs",
    "flock",
)


class CrashIO(FileIO):
    """Counts OS calls once armed; dies before call number ``crash_at`` (1-based).

    With ``torn`` set, a ``pwrite`` at the crash point first writes part of its
    buffer: its first byte, half of it, or all but its last byte.
    """

    def __init__(self, crash_at: int = 0, *, torn: str = "") -> None:
        self.crash_at = crash_at
        self.torn = torn
        self.armed = False
        self.calls: list[str] = []

    def _step(self, name: str) -> None:
        if not self.armed:
            return
        self.calls.append(name)
        if len(self.calls) == self.crash_at and not (self.torn and name == "pwrite"):
            os._exit(CRASHED)


def _wrap(name: str) -> Any:
    real = getattr(FileIO, name)

    def method(self: CrashIO, *args: Any) -> Any:
        self._step(name)
        if name == "pwrite" and self.torn and len(self.calls) == self.crash_at:
            fd, data, offset = args
            cut = {"first-byte": 1, "half": len(data) // 2, "all-but-last": len(data) - 1}
            os.pwrite(fd, bytes(data[: cut[self.torn]]), offset)
            os._exit(CRASHED)
        return real(self, *args)

    method.__name__ = name
    return method


for _name in STEPS:
    setattr(CrashIO, _name, _wrap(_name))


KEY = CheckpointKey("victim")
BYSTANDER = CheckpointKey("bystander", "t")


def _persister(url: str) -> LoopAwarePersister:
    return LoopAwarePersister(FileStorage(url), allow=[ALLOW])


def _prepare(url: str, op: str, old: bytes, other: bytes) -> None:
    with FileStorage(url) as storage:
        storage.put(BYSTANDER, other)
        if op != "save":
            storage.put(KEY, old)


def _operate(url: str, op: str, new: bytes, io: CrashIO, durability: Any) -> None:
    storage = FileStorage(url, durability=durability, io=io)
    io.armed = True
    if op in ("save", "overwrite"):
        storage.put(KEY, new)
    elif op == "delete":
        storage.delete(KEY)
    else:
        storage.delete_pid(KEY.pid)
    io.armed = False
    storage.close()


def _dry_run(tmp: Path, op: str, old: bytes, new: bytes, other: bytes, dur: Any) -> list[str]:
    """The OS calls the operation makes, in order."""
    url = (tmp / "dry").as_uri()
    _prepare(url, op, old, other)
    io = CrashIO()
    _operate(url, op, new, io, dur)
    assert len(io.calls) >= 3, io.calls
    return io.calls


def _check(url: str, op: str, old: bytes, new: bytes, other: bytes) -> str:
    """Reopen (sweeping), load, list; return 'old' or 'new' or raise AssertionError."""
    with _persister(url) as per:
        storage = per.storage
        assert not [n for n in os.listdir(storage.root) if n.startswith(TEMP_PREFIX)]
        assert storage.get(BYSTANDER).data == other
        per.loads(other)
        listed = {info.key: info for info in storage.list()}
        checkpoints = per.get_checkpoints()
        assert len(checkpoints) == len(listed)
        try:
            record = storage.get(KEY)
        except CheckpointNotFoundError:
            record = None
        if op == "save":
            expected_old, expected_new = None, new
        elif op == "overwrite":
            expected_old, expected_new = old, new
        else:
            expected_old, expected_new = old, None
        found = None if record is None else record.data
        assert found in (expected_old, expected_new), "neither the old nor the new record"
        if record is None:
            assert KEY not in listed
            with pytest.raises(CheckpointNotFoundError):
                per.load_checkpoint(KEY.pid)
        else:
            assert listed[KEY].version == record.version
            assert listed[KEY].size == len(record.data)
            assert per.codec.encode(per.load_checkpoint(KEY.pid)) == per.codec.encode(
                per.loads(record.data)
            )
        outcome = "old" if found == expected_old else "new"
        # The directory accepts the next save (no lock or temp file left behind).
        version = storage.put(KEY, new)
        assert version == (1 if record is None else record.version + 1)
        return outcome


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_crash_at_every_io_step(tmp_path: Path, durability: str) -> None:
    with open_persister("memory://", allow=[ALLOW]) as encoder:
        old = record_for(encoder, "victim", 1)
        new = record_for(encoder, "victim", 2)
        other = record_for(encoder, "bystander", 3)
    assert old != new
    points = outcomes_old = outcomes_new = lost = corrupt = orphans = listing_ok = 0
    torn_points = orphans_before = 0
    per_op: dict[str, int] = {}
    for op in OPS:
        calls = _dry_run(tmp_path / op, op, old, new, other, durability)
        steps = len(calls)
        per_op[op] = steps
        for torn in ("", "first-byte", "half", "all-but-last"):
            for k in range(1, steps + 2):  # steps + 1: the operation completes
                if torn and (k > steps or calls[k - 1] != "pwrite"):
                    continue  # a torn crash only differs from a clean one at a pwrite
                root = tmp_path / f"{op}-{torn}-{k}"
                url = root.as_uri()
                _prepare(url, op, old, other)
                io = CrashIO(k, torn=torn)

                def child(url: str = url, op: str = op, io: CrashIO = io) -> None:
                    _operate(url, op, new, io, durability)

                code = run_forked(child)
                assert code == (0 if k > steps else CRASHED), (op, torn, k, code)
                points += 1
                torn_points += bool(torn)
                orphans_before += len([n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)])
                # Count orphans the crash left, then check the next open sweeps them.
                try:
                    outcome = _check(url, op, old, new, other)
                except AssertionError:
                    lost += 1
                    raise
                except Exception:
                    corrupt += 1
                    raise
                listing_ok += 1
                orphans += len([n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)])
                if outcome == "old":
                    outcomes_old += 1
                else:
                    outcomes_new += 1
    line = figure(
        "crash_points",
        storage="file",
        durability=durability,
        steps_per_op=per_op,
        crash_points=points,
        torn_write_points=torn_points,
        orphan_temp_files_left_by_crashes=orphans_before,
        old=outcomes_old,
        new=outcomes_new,
        lost=lost,
        corrupt=corrupt,
        listing_ok_pct=100.0 * listing_ok / points,
        orphan_temp_files_after_open=orphans,
    )
    assert line["lost"] == line["corrupt"] == line["orphan_temp_files_after_open"] == 0
    assert outcomes_old > 0
    assert outcomes_new > 0
