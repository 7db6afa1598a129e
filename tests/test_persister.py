"""LoopAwarePersister: plumpy's Persister API on every storage and codec, with real processes.

Every saved process is loaded onto a *different* loop and, unless terminal, run
to completion there with the outputs checked, so a checkpoint that "loads" but
cannot continue fails here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import plumpy
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from plumpy.persistence import PersistedCheckpoint

from loopaware_persist import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    EncodeError,
    LoopAwareBundle,
    LoopAwarePersister,
    LoopAwarePersistError,
    StaleCheckpointError,
    check_loop_bound,
    open_persister,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import checkpoint_filename
from tests.axes import CODECS, LOCAL_STORAGES, local_store_url
from tests.loops import LoopPair, run_on
from tests.processes import (
    EXPECTED_OUTPUTS,
    KINDS,
    LIVE_KINDS,
    Chain,
    Finisher,
    Opaque,
    Waiter,
    chain_outputs,
    check_terminal,
    complete,
    drive,
    expected_state,
    listeners_of,
)

COMPRESSIONS = (None, "zstd")
ALLOW = ["tests.processes"]
PIDS = (7, "7", uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100"))


PersisterFactory = Callable[..., LoopAwarePersister]


@pytest.fixture
def make_persister(tmp_path: Path) -> Iterator[PersisterFactory]:
    """Open persisters on fresh stores under ``tmp_path``; all closed afterwards."""
    opened: list[LoopAwarePersister] = []

    def make(
        storage: str = "memory",
        codec: str = "msgpack",
        compression: str | None = None,
        *,
        name: str = "store",
        **options: Any,
    ) -> LoopAwarePersister:
        options.setdefault("allow", ALLOW)
        persister = open_persister(
            local_store_url(storage, tmp_path, name),
            codec=codec,
            compression=compression,
            **options,
        )
        opened.append(persister)
        return persister

    yield make
    for persister in opened:
        persister.close()


@pytest.fixture
def storage() -> str:
    """The storage of :func:`persister`, unless a test parametrises it."""
    return "memory"


@pytest.fixture
def codec() -> str:
    """The codec of :func:`persister`, unless a test parametrises it."""
    return "msgpack"


@pytest.fixture
def compression() -> str | None:
    """The compression of :func:`persister`, unless a test parametrises it."""
    return None


@pytest.fixture
def persister(
    make_persister: PersisterFactory, storage: str, codec: str, compression: str | None
) -> LoopAwarePersister:
    """A persister on a fresh store of the ``storage``, ``codec`` and ``compression`` fixtures."""
    return make_persister(storage, codec, compression)


def finish_on(loop: asyncio.AbstractEventLoop, process: plumpy.Process) -> dict[str, Any]:
    """:return: the outputs of ``process`` run to completion on ``loop``"""
    return run_on(loop, complete(process))


# The core round trip: every state, storage, codec and compression.


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=["raw", "zstd"])
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("storage", LOCAL_STORAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_state_round_trips_and_runs_to_completion(
    persister: LoopAwarePersister, loops: LoopPair, kind: str
) -> None:
    a, b = loops
    process = drive(kind, a)
    assert persister.save_checkpoint(process) == 1

    restored = persister.load_process(process.pid, loop=b)

    assert restored is not process
    assert type(restored) is type(process)
    assert restored.pid == process.pid
    assert restored.loop is b
    assert restored.state is expected_state(kind)
    assert restored.paused is kind.startswith("paused")
    check_loop_bound(restored, b)
    (listener,) = listeners_of(restored)
    assert listener.label == kind
    heard_before = list(listener.events)
    if kind in LIVE_KINDS:
        assert finish_on(b, restored) == EXPECTED_OUTPUTS[kind]
        assert restored.state is plumpy.ProcessState.FINISHED
        # The restored listener kept what it heard before the checkpoint and goes on hearing.
        assert listener.events[: len(heard_before)] == heard_before
        assert listener.events[-1] == "finished"
    else:
        check_terminal(restored, kind)


@pytest.mark.parametrize("storage", ["file", "sqlite"])
def test_full_durability_and_zlib_round_trip(
    make_persister: PersisterFactory, loops: LoopPair, storage: str
) -> None:
    a, b = loops
    persister = make_persister(storage, "msgpack", "zlib", durability="full")
    killed = drive("self-killed", a)
    waiting = drive("waiting", a)
    persister.save_checkpoint(killed)
    persister.save_checkpoint(waiting)
    assert {info.as_dict()["compression"] for info in persister.list_info()} == {"zlib"}
    check_terminal(persister.load_process(killed.pid, loop=b), "self-killed")
    assert finish_on(b, persister.load_process(waiting.pid, loop=b)) == EXPECTED_OUTPUTS["waiting"]


def test_load_process_passes_extra_context_entries(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    process = drive("waiting", a)
    persister.save_checkpoint(process)
    logger = logging.getLogger("tests.restored")
    restored = persister.load_process(process.pid, loop=b, logger=logger)
    assert restored.logger is logger
    via_plumpy = persister.load_checkpoint(process.pid).unbundle(
        plumpy.LoadSaveContext(loop=b, logger=logger)
    )
    assert via_plumpy.logger is logger
    assert finish_on(b, restored) == EXPECTED_OUTPUTS["waiting"]


@pytest.mark.parametrize("storage", ["sqlite"])
@pytest.mark.parametrize("codec", CODECS)
def test_workchain_checkpointed_after_every_step_resumes_from_each(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    """As AiiDA does: a checkpoint per step; each one finishes with the same outputs."""
    a, b = loops
    chain = Chain(inputs={"n": 4}, loop=a)
    tags: list[str] = []

    async def step_and_save() -> None:
        while not chain.has_terminated():
            tag = f"step-{len(tags)}"
            persister.save_checkpoint(chain, tag=tag)
            tags.append(tag)
            await chain.step()

    a.run_until_complete(step_and_save())
    assert dict(chain.outputs) == chain_outputs(4)
    assert len(tags) > 6  # created, running, setup, 4 x accumulate, branch, finalise
    for tag in tags:
        restored = persister.load_process(chain.pid, tag, loop=b)
        assert restored.loop is b
        assert finish_on(b, restored) == chain_outputs(4), tag


@pytest.mark.parametrize("storage", ["file"])
def test_workchain_mid_loop_keeps_its_context(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    chain = Chain(inputs={"n": 4}, loop=a)

    async def until_two_accumulated() -> None:
        while chain.ctx.get("i", 0) < 2:
            await chain.step()

    a.run_until_complete(until_two_accumulated())
    persister.save_checkpoint(chain)
    restored = persister.load_process(chain.pid, loop=b)
    ctx = restored.ctx
    assert ctx is not None
    assert ctx.i == 2
    assert ctx.values == (0.0, 1.0)
    assert type(ctx.values) is tuple
    assert ctx.seen == {"setup", "accumulate-0", "accumulate-1"}
    assert type(ctx.seen) is set
    assert type(ctx.run_id) is uuid.UUID
    assert ctx.nested == {"a": {"b": [1.5, 2.25, -0.0], "c": None}, "d": (True, "x")}
    assert ctx.weights == [0.1, 1e-300, 3.5e300]
    assert finish_on(b, restored) == chain_outputs(4)


# Plumpy's six Persister methods.


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("storage", LOCAL_STORAGES)
def test_the_six_plumpy_persister_methods(persister: LoopAwarePersister, loops: LoopPair) -> None:
    a, b = loops
    assert isinstance(persister, plumpy.Persister)
    assert persister.get_checkpoints() == []
    processes = {pid: drive("created", a, pid=pid, listener=False) for pid in PIDS}
    for process in processes.values():
        persister.save_checkpoint(process)
        persister.save_checkpoint(process, tag="first")
        persister.save_checkpoint(process, tag="ü second")

    expected = {
        PersistedCheckpoint(pid, tag) for pid in PIDS for tag in (None, "first", "ü second")
    }
    listed = persister.get_checkpoints()
    assert all(isinstance(c, PersistedCheckpoint) for c in listed)
    assert set(listed) == expected
    assert len(listed) == len(expected)
    # Pids keep their type: 7 and "7" are two processes.
    assert {type(c.pid) for c in listed} == {int, str, uuid.UUID}
    for pid in PIDS:
        mine = persister.get_process_checkpoints(pid)
        assert {(c.pid, c.tag) for c in mine} == {(pid, None), (pid, "first"), (pid, "ü second")}
        assert all(type(c.pid) is type(pid) for c in mine)

    for pid in PIDS:
        for tag in (None, "first", "ü second"):
            bundle = persister.load_checkpoint(pid, tag)
            assert isinstance(bundle, plumpy.Bundle)
            assert isinstance(bundle, LoopAwareBundle)
            restored = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert restored.pid == pid
            assert type(restored.pid) is type(pid)
            assert restored.loop is b

    persister.delete_checkpoint(7, "first")
    persister.delete_checkpoint(7, "never saved")  # no error
    assert {c.tag for c in persister.get_process_checkpoints(7)} == {None, "ü second"}
    assert len(persister.get_process_checkpoints("7")) == 3
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint(7, "first")

    persister.delete_process_checkpoints("7")
    assert persister.get_process_checkpoints("7") == []
    assert len(persister.get_process_checkpoints(7)) == 2
    persister.delete_checkpoint(7)
    assert [c.tag for c in persister.get_process_checkpoints(7)] == ["ü second"]
    persister.delete_process_checkpoints(PIDS[2])
    persister.delete_process_checkpoints(7)
    persister.delete_process_checkpoints("never saved")  # no error
    assert persister.get_checkpoints() == []


@pytest.mark.parametrize("storage", LOCAL_STORAGES)
@pytest.mark.parametrize("tag", [None, "t"])
def test_missing_checkpoint_is_checkpoint_not_found(
    persister: LoopAwarePersister, loops: LoopPair, tag: str | None
) -> None:
    a, b = loops
    process = drive("created", a, pid="present", listener=False)
    persister.save_checkpoint(process, tag="other")
    for pid in ("absent", "present"):
        with pytest.raises(CheckpointNotFoundError) as caught:
            persister.load_checkpoint(pid, tag)
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, plumpy.PersistenceError)
        assert isinstance(caught.value, LoopAwarePersistError)
        with pytest.raises(CheckpointNotFoundError):
            persister.load_process(pid, tag, loop=b)


def test_keys_of_equal_pids_of_other_types_stay_apart(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    # The key of the last pid is kept by identity: a pid equal to it but of another type
    # is another key (or refused), as when every key was built afresh.
    a, _ = loops
    process = drive("waiting", a, pid=1, listener=False)
    assert persister.save_checkpoint(process) == 1
    assert persister.save_checkpoint(process) == 2
    with pytest.raises(EncodeError, match="pid type"):
        persister.load_checkpoint(True)
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint("1")
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint(1, "t")
    assert [c.pid for c in persister.get_checkpoints()] == [1]
    assert persister.load_checkpoint(1)["_pid"] == 1


@pytest.mark.parametrize("storage", LOCAL_STORAGES)
def test_versions_and_compare_and_set(persister: LoopAwarePersister, loops: LoopPair) -> None:
    a, b = loops
    waiter = drive("waiting", a, pid="w")
    assert persister.save_checkpoint(waiter, expected_version=0) == 1
    assert persister.save_checkpoint(waiter) == 2
    assert persister.save_checkpoint(waiter, tag="t", expected_version=0) == 1  # per key
    assert persister.save_checkpoint(waiter, expected_version=2) == 3

    finished = drive("finished", a, pid="w")  # another writer's view of the same pid
    for stale in (0, 2, 4):
        with pytest.raises(StaleCheckpointError) as caught:
            persister.save_checkpoint(finished, expected_version=stale)
        assert caught.value.expected == stale
        assert caught.value.actual == 3
        assert isinstance(caught.value, plumpy.PersistenceError)
    # Nothing was stored by the losers: the checkpoint is still the waiting process.
    restored = persister.load_process("w", loop=b)
    assert restored.state is plumpy.ProcessState.WAITING
    assert [i.record.version for i in persister.list_info("w") if i.tag is None] == [3]

    persister.delete_checkpoint("w")
    with pytest.raises(StaleCheckpointError):
        persister.save_checkpoint(finished, expected_version=3)
    assert persister.save_checkpoint(finished, expected_version=0) == 1


@pytest.mark.parametrize("storage", ["file", "sqlite"])
def test_listing_reads_no_payload(
    persister: LoopAwarePersister, loops: LoopPair, tmp_path: Path, storage: str
) -> None:
    a, b = loops
    pids = ["good-1", "damaged", "good-2"]
    for pid in pids:
        persister.save_checkpoint(drive("waiting", a, pid=pid))
    damage_payload(persister, storage, tmp_path, CheckpointKey("damaged"))

    assert {c.pid for c in persister.get_checkpoints()} == set(pids)
    assert [c.pid for c in persister.get_process_checkpoints("damaged")] == ["damaged"]
    infos = {info.pid: info for info in persister.list_info()}
    assert set(infos) == set(pids)
    assert infos["damaged"].error is None  # the header is intact; the payload was not read
    assert infos["damaged"].as_dict()["state"] == "waiting"

    with pytest.raises(CorruptCheckpointError):
        persister.load_checkpoint("damaged")
    with pytest.raises(CorruptCheckpointError):
        persister.load_process("damaged", loop=b)
    for pid in ("good-1", "good-2"):
        restored = persister.load_process(pid, loop=b)
        assert finish_on(b, restored) == EXPECTED_OUTPUTS["waiting"]


def damage_payload(
    persister: LoopAwarePersister, storage: str, directory: Path, key: CheckpointKey
) -> None:
    """Flip the last byte of a stored record (inside the payload), behind the storage's back."""
    if storage == "file":
        path = directory / "store" / checkpoint_filename(key)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    record = persister.storage.get(key).data
    damaged = record[:-1] + bytes([record[-1] ^ 0xFF])
    with sqlite3.connect(directory / "store.db") as conn:
        updated = conn.execute(
            "UPDATE checkpoints SET data = ? WHERE pid = ? AND tag = ''", (damaged, key.token)
        ).rowcount
    conn.close()
    assert updated == 1


