"""LoopAwareLauncher refuses malformed launch/create tasks on the receiving thread, with
a TypeError that names the field and what it must be, before anything is imported or
scheduled on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from plumpy import process_comms

from loopaware_persist import ArgumentTypeError, open_persister
from loopaware_persist._launcher import LoopAwareLauncher


@pytest.fixture
def launcher(loop: asyncio.AbstractEventLoop) -> Iterator[LoopAwareLauncher]:
    with open_persister("memory://", allow=["tests.processes"]) as persister:
        made = LoopAwareLauncher(persister, loop=loop)
        assert made.persister is persister
        yield made


GOOD = {"process_class": "tests.processes:Finisher", "persist": False, "nowait": True}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([("process_class", "x")], "'args' must be a mapping, got"),
        ({**GOOD, "init_args": "abc"}, "'init_args' must be a list, got 'abc'"),
        ({**GOOD, "init_args": b"abc"}, "'init_args' must be a list"),
        ({**GOOD, "init_kwargs": [1, 2]}, r"'init_kwargs' must be a mapping, got \[1, 2\]"),
        ({**GOOD, "process_class": 42}, "'process_class' must be a 'module:QualName' string"),
    ],
)
def test_malformed_launch_task_is_a_type_error(
    launcher: LoopAwareLauncher,
    loop: asyncio.AbstractEventLoop,
    args: Any,
    message: str,
) -> None:
    body = {process_comms.TASK_KEY: process_comms.LAUNCH_TASK, process_comms.TASK_ARGS: args}
    with pytest.raises(TypeError, match=message) as info:
        launcher(None, body)
    assert "'launch' task" in str(info.value)
    assert isinstance(info.value, ArgumentTypeError)  # typed, and still a TypeError
    assert not asyncio.all_tasks(loop)  # nothing was scheduled


def test_a_task_cancelled_before_the_loop_picks_it_up_never_runs(
    launcher: LoopAwareLauncher, loop: asyncio.AbstractEventLoop
) -> None:
    """kiwipy cancels the future of a task whose sender went away; if the loop has not
    started it yet, the process must not be created (nor its checkpoint saved)."""
    body = {
        process_comms.TASK_KEY: process_comms.LAUNCH_TASK,
        process_comms.TASK_ARGS: {**GOOD, "persist": True},
    }
    future = launcher(None, body)
    assert future.cancel()
    loop.run_until_complete(asyncio.sleep(0))  # let the loop run what was queued
    assert future.cancelled()
    assert not asyncio.all_tasks(loop)
    assert launcher.persister.get_checkpoints() == []
