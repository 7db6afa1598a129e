"""Real plumpy processes for the persister tests, and helpers that drive them.

Every class here is named ``tests.processes:<Name>`` in a checkpoint, so a
persister that loads them must be opened with ``allow=["tests.processes"]``.

Driving is deterministic: a process is stepped with ``await process.step()``
inside ``loop.run_until_complete`` (never a background task polled with
sleeps), so a checkpoint is taken at an exact point and nothing is left
running on the loop afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import plumpy
from plumpy.process_comms import MessageBuilder
from plumpy.workchains import WorkChainSpec, if_, while_

# The loop helpers live in tests.loops; several suites import them from here too.
from tests.loops import (
    close_loop as close_loop,
    current_loop as current_loop,
    in_thread as in_thread,
    loop_in_thread as loop_in_thread,
    new_loop as new_loop,
    run_on as run_on,
)

T = TypeVar("T")

#: Every kind of process the suites save and load, by the state it is driven to.
KINDS = (
    "created",
    "waiting",
    "paused",
    "paused-waiting",
    "finished",
    "excepted",
    "killed",
    "chain",
)
#: The kinds that are not terminal: after a load they must run to completion.
LIVE_KINDS = ("created", "waiting", "paused", "paused-waiting", "chain")
#: What a WAITING process is resumed with after a load; it becomes an output.
RESUME_VALUE = {"answer": 42, "pair": (1, 2)}
#: The kill message of a killed process.
KILL_TEXT = "killed by the test suite"
#: A fixed context id for the WorkChain, so its outputs are known in advance.
CHAIN_RUN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
#: The pid of every :class:`Finisher` plumpy has rebuilt from a checkpoint, in order.
LOAD_LOG: list[Any] = []


class CustomError(Exception):
    """An exception class of the test package: only revivable where it is allowed."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


class Opaque:
    """A plain class with no hook; a safe load only revives it when it is allowed."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Opaque and other.value == self.value

    def __hash__(self) -> int:
        return hash(("Opaque", repr(self.value)))


class RecordingListener(plumpy.ProcessListener):
    """A listener stored on the process (plumpy persists listeners by state).

    Each event it hears is appended to ``events``, which is saved with it, so
    a restored listener remembers what it heard before the checkpoint.
    """

    def __init__(self, label: str = "recorder") -> None:
        super().__init__()
        self.init(label=label)
        self.events: list[str] = []

    @property
    def label(self) -> str:
        """:return: the label it was created with (a persisted ``_params`` entry)"""
        return str(self._params["label"])

    def on_process_created(self, process: plumpy.Process) -> None:
        self.events.append("created")

    def on_process_running(self, process: plumpy.Process) -> None:
        self.events.append("running")

    def on_process_waiting(self, process: plumpy.Process) -> None:
        self.events.append("waiting")

    def on_process_paused(self, process: plumpy.Process) -> None:
        self.events.append("paused")

    def on_process_played(self, process: plumpy.Process) -> None:
        self.events.append("played")

    def on_process_finished(self, process: plumpy.Process, outputs: Any) -> None:
        self.events.append("finished")

    def on_process_excepted(self, process: plumpy.Process, reason: str) -> None:
        self.events.append("excepted")

    def on_process_killed(self, process: plumpy.Process, msg: Any) -> None:
        self.events.append("killed")


def listeners_of(process: plumpy.Process) -> list[RecordingListener]:
    """:return: the :class:`RecordingListener` objects stored on ``process``"""
    return [
        listener
        for listener in process._event_helper.listeners
        if isinstance(listener, RecordingListener)
    ]


class Finisher(plumpy.Process):
    """Doubles its input and finishes."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=21)
        spec.output("doubled", valid_type=int)
        spec.outputs.dynamic = True

    def load_instance_state(
        self, saved_state: Any, load_context: plumpy.LoadSaveContext | None
    ) -> None:
        super().load_instance_state(saved_state, load_context)
        LOAD_LOG.append(self.pid)

    def run(self) -> None:
        x = self.inputs["x"]
        self.out("doubled", x * 2)
        self.out("echo", {"x": x, "half": x / 2, "tags": ("a", "b")})


