"""Inspecting: each kind of problem named, missing and filtered stores."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import plumpy
import pytest

from loopaware_persist import (
    CheckpointNotFoundError,
    LoopAwarePersister,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist._ops import (
    inspect_record,
    list_checkpoints,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import FileIO, FileStorage
from tests.processes import drive, new_loop


def test_inspect_and_list_of_a_missing_or_class_filtered_store() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("finished", loop, pid="a"))
        with pytest.raises(CheckpointNotFoundError):
            inspect_record(per, CheckpointKey("nope"))
        assert [e.key.pid for e in list_checkpoints(per, classes=["Finisher"])] == ["a"]
        assert list_checkpoints(per, classes=["Waiter"]) == []


class _PreadFails(FileIO):
    def pread(self, fd: int, size: int, offset: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_inspect_classifies_each_kind_of_problem(tmp_path: Path) -> None:
    """verify reports, per record: unreadable (I/O), undecodable (codec not installed),
    unloadable (decodes and audits, but plumpy cannot load it)."""
    root = tmp_path / "files"
    with new_loop() as loop, open_persister(root.as_uri(), allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("waiting", loop, pid="w"))
        per.storage.put(CheckpointKey("alien"), encode_envelope(b"x", codec="cbor-next"))
        broken = dict(per.load_checkpoint("w"))
        del broken["_state"]
        per.storage.put(CheckpointKey("broken"), per.dumps(_as_bundle(broken)))

        alien = inspect_record(per, CheckpointKey("alien"))
        assert (alien.ok, alien.problem) == (False, "undecodable")
        assert "cbor-next" in (alien.reason or "")
        unloadable = inspect_record(per, CheckpointKey("broken"), load=True)
        assert unloadable.problem == "unloadable"
        assert "plumpy could not load the checkpoint" in (unloadable.reason or "")
        assert inspect_record(per, CheckpointKey("broken")).ok  # without load=True it looks fine
        assert inspect_record(per, CheckpointKey("w"), load=True).ok

    failing = LoopAwarePersister(FileStorage(root.as_uri(), io=_PreadFails()))
    with failing:
        unreadable = inspect_record(failing, CheckpointKey("w"))
    assert unreadable.problem == "unreadable"
    assert "Input/output error" in (unreadable.reason or "")
    assert unreadable.as_dict()["ok"] is False


def _as_bundle(tree: dict[str, Any]) -> plumpy.Bundle:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, tree)
    return bundle


def test_class_filter_never_matches_a_record_whose_header_is_unreadable() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("finished", loop, pid="a"))
        per.storage.put(CheckpointKey("damaged"), b"not an envelope")
        assert {e.key.pid for e in list_checkpoints(per)} == {"a", "damaged"}
        assert [e.key.pid for e in list_checkpoints(per, classes=["*"])] == ["a"]