def test_list_info_reports_class_and_state_from_the_header(
    make_persister: PersisterFactory, loops: LoopPair
) -> None:
    a, _ = loops
    persister = make_persister("sqlite", "pickle", "zstd")
    for kind in ("waiting", "finished", "chain"):
        persister.save_checkpoint(drive(kind, a, pid=kind), tag=kind)
    summary = {info.pid: info.as_dict() for info in persister.list_info()}
    assert summary["waiting"]["process_class"] == "tests.processes:Waiter"
    assert summary["waiting"]["state"] == "waiting"
    assert summary["finished"]["state"] == "finished"
    assert summary["chain"]["process_class"] == "tests.processes:Chain"
    assert summary["chain"]["state"] == "running"
    assert {s["codec"] for s in summary.values()} == {"pickle"}
    assert {s["compression"] for s in summary.values()} == {"zstd"}
    assert {s["tag"] for s in summary.values()} == {"waiting", "finished", "chain"}


# Verify=True and check_save.


def chain_with_unloadable_value(loop: asyncio.AbstractEventLoop) -> plumpy.Process:
    chain = drive("chain", loop)
    chain.ctx.nested["a"]["bad"] = [1, Opaque(3)]
    return chain


# Opaque is in tests.processes, but only these two classes are allowed here.
NARROW_ALLOW = ["tests.processes:Chain", "tests.processes:RecordingListener"]


