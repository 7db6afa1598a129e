"""ProcessTask: the one reader and writer of plumpy's process task bodies."""

from __future__ import annotations

from typing import Any

import kiwipy
import pytest
from hypothesis import given, strategies as st
from plumpy import process_comms

from loopaware_persist import ArgumentTypeError
from loopaware_persist._tasks import ProcessTask
from tests.processes import Finisher
from tests.strategies import hashables

NAME = "tests.processes:Finisher"


# plumpy annotates process_class as str, but identify_object() takes the class itself.
PROCESS: Any = Finisher


@pytest.mark.parametrize(
    "body",
    [
        process_comms.create_launch_body(PROCESS, None, None, persist=True, nowait=False),
        process_comms.create_launch_body(PROCESS, [1, 2], {"pid": "p", "inputs": {}}, nowait=True),
        process_comms.create_create_body(PROCESS, None, {"pid": 3}, persist=True),
        process_comms.create_continue_body("p", tag="t", nowait=True),
        process_comms.create_continue_body(7),
    ],
    ids=["launch", "launch-args", "create", "continue-tag", "continue"],
)
def test_what_plumpy_builds_parses_and_is_written_back_the_same(body: dict[str, Any]) -> None:
    task = ProcessTask.parse(body)
    assert task.kind == body[process_comms.TASK_KEY]
    written = task.to_dict()
    assert written[process_comms.TASK_KEY] == body[process_comms.TASK_KEY]
    assert written[process_comms.TASK_ARGS].keys() == body[process_comms.TASK_ARGS].keys()
    for key, value in body[process_comms.TASK_ARGS].items():
        if value is not None:  # plumpy writes None for absent init_args/init_kwargs
            copied = tuple(value) if key == process_comms.ARGS_KEY else value
            assert written[process_comms.TASK_ARGS][key] == copied, key
    assert ProcessTask.parse(written) == task


@given(pid=hashables(), nowait=st.booleans(), tag=st.none() | st.text(max_size=5))
def test_a_continue_round_trips(pid: Any, nowait: bool, tag: str | None) -> None:
    task = ProcessTask(kind=process_comms.CONTINUE_TASK, pid=pid, nowait=nowait, tag=tag)
    assert ProcessTask.parse(task.to_dict()) == task
    assert task.waited_pid == (None if nowait else pid)


@pytest.mark.parametrize(
    ("task", "waited"),
    [
        (ProcessTask(kind="launch", process_class=NAME, init_kwargs={"pid": "p"}), "p"),
        (ProcessTask(kind="launch", process_class=NAME), None),
        (ProcessTask(kind="launch", process_class=NAME, init_kwargs={"pid": [1]}), None),
        (ProcessTask(kind="launch", process_class=NAME, nowait=True, init_kwargs={"pid": 1}), None),
        (ProcessTask(kind="create", process_class=NAME, init_kwargs={"pid": "p"}), None),
        (ProcessTask(kind="continue", pid="p"), "p"),
    ],
)
def test_waited_pid_is_the_pid_whose_outcome_the_reply_carries(
    task: ProcessTask, waited: Any
) -> None:
    assert task.waited_pid == waited


@pytest.mark.parametrize("body", [None, [], {"task": "reticulate"}, {"args": {}}, {"task": 3}])
def test_what_is_not_a_process_task_is_rejected_for_another_subscriber(body: Any) -> None:
    with pytest.raises(kiwipy.TaskRejected, match="Not a plumpy process task"):
        ProcessTask.parse(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"task": "launch", "args": [1]}, "'args' must be a mapping"),
        ({"task": "launch", "args": {}}, "needs 'process_class'"),
        ({"task": "create", "args": {"process_class": NAME, "nowait": True}}, "accepts only"),
        ({"task": "launch", "args": {"process_class": 1}}, "'module:QualName' string"),
        ({"task": "launch", "args": {"process_class": NAME, "persist": 1}}, "True or False"),
        ({"task": "continue", "args": {"pid": 1, "tag": 1}}, "string or None"),
    ],
)
def test_a_malformed_process_task_is_a_typed_type_error(body: Any, message: str) -> None:
    with pytest.raises(ArgumentTypeError, match=message) as info:
        ProcessTask.parse(body)
    assert isinstance(info.value, TypeError)
    assert info.value.argument == "task"
    assert f"{body['task']!r}" in str(info.value)