class Raiser(plumpy.Process):
    """Raises in ``run``: a ``ValueError``, or a :class:`CustomError` if ``custom``."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("custom", valid_type=bool, default=False)

    def run(self) -> None:
        if self.inputs["custom"]:
            raise CustomError("custom failure", 7)
        raise ValueError("boom", 42)


class Waiter(plumpy.Process):
    """Emits one output, waits (``plumpy.Wait``), and finishes when resumed."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.outputs.dynamic = True

    def run(self) -> plumpy.Wait:
        self.out("before", 1)
        return plumpy.Wait(self.resumed, "waiting for a signal", data={"why": ("test", 1.5)})

    def resumed(self, value: Any = None) -> None:
        self.out("after", value)


class SelfKiller(plumpy.Process):
    """Kills itself from ``run`` with a ``plumpy.Kill`` command."""

    def run(self) -> plumpy.Kill:
        return plumpy.Kill(MessageBuilder.kill(KILL_TEXT))


class Chain(plumpy.WorkChain):
    """Three steps around a ``while_`` and an ``if_``, with a varied context.

    ``setup`` -> ``while_(more)(accumulate)`` -> ``if_(is_even)(even).else_(odd)``
    -> ``finalise``; one outline step runs per ``process.step()`` while RUNNING.
    """

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        assert isinstance(spec, WorkChainSpec)
        spec.input("n", valid_type=int, default=3)
        spec.outputs.dynamic = True
        spec.outline(
            cls.setup,
            while_(cls.more)(cls.accumulate),
            if_(cls.is_even)(cls.even).else_(cls.odd),
            cls.finalise,
        )

    @property
    def context(self) -> Any:
        assert self.ctx is not None
        return self.ctx

    def setup(self) -> None:
        ctx = self.context
        ctx.i = 0
        ctx.values = ()
        ctx.seen = {"setup"}
        ctx.run_id = CHAIN_RUN_ID
        ctx.nested = {"a": {"b": [1.5, 2.25, -0.0], "c": None}, "d": (True, "x")}
        ctx.weights = [0.1, 1e-300, 3.5e300]

    def more(self) -> bool:
        return bool(self.context.i < self.inputs["n"])

    def accumulate(self) -> None:
        ctx = self.context
        ctx.values = (*ctx.values, float(ctx.i) ** 0.5)
        ctx.seen = ctx.seen | {f"accumulate-{ctx.i}"}
        ctx.i += 1

    def is_even(self) -> bool:
        return len(self.context.values) % 2 == 0

    def even(self) -> None:
        self.context.parity = "even"

    def odd(self) -> None:
        self.context.parity = "odd"

    def finalise(self) -> None:
        ctx = self.context
        self.out("total", sum(ctx.values))
        self.out("steps", sorted(ctx.seen))
        self.out("run_id", str(ctx.run_id))
        self.out("parity", ctx.parity)
        self.out("nested", ctx.nested)
        self.out("weights", list(ctx.weights))


def chain_outputs(n: int = 3) -> dict[str, Any]:
    """:return: the outputs a :class:`Chain` with input ``n`` finishes with"""
    return {
        "total": sum(float(i) ** 0.5 for i in range(n)),
        "steps": sorted({"setup"} | {f"accumulate-{i}" for i in range(n)}),
        "run_id": str(CHAIN_RUN_ID),
        "parity": "even" if n % 2 == 0 else "odd",
        "nested": {"a": {"b": [1.5, 2.25, -0.0], "c": None}, "d": (True, "x")},
        "weights": [0.1, 1e-300, 3.5e300],
    }


#: What each live kind finishes with after it is loaded and run to completion.
EXPECTED_OUTPUTS: dict[str, dict[str, Any]] = {
    "created": {"doubled": 42, "echo": {"x": 21, "half": 10.5, "tags": ("a", "b")}},
    "paused": {"doubled": 42, "echo": {"x": 21, "half": 10.5, "tags": ("a", "b")}},
    "waiting": {"before": 1, "after": RESUME_VALUE},
    "paused-waiting": {"before": 1, "after": RESUME_VALUE},
    "chain": chain_outputs(3),
}


async def step_until(process: plumpy.Process, state: plumpy.ProcessState) -> None:
    """Step ``process`` on the running loop until it is in ``state``.

    :raises AssertionError: if it is not within 50 steps
    """
    for _ in range(50):
        if process.state is state:
            return
        await process.step()
    msg = f"{process} did not reach {state} within 50 steps (it is {process.state})"
    raise AssertionError(msg)


