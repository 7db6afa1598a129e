"""``load_process`` audits and binds while it decodes: no walk of the tree, refusals early.

A refused name stops the decode where the decoder meets it, before anything after it
in the record is decoded (a later value's hook never runs); snapshots become futures on
the target loop as they are decoded; what the decode cannot vouch for goes through the
walk of ``unbundle`` as before.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import plumpy
import pytest
from plumpy.persistence import META, META__CLASS_NAME

import loopaware_persist._bound as bound_module
import loopaware_persist._envelope as envelope_module
import loopaware_persist._unbundle as unbundle_module
from loopaware_persist import (
    FutureSnapshot,
    LoopAwarePersister,
    LoopBoundaryError,
    UnsafeCheckpointError,
    default_registry,
    open_persister,
)
from loopaware_persist._envelope import decode_envelope, encode_envelope, read_header
from loopaware_persist._loop_check import _check_built
from loopaware_persist.codecs.msgpack import RECORD_CODE, WELL_KNOWN_CODES, MsgpackCodec
from loopaware_persist.storage import CheckpointKey
from tests.loops import new_loop
from tests.processes import drive


class Later:
    """A value whose decode hook records that the decoder reached it."""


REACHED: list[str] = []


def _reached(fields: list[Any]) -> Later:
    REACHED.append("later")
    return Later()


@pytest.fixture
def persister(msgpack_decoder: str) -> Iterator[LoopAwarePersister]:
    """A ``memory://`` store whose msgpack codec decodes with each library in turn."""
    registry = default_registry.copy()
    registry.register(Later, tag="tests.later", encode=lambda value: [], decode=_reached)
    REACHED.clear()
    with open_persister("memory://", registry=registry, allow=["tests.processes"]) as store:
        assert isinstance(store.codec, MsgpackCodec)
        store.codec.decoder = msgpack_decoder
        yield store


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The trees the walk of ``unbundle`` was given."""
    seen: list[Any] = []
    original = unbundle_module._rebind

    def counted(bundle: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bundle)
        return original(bundle, *args, **kwargs)

    monkeypatch.setattr(unbundle_module, "_rebind", counted)
    return seen


def _store(persister: LoopAwarePersister, bundle: dict[str, Any]) -> uuid.UUID:
    pid = uuid.uuid4()
    persister.storage.put(CheckpointKey(pid), persister.dumps(bundle))  # type: ignore[arg-type]
    return pid


def _bundle_of(kind: str, loop: asyncio.AbstractEventLoop) -> plumpy.Bundle:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, copy.deepcopy(dict(plumpy.Bundle(drive(kind, loop, listener=False)))))
    return bundle


def test_a_refused_class_stops_the_decode_before_what_follows(
    persister: LoopAwarePersister,
) -> None:
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["_state"][META][META__CLASS_NAME] = "os:system"
        bundle["zz_later"] = Later()  # after '_state' in the record
        pid = _store(persister, bundle)
        with pytest.raises(UnsafeCheckpointError, match=r"os:system.*\(at _state\)") as caught:
            persister.load_process(pid, loop=b)
        assert caught.value.name == "os:system"
        assert REACHED == []  # the decoder never got there
        # The control: a bundle's own unbundle decodes the whole record first.
        with pytest.raises(UnsafeCheckpointError):
            persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=b))
        assert REACHED == ["later"]


def test_the_same_record_with_an_allowed_class_is_decoded_to_the_end(
    persister: LoopAwarePersister,
) -> None:
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["zz_later"] = Later()
        pid = _store(persister, bundle)
        process = persister.load_process(pid, loop=b)
        assert REACHED == ["later"]
        assert process.state is plumpy.ProcessState.WAITING
        assert process.loop is b


def test_a_method_name_is_refused_with_its_path(persister: LoopAwarePersister) -> None:
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["_state"]["DONE_CALLBACK"] = "__init__"
        pid = _store(persister, bundle)
        with pytest.raises(UnsafeCheckpointError, match=r"_state\.DONE_CALLBACK"):
            persister.load_process(pid, loop=b)


def test_load_process_binds_snapshots_without_walking_the_tree(
    persister: LoopAwarePersister, walks: list[Any]
) -> None:
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["_state"]["data"] = {
            "jobs": [FutureSnapshot.finished(i) for i in range(3)],
            "pair": (FutureSnapshot.pending(), FutureSnapshot.cancelled("no")),
        }
        pid = _store(persister, bundle)
        process = persister.load_process(pid, loop=b)
        assert walks == []
        data = process._state.data  # type: ignore[attr-defined]
        assert [job.result() for job in data["jobs"]] == [0, 1, 2]
        pending, cancelled = data["pair"]
        assert all(isinstance(f, asyncio.Future) for f in (pending, cancelled))
        assert {pending.get_loop(), cancelled.get_loop(), data["jobs"][0].get_loop()} == {b}
        assert not pending.done()
        assert cancelled.cancelled()
        assert process._state._waiting_future.get_loop() is b  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "elsewhere",
    [
        pytest.param("!!meta", id="a string"),
        pytest.param(b"x!!meta", id="bytes"),
        pytest.param(Later(), id="a user's hook"),
    ],
)
@pytest.mark.parametrize("filler", [0, 8000], ids=["short record", "long record"])
def test_what_the_decode_cannot_vouch_for_is_walked(
    persister: LoopAwarePersister, walks: list[Any], elsewhere: Any, filler: int
) -> None:
    """(The bytes are searched for plumpy's key one way in short records, another in long.)"""
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["_state"]["data"] = ["x" * filler, elsewhere, FutureSnapshot.finished(1)]
        pid = _store(persister, bundle)
        process = persister.load_process(pid, loop=b)
        assert len(walks) == 1
        future = process._state.data[2]  # type: ignore[attr-defined]
        assert future.get_loop() is b
        assert future.result() == 1


def test_a_savable_hidden_from_the_decode_is_still_audited(
    persister: LoopAwarePersister, walks: list[Any]
) -> None:
    """plumpy's key in a map a user's ordered dict holds as pairs: the walk finds it."""
    import collections

    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        hidden = collections.OrderedDict([(META, {META__CLASS_NAME: "os:system"})])
        bundle["_state"]["data"] = [hidden]
        pid = _store(persister, bundle)
        with pytest.raises(UnsafeCheckpointError, match="os:system"):
            persister.load_process(pid, loop=b)
        assert len(walks) == 1


def _records_as_maps(payload: bytes) -> bytes:
    """``payload`` as format version 1 wrote it: each savable's record a plain map."""

    def hook(code: int, data: bytes) -> Any:
        if code == WELL_KNOWN_CODES["uuid"]:  # its data is the 16 bytes, not fields
            return msgpack.ExtType(code, data)
        inner = msgpack.unpackb(data, ext_hook=hook, strict_map_key=False, raw=False)
        return inner if code == RECORD_CODE else msgpack.ExtType(code, repack(inner))

    def repack(value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    return repack(msgpack.unpackb(payload, ext_hook=hook, strict_map_key=False, raw=False))


def test_a_record_of_format_version_1_loads_through_the_walk(
    persister: LoopAwarePersister, walks: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 wrote a savable's record as a plain map: a load cannot vouch for it
    without the walk, and takes it; the process comes back the same."""
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        bundle["_state"]["data"] = [FutureSnapshot.finished(1), uuid.UUID(int=7)]
        envelope = decode_envelope(persister.dumps(bundle))
        header, payload = envelope.header, envelope.payload
        assert header.version == envelope_module.FORMAT_VERSION == 2
        old = _records_as_maps(payload)
        assert old != payload
        assert persister.codec.decode(old) == persister.codec.decode(payload)
        pid = uuid.uuid4()
        with monkeypatch.context() as patch:
            patch.setattr(envelope_module, "FORMAT_VERSION", 1)
            persister.storage.put(CheckpointKey(pid), encode_envelope(old, codec="msgpack"))
        assert read_header(persister.storage.get(CheckpointKey(pid)).data).version == 1
        process = persister.load_process(pid, loop=b)
        assert len(walks) == 1
        future, pid_like = process._state.data  # type: ignore[attr-defined]
        assert future.get_loop() is b
        assert future.result() == 1
        assert pid_like == uuid.UUID(int=7)


def test_a_savables_record_under_another_is_an_ext_value_of_its_own(
    persister: LoopAwarePersister, walks: list[Any]
) -> None:
    """Format version 2: plumpy's records under a record (the state, its command) are
    each one ext value, so the decode meets them with no hook per map."""
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        payload = decode_envelope(persister.dumps(bundle)).payload
        records: list[Any] = []

        def hook(code: int, data: bytes) -> Any:
            if code == WELL_KNOWN_CODES["uuid"]:
                return None
            inner = msgpack.unpackb(data, ext_hook=hook, strict_map_key=False, raw=False)
            if code == RECORD_CODE:
                records.append(inner)
            return inner

        root = msgpack.unpackb(payload, ext_hook=hook, strict_map_key=False, raw=False)
        assert any(record is root[0]["_state"] for record in records)
        # every one but the bundle's own map
        assert len(records) == payload.count(META.encode()) - 1 >= 3
        pid = _store(persister, bundle)
        assert persister.load_process(pid, loop=b).state is plumpy.ProcessState.WAITING
        assert walks == []


def test_a_record_nested_as_deep_as_a_save_allows_loads_bound(
    persister: LoopAwarePersister, walks: list[Any]
) -> None:
    """msgspec counts nesting against the interpreter's recursion limit, which 990 levels
    of lists in a tuple exceed on Python 3.11: the decode starts again on msgpack-python's
    decoder, with the binding told to forget the first try, and the load stays bound."""
    with new_loop() as a, new_loop() as b:
        bundle = _bundle_of("waiting", a)
        deep: Any = [FutureSnapshot.finished(2)]
        for _ in range(990):
            deep = [deep]
        bundle["_state"]["data"] = [FutureSnapshot.finished(1), (deep,)]
        pid = _store(persister, bundle)
        process = persister.load_process(pid, loop=b)
        first, (nested,) = process._state.data  # type: ignore[attr-defined]
        for _ in range(990):
            (nested,) = nested
        (inner,) = nested
        assert [first.get_loop(), inner.get_loop()] == [b, b]
        assert [first.result(), inner.result()] == [1, 2]
        assert walks == []


def test_the_check_after_a_bound_load_finds_plumpys_futures_on_another_loop() -> None:
    with new_loop() as a, new_loop() as b:
        process = drive("waiting", b, listener=False)
        _check_built(process, b)
        process._state._waiting_future = a.create_future()  # type: ignore[attr-defined]
        with pytest.raises(LoopBoundaryError) as caught:
            _check_built(process, b)
        assert caught.value.paths == ("_state._waiting_future",)


def test_a_codec_that_cannot_bind_loads_through_the_walk(walks: list[Any]) -> None:
    with (
        open_persister("memory://", codec="pickle", allow=["tests.processes"]) as store,
        new_loop() as a,
        new_loop() as b,
    ):
        process = drive("waiting", a, listener=False)
        store.save_checkpoint(process)
        loaded = store.load_process(process.pid, loop=b)
        assert loaded.loop is b
        assert len(walks) == 1


def test_load_record_is_what_load_process_runs() -> None:
    """The fast path this module tests is the one the persister takes."""
    import loopaware_persist._encoding as encoding

    assert encoding.load_record is bound_module.load_record


def test_the_pure_python_msgpack_binds_and_refuses_alike(persister: LoopAwarePersister) -> None:
    """msgpack-python's fallback (PyPy, no C extension) builds maps from their pairs: the
    load's hook is handed each map all the same."""
    from tests.codecs.test_msgpack_layout import _pure_python_msgpack

    with new_loop() as a, new_loop() as b, _pure_python_msgpack():
        store = open_persister("memory://", registry=persister.registry, allow=["tests.processes"])
        assert isinstance(store.codec, MsgpackCodec)
        store.codec.decoder = "msgpack"  # msgspec reads the bytes without msgpack-python
        with store:
            bundle = _bundle_of("waiting", a)
            bundle["_state"]["data"] = [FutureSnapshot.finished(1)]
            pid = _store(store, bundle)
            process = store.load_process(pid, loop=b)
            assert process._state.data[0].get_loop() is b  # type: ignore[attr-defined]
            bundle["_state"][META][META__CLASS_NAME] = "os:system"
            bundle["zz_later"] = Later()
            pid = _store(store, bundle)
            with pytest.raises(UnsafeCheckpointError, match=r"\(at _state\)"):
                store.load_process(pid, loop=b)
            assert REACHED == []
