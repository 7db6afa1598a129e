"""FencingPersister without servers: fencing by version, and its stale marks stay bounded."""

from __future__ import annotations

import asyncio

import pytest

from loopaware_persist import (
    ArgumentTypeError,
    BackendUnavailableError,
    FencedError,
    FenceReason,
    ShutdownFencedError,
    StaleCheckpointError,
    StaleFencedError,
    UnavailableFencedError,
    _fencing as fencing_module,
)
from loopaware_persist._fencing import open_fencing_persister
from loopaware_persist.storage import CheckpointKey
from tests.processes import drive


def test_a_stale_copy_is_refused_and_once_fenced_never_saves(
    loop: asyncio.AbstractEventLoop,
) -> None:
    with open_fencing_persister("memory://", allow=["tests.processes"]) as persister:
        process = drive("chain", loop)
        persister.save_checkpoint(process)
        first = persister.load_process(process.pid, loop=loop)
        second = persister.load_process(process.pid, loop=loop)
        persister.save_checkpoint(second)  # the newer copy saves: the first is now stale
        with pytest.raises(StaleCheckpointError) as refused:
            persister.save_checkpoint(first)
        before = persister.stale_mark(process.pid)
        fenced = persister.fence(first, refused.value)
        assert fenced.reason is FenceReason.STALE
        assert isinstance(fenced, StaleFencedError)
        assert persister.fenced(first) is fenced
        assert persister.stale_mark(process.pid) != before
        with pytest.raises(FencedError):
            persister.save_checkpoint(first)
        assert persister.fenced(second) is None
        persister.save_checkpoint(second)  # the owner goes on saving


def test_stale_marks_are_bounded_and_never_repeat(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fencing_module, "_STALE_MARKS_KEPT", 8)
    with open_fencing_persister("memory://", allow=["tests.processes"]) as persister:
        seen: list[int] = []
        for _ in range(30):
            process = drive("chain", loop)
            persister.fence(process, StaleCheckpointError("another worker saved it"))
            seen.append(persister.stale_mark(process.pid))
        assert len(persister._stale) <= 8
        assert len(set(seen)) == len(seen)  # a mark once handed out never comes back
        assert all(mark > 0 for mark in seen)


@pytest.mark.parametrize(
    ("cause", "kind", "reason"),
    [
        (StaleCheckpointError("another worker saved it"), StaleFencedError, FenceReason.STALE),
        (BackendUnavailableError("down"), UnavailableFencedError, FenceReason.UNAVAILABLE),
        (None, ShutdownFencedError, FenceReason.SHUTDOWN),
    ],
    ids=["stale", "unavailable", "shutdown"],
)
def test_only_a_stale_fence_is_a_stale_checkpoint_error(
    loop: asyncio.AbstractEventLoop,
    cause: BaseException | None,
    kind: type[FencedError],
    reason: FenceReason,
) -> None:
    """A caller catching StaleCheckpointError (another writer won) must not also catch
    a fence for a down store or a shutdown, after which the process is still its own."""
    with open_fencing_persister("memory://", allow=["tests.processes"]) as persister:
        process = drive("chain", loop)
        fenced = persister.fence(process, cause)
        assert type(fenced) is kind
        assert fenced.reason is reason
        assert fenced.reason == reason.value  # a str enum: compares with the plain string
        assert fenced.pid == process.pid
        assert isinstance(fenced, StaleCheckpointError) is (reason is FenceReason.STALE)
        assert isinstance(fenced, BackendUnavailableError) is (reason is FenceReason.UNAVAILABLE)
        with pytest.raises(kind):
            persister.save_checkpoint(process)


def test_a_fencing_load_checks_its_loop_before_reading(loop: asyncio.AbstractEventLoop) -> None:
    with open_fencing_persister("memory://", allow=["tests.processes"]) as persister:
        process = drive("chain", loop)
        persister.save_checkpoint(process)
        with pytest.raises(ArgumentTypeError, match=r"load_process\(\) takes an asyncio"):
            persister.load_process(process.pid, loop="x")  # type: ignore[arg-type]
        assert persister.storage.get(CheckpointKey(process.pid)).version == 1  # not claimed


def test_a_load_that_does_not_claim_only_reads(loop: asyncio.AbstractEventLoop) -> None:
    """``claim=False`` (how a worker reads a process another one finished) neither saves
    nor watches: the owner's next save is not stale, and the read copy is not fenced."""
    with open_fencing_persister("memory://", allow=["tests.processes"]) as persister:
        process = drive("chain", loop)
        persister.save_checkpoint(process)
        key = CheckpointKey(process.pid)
        owner = persister.load_process(process.pid, loop=loop)
        version = persister.storage.get(key).version
        read = persister.load_process(process.pid, loop=loop, claim=False)
        assert read is not owner
        assert read.pid == owner.pid
        assert persister.storage.get(key).version == version  # nothing was written
        assert persister.fenced(read) is None
        assert read not in persister.watched()
        persister.save_checkpoint(owner)  # still the owner: not stale
        with pytest.raises(ArgumentTypeError, match="claim"):
            persister.load_process(process.pid, loop=loop, claim="no")  # type: ignore[arg-type]
