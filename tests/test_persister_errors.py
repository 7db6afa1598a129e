"""LoopAwarePersister's error paths: records it cannot read, processes it cannot bundle,
checkpoints verify must refuse, and listings racing a deleter. Each failure is a typed
error that says what is wrong and what to do.
"""

from __future__ import annotations

import builtins
import threading
import uuid
from typing import Any

import msgpack
import plumpy
import pytest
from plumpy.persistence import PersistedCheckpoint

from loopaware_persist import (
    CorruptCheckpointError,
    DecodeError,
    EncodeError,
    LoopAwarePersister,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist.storage import CheckpointKey, RecordInfo
from loopaware_persist.storage.memory import MemoryStorage
from tests.axes import CODECS
from tests.loops import current_loop, new_loop
from tests.processes import drive


class HoldsLock(plumpy.Process):
    """Keeps a lock in an auto-persisted member (the README's known limitation)."""

    _auto_persist = {"_guard"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = threading.Lock()


def test_a_record_of_a_codec_not_installed_here_is_a_decode_error() -> None:
    record = encode_envelope(b"\x80", codec="cbor-from-the-future")
    with open_persister("memory://") as persister:
        persister.storage.put(CheckpointKey("p"), record)
        with pytest.raises(
            DecodeError, match="codec 'cbor-from-the-future', which is not installed"
        ):
            persister.load_checkpoint("p")


@pytest.mark.parametrize("payload", [[1, 2], "text", 7])
def test_a_payload_that_is_not_a_bundle_is_corrupt(payload: Any) -> None:
    record = encode_envelope(msgpack.packb(payload), codec="msgpack")
    with (
        open_persister("memory://") as persister,
        pytest.raises(CorruptCheckpointError, match="not a bundle: damaged or crafted"),
    ):
        persister.loads(record)


def test_a_process_holding_a_lock_cannot_be_saved_and_says_why() -> None:
    with new_loop() as loop, current_loop(loop), open_persister("memory://") as persister:
        process = HoldsLock(loop=loop)
        with pytest.raises(EncodeError, match="plumpy deep-copies auto-persisted members") as info:
            persister.save_checkpoint(process)
        assert "TypeError" in str(info.value)
        assert str(process.pid) in str(info.value)
        assert persister.get_checkpoints() == []


def test_a_process_class_that_cannot_be_imported_cannot_be_saved() -> None:
    class Local(plumpy.Process):
        pass

    with new_loop() as loop, current_loop(loop), open_persister("memory://") as persister:
        process = Local(loop=loop)
        with pytest.raises(EncodeError, match="cannot import it by name"):
            persister.save_checkpoint(process)
        with pytest.raises(EncodeError, match="cannot import it by name"):
            persister.check_save(process)
        assert persister.get_checkpoints() == []


@pytest.mark.parametrize("codec", CODECS)
def test_verify_refuses_a_checkpoint_whose_process_class_a_load_refuses(codec: str) -> None:
    """verify=True promises that "a checkpoint that will not reload fails now ... instead
    of at restart". A process class missing from allow=[...] is exactly such a
    checkpoint: load_process refuses it with UnsafeCheckpointError."""
    with new_loop() as a, new_loop() as b, open_persister("memory://", codec=codec) as persister:
        process = drive("finished", a, pid="x", listener=False)
        # What a restart meets when such a checkpoint is stored:
        persister.save_checkpoint(process, tag="unverified")
        with pytest.raises(UnsafeCheckpointError, match=r"tests\.processes:Finisher"):
            persister.load_process("x", "unverified", loop=b)
        # verify=True must catch it at save time instead.
        with pytest.raises(EncodeError, match="would not reload"):
            persister.save_checkpoint(process, verify=True)
        assert persister.get_process_checkpoints("x") == [PersistedCheckpoint("x", "unverified")]


@pytest.mark.parametrize("codec", CODECS)
def test_check_save_refuses_a_checkpoint_whose_process_class_a_load_refuses(codec: str) -> None:
    with new_loop() as a, open_persister("memory://", codec=codec) as persister:
        process = drive("finished", a, pid="x", listener=False)
        with pytest.raises(EncodeError, match="would not reload"):
            persister.check_save(process)


def test_verify_and_check_save_pass_when_the_class_is_allowed() -> None:
    with (
        new_loop() as a,
        open_persister("memory://", allow=["tests.processes:Finisher"]) as persister,
    ):
        process = drive("finished", a, pid="x", listener=False)
        assert persister.check_save(process)["_state"] is not None
        assert persister.save_checkpoint(process, verify=True) == 1


class DeletedWhileListing(MemoryStorage):
    """Another process deletes the first record right after this one listed it."""

    def list(self, pid: Any = None) -> builtins.list[RecordInfo]:
        records = super().list(pid)
        if records:
            self.delete(records[0].key)
        return records


def test_list_info_skips_a_checkpoint_deleted_since_the_listing() -> None:
    with new_loop() as loop:
        persister = LoopAwarePersister(DeletedWhileListing(), allow=["tests.processes"])
        with persister:
            for pid in ("a", "b"):
                persister.save_checkpoint(drive("finished", loop, pid=pid))
            infos = persister.list_info()
    assert [info.pid for info in infos] == ["b"]
    assert infos[0].error is None
    assert infos[0].as_dict()["process_class"] == "tests.processes:Finisher"


def test_switching_codec_keeps_old_checkpoints_readable() -> None:
    """A store written with pickle and then opened with msgpack, accepting pickle, still
    loads the pickle records: each record names its codec. Without ``accept`` the pickle
    records are refused (a default store never reaches the unpickler)."""
    name = f"memory://codec-switch-{uuid.uuid4().hex}"
    with (
        new_loop() as a,
        new_loop() as b,
        open_persister(name, codec="pickle", allow=["tests.processes"]) as old,
        open_persister(
            name, codec="msgpack", allow=["tests.processes"], accept=("msgpack", "pickle")
        ) as new,
        open_persister(name, allow=["tests.processes"]) as default,
    ):
        old.save_checkpoint(drive("waiting", a, pid="old"))
        new.save_checkpoint(drive("waiting", a, pid="new"))
        with pytest.raises(UnsafeCheckpointError, match="accept="):
            default.load_process("old", loop=b)
        codecs = {info.pid: info.as_dict()["codec"] for info in new.list_info()}
        assert codecs == {"old": "pickle", "new": "msgpack"}
        for pid in ("old", "new", "old"):  # the second read reuses the codec
            restored = new.load_process(pid, loop=b)
            assert restored.state is plumpy.ProcessState.WAITING
            assert restored.loop is b