@pytest.fixture
def narrow_persister(
    make_persister: PersisterFactory, storage: str, codec: str
) -> LoopAwarePersister:
    """A persister like :func:`persister` that allows only :data:`NARROW_ALLOW`."""
    return make_persister(storage, codec, allow=NARROW_ALLOW)


def assert_names_the_unloadable_value(error: EncodeError) -> None:
    """``error`` names where :func:`chain_with_unloadable_value` put the value, and its type."""
    assert "['nested']['a']['bad'][1]" in error.path
    assert "['nested']['a']['bad'][1]" in str(error)
    assert "Opaque" in str(error)


@pytest.mark.parametrize("storage", ["sqlite"])
@pytest.mark.parametrize("codec", CODECS)
def test_verify_names_the_path_of_a_value_that_would_not_reload(
    narrow_persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, _ = loops
    with pytest.raises(EncodeError) as caught:
        narrow_persister.save_checkpoint(chain_with_unloadable_value(a), verify=True)
    assert isinstance(caught.value, TypeError)
    assert_names_the_unloadable_value(caught.value)
    assert narrow_persister.get_checkpoints() == []  # nothing was stored


@pytest.mark.parametrize("codec", CODECS)
def test_check_save_names_the_path_and_stores_nothing(
    narrow_persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, _ = loops
    persister = narrow_persister
    chain = chain_with_unloadable_value(a)
    with pytest.raises(EncodeError) as caught:
        persister.check_save(chain)
    assert_names_the_unloadable_value(caught.value)
    assert persister.get_checkpoints() == []

    del chain.ctx.nested["a"]["bad"]
    bundle = persister.check_save(chain)
    assert bundle["_context"]["nested"] == chain.ctx.nested
    assert persister.get_checkpoints() == []


@pytest.mark.parametrize("storage", ["file"])
@pytest.mark.parametrize("codec", CODECS)
def test_verify_passes_a_good_checkpoint(persister: LoopAwarePersister, loops: LoopPair) -> None:
    a, b = loops
    chain = drive("chain", a)
    assert persister.save_checkpoint(chain, verify=True) == 1
    assert finish_on(b, persister.load_process(chain.pid, loop=b)) == chain_outputs(3)


# Async API.


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("storage", LOCAL_STORAGES)
def test_asave_and_aload_from_a_coroutine(persister: LoopAwarePersister, loops: LoopPair) -> None:
    a, b = loops

    async def save_on_a() -> tuple[Any, int, int]:
        waiter = Waiter(loop=asyncio.get_running_loop())
        await waiter.step()
        await waiter.step()
        assert waiter.state is plumpy.ProcessState.WAITING
        first = await persister.asave_checkpoint(waiter)
        second = await persister.asave_checkpoint(waiter, tag="t", expected_version=0)
        with pytest.raises(StaleCheckpointError):
            await persister.asave_checkpoint(waiter, expected_version=0)
        return waiter.pid, first, second

    pid, first, second = a.run_until_complete(save_on_a())
    assert (first, second) == (1, 1)

    async def load_on_b() -> dict[str, Any]:
        restored = await persister.aload_process(pid, "t")
        assert restored.loop is asyncio.get_running_loop()
        check_loop_bound(restored, asyncio.get_running_loop())
        with pytest.raises(CheckpointNotFoundError):
            await persister.aload_process("absent")
        return await complete(restored)

    assert b.run_until_complete(load_on_b()) == EXPECTED_OUTPUTS["waiting"]


@pytest.mark.parametrize("storage", ["sqlite"])
def test_asave_does_not_block_other_tasks(persister: LoopAwarePersister, loops: LoopPair) -> None:
    """The write runs in a thread: while it waits, another task of the loop runs.

    The write waits for that task (a blocking save would wait in vain); the order of two
    awaits alone would not show it, as a fast enough thread may finish before the await.
    """
    a, _ = loops
    other_ran = threading.Event()
    seen_by_write: list[bool] = []
    put = persister.storage.put

    def slow_put(*args: Any, **kwargs: Any) -> int:
        seen_by_write.append(other_ran.wait(timeout=30))
        return put(*args, **kwargs)

    persister.storage.put = slow_put  # type: ignore[method-assign]

    async def main() -> None:
        process = Finisher(loop=asyncio.get_running_loop())

        async def other() -> None:
            other_ran.set()

        task = asyncio.ensure_future(other())
        await persister.asave_checkpoint(process)
        await task

    a.run_until_complete(main())
    assert seen_by_write == [True]


# Plumpy's own ProcessLauncher.


@pytest.mark.parametrize("storage", ["sqlite"])
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", ["created", "chain"])
def test_plumpy_process_launcher_continues_onto_its_loop(
    persister: LoopAwarePersister, loops: LoopPair, kind: str
) -> None:
    """AiiDA-style code (plumpy's launcher calls bundle.unbundle itself) is loop-safe unchanged."""
    a, b = loops
    process = drive(kind, a)
    persister.save_checkpoint(process)
    launcher = plumpy.ProcessLauncher(
        loop=b, persister=persister, load_context=plumpy.LoadSaveContext(loop=b)
    )
    # Loop A stays current in this thread, as in a worker that made it current long ago.
    asyncio.set_event_loop(a)
    try:
        result = b.run_until_complete(launcher._continue(None, pid=process.pid, nowait=False))
    finally:
        asyncio.set_event_loop(None)
    assert dict(result) == EXPECTED_OUTPUTS[kind]


# Stateful: save / load / list / delete against a dict model.


class PersisterMachine(RuleBasedStateMachine):
    """Drives one persister like a worker pool would and checks it against a dict."""

    storage: str = "memory"
    codec: str = "msgpack"
    directory: Path = Path()
    _counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        name = f"machine-{next(self._counter)}"
        self.persister = open_persister(
            local_store_url(self.storage, self.directory, name), codec=self.codec, allow=ALLOW
        )
        self.a = asyncio.new_event_loop()
        self.b = asyncio.new_event_loop()
        # (pid, tag) -> (version, kind)
        self.model: dict[tuple[Any, str | None], tuple[int, str]] = {}

    keys = Bundle("keys")

    @rule(
        target=keys,
        pid=st.sampled_from([*PIDS, 8, "ü"]),
        tag=st.sampled_from([None, "a", "b c"]),
        kind=st.sampled_from(["created", "waiting", "finished"]),
    )
    def save(self, pid: Any, tag: str | None, kind: str) -> tuple[Any, str | None]:
        process = drive(kind, self.a, pid=pid, listener=False)
        version = self.persister.save_checkpoint(process, tag)
        previous = self.model.get((pid, tag), (0, ""))[0]
        assert version == previous + 1
        self.model[(pid, tag)] = (version, kind)
        return pid, tag

    @rule(key=keys, kind=st.sampled_from(["created", "finished"]), stale=st.booleans())
    def save_compare_and_set(self, key: tuple[Any, str | None], kind: str, stale: bool) -> None:
        pid, tag = key
        current = self.model.get(key, (0, ""))[0]
        process = drive(kind, self.a, pid=pid, listener=False)
        if stale:
            with pytest.raises(StaleCheckpointError):
                self.persister.save_checkpoint(process, tag, expected_version=current + 1)
            return
        version = self.persister.save_checkpoint(process, tag, expected_version=current)
        assert version == current + 1
        self.model[key] = (version, kind)

    @rule(key=keys)
    def load(self, key: tuple[Any, str | None]) -> None:
        pid, tag = key
        if key not in self.model:
            with pytest.raises(CheckpointNotFoundError):
                self.persister.load_checkpoint(pid, tag)
            return
        restored = self.persister.load_process(pid, tag, loop=self.b)
        assert restored.pid == pid
        assert type(restored.pid) is type(pid)
        assert restored.loop is self.b
        assert restored.state is expected_state(self.model[key][1])

    @rule(key=keys)
    def delete(self, key: tuple[Any, str | None]) -> None:
        self.persister.delete_checkpoint(*key)
        self.model.pop(key, None)

    @rule(key=keys)
    def delete_process(self, key: tuple[Any, str | None]) -> None:
        self.persister.delete_process_checkpoints(key[0])
        for stored in [k for k in self.model if k[0] == key[0]]:
            del self.model[stored]

    @invariant()
    def listing_matches_the_model(self) -> None:
        expected = {canon(pid, tag) for pid, tag in self.model}
        listed = [canon(c.pid, c.tag) for c in self.persister.get_checkpoints()]
        assert len(listed) == len(set(listed))
        assert set(listed) == expected
        for pid in {pid for pid, _ in self.model}:
            mine = {canon(c.pid, c.tag) for c in self.persister.get_process_checkpoints(pid)}
            assert mine == {canon(p, t) for p, t in self.model if p == pid}
        versions = {canon(i.pid, i.tag): i.record.version for i in self.persister.list_info()}
        assert versions == {canon(p, t): v for (p, t), (v, _) in self.model.items()}

    def teardown(self) -> None:
        self.persister.close()
        self.a.close()
        self.b.close()


def canon(pid: Any, tag: str | None) -> tuple[str, Any, str | None]:
    """A key with its pid's type, so a pid that came back as another type does not match."""
    return type(pid).__name__, pid, tag


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("storage", LOCAL_STORAGES)
def test_persister_state_machine(tmp_path: Path, storage: str, codec: str) -> None:
    machine = type(
        f"PersisterMachine_{storage}_{codec}",
        (PersisterMachine,),
        {"storage": storage, "codec": codec, "directory": Path(tempfile.mkdtemp(dir=tmp_path))},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=settings.default.max_examples,
            stateful_step_count=25,
            deadline=None,
        ),
    )
