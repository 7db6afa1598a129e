"""Converting: the paths that must refuse, not copy, and every copy read back."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import attrs
import plumpy
import pytest

from loopaware_persist import (
    DurabilityError,
    LoopAwarePersister,
    StorageError,
    open_persister,
)
from loopaware_persist._ops import (
    Converter,
    OpsError,
    PickleSource,
    StoreSource,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.memory import MemoryStorage
from tests.processes import drive, new_loop


def test_pickle_source_refuses_untrusted_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match="unpickling runs any code"):
        PickleSource(str(tmp_path))
    with pytest.raises(OpsError, match="does not exist or is not a directory"):
        PickleSource(str(tmp_path / "missing"), trusted=True)


def test_pickle_source_reports_files_that_are_not_plumpy_pickles(tmp_path: Path) -> None:
    (tmp_path / "garbage.pickle").write_bytes(b"not a pickle at all")
    (tmp_path / "wrong.pickle").write_bytes(pickle.dumps({"just": "a dict"}))
    (tmp_path / "subdir.pickle").mkdir()  # not a file: ignored
    (tmp_path / "notes.txt").write_text("ignored")
    source = PickleSource(str(tmp_path), trusted=True)
    items = source.items()
    assert [item.label for item in items] == ["garbage.pickle", "wrong.pickle"]

    with open_persister("memory://") as dst:
        converter = Converter(source, dst)
        results = {item.label: converter.convert(item) for item in items}
        assert dst.storage.list() == []
    assert results["garbage.pickle"].status == "failed"
    assert "garbage.pickle does not unpickle" in (results["garbage.pickle"].reason or "")
    assert results["wrong.pickle"].status == "failed"
    assert "holds a dict, not plumpy's PersistedPickle" in (results["wrong.pickle"].reason or "")


def test_convert_refuses_to_drop_the_type_of_exceptions_not_on_the_allow_list() -> None:
    """A stored exception of a class the source may not import decodes as a stand-in;
    converting it would silently lose its type, so the record is refused with the fix."""
    with (
        new_loop() as loop,
        open_persister("memory://", allow=["tests.processes"]) as writer,
    ):
        process = drive("excepted", loop, pid="p", custom=True)
        writer.save_checkpoint(process)
        data = writer.storage.get(CheckpointKey("p")).data
    with (
        open_persister(
            "memory://", allow=["tests.processes:Raiser", "tests.processes:RecordingListener"]
        ) as src,
        open_persister("memory://", allow=["tests.processes"]) as dst,
    ):
        src.storage.put(CheckpointKey("p"), data)
        converter = Converter(StoreSource(src), dst)
        (item,) = converter.items()
        result = converter.convert(item)
        assert result.status == "failed"
        assert "tests.processes:CustomError" in (result.reason or "")
        assert "--allow tests.processes" in (result.reason or "")
        assert dst.storage.list() == []


def test_convert_reports_a_record_deleted_after_the_listing() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="gone"))
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            src.storage.delete(CheckpointKey("gone"))
            result = converter.convert(item)
    assert result.status == "failed"
    assert "gone" in (result.reason or "")


def test_convert_keeps_the_source_time_of_a_record_saved_without_one() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        bundle = plumpy.Bundle(drive("finished", loop, pid="a"))
        src.storage.put(CheckpointKey("a"), src.dumps(bundle))  # no meta: no saved_at
        (record,) = src.storage.list()
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            assert converter.convert(item).status == "copied"
            (info,) = dst.list_info()
    assert info.header is not None
    assert info.header.meta["saved_at"] == record.stored_at


def test_convert_does_not_overwrite_a_record_another_writer_just_stored() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="a"))
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            dst.storage.put(CheckpointKey("a"), b"written meanwhile")
            (item,) = converter.items()
            result = converter.convert(item)
            assert result.status == "failed"
            assert "another writer changed the destination meanwhile" in (result.reason or "")
            assert dst.storage.get(CheckpointKey("a")).data == b"written meanwhile"


class _FlipsBytes(MemoryStorage):
    """A faulty destination: hands back a different last byte than was stored."""

    def _get(self, key: CheckpointKey) -> Any:
        record = super()._get(key)
        return attrs.evolve(record, data=record.data[:-1] + bytes([record.data[-1] ^ 1]))


class _UnreadableAfterWrite(MemoryStorage):
    def _get(self, key: CheckpointKey) -> Any:
        msg = "the disk went away"
        raise StorageError(msg)


class _RefusesWrites(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        msg = "No space left on device"
        raise DurabilityError(msg)


@pytest.mark.parametrize(
    ("storage", "reason", "left"),
    [
        (_FlipsBytes, "the destination returned different bytes than were written", 0),
        (_UnreadableAfterWrite, "written but not readable back: the disk went away", 1),
        (_RefusesWrites, "No space left on device", 0),
    ],
)
def test_convert_reads_every_copy_back_and_removes_a_bad_one(
    storage: type[MemoryStorage], reason: str, left: int
) -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="a"))
        with LoopAwarePersister(storage(), allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            result = converter.convert(item)
            assert result.status == "failed"
            assert reason in (result.reason or "")
            # A copy that reads back different is deleted; one the store cannot read back
            # at all is left for the next run, which re-checks it before skipping it.
            assert len(dst.storage.list()) == left