async def _make(kind: str, pid: Any = None, listener: bool = True, **inputs: Any) -> plumpy.Process:
    """Create and drive a process of ``kind`` on the running loop."""
    loop = asyncio.get_running_loop()
    process: plumpy.Process
    if kind in ("created", "paused", "finished"):
        process = Finisher(inputs=inputs or None, pid=pid, loop=loop)
    elif kind == "excepted":
        process = Raiser(inputs=inputs or None, pid=pid, loop=loop)
    elif kind in ("waiting", "paused-waiting", "killed"):
        process = Waiter(pid=pid, loop=loop)
    elif kind == "self-killed":
        process = SelfKiller(pid=pid, loop=loop)
    elif kind == "chain":
        process = Chain(inputs=inputs or None, pid=pid, loop=loop)
    else:
        msg = f"unknown kind {kind!r}"
        raise ValueError(msg)
    if listener:
        process.add_process_listener(RecordingListener(label=kind))
    if kind == "paused":
        assert process.pause("paused by the test suite") is True
        assert process.paused
    elif kind in ("finished", "excepted", "self-killed"):
        await process.step_until_terminated()
        if not process.future().cancelled():
            process.future().exception()  # retrieved: no "never retrieved" log at exit
    elif kind == "waiting":
        await step_until(process, plumpy.ProcessState.WAITING)
    elif kind == "paused-waiting":
        await step_until(process, plumpy.ProcessState.WAITING)
        assert process.pause("paused while waiting") is True
        assert process.paused
    elif kind == "killed":
        await step_until(process, plumpy.ProcessState.WAITING)
        assert process.kill(KILL_TEXT) is True
        process.future().exception()
    elif kind == "chain":
        # CREATED -> RUNNING, then one outline step (setup): mid-outline, RUNNING.
        await process.step()
        await process.step()
        assert process.state is plumpy.ProcessState.RUNNING
        assert process.ctx is not None
        assert process.ctx.i == 0
    return process


def drive(
    kind: str,
    loop: asyncio.AbstractEventLoop,
    *,
    pid: Any = None,
    listener: bool = True,
    **inputs: Any,
) -> plumpy.Process:
    """Create a process of ``kind`` on ``loop`` and drive it to that state.

    :param kind: one of :data:`KINDS` (or ``"self-killed"``)
    :param loop: an idle loop, or one running in another thread
    :param pid: the process id (plumpy picks a UUID if ``None``)
    :param listener: add a :class:`RecordingListener`
    :return: the process, nothing of it left running on ``loop``
    """
    return run_on(loop, _make(kind, pid, listener, **inputs))


def expected_state(kind: str) -> plumpy.ProcessState:
    """:return: the state a process of ``kind`` is in once driven"""
    return {
        "created": plumpy.ProcessState.CREATED,
        "paused": plumpy.ProcessState.CREATED,
        "waiting": plumpy.ProcessState.WAITING,
        "paused-waiting": plumpy.ProcessState.WAITING,
        "finished": plumpy.ProcessState.FINISHED,
        "excepted": plumpy.ProcessState.EXCEPTED,
        "killed": plumpy.ProcessState.KILLED,
        "self-killed": plumpy.ProcessState.KILLED,
        "chain": plumpy.ProcessState.RUNNING,
    }[kind]


async def complete(process: plumpy.Process) -> dict[str, Any]:
    """Run a loaded process to completion on the running loop, as a user would.

    A paused process is played and a waiting one resumed *after* it has started
    awaiting its pause/waiting future, so a future bound to another loop fails here.

    :return: the outputs, awaited through ``process.future()``
    """
    loop = asyncio.get_running_loop()
    assert process.loop is loop, "the process is not bound to the loop running it"
    if process.paused:
        loop.call_soon(process.play)
    if process.state is plumpy.ProcessState.WAITING:
        loop.call_soon(process.resume, RESUME_VALUE)
    await process.step_until_terminated()
    result = await process.future()
    return dict(result)


def check_terminal(process: plumpy.Process, kind: str) -> None:
    """Assert what a loaded terminal process of ``kind`` must show."""
    assert process.state is expected_state(kind)
    assert process.has_terminated()
    future = process.future()
    assert future.done()
    if kind == "finished":
        assert process.is_successful
        assert dict(future.result()) == EXPECTED_OUTPUTS["created"]
        assert dict(process.outputs) == EXPECTED_OUTPUTS["created"]
    elif kind == "excepted":
        error = process.exception()
        assert type(error) is ValueError
        assert error.args == ("boom", 42)
        assert type(future.exception()) is ValueError
    elif kind in ("killed", "self-killed"):
        assert process.killed()
        assert isinstance(future.exception(), plumpy.KilledError)
        assert process.killed_msg()[plumpy.process_comms.MESSAGE_TEXT_KEY] == KILL_TEXT
